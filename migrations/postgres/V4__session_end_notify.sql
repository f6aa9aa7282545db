-- keyseat schema v4 (PostgreSQL only): every session that ends notifies
-- channel keyseat_session_ended with its id, whichever server or CLI
-- ended it, so a heartbeat held on any server (docs/api.md, "Waiting
-- heartbeat") is answered at once. A trigger rather than a statement in
-- each end path: no path can forget it. The notification is delivered at
-- commit, when the end is visible to every server.

CREATE FUNCTION keyseat_session_ended() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('keyseat_session_ended', NEW.session_id);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER sessions_ended AFTER UPDATE OF ended_at ON sessions
    FOR EACH ROW WHEN (OLD.ended_at IS NULL AND NEW.ended_at IS NOT NULL)
    EXECUTE FUNCTION keyseat_session_ended();
