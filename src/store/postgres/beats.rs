//! The heartbeat's connections: a fixed set shared by every heartbeat, not
//! a pool each heartbeat takes one from. tokio-postgres pipelines the
//! statements of concurrent heartbeats on one connection (one write, one
//! read for many), so the server spends its time on heartbeats rather than
//! on waking threads and sockets for each, and the database's backends
//! never wait idle between statements. The heartbeat is one statement in
//! its own implicit transaction, so sharing a connection mixes nothing.
//!
//! A connection the database closed is replaced by the next heartbeat that
//! picks its slot; until then the heartbeats on it fail as an outage (503).
//! A connection that stops answering without closing (a network path gone
//! quiet, which no statement timeout covers) is given up after the
//! operation deadline: every heartbeat waiting on it gets 503, and the
//! slot is connected afresh.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_postgres::{Client, Row, Statement};

use super::connect::{self, TimeSource, Tls};
use super::contact::Inner;
use super::sessions;
use super::transact::RETRIES;
use crate::clock::Timestamp;
use crate::config::PostgresUrl;
use crate::error::{Error, Result};
use crate::keys::AccessKey;
use crate::model::Session;
use crate::rules::Timing;

/// One shared connection with the heartbeat prepared on it.
struct Line {
    client: Client,
    statement: Statement,
}

/// The heartbeat's connections.
pub(super) struct Lines {
    config: tokio_postgres::Config,
    tls: Tls,
    url: PostgresUrl,
    sql: String,
    deadline: Duration,
    slots: Vec<Mutex<Option<Arc<Line>>>>,
    connecting: Vec<tokio::sync::Mutex<()>>,
    next: AtomicUsize,
}

impl Lines {
    /// `count` connections on `config` (made when first used), each
    /// running `sql` and given up when it has not answered in `deadline`.
    pub(super) fn new(
        config: tokio_postgres::Config,
        tls: Tls,
        url: PostgresUrl,
        sql: String,
        count: usize,
        deadline: Duration,
    ) -> Lines {
        let count = count.max(1);
        Lines {
            config,
            tls,
            url,
            sql,
            deadline,
            slots: (0..count).map(|_| Mutex::new(None)).collect(),
            connecting: (0..count).map(|_| tokio::sync::Mutex::new(())).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// Runs the heartbeat statement with `params` on the next connection.
    pub(super) async fn query_opt(
        &self,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<Row>> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let line = self.line(slot).await?;
        match tokio::time::timeout(
            self.deadline,
            line.client.query_opt(&line.statement, params),
        )
        .await
        {
            Ok(answer) => Ok(answer?),
            Err(_) => {
                self.give_up(slot, &line);
                Err(Error::Unavailable(format!(
                    "the database {} did not answer the heartbeat within {} s",
                    self.url,
                    self.deadline.as_secs()
                )))
            }
        }
    }

    /// Forgets the connection in `slot` if it is still `line` (another
    /// heartbeat may have replaced it already); it closes when the last
    /// heartbeat waiting on it lets go.
    fn give_up(&self, slot: usize, line: &Arc<Line>) {
        let mut held = self.slots[slot].lock().unwrap_or_else(|p| p.into_inner());
        if held.as_ref().is_some_and(|h| Arc::ptr_eq(h, line)) {
            *held = None;
        }
    }

    fn open_line(&self, slot: usize) -> Option<Arc<Line>> {
        self.slots[slot]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .filter(|line| !line.client.is_closed())
    }

    async fn line(&self, slot: usize) -> Result<Arc<Line>> {
        if let Some(line) = self.open_line(slot) {
            return Ok(line);
        }
        let _one_at_a_time = self.connecting[slot].lock().await;
        if let Some(line) = self.open_line(slot) {
            return Ok(line);
        }
        let client = connect::connect(&self.config, &self.tls).await?;
        let statement = client.prepare(&self.sql).await?;
        let line = Arc::new(Line { client, statement });
        *self.slots[slot].lock().unwrap_or_else(|p| p.into_inner()) = Some(line.clone());
        Ok(line)
    }
}

/// A heartbeat: the one statement on the heartbeat pool, and only when it
/// touched nothing a transaction to say why.
pub(super) async fn heartbeat(
    inner: Arc<Inner>,
    key: AccessKey,
    id: String,
    now: Timestamp,
    timing: Timing,
) -> Result<Session> {
    let hash = key.hash();
    let hash: &[u8] = &hash;
    let given = (inner.time == TimeSource::Caller).then_some(now.0);
    let timeout_ms =
        i64::try_from(timing.session_timeout_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    if inner
        .lost_contact
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        // Back from an outage: the lease floor first (see Inner::client).
        drop(inner.client(&inner.pool).await?);
    }
    let mut attempt = 0;
    let found = loop {
        let answer = if given.is_some() {
            // A caller's clock (a test's manual clock) is read before the
            // statement is sent, so a heartbeat queued behind others on a
            // shared connection could apply an earlier time after a later
            // status read: its own connection keeps that queue short. The
            // database's clock (every real server) is read by the
            // statement itself, so the shared connections cannot reorder.
            heartbeat_alone(&inner, &[&hash, &id, &timeout_ms, &given]).await
        } else {
            inner
                .beats
                .query_opt(&[&hash, &id, &timeout_ms, &given])
                .await
        };
        match answer {
            // Idempotent, so a connection the database closed is simply
            // tried again (on a new one).
            Err(Error::Postgres(e)) if e.is_closed() && attempt < RETRIES => {
                inner.note(&Error::Postgres(e));
                attempt += 1
            }
            Err(e) => {
                inner.note(&e);
                return Err(e);
            }
            Ok(found) => break found,
        }
    };
    match found {
        Some(row) => Ok(sessions::beat_from_row(&row)),
        None => with_work!(inner, now, |work| {
            sessions::explain(&work, &key, &id).await
        })?,
    }
}

/// The heartbeat statement on a pooled connection of its own.
async fn heartbeat_alone(
    inner: &Inner,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Option<tokio_postgres::Row>> {
    let client = inner.client(&inner.pool).await?;
    let stmt = client.prepare_cached(&sessions::heartbeat_sql()).await?;
    Ok(client.query_opt(&stmt, params).await?)
}
