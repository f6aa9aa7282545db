-- keyseat schema v2: the Ed25519 keys that sign answers (docs/api.md,
-- "Signed answers"). The current key is the one not retired; a retired key
-- stays listed for the overlap after `retired_at`, then is deleted.

CREATE TABLE signing_keys (
    kid          TEXT    PRIMARY KEY,           -- RFC 7638 thumbprint of the public key
    private_key  BLOB    NOT NULL CHECK (length(private_key) = 32),  -- the Ed25519 seed
    public_key   BLOB    NOT NULL CHECK (length(public_key) = 32),
    created_at   INTEGER NOT NULL,
    retired_at   INTEGER                        -- when a newer key became current
);
