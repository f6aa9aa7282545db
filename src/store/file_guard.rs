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

use super::writer::Writer;
use crate::clock::Timestamp;
use crate::error::{Error, Result};

/// The files that make up an open database in WAL mode.
const SUFFIXES: [&str; 3] = ["", "-wal", "-shm"];

/// Which file went missing, which says how what the server holds can
/// still be saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// `-wal` or `-shm`: the database file is still the one opened, and a
    /// checkpoint on the writer's connection (which still holds the old log)
    /// copies every committed write into it.
    SideFile,
    /// The database file itself: the server's open connections hold the
    /// only complete copy, which `VACUUM INTO` can save to a new file.
    DatabaseFile,
}

/// Watches that the database's files are still the ones opened.
pub struct FileGuard {
    /// The database's real path (SQLite resolves symbolic links and puts
    /// the side files beside the real file).
    database: PathBuf,
    /// Each file with the (device, inode) it had when opened.
    files: Vec<(PathBuf, (u64, u64))>,
    tripped: AtomicBool,
    reason: Mutex<(String, Option<Damage>)>,
    /// Whether what the server holds was saved after the trip.
    rescued: AtomicBool,
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
        let database = crate::instance_lock::real_path(path);
        let mut files = Vec::new();
        for suffix in SUFFIXES {
            let file = with_suffix(&database, suffix);
            let id = identity(&file)
                .map_err(|e| Error::Database(format!("cannot check {}: {e}", file.display())))?;
            files.push((file, id));
        }
        Ok(FileGuard {
            database,
            files,
            tripped: AtomicBool::new(false),
            reason: Mutex::new((String::new(), None)),
            rescued: AtomicBool::new(false),
        })
    }

    /// Whether the files are still the ones opened; the first time they
    /// are not, logs why. Cheap: three `stat` calls.
    pub fn check(&self) -> Result<()> {
        if self.tripped.load(Ordering::Acquire) {
            return Err(self.error());
        }
        for (i, (file, opened)) in self.files.iter().enumerate() {
            let what = match identity(file) {
                Ok(now) if now == *opened => continue,
                Ok(_) => "was replaced by another file",
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => "was deleted",
                // A passing error (EIO, ESTALE on a network mount) is not
                // proof of a deletion: refuse this time, look again next.
                Err(e) => {
                    return Err(Error::Unavailable(format!(
                        "cannot check database file {}: {e}",
                        file.display()
                    )))
                }
            };
            let damage = if i == 0 {
                Damage::DatabaseFile
            } else {
                Damage::SideFile
            };
            self.trip(file, what, damage);
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

    /// What went missing, once the guard has tripped.
    pub fn damage(&self) -> Option<Damage> {
        self.reason.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    /// Once tripped: saves what the server holds, once, on the writer's
    /// connection.
    /// Side files gone: a checkpoint on the writer's connection (which still
    /// has the old log open) copies every committed write into the database
    /// file, which is still the one opened. The database file gone or
    /// replaced: `VACUUM INTO` copies the whole database, as this server
    /// sees it, to a new file beside it.
    pub fn rescue(&self, writer: &Writer, now: Timestamp) {
        if self.rescued.swap(true, Ordering::SeqCst) {
            return;
        }
        let db = self.database.clone();
        match self.damage() {
            Some(Damage::SideFile) => {
                let saved = writer.between(|c| {
                    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                        r.get::<_, i64>(0)
                    })?;
                    Ok(())
                });
                match saved {
                    Ok(()) => tracing::error!(
                        "every write this server acknowledged was copied into {} (a checkpoint \
                         from the log it still had open); stop the server with SIGTERM (not \
                         kill -9) and start it again",
                        db.display()
                    ),
                    Err(e) => tracing::error!(
                        error = %e,
                        "could not copy the deleted log into {}; stop the server with SIGTERM \
                         (not kill -9): closing the database copies it if anything can",
                        db.display()
                    ),
                }
            }
            Some(Damage::DatabaseFile) => {
                let target = with_suffix(&db, &format!(".rescued-{}", now.0));
                let to = target.to_string_lossy().into_owned();
                let saved = writer.between(move |c| {
                    c.execute("VACUUM INTO ?1", [to])?;
                    Ok(())
                });
                match saved {
                    Ok(()) => tracing::error!(
                        "a copy of everything this server had was saved to {}: stop the server, \
                         move whatever is now at {} aside, move the copy to that name, and start \
                         the server again",
                        target.display(),
                        db.display()
                    ),
                    Err(e) => tracing::error!(
                        error = %e,
                        "could not save a copy of the database to {}; stop the server and \
                         restore {} from a backup",
                        target.display(),
                        db.display()
                    ),
                }
            }
            None => {}
        }
    }

    fn trip(&self, file: &Path, what: &str, damage: Damage) {
        let mut reason = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if self.tripped.load(Ordering::Acquire) {
            return;
        }
        *reason = (
            format!(
                "database file {} {what} while the server was running",
                file.display()
            ),
            Some(damage),
        );
        self.tripped.store(true, Ordering::Release);
        tracing::error!(
            "{}; keyseat now refuses every request that needs the database (503) so that no \
             answer promises a change that could be lost, and saves what it holds (see the \
             next line)",
            reason.0
        );
    }

    fn error(&self) -> Error {
        let reason = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        Error::Unavailable(format!(
            "{}; the operator must restart the server",
            reason.0
        ))
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
        assert_eq!(guard.damage(), Some(Damage::SideFile));
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
        assert_eq!(guard.damage(), Some(Damage::DatabaseFile));
    }

    /// SQLite resolves a symbolic link and keeps its side files beside the
    /// real file; the guard looks there too.
    #[test]
    fn a_database_named_through_a_symbolic_link_is_watched_at_its_real_place() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let db = files(&real);
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&db, &link).unwrap();
        let guard = FileGuard::new(&link).unwrap();
        assert!(guard.check().is_ok());
        std::fs::remove_file(with_suffix(&db, "-shm")).unwrap();
        assert!(guard.check().is_err());
    }
}
