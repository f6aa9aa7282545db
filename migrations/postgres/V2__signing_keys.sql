-- keyseat schema v2: the Ed25519 keys that sign answers (docs/api.md,
-- "Signed answers"), shared by every server on the database. The current
-- key is the one not retired; a retired key stays listed for the overlap
-- after retired_at, then is deleted. Making the first key, or a rotation,
-- locks the 'signing_keys' row of server_state, so two servers starting at
-- once agree on one key.

CREATE TABLE signing_keys (
    kid          TEXT   PRIMARY KEY,
    private_key  BYTEA  NOT NULL CHECK (length(private_key) = 32),
    public_key   BYTEA  NOT NULL CHECK (length(public_key) = 32),
    created_at   BIGINT NOT NULL,
    retired_at   BIGINT
);
INSERT INTO server_state (name, value) VALUES ('signing_keys', 0);
