//! The CLI's side of the control socket: a [`Storage`] whose calls run on
//! the running server's store. It offers what the CLI's commands use; the
//! device calls (start, heartbeat, end, status) belong to the HTTP API and
//! the server's own upkeep to the server, so those are refused.
//!
//! `now` and `actor` arguments are not sent: the server decides at its own
//! time, as the CLI (`cli`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::{socket_path, Call, Reply, WirePatch, WireSigningKey};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::keys::AccessKey;
use crate::model::{Actor, Event, Key, Session};
use crate::rules::Timing;
use crate::signing::KeyRecord;
use crate::store::{
    CreatedKey, EndOutcome, EventFilter, KeyChange, KeyPage, KeyPatch, KeySearch, NewKey,
    ResumeReport, StartOutcome, StartRequest, StateReading, Storage, SweepReport,
};

/// How long the CLI waits for one answer. Writes queue behind the server's
/// group commit, which takes milliseconds; a server that does not answer
/// in this time is stopped or stuck, and the operator is told so.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The running server's store, reached through its control socket.
pub struct RemoteStore {
    path: PathBuf,
    conn: Mutex<Conn>,
}

struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl RemoteStore {
    /// Connects to the server holding `database`, if one answers on its
    /// socket. `None` when there is no socket, or only a stale one (a
    /// server that crashed): then no server holds the file.
    pub fn connect(database: &Path) -> Option<RemoteStore> {
        let path = socket_path(database);
        let stream = match UnixStream::connect(&path) {
            Ok(s) => s,
            Err(e) => {
                use std::io::ErrorKind::{ConnectionRefused, NotFound};
                match e.kind() {
                    // No server, or the stale socket of one that crashed.
                    NotFound | ConnectionRefused => {}
                    // Something else (permissions, a path too long for a
                    // socket): the operator should know the file is used.
                    _ => tracing::warn!(
                        "cannot reach a server on {} ({e}); working on the database file directly",
                        path.display()
                    ),
                }
                return None;
            }
        };
        let setup = (|| {
            stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
            stream.set_write_timeout(Some(ANSWER_TIMEOUT))?;
            let writer = stream.try_clone()?;
            Ok::<_, std::io::Error>(Conn {
                reader: BufReader::new(stream),
                writer,
            })
        })();
        match setup {
            Ok(conn) => Some(RemoteStore {
                path,
                conn: Mutex::new(conn),
            }),
            Err(e) => {
                tracing::debug!(error = %e, "control socket unusable; using the file");
                None
            }
        }
    }

    /// The socket it talks to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn call<T: DeserializeOwned>(&self, call: &Call) -> Result<T> {
        let lost = |e: std::io::Error| {
            let why = match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!(
                    "did not answer within {} s (is it stopped or overloaded?)",
                    ANSWER_TIMEOUT.as_secs()
                ),
                _ => format!("failed: {e}"),
            };
            Error::Unavailable(format!(
                "the keyseat server on {} {why}; the change may or may not have been made",
                self.path.display()
            ))
        };
        let mut text = serde_json::to_vec(call)
            .map_err(|e| Error::Internal(format!("cannot encode a call: {e}")))?;
        text.push(b'\n');
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.writer.write_all(&text).map_err(lost)?;
        let mut line = String::new();
        let n = conn.reader.read_line(&mut line).map_err(lost)?;
        if n == 0 {
            return Err(lost(std::io::Error::other("it closed the connection")));
        }
        let reply: Reply = serde_json::from_str(&line).map_err(|e| {
            Error::Internal(format!("unreadable answer from the control socket: {e}"))
        })?;
        match reply {
            Reply::Ok(value) => serde_json::from_value(value).map_err(|e| {
                Error::Internal(format!("unexpected answer from the control socket: {e}"))
            }),
            Reply::Error(e) => Err(e.into()),
        }
    }
}

fn not_offered(what: &str) -> Error {
    Error::Internal(format!("{what} is not offered over the control socket"))
}

impl Storage for RemoteStore {
    fn check_health(&self) -> Result<()> {
        self.call::<serde_json::Value>(&Call::CheckHealth)
            .map(|_| ())
    }

    fn start_session(&self, _: &StartRequest, _: Timestamp, _: Timing) -> Result<StartOutcome> {
        Err(not_offered("start"))
    }

    fn heartbeat(&self, _: &AccessKey, _: &str, _: Timestamp, _: Timing) -> Result<Session> {
        Err(not_offered("heartbeat"))
    }

