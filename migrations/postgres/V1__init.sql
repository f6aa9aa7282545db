-- keyseat schema v1 on PostgreSQL: the SQLite schema's tables and columns
-- (migrations/sqlite/V1__init.sql), in PostgreSQL's types. Times are Unix
-- milliseconds (UTC) by the database's clock, so that liveness checks are
-- integer comparisons and no server's clock decides them. Access keys are
-- stored only as SHA-256.

CREATE TABLE keys (
    id            BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- insertion order, for paging
    key_id        TEXT    NOT NULL UNIQUE,      -- public name, key_...
    key_hash      BYTEA   NOT NULL UNIQUE,      -- SHA-256 of the access key
    prefix        TEXT    NOT NULL,             -- ks_ + first 8 characters
    label         TEXT,
    max_sessions  INTEGER NOT NULL DEFAULT 1 CHECK (max_sessions BETWEEN 1 AND 1000),
    on_conflict   TEXT    NOT NULL DEFAULT 'takeover' CHECK (on_conflict IN ('takeover', 'reject')),
    status        TEXT    NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'revoked')),
    expires_at    BIGINT,
    next_fence    BIGINT  NOT NULL DEFAULT 1,   -- fence of the next session started
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL,
    revoked_at    BIGINT
);
CREATE INDEX keys_by_prefix ON keys (prefix);
CREATE INDEX keys_expiring ON keys (expires_at) WHERE expires_at IS NOT NULL AND status <> 'revoked';

CREATE TABLE sessions (
    session_id     TEXT    PRIMARY KEY,         -- unique across all keys, forever (until pruned)
    key_id         TEXT    NOT NULL REFERENCES keys (key_id),
    fence          BIGINT  NOT NULL,
    device_name    TEXT,
    fingerprint    TEXT,
    client_addr    TEXT,
    started_at     BIGINT  NOT NULL,
    last_heartbeat BIGINT  NOT NULL,
    expires_at     BIGINT  NOT NULL,            -- live while ended_at IS NULL AND now < expires_at
    ended_at       BIGINT,
    end_reason     TEXT CHECK (end_reason IN ('ended', 'superseded', 'expired', 'revoked')),
    superseded_by  TEXT,                        -- session_id that took the seat
    CHECK ((ended_at IS NULL) = (end_reason IS NULL))
);
CREATE INDEX sessions_open_by_key ON sessions (key_id) WHERE ended_at IS NULL;
CREATE INDEX sessions_open_by_expiry ON sessions (expires_at) WHERE ended_at IS NULL;
CREATE INDEX sessions_ended_at ON sessions (ended_at) WHERE ended_at IS NOT NULL;

CREATE TABLE events (
    id          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT  NOT NULL,
    type        TEXT    NOT NULL,
    key_id      TEXT,
    session_id  TEXT,
    device_name TEXT,
    client_addr TEXT,
    detail      TEXT                            -- JSON object, event-specific
);
CREATE INDEX events_by_at ON events (at);
CREATE INDEX events_by_key ON events (key_id, id);

-- Small facts shared by every server: the lease floor after an outage.
CREATE TABLE server_state (
    name  TEXT   PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO server_state (name, value) VALUES ('lease_floor', 0);

-- One row per running server, touched about once a second by the
-- database's clock: while no server has been alive for a few seconds,
-- the service is out, and no session is found dead for that time (the
-- restart rule; see docs/high-availability.md).
CREATE TABLE server_marks (
    instance_id TEXT   PRIMARY KEY,
    alive_at    BIGINT NOT NULL
);
