//! SQLite behind the [`Storage`](crate::store::Storage) boundary: one file
//! in WAL mode, an r2d2 pool for reads, one in-process writer at a time,
//! refinery migrations embedded in the binary.
//!
//! Why a writer mutex as well as SQLite's own lock: SQLite lets only one
//! writer in at a time anyway, and contending writers inside one process
//! would otherwise spin in `busy_timeout` sleeps. The mutex queues them
//! fairly; `busy_timeout` still covers writers in *other* processes (the CLI
//! working on the same file while the server runs). Every write opens with
//! `BEGIN IMMEDIATE`, so the read-decide-write of a start happens under the
//! write lock and no interleaving can exceed a key's seat limit.
//!
//! One file a concern, so a second engine can be read beside this one:
//!
//! - `open`: opening the file, connection settings, migrations;
//! - `rows`: the SQL columns of keys and sessions and their mapping to
//!   the model, and the lookups every operation starts from;
//! - `unit_of_work`: [`UnitOfWork`], the view (disk rows with memory's
//!   leases) and change log every operation runs in;
//! - `sessions`, `keys`, `upkeep`, `reports`: the operations, by what they
//!   change; each asks [`crate::rules`] what to do and applies the answer;
//! - `memory_feed`: what the server's memory reads from disk;
//! - `direct`: the CLI's store, each call its own transaction.

mod direct;
pub(in crate::store) mod keys;
pub(in crate::store) mod memory_feed;
mod open;
pub(in crate::store) mod reports;
mod rows;
pub(in crate::store) mod sessions;
pub(in crate::store) mod signing;
mod unit_of_work;
pub(in crate::store) mod upkeep;

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use r2d2::{Pool, PooledConnection};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;

use crate::error::Result;

pub use open::{Durability, OpenMode};
pub(in crate::store) use unit_of_work::UnitOfWork;

/// The SQLite implementation of [`Storage`](crate::store::Storage).
pub struct SqliteStore {
    durability: Durability,
    pool: Pool<SqliteConnectionManager>,
    write_lock: Mutex<()>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    fn conn(&self) -> Result<PooledConnection<SqliteConnectionManager>> {
        Ok(self.pool.get()?)
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // A panic inside a write leaves SQLite rolled back (the transaction
        // is dropped), so the guard's data, `()`, cannot be inconsistent.
        self.write_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction and commits if it
    /// returns `Ok`. A domain refusal that must still be recorded (a
    /// rejected start) is returned as `Ok(Err(..))` by the closure.
    fn write<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let _guard = self.lock();
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    /// Runs `f` on a pooled connection, beside the writer.
    pub(in crate::store) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.conn()?;
        f(&conn)
    }
}
