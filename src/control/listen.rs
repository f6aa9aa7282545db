//! The server's side of the control socket: binds `<database>.sock`
//! privately, answers each call with its own store (on the blocking pool,
//! never on an async worker), and removes the socket when it stops.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::{socket_path, Call, Reply, WireError, MAX_CALL_BYTES};
use crate::clock::{Clock, Timestamp};
use crate::error::{Error, Result};
use crate::model::{Actor, EndReason};
use crate::seats::{self, Via};
use crate::store::{blocking, Storage};

/// How long calls in progress get to finish once the server stops.
const DRAIN: Duration = Duration::from_secs(5);

/// A listening control socket.
pub struct ControlSocket {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl ControlSocket {
    /// Listens on the socket of `database` until `stop`. `None` (with a
    /// warning saying so) when it cannot.
    pub async fn start(
        database: &Path,
        store: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        stop: watch::Receiver<bool>,
    ) -> Option<ControlSocket> {
        // The server holds the database's lock (crate::instance_lock), so
        // no other server can be serving it: whatever is at the socket's
        // path (a crashed server's socket, or something planted) is
        // replaced.
        let path = socket_path(database);
        let listener = match bind_private(&path) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(
                    socket = %path.display(),
                    error = %e,
                    "cannot create the control socket; CLI commands will read the file \
                     directly and may see heartbeat times up to heartbeat_persist_seconds old"
                );
                return None;
            }
        };
        tracing::info!(socket = %path.display(), "CLI commands on this database go through the server");
        let task = tokio::spawn(accept_loop(listener, store, clock, stop, path.clone()));
        Some(ControlSocket { path, task })
    }

    /// Waits until the socket is closed and removed (after the stop signal)
    /// and the calls in progress are answered.
    pub async fn stopped(self) {
        if self.task.await.is_err() {
            // The loop panicked; make sure no socket is left behind.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds the socket inside a fresh directory only the owner may enter,
/// restricts it to the owner, then renames it into place (replacing a
/// stale socket left by a crash): at no moment can anyone else connect.
fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    // Beside the socket and no longer than its path (a socket path is
    // limited to about 107 bytes): `<dir>/.ks<pid>/s`.
    let parent = path.parent().unwrap_or(Path::new("."));
    let dir = parent.join(format!(".ks{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let inner = dir.join("s");
    let bound = (|| {
        let listener = UnixListener::bind(&inner)?;
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&inner, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&inner);
    let _ = std::fs::remove_dir(&dir);
    bound
}

async fn accept_loop(
    listener: UnixListener,
    store: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    mut stop: watch::Receiver<bool>,
    path: PathBuf,
) {
    let mut conns = JoinSet::new();
    let conn_stop = stop.clone();
    loop {
        tokio::select! {
            _ = until_stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(serve_conn(stream, store.clone(), clock.clone(), conn_stop.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    // New CLI commands now find no socket and use the file; the ones in
    // progress get their answer before the store is closed.
    drop(listener);
    let _ = std::fs::remove_file(&path);
    let drained =
        tokio::time::timeout(DRAIN, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        conns.abort_all();
    }
}

/// Resolves once the server stops (the watch's guard is not held across
/// an await, so the futures stay `Send`).
async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Answers calls on one connection until the client closes it or the
/// server stops (a call already read is answered first).
async fn serve_conn(
    stream: UnixStream,
    store: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    mut stop: watch::Receiver<bool>,
) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = String::new();
        let mut limited = (&mut reader).take(MAX_CALL_BYTES);
        let got = tokio::select! {
            _ = until_stopped(&mut stop) => return,
            got = limited.read_line(&mut line) => got,
        };
        let reply = match got {
            Ok(0) => return,
            Ok(_) if !line.ends_with('\n') => {
                // Over the limit (or cut off): answer, then drop the
                // connection, whose rest cannot be framed.
                let e = Error::InvalidRequest(format!(
                    "control socket: a call must be one line of at most {MAX_CALL_BYTES} bytes"
                ));
                let _ = send(&mut write, &Reply::Error(WireError::from(&e))).await;
                return;
            }
            Ok(_) => answer(&line, store.clone(), clock.clone()).await,
            Err(e) => {
                let e = Error::InvalidRequest(format!("control socket: unreadable call: {e}"));
                let _ = send(&mut write, &Reply::Error(WireError::from(&e))).await;
                return;
            }
        };
        if send(&mut write, &reply).await.is_err() {
            return;
        }
    }
}

async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) -> std::io::Result<()> {
    let mut text = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    text.push(b'\n');
    write.write_all(&text).await
}

async fn answer(line: &str, store: Arc<dyn Storage>, clock: Arc<dyn Clock>) -> Reply {
    let call: Call = match serde_json::from_str(line) {
        Ok(c) => c,
        Err(e) => {
            let e = Error::InvalidRequest(format!("control socket: not a call: {e}"));
            return Reply::Error(WireError::from(&e));
        }
    };
    let name = call.name();
    match blocking(move || dispatch(store.as_ref(), clock.as_ref(), call)).await {
        Ok(value) => {
            tracing::debug!(call = name, "control socket call answered");
            Reply::Ok(value)
        }
        Err(e) => {
            if !matches!(
                e,
                Error::InvalidRequest(_)
                    | Error::KeyNotFound(_)
                    | Error::AdminSessionNotFound(_)
                    | Error::Conflict(_)
            ) {
                tracing::warn!(call = name, error = %e, "control socket call failed");
            }
            Reply::Error(WireError::from(&e))
        }
    }
}

/// Runs one call on the server's store, at the server's time, as the CLI:
/// exactly what the admin API's handlers do for the same change.
fn dispatch(store: &dyn Storage, clock: &dyn Clock, call: Call) -> Result<Value> {
    let cli = Actor::cli();
    let now = clock.now();
    Ok(match call {
        Call::CheckHealth => {
            store.check_health()?;
            Value::Null
        }
        Call::CreateKey {
            label,
            max_sessions,
            on_conflict,
            expires_at,
            max_borrow_hours,
        } => {
            let new = crate::store::NewKey {
                label,
                max_sessions,
                on_conflict,
                expires_at,
                max_borrow_hours,
            };
            let created = store.create_key(&new, now, &cli)?;
            seats::record_created(&created, Via::Cli);
            json!({
                "key": value(&created.key)?,
                "access_key": created.access_key.expose_secret(),
            })
        }
        Call::ListKeys { limit, after } => {
            value(&store.list_keys(limit, after.as_deref(), now)?)?
        }
        Call::SearchKeys {
            query,
            limit,
            offset,
        } => value(&store.search_keys(&query, limit, offset, now)?)?,
        Call::GetKey { key_ref } => value(&store.get_key(&key_ref, now)?)?,
        Call::UpdateKey { key_ref, patch } => {
            let patch = patch.into();
            let change = store.update_key(&key_ref, &patch, now, &cli)?;
            seats::record_key_change(&change, seats::change_verb(&patch), Via::Cli);
            value(&change)?
        }
        Call::RevokeKey { key_ref } => {
            let change = store.revoke_key(&key_ref, now, &cli)?;
            seats::record_key_change(&change, "revoked", Via::Cli);
            value(&change)?
        }
        Call::LiveSessions { key_ref } => value(&store.live_sessions(key_ref.as_deref(), now)?)?,
        Call::KickSession { session_id } => {
            let outcome = store.kick_session(&session_id, now, &cli)?;
            seats::record_end(&outcome, EndReason::Revoked);
            value(&outcome)?
        }
        Call::Events {
            key_id,
            event_type,
            since,
            before_id,
            limit,
        } => value(&store.events(&crate::store::EventFilter {
            key_id,
            event_type,
            since,
            before_id,
            limit,
        })?)?,
        Call::SharingInput { since } => value(&store.sharing_input(since)?)?,
        Call::Sweep { history_days } => {
            let report = store.sweep(now, history_days, false)?;
            crate::sweep::log_report(&report);
            value(&report)?
        }
        Call::SigningKeys => public_keys(&store.signing_keys()?)?,
        Call::EnsureSigningKey => public_keys(&store.ensure_signing_key(now)?)?,
        Call::RotateSigningKey { keep_retired_ms } => {
            let key =
                store.rotate_signing_key(now, Timestamp(now.0.saturating_sub(keep_retired_ms)))?;
            tracing::info!(kid = %key.kid, "signing key rotated (from the command line)");
            value(&super::WireSigningKey::from(&key))?
        }
    })
}

/// Signing keys' public halves.
fn public_keys(keys: &[crate::signing::KeyRecord]) -> Result<Value> {
    value(
        &keys
            .iter()
            .map(super::WireSigningKey::from)
            .collect::<Vec<_>>(),
    )
}

fn value<T: serde::Serialize>(v: &T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| Error::Internal(format!("cannot encode an answer: {e}")))
}
