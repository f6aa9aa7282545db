//! One writer thread that commits batches (group commit).
//!
//! Durable writes (starts, ends, supersedes, expiries, key changes) queue
//! here. The thread takes everything queued, runs each job in its own
//! savepoint inside one `BEGIN IMMEDIATE` transaction, commits once (one
//! fsync for the whole batch under `synchronous=FULL`), then applies each
//! job's memory changes and answers its caller, in commit order. A job that
//! fails rolls back its savepoint only; a failed commit fails the batch.
//! Nothing is acknowledged before it is durable.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use rusqlite::Connection;

use crate::error::{Error, Result};

/// Jobs taken into one transaction at most.
const MAX_BATCH: usize = 512;
/// Jobs that may wait; callers block beyond that (backpressure).
const QUEUE: usize = 8192;

/// Called with the commit error, if any, once the batch's fate is known.
type Finish = Box<dyn FnOnce(Option<&str>) + Send>;

/// What a job leaves to do once its batch's commit is known.
pub struct Done {
    keep: bool,
    finish: Finish,
}

type Job = Box<dyn FnOnce(&Connection) -> Done + Send>;

/// Asked before each commit whether committing is still safe (the
/// database file is still the one opened); an error fails the batch.
pub type PreCommit = Box<dyn Fn() -> Result<()> + Send>;

/// Work for the writer's connection outside any transaction, run after
/// the batch it was queued behind (checkpoints).
type Between = Box<dyn FnOnce(&Connection) + Send>;

enum Msg {
    Job(Job),
    Between(Between),
}

/// The handle to the writer thread.
pub struct Writer {
    tx: Option<SyncSender<Msg>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread on its own connection; `pre_commit` is asked
    /// before every commit.
    pub fn start(conn: Connection, pre_commit: PreCommit) -> Result<Writer> {
        let (tx, rx) = mpsc::sync_channel::<Msg>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("keyseat-writer".into())
            .spawn(move || run(conn, rx, pre_commit))
            .map_err(|e| Error::Internal(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Runs `work` in the next batch and waits until it is committed.
    /// `work` returns its answer and a function applied after the commit
    /// (memory changes) before the answer is returned.
    pub fn run<T, W>(&self, work: W) -> Result<T>
    where
        T: Send + 'static,
        W: FnOnce(&Connection) -> Result<(T, Box<dyn FnOnce() + Send>)> + Send + 'static,
    {
        let (job, reply_rx) = job(work);
        self.send(Msg::Job(job))?;
        reply_rx
            .recv()
            .map_err(|_| Error::Unavailable("the write could not be completed; retry".into()))?
    }

    /// Runs `work` on the writer's connection between two batches, outside
    /// any transaction, and waits for it.
    ///
    /// Why checkpoints go here: a checkpoint can reset the WAL only when it
    /// has copied every frame, and under continuous load a checkpoint on
    /// another connection never gets there (new commits land while it
    /// copies), so the WAL would grow until the blocking size limit. Here
    /// no commit runs meanwhile, so it completes whenever no reader pins
    /// old frames, and the next batch starts the WAL over.
    pub fn between<T, W>(&self, work: W) -> Result<T>
    where
        T: Send + 'static,
        W: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply_tx, reply_rx) = mpsc::sync_channel::<Result<T>>(1);
        self.send(Msg::Between(Box::new(move |conn: &Connection| {
            let _ = reply_tx.send(work(conn));
        })))?;
        reply_rx
            .recv()
            .map_err(|_| Error::Unavailable("the database writer has stopped".into()))?
    }

    fn send(&self, msg: Msg) -> Result<()> {
        self.tx
            .as_ref()
            .ok_or_else(|| Error::Unavailable("the server is stopping".into()))?
            .send(msg)
            .map_err(|_| Error::Unavailable("the database writer has stopped".into()))
    }

    /// Finishes queued work and stops the thread.
    pub fn shutdown(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A job for `work` and the channel its answer arrives on.
fn job<T, W>(work: W) -> (Job, Receiver<Result<T>>)
where
    T: Send + 'static,
    W: FnOnce(&Connection) -> Result<(T, Box<dyn FnOnce() + Send>)> + Send + 'static,
{
    let (reply_tx, reply_rx) = mpsc::sync_channel::<Result<T>>(1);
    let job: Job = Box::new(move |conn: &Connection| match work(conn) {
        Ok((value, after_commit)) => Done {
            keep: true,
            finish: Box::new(move |commit_error| {
                let _ = reply_tx.send(match commit_error {
                    None => {
                        after_commit();
                        Ok(value)
                    }
                    Some(e) => Err(Error::Unavailable(format!("the write was not saved: {e}"))),
                });
            }),
        },
        Err(e) => Done {
            keep: false,
            finish: Box::new(move |_| {
                let _ = reply_tx.send(Err(e));
            }),
        },
    });
    (job, reply_rx)
}

fn run(conn: Connection, rx: Receiver<Msg>, pre_commit: PreCommit) {
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::new();
        let mut between = None;
        match first {
            Msg::Job(job) => batch.push(job),
            Msg::Between(work) => between = Some(work),
        }
        while between.is_none() && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Job(job)) => batch.push(job),
                Ok(Msg::Between(work)) => between = Some(work),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            commit_batch(&conn, batch, &pre_commit);
        }
        if let Some(work) = between {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&conn))).is_err() {
                tracing::error!("work between write batches panicked");
            }
        }
    }
}

