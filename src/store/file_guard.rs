//! Is the database file still the one the server opened?
//!
//! An open SQLite connection keeps working on its file after the file is
//! deleted or renamed away: writes go to an inode no path names any more,
//! and are gone when the process ends. Deleting only `-wal` or `-shm` is as
//! bad: commits land in a log no new connection reads, so other processes
//! (and the next start) see none of them. SQLite cannot notice either, so
//! the server does: it records the device and inode of the database and its
//! two side files when it opens them, and compares them before every commit
//! and on every upkeep tick. Once they differ the guard trips for good: no
//! write is acknowledged (503 `unavailable`), `/health` answers 503, and the
//! log says what happened and what to do. The server never creates a fresh
//! database at the old path by itself (its connections open without
//! `SQLITE_OPEN_CREATE`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// The files that make up an open database in WAL mode.
const SUFFIXES: [&str; 3] = ["", "-wal", "-shm"];

/// Watches that the database's files are still the ones opened.
pub struct FileGuard {
    /// Each file with the (device, inode) it had when opened.
    files: Vec<(PathBuf, (u64, u64))>,
    tripped: AtomicBool,
    reason: Mutex<String>,
}

fn identity(path: &Path) -> std::io::Result<(u64, u64)> {
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

impl FileGuard {
    /// Records the identity of the database at `path` and its side files,
    /// which exist while a connection is open in WAL mode.
    pub fn new(path: &Path) -> Result<FileGuard> {
        let mut files = Vec::new();
        for suffix in SUFFIXES {
            let file = with_suffix(path, suffix);
            let id = identity(&file)
                .map_err(|e| Error::Database(format!("cannot check {}: {e}", file.display())))?;
            files.push((file, id));
        }
        Ok(FileGuard {
            files,
            tripped: AtomicBool::new(false),
            reason: Mutex::new(String::new()),
        })
    }

    /// Whether the files are still the ones opened; the first time they
    /// are not, logs why. Cheap: three `stat` calls.
    pub fn check(&self) -> Result<()> {
        if self.tripped.load(Ordering::Acquire) {
            return Err(self.error());
        }
        for (file, opened) in &self.files {
            let what = match identity(file) {
                Ok(now) if now == *opened => continue,
                Ok(_) => "was replaced by another file",
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => "was deleted",
                Err(_) => "can no longer be checked",
            };
            self.trip(file, what);
            return Err(self.error());
        }
        Ok(())
    }

    /// Fails once the guard has tripped, without looking at the files (for
    /// the hot paths).
    pub fn ensure_intact(&self) -> Result<()> {
        if self.tripped.load(Ordering::Acquire) {
            Err(self.error())
        } else {
            Ok(())
        }
    }

    fn trip(&self, file: &Path, what: &str) {
        let mut reason = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if self.tripped.load(Ordering::Acquire) {
            return;
        }
        *reason = format!(
            "database file {} {what} while the server was running",
            file.display()
        );
        self.tripped.store(true, Ordering::Release);
        tracing::error!(
            "{}; keyseat now refuses every request that needs the database (503) so that no \
             answer promises a change that would be lost. Stop the server, put the right file \
             back (from a backup, or move the replacement away), check it with \
             `keyseat migrate`, and start the server again; writes acknowledged before this \
             line may be missing from the file",
            reason
        );
    }

    fn error(&self) -> Error {
        let reason = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        Error::Unavailable(format!("{reason}; the operator must restart the server"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> PathBuf {
        let db = dir.join("k.db");
        for s in SUFFIXES {
            std::fs::write(with_suffix(&db, s), b"x").unwrap();
        }
        db
    }

    #[test]
    fn the_same_files_pass() {
        let dir = tempfile::tempdir().unwrap();
        let guard = FileGuard::new(&files(dir.path())).unwrap();
        assert!(guard.check().is_ok());
        assert!(guard.ensure_intact().is_ok());
    }

    #[test]
    fn a_deleted_side_file_trips_it_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let db = files(dir.path());
        let guard = FileGuard::new(&db).unwrap();
        std::fs::remove_file(with_suffix(&db, "-wal")).unwrap();
        let err = guard.check().unwrap_err().to_string();
        assert!(err.contains("k.db-wal was deleted"), "{err}");
        // Putting a file back does not make it the one that was opened.
        std::fs::write(with_suffix(&db, "-wal"), b"x").unwrap();
        assert!(guard.check().is_err());
        assert!(guard.ensure_intact().is_err());
    }

    #[test]
    fn a_replaced_database_trips_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = files(dir.path());
        let guard = FileGuard::new(&db).unwrap();
        let other = dir.path().join("other");
        std::fs::write(&other, b"y").unwrap();
        std::fs::rename(&other, &db).unwrap();
        let err = guard.check().unwrap_err().to_string();
        assert!(err.contains("was replaced"), "{err}");
    }
}
