//! Contact with the database: the pools every operation draws on, and what
//! a server does when it loses contact and regains it (a lease floor of
//! one timeout before anything is answered) or marks itself alive.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;

use super::{beats, connect, rows, upkeep, work, TimeSource};
use crate::clock::Timestamp;
use crate::config::PostgresUrl;
use crate::error::{Error, Result};

/// How often a server marks itself alive.
pub(super) const MARK_EVERY: Duration = Duration::from_millis(1_000);

/// What every operation's future holds.
pub(super) struct Inner {
    pub(super) pool: Pool,
    pub(super) beats: beats::Lines,
    pub(super) url: PostgresUrl,
    pub(super) instance: String,
    pub(super) time: TimeSource,
    pub(super) timeout_secs: u64,
    pub(super) last_mark: Mutex<Option<Instant>>,
    /// Whether the last upkeep could not reach the database (so an outage
    /// is logged once when it starts and once when it ends, not twice a
    /// second).
    pub(super) unreachable: AtomicBool,
    /// Whether this server failed to reach the database since it last
    /// could: devices could not be heard meanwhile, so before it answers
    /// anything again it gives every open session a full timeout (the
    /// restart rule, for an outage of the database however short).
    pub(super) lost_contact: AtomicBool,
}

impl Inner {
    pub(super) async fn client(&self, pool: &Pool) -> Result<deadpool_postgres::Object> {
        let client = pool.get().await.map_err(|e| {
            if connect::pool_lost_contact(&e) {
                self.lost_contact.store(true, Ordering::Relaxed);
            }
            connect::pool_error(e, &self.url)
        })?;
        if self.lost_contact.load(Ordering::Relaxed) {
            self.recover(&client).await?;
        }
        Ok(client)
    }

    /// Notes a failure that means the database could not be reached (as
    /// opposed to a refusal, a conflict or a busy pool).
    pub(super) fn note(&self, e: &Error) {
        if let Error::Postgres(pe) = e {
            let lost = pe.is_closed()
                || pe
                    .code()
                    .is_none_or(|c| matches!(&c.code()[..2], "08" | "57"));
            if lost {
                self.lost_contact.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Back in contact after losing it: every open session's lease floor
    /// becomes one timeout from now, before this server answers anything.
    pub(super) async fn recover(&self, client: &deadpool_postgres::Object) -> Result<()> {
        let timeout_ms = i64::try_from(self.timeout_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        client
            .execute(
                &format!(
                    "UPDATE server_state SET value = GREATEST(value, {} + $1) \
                     WHERE name = 'lease_floor'",
                    rows::DB_NOW
                ),
                &[&timeout_ms],
            )
            .await
            .inspect_err(|e| {
                if e.is_closed() {
                    tracing::debug!("the database is still away");
                }
            })?;
        if self.lost_contact.swap(false, Ordering::Relaxed) {
            tracing::info!(
                "the database {} answers again; every open session has a full timeout from now",
                self.url
            );
        }
        Ok(())
    }

    /// The lease time for an operation that decides at `given` (or at the
    /// database's clock).
    pub(super) async fn now(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        given: Timestamp,
    ) -> Result<Timestamp> {
        work::lease_time(tx, self.time, given).await
    }

    /// Marks this server alive (at most once a second unless `force`).
    pub(super) async fn mark(&self, given: Timestamp, force: bool) -> Result<bool> {
        {
            let last = self.last_mark.lock().unwrap_or_else(|p| p.into_inner());
            if !force && last.is_some_and(|t| t.elapsed() < MARK_EVERY) {
                return Ok(false);
            }
        }
        let raised = transact!(self, |tx| {
            let now = self.now(&tx, given).await?;
            upkeep::mark_alive(&tx, &self.instance, now, self.timeout_secs).await?
        })?;
        *self.last_mark.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        Ok(raised)
    }
}