fn commit_batch(conn: &Connection, batch: Vec<Job>, pre_commit: &PreCommit) {
    tracing::trace!(jobs = batch.len(), "write batch");
    if let Err(e) = exec_cached(conn, "BEGIN IMMEDIATE") {
        let msg = e.to_string();
        tracing::warn!(error = %msg, jobs = batch.len(), "could not begin a write batch");
        for job in batch {
            // Run nothing: fail each job without touching the database.
            fail_unstarted(job, &msg);
        }
        return;
    }
    let mut finishes = Vec::with_capacity(batch.len());
    let mut jobs = batch.into_iter();
    let mut rolled_back = false;
    for job in jobs.by_ref() {
        if let Err(e) = exec_cached(conn, "SAVEPOINT job") {
            finishes.push(Done {
                keep: false,
                finish: Box::new(move |_| drop(e)),
            });
            continue;
        }
        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(conn)))
            .unwrap_or_else(|_| Done {
                keep: false,
                finish: Box::new(|_| tracing::error!("a write job panicked; it was rolled back")),
            });
        let end = if done.keep {
            exec_cached(conn, "RELEASE job")
        } else {
            exec_cached(conn, "ROLLBACK TO job").and_then(|()| exec_cached(conn, "RELEASE job"))
        };
        finishes.push(done);
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back by itself (it does
            // on disk full, I/O errors and out of memory inside a
            // statement): every job so far is lost, and a later job's
            // SAVEPOINT would open a transaction of its own that its
            // RELEASE commits, saved yet answered as failed. Stop here.
            rolled_back = true;
            break;
        }
        if let Err(e) = end {
            tracing::error!(error = %e, "savepoint cleanup failed");
        }
    }
    for job in jobs {
        fail_unstarted(job, "the batch was rolled back");
    }
    let committing = std::time::Instant::now();
    let outcome = if rolled_back {
        Err("SQLite rolled the transaction back (disk full or I/O error)".to_owned())
    } else if let Err(e) = pre_commit() {
        Err(e.to_string())
    } else {
        exec_cached(conn, "COMMIT").map_err(|e| e.to_string())
    };
    crate::metrics::global().write_batch(finishes.len(), committing.elapsed());
    if let Err(msg) = &outcome {
        tracing::error!(error = %msg, "write batch failed to commit; nothing in it was saved");
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    for done in finishes {
        // A panic while applying one job's memory change must not take the
        // writer (and every later write) down with it.
        let commit_error = outcome.as_ref().err().map(String::as_str);
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (done.finish)(commit_error)))
            .is_err()
        {
            tracing::error!("applying a committed write to memory panicked");
        }
    }
}

/// Runs a parameterless statement kept prepared (these run per job).
fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// A job that never ran: its reply channel is dropped with it, so its
/// caller sees the writer's error.
fn fail_unstarted(job: Job, _msg: &str) {
    drop(job);
}

#[cfg(test)]
mod tests {
    use super::*;

    type Answer = Result<((), Box<dyn FnOnce() + Send>)>;

    fn insert(x: i64) -> impl FnOnce(&Connection) -> Answer {
        move |c: &Connection| {
            c.execute("INSERT INTO t VALUES (?1)", [x])?;
            Ok(((), Box::new(|| {}) as Box<dyn FnOnce() + Send>))
        }
    }

    fn always() -> PreCommit {
        Box::new(|| Ok(()))
    }

    /// The database file was replaced: the batch is rolled back and every
    /// job in it is answered as not saved.
    #[test]
    fn a_failed_pre_commit_check_saves_nothing() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        let (one, one_rx) = job(insert(1));
        let refuse: PreCommit = Box::new(|| Err(Error::Unavailable("file replaced".into())));
        commit_batch(&conn, vec![one], &refuse);
        let err = one_rx.recv().unwrap().unwrap_err().to_string();
        assert!(err.contains("file replaced"), "{err}");
        assert_eq!(rows(&conn), Vec::<i64>::new());
        assert!(conn.is_autocommit());
    }

    fn rows(c: &Connection) -> Vec<i64> {
        let mut q = c.prepare("SELECT x FROM t ORDER BY x").unwrap();
        let v = q.query_map([], |r| r.get(0)).unwrap();
        v.map(|r| r.unwrap()).collect()
    }

    /// SQLite rolls the whole transaction back by itself on some errors
    /// inside a statement (disk full, I/O error, out of memory). Then no
    /// job of the batch may be answered as saved, and no later job may be
    /// committed behind the batch's back (a `SAVEPOINT` outside a
    /// transaction starts one, and its `RELEASE` commits it).
    #[test]
    fn a_transaction_sqlite_rolled_back_saves_nothing_and_says_so() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        let (first, first_rx) = job(insert(1));
        let (failing, failing_rx) = job(|c: &Connection| -> Answer {
            c.execute("INSERT INTO t VALUES (2)", [])?;
            // What SQLite does on SQLITE_FULL inside a statement.
            c.execute_batch("ROLLBACK")?;
            Err(Error::Unavailable("database or disk is full".into()))
        });
        let (after, after_rx) = job(insert(3));
        commit_batch(&conn, vec![first, failing, after], &always());
        assert!(first_rx.recv().unwrap().is_err(), "job 1 was rolled back");
        assert!(failing_rx.recv().unwrap().is_err());
        assert!(
            after_rx.recv().map(|r| r.is_err()).unwrap_or(true),
            "job 3 must not be answered as saved"
        );
        assert_eq!(rows(&conn), Vec::<i64>::new(), "nothing was saved");
        assert!(conn.is_autocommit(), "no transaction left open");

        // The writer carries on with the next batch.
        let (next, next_rx) = job(insert(4));
        commit_batch(&conn, vec![next], &always());
        assert!(next_rx.recv().unwrap().is_ok());
        assert_eq!(rows(&conn), vec![4]);
    }
}
