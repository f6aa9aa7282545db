-- keyseat schema v3: borrowing (docs/api.md, "Borrowing (offline use)").
-- A key may let a device take its seat offline for up to max_borrow_hours
-- (0, the default for every existing key: borrowing off). A borrowed
-- session holds its seat without heartbeats until borrowed_until: its
-- expires_at is at least that, so every liveness query stays as it was;
-- borrowed_until only says that no start may supersede it.

ALTER TABLE keys ADD COLUMN max_borrow_hours INTEGER NOT NULL DEFAULT 0
    CHECK (max_borrow_hours BETWEEN 0 AND 8760);
ALTER TABLE sessions ADD COLUMN borrowed_until INTEGER;  -- Unix ms; NULL: never borrowed
