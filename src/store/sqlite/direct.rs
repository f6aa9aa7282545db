//! The CLI's store: [`Storage`] straight on the database, each call its
//! own transaction. The server wraps the same operations in
//! [`LiveStore`](crate::store::LiveStore) instead; both run the same
//! operation functions, so the CLI and the server cannot disagree.

use super::unit_of_work::UnitOfWork;
use super::{keys, reports, sessions, signing, upkeep, SqliteStore};
use crate::clock::Timestamp;
use crate::error::Result;
use crate::keys::{new_key_id, AccessKey};
use crate::model::{Actor, Event, Key, Session};
use crate::rules::Timing;
use crate::signing::KeyRecord;
use crate::store::{
    CreatedKey, EndOutcome, EventFilter, KeyChange, KeyPage, KeyPatch, KeySearch, NewKey,
    ResumeReport, StartOutcome, StartRequest, StateReading, Storage, SweepReport,
};

impl Storage for SqliteStore {
    fn check_health(&self) -> Result<()> {
        self.read(|c| {
            c.query_row("SELECT COUNT(*) FROM server_state", [], |r| {
                r.get::<_, i64>(0)
            })?;
            Ok(())
        })
    }

    fn start_session(
        &self,
        req: &StartRequest,
        now: Timestamp,
        timing: Timing,
    ) -> Result<StartOutcome> {
        self.write(|c| sessions::start(&mut UnitOfWork::on_disk(c), req, now, timing))?
    }

    fn heartbeat(
        &self,
        key: &AccessKey,
        session_id: &str,
        now: Timestamp,
        timing: Timing,
    ) -> Result<Session> {
        self.write(|c| {
            sessions::heartbeat(&mut UnitOfWork::on_disk(c), key, session_id, now, timing)
        })
    }

    fn end_session(
        &self,
        key: &AccessKey,
        session_id: &str,
        now: Timestamp,
        actor: &Actor,
    ) -> Result<EndOutcome> {
        self.write(|c| sessions::end(&mut UnitOfWork::on_disk(c), key, session_id, now, actor))
    }

    fn key_status(&self, key: &AccessKey, now: Timestamp) -> Result<(Key, Vec<Session>)> {
        self.read(|c| sessions::key_status(&UnitOfWork::on_disk(c), key, now))
    }

    fn create_key(&self, new: &NewKey, now: Timestamp, actor: &Actor) -> Result<CreatedKey> {
        let access_key = AccessKey::generate();
        let key_id = new_key_id();
        let key = self.write(|c| {
            keys::create(
                &mut UnitOfWork::on_disk(c),
                new,
                &access_key,
                &key_id,
                now,
                actor,
            )
        })?;
        Ok(CreatedKey { key, access_key })
    }

    fn list_keys(&self, limit: u32, after: Option<&str>, now: Timestamp) -> Result<KeyPage> {
        self.read(|c| keys::list(&UnitOfWork::on_disk(c), limit, after, now))
    }

    fn search_keys(
        &self,
        query: &str,
        limit: u32,
        offset: u64,
        now: Timestamp,
    ) -> Result<KeySearch> {
        self.read(|c| keys::search(&UnitOfWork::on_disk(c), query, limit, offset, now))
    }

    fn get_key(&self, key_ref: &str, now: Timestamp) -> Result<Key> {
        self.read(|c| keys::get(&UnitOfWork::on_disk(c), key_ref, now))
    }

    fn update_key(
        &self,
        key_ref: &str,
        patch: &KeyPatch,
        now: Timestamp,
        actor: &Actor,
    ) -> Result<KeyChange> {
        self.write(|c| keys::update(&mut UnitOfWork::on_disk(c), key_ref, patch, now, actor))
    }

    fn revoke_key(&self, key_ref: &str, now: Timestamp, actor: &Actor) -> Result<KeyChange> {
        self.write(|c| keys::revoke(&mut UnitOfWork::on_disk(c), key_ref, now, actor))
    }

    fn live_sessions(&self, key_ref: Option<&str>, now: Timestamp) -> Result<Vec<Session>> {
        self.read(|c| sessions::live(&UnitOfWork::on_disk(c), key_ref, now))
    }

    fn metrics_reading(&self, now: Timestamp) -> Result<StateReading> {
        self.read(|c| {
            Ok(StateReading {
                live_sessions: reports::count_live(c, now)?,
                keys_by_status: reports::keys_by_status(c, now)?,
            })
        })
    }

    fn kick_session(&self, session_id: &str, now: Timestamp, actor: &Actor) -> Result<EndOutcome> {
        self.write(|c| sessions::kick(&mut UnitOfWork::on_disk(c), session_id, now, actor))
    }

    fn events(&self, filter: &EventFilter) -> Result<Vec<Event>> {
        self.read(|c| reports::events(c, filter))
    }

    fn event_counts(
        &self,
        since: Timestamp,
        bucket_secs: u64,
    ) -> Result<Vec<crate::report::EventCount>> {
        self.read(|c| reports::event_counts(c, since, bucket_secs))
    }

    fn sharing_input(&self, since: Timestamp) -> Result<crate::report::SharingInput> {
        self.read(|c| reports::sharing_input(c, since))
    }

    fn sweep(&self, now: Timestamp, history_days: u32, mark_alive: bool) -> Result<SweepReport> {
        self.write(|c| upkeep::sweep(&mut UnitOfWork::on_disk(c), now, history_days, mark_alive))
    }

    fn resume_after_restart(&self, ready_at: Timestamp, timing: Timing) -> Result<ResumeReport> {
        self.write(|c| upkeep::resume(&mut UnitOfWork::on_disk(c), ready_at, timing))
    }

    fn mark_stopped(&self, now: Timestamp) -> Result<()> {
        self.write(|c| upkeep::mark_alive(&UnitOfWork::on_disk(c), now))?;
        self.read(|c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
    }

    fn signing_keys(&self) -> Result<Vec<KeyRecord>> {
        self.read(|c| signing::all(&UnitOfWork::on_disk(c)))
    }

    fn ensure_signing_key(&self, now: Timestamp) -> Result<Vec<KeyRecord>> {
        self.write(|c| signing::ensure(&UnitOfWork::on_disk(c), now))
    }

    fn rotate_signing_key(&self, now: Timestamp, forget_before: Timestamp) -> Result<KeyRecord> {
        self.write(|c| signing::rotate(&UnitOfWork::on_disk(c), now, forget_before))
    }
}
