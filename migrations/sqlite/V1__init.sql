-- keyseat schema v1. Times are Unix milliseconds (UTC) so that liveness
-- checks are integer comparisons. Access keys are stored only as SHA-256.

CREATE TABLE keys (
    id            INTEGER PRIMARY KEY,          -- insertion order, for paging
    key_id        TEXT    NOT NULL UNIQUE,      -- public name, key_...
    key_hash      BLOB    NOT NULL UNIQUE,      -- SHA-256 of the access key
    prefix        TEXT    NOT NULL,             -- ks_ + first 8 characters
    label         TEXT,
    max_sessions  INTEGER NOT NULL DEFAULT 1 CHECK (max_sessions BETWEEN 1 AND 1000),
    on_conflict   TEXT    NOT NULL DEFAULT 'takeover' CHECK (on_conflict IN ('takeover', 'reject')),
    status        TEXT    NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'revoked')),
    expires_at    INTEGER,
    next_fence    INTEGER NOT NULL DEFAULT 1,   -- fence of the next session started
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    revoked_at    INTEGER
);
CREATE INDEX keys_by_prefix ON keys (prefix);
CREATE INDEX keys_expiring ON keys (expires_at) WHERE expires_at IS NOT NULL AND status != 'revoked';

CREATE TABLE sessions (
    session_id     TEXT    PRIMARY KEY,         -- unique across all keys, forever (until pruned)
    key_id         TEXT    NOT NULL REFERENCES keys (key_id),
    fence          INTEGER NOT NULL,
    device_name    TEXT,
    fingerprint    TEXT,
    client_addr    TEXT,
    started_at     INTEGER NOT NULL,
    last_heartbeat INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,            -- live while ended_at IS NULL AND now < expires_at
    ended_at       INTEGER,
    end_reason     TEXT CHECK (end_reason IN ('ended', 'superseded', 'expired', 'revoked')),
    superseded_by  TEXT,                        -- session_id that took the seat
    CHECK ((ended_at IS NULL) = (end_reason IS NULL))
);
-- Open sessions per key (seat counting) and by lease end (the sweep reads
-- only what has expired, not every session).
CREATE INDEX sessions_open_by_key ON sessions (key_id) WHERE ended_at IS NULL;
CREATE INDEX sessions_open_by_expiry ON sessions (expires_at) WHERE ended_at IS NULL;
CREATE INDEX sessions_ended_at ON sessions (ended_at) WHERE ended_at IS NOT NULL;

CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    type        TEXT    NOT NULL,
    key_id      TEXT,
    session_id  TEXT,
    device_name TEXT,
    client_addr TEXT,
    detail      TEXT                            -- JSON object, event-specific
);
CREATE INDEX events_by_at ON events (at);
CREATE INDEX events_by_key ON events (key_id, id);

-- Small facts about the server itself, e.g. when it was last known alive
-- (so a restart can tell which sessions were live at the stop).
CREATE TABLE server_state (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
);
