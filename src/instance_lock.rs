//! One `keyseat serve` per SQLite database file.
//!
//! Two servers on one file each keep their own in-memory view of the live
//! sessions, so each decides seats without seeing the other's heartbeats
//! (and they spend their time reconciling each other's writes). A second
//! server must refuse to start. The guard is an exclusive `flock` on a file
//! beside the database (`<database>.lock`), which the operating system
//! releases when the holder exits in any way, SIGKILL included: a crash can
//! never leave a stale lock behind. The file itself stays (removing it
//! would race with the next server taking it) and holds the holder's pid
//! and address, so the refusal can say which server holds the database.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

use crate::error::{Error, Result};

/// The lock, held for as long as this value lives.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

/// The database's real path (symbolic links and `..` resolved, also for a
/// file not yet created), so that two names for one file share one lock
/// and one control socket.
pub fn real_path(database: &Path) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(database) {
        return real;
    }
    let parent = match database.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match (std::fs::canonicalize(parent), database.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => database.to_owned(),
    }
}

/// Where the lock for the database at `database` lives.
pub fn lock_path(database: &Path) -> PathBuf {
    let mut p = real_path(database).into_os_string();
    p.push(".lock");
    PathBuf::from(p)
}

/// Refuses to start on a database that a server has served before (its
/// lock file says so) but that is gone: it was deleted or moved, and a
/// fresh empty database at its path would hide that every key is lost.
/// `keyseat migrate` creates one on purpose.
pub fn check_not_lost(database: &Path) -> Result<()> {
    if database.exists() {
        return Ok(());
    }
    let lock = lock_path(database);
    let served = std::fs::read_to_string(&lock).unwrap_or_default();
    if served.trim().is_empty() {
        return Ok(());
    }
    let rescued = rescued_copies(database);
    let hint = if rescued.is_empty() {
        "put it back from a backup".to_owned()
    } else {
        format!(
            "put it back (the server saved a copy: {})",
            rescued.join(", ")
        )
    };
    Err(Error::Config(format!(
        "the database {} does not exist, but a keyseat server has served it before ({} is \
         there): it was deleted or moved. Refusing to start on a new empty database; {hint}, \
         or create an empty one on purpose with `keyseat migrate`",
        database.display(),
        lock.display()
    )))
}

/// Who serves `database` right now (the lock file's record), or `None`
/// when no server holds its lock. Probes with a shared lock taken and let
/// go at once; a server starting in that instant retries (see
/// [`InstanceLock::acquire`]).
pub fn holder(database: &Path) -> Option<String> {
    let mut file = File::open(lock_path(database)).ok()?;
    match flock(&file, FlockOperation::NonBlockingLockShared) {
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let mut record = String::new();
            let _ = file.read_to_string(&mut record);
            Some(record.trim().to_owned())
        }
        _ => None,
    }
}

/// Copies saved by a server whose database file was deleted under it.
fn rescued_copies(database: &Path) -> Vec<String> {
    let real = real_path(database);
    let (Some(dir), Some(name)) = (real.parent(), real.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.rescued-", name.to_string_lossy());
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path().display().to_string())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

impl InstanceLock {
    /// Takes the lock for `database`, recording this process and `addr`;
    /// fails with a one-line explanation when another server holds it.
    pub fn acquire(database: &Path, addr: SocketAddr) -> Result<InstanceLock> {
        let path = lock_path(database);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                Error::Database(format!(
                    "cannot create the lock file {}: {e} (check that its directory exists and is \
                     writable)",
                    path.display()
                ))
            })?;
        // A CLI's probe (`holder`) holds a shared lock for an instant.
        let mut tries = 0;
        let locked = loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Err(rustix::io::Errno::WOULDBLOCK) if tries < 10 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other,
            }
        };
        match locked {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(Error::Config(refusal(database, &holder)));
            }
            Err(e) => {
                return Err(Error::Database(format!(
                    "cannot lock {}: {e}",
                    path.display()
                )))
            }
        }
        // Ours now: say who holds it.
        let record = format!("pid {} address http://{addr}\n", std::process::id());
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(record.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot record this server in {}", path.display());
        }
        Ok(InstanceLock { _file: file })
    }
}

/// The refusal of a second server: which file, who holds it, what to do.
fn refusal(database: &Path, holder: &str) -> String {
    let holder = holder.trim();
    let who = if holder.is_empty() {
        "another keyseat server".to_owned()
    } else {
        format!("another keyseat server ({holder})")
    };
    format!(
        "{who} is already serving the database {}; run one `keyseat serve` per database file \
         (several servers on one database need PostgreSQL)",
        database.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:8080".parse().unwrap()
    }

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("k.db");
        let first = InstanceLock::acquire(&db, addr()).unwrap();
        let err = InstanceLock::acquire(&db, addr()).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        assert!(message.contains("http://127.0.0.1:8080"), "{message}");
        assert!(message.contains("k.db"), "{message}");
        assert!(message.contains("PostgreSQL"), "{message}");
        assert!(holder(&db).unwrap().contains("http://127.0.0.1:8080"));
        drop(first);
        assert_eq!(holder(&db), None);
        InstanceLock::acquire(&db, addr()).expect("free again once dropped");
    }

    #[test]
    fn two_names_for_one_file_share_one_lock() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("k.db");
        let link = dir.path().join("link.db");
        std::fs::write(&db, b"").unwrap();
        std::os::unix::fs::symlink(&db, &link).unwrap();
        let _first = InstanceLock::acquire(&db, addr()).unwrap();
        assert!(InstanceLock::acquire(&link, addr()).is_err());
        let dotted = dir.path().join(".").join("k.db");
        assert!(InstanceLock::acquire(&dotted, addr()).is_err());
    }

    #[test]
    fn a_database_served_before_and_gone_is_not_recreated() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("k.db");
        // Never served: a first start creates it.
        check_not_lost(&db).unwrap();
        drop(InstanceLock::acquire(&db, addr()).unwrap());
        let err = check_not_lost(&db).unwrap_err().to_string();
        assert!(
            err.contains("does not exist, but a keyseat server has served it"),
            "{err}"
        );
        assert!(err.contains("keyseat migrate"), "{err}");
        std::fs::write(dir.path().join("k.db.rescued-17"), b"").unwrap();
        let err = check_not_lost(&db).unwrap_err().to_string();
        assert!(err.contains("k.db.rescued-17"), "{err}");
        // There again: fine.
        std::fs::write(&db, b"").unwrap();
        check_not_lost(&db).unwrap();
    }

    #[test]
    fn a_lock_file_that_cannot_be_created_says_where() {
        let err = InstanceLock::acquire(Path::new("/nonexistent-dir/k.db"), addr()).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent-dir/k.db.lock"),
            "{err}"
        );
    }
}
