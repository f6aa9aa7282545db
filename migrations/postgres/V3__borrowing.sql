-- keyseat schema v3: borrowing (docs/api.md, "Borrowing (offline use)"),
-- as migrations/sqlite/V3__borrowing.sql. A borrowed session's expires_at
-- is at least its borrowed_until, so every liveness query stays as it
-- was; borrowed_until only says that no start may supersede it.

ALTER TABLE keys ADD COLUMN max_borrow_hours INTEGER NOT NULL DEFAULT 0
    CHECK (max_borrow_hours BETWEEN 0 AND 8760);
ALTER TABLE sessions ADD COLUMN borrowed_until BIGINT;