    fn end_session(&self, _: &AccessKey, _: &str, _: Timestamp, _: &Actor) -> Result<EndOutcome> {
        Err(not_offered("end"))
    }

    fn key_status(&self, _: &AccessKey, _: Timestamp) -> Result<(Key, Vec<Session>)> {
        Err(not_offered("status"))
    }

    fn create_key(&self, new: &NewKey, _now: Timestamp, _actor: &Actor) -> Result<CreatedKey> {
        #[derive(serde::Deserialize)]
        struct Created {
            key: Key,
            access_key: String,
        }
        let c: Created = self.call(&Call::create_key(new))?;
        let access_key = AccessKey::parse(&c.access_key).map_err(|e| {
            Error::Internal(format!("the server answered an unusable access key: {e}"))
        })?;
        Ok(CreatedKey {
            key: c.key,
            access_key,
        })
    }

    fn list_keys(&self, limit: u32, after: Option<&str>, _now: Timestamp) -> Result<KeyPage> {
        self.call(&Call::ListKeys {
            limit,
            after: after.map(str::to_owned),
        })
    }

    fn search_keys(
        &self,
        query: &str,
        limit: u32,
        offset: u64,
        _now: Timestamp,
    ) -> Result<KeySearch> {
        self.call(&Call::SearchKeys {
            query: query.to_owned(),
            limit,
            offset,
        })
    }

    fn get_key(&self, key_ref: &str, _now: Timestamp) -> Result<Key> {
        self.call(&Call::GetKey {
            key_ref: key_ref.to_owned(),
        })
    }

    fn update_key(
        &self,
        key_ref: &str,
        patch: &KeyPatch,
        _now: Timestamp,
        _actor: &Actor,
    ) -> Result<KeyChange> {
        self.call(&Call::UpdateKey {
            key_ref: key_ref.to_owned(),
            patch: WirePatch::from(patch),
        })
    }

    fn revoke_key(&self, key_ref: &str, _now: Timestamp, _actor: &Actor) -> Result<KeyChange> {
        self.call(&Call::RevokeKey {
            key_ref: key_ref.to_owned(),
        })
    }

    fn live_sessions(&self, key_ref: Option<&str>, _now: Timestamp) -> Result<Vec<Session>> {
        self.call(&Call::LiveSessions {
            key_ref: key_ref.map(str::to_owned),
        })
    }

    fn kick_session(
        &self,
        session_id: &str,
        _now: Timestamp,
        _actor: &Actor,
    ) -> Result<EndOutcome> {
        self.call(&Call::KickSession {
            session_id: session_id.to_owned(),
        })
    }

    fn events(&self, filter: &EventFilter) -> Result<Vec<Event>> {
        self.call(&Call::events(filter))
    }

    fn metrics_reading(&self, _: Timestamp) -> Result<StateReading> {
        Err(not_offered("the metrics reading"))
    }

    fn event_counts(&self, _: Timestamp, _: u64) -> Result<Vec<crate::report::EventCount>> {
        Err(not_offered("event counts"))
    }

    fn sharing_input(&self, since: Timestamp) -> Result<crate::report::SharingInput> {
        self.call(&Call::SharingInput { since })
    }

    fn sweep(&self, _now: Timestamp, history_days: u32, _mark_alive: bool) -> Result<SweepReport> {
        // Never marks the server alive: only its own sweep says that.
        self.call(&Call::Sweep { history_days })
    }

    fn resume_after_restart(&self, _: Timestamp, _: Timing) -> Result<ResumeReport> {
        Err(not_offered("restart recovery"))
    }

    fn mark_stopped(&self, _: Timestamp) -> Result<()> {
        Err(not_offered("marking a stop"))
    }

    fn signing_keys(&self) -> Result<Vec<KeyRecord>> {
        let keys: Vec<WireSigningKey> = self.call(&Call::SigningKeys)?;
        keys.iter().map(WireSigningKey::record).collect()
    }

    fn ensure_signing_key(&self, _now: Timestamp) -> Result<Vec<KeyRecord>> {
        let keys: Vec<WireSigningKey> = self.call(&Call::EnsureSigningKey)?;
        keys.iter().map(WireSigningKey::record).collect()
    }

    fn rotate_signing_key(&self, now: Timestamp, forget_before: Timestamp) -> Result<KeyRecord> {
        let key: WireSigningKey = self.call(&Call::RotateSigningKey {
            keep_retired_ms: now.0.saturating_sub(forget_before.0),
        })?;
        key.record()
    }
}
