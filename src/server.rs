//! Starting and stopping the server: the one seam (`Server::start`) that
//! `keyseat serve` and the tests share.
//!
//! Order matters. The listener serves from the first moment (answering 503
//! while the database opens, never a wrong answer), then the database is
//! opened and migrated, sessions live at the last stop get their full
//! timeout, the server is marked ready, and the sweep starts. On stop:
//! in-flight requests finish, the sweep stops, the stop time is recorded and
//! the WAL is checkpointed.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::Database;
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::http::{app, listener, AppState};
use crate::instance_lock::InstanceLock;
use crate::store::{blocking, LiveStore, OpenMode, PostgresStore, Storage};
use crate::sweep;

/// How long in-flight requests get to finish after a stop signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A running server.
pub struct Server {
    addr: SocketAddr,
    store: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    stop: watch::Sender<bool>,
    http: JoinHandle<()>,
    metrics_http: Option<JoinHandle<()>>,
    sweep: JoinHandle<()>,
    upkeep: JoinHandle<()>,
    signing_refresh: JoinHandle<()>,
    /// Held heartbeats, answered at once when the server stops.
    held: Arc<crate::held::Held>,
    /// One server per database file; released when the server is dropped
    /// (after its stop) or the process dies. None on PostgreSQL, which any
    /// number of servers share.
    _lock: Option<InstanceLock>,
    /// The CLI's way in (see [`crate::control`]).
    #[cfg(unix)]
    control: Option<crate::control::ControlSocket>,
    /// Stops the control socket, after the HTTP drain: until the store is
    /// flushed the CLI must keep going through the server.
    control_stop: watch::Sender<bool>,
}

/// What picks the keys that sign answers.
#[derive(Clone)]
struct SigningSettings {
    file: Option<std::path::PathBuf>,
    overlap_days: u32,
}

impl SigningSettings {
    fn of(settings: &Settings) -> SigningSettings {
        SigningSettings {
            file: settings.signing_key_file.clone(),
            overlap_days: settings.signing_key_overlap_days,
        }
    }
}

/// The keys that sign answers: the file's when `signing_key_file` is set,
/// else the database's (with `make`, a first one made if there is none).
fn signing_keys(
    store: &dyn Storage,
    settings: &SigningSettings,
    now: crate::clock::Timestamp,
    make: bool,
) -> Result<crate::signing::KeySet> {
    let records = match &settings.file {
        Some(path) => vec![crate::signing::KeyRecord::from_pem_file(path)?],
        None if make => store.ensure_signing_key(now)?,
        None => store.signing_keys()?,
    };
    crate::signing::KeySet::new(&records, now, settings.overlap_days)
        .ok_or_else(|| Error::Internal("no signing key could be made".into()))
}

/// How often a server reads the signing keys again: a rotation (by the
/// CLI, or on PostgreSQL by any server) is in use everywhere within this.
const SIGNING_REFRESH: Duration = Duration::from_secs(5);

/// Reads the signing keys again every [`SIGNING_REFRESH`] until stopped.
async fn refresh_signing_keys(
    store: Arc<dyn Storage>,
    state: AppState,
    settings: SigningSettings,
    stop: watch::Receiver<bool>,
) {
    if settings.file.is_some() {
        return;
    }
    sweep::every(SIGNING_REFRESH, stop, || {
        let (store, state, settings) = (store.clone(), state.clone(), settings.clone());
        async move {
            let now = state.now();
            match blocking(move || signing_keys(&*store, &settings, now, false)).await {
                Ok(keys) => state.signer().replace(keys),
                Err(e) => tracing::warn!(error = %e, "could not read the signing keys; keeping the ones in use"),
            }
        }
    })
    .await;
}

/// How often the store's upkeep runs: a CLI change reaches the running
/// server within this (plus the write's own time).
const UPKEEP_INTERVAL: Duration = Duration::from_millis(500);

/// Runs the store's upkeep (heartbeat persistence, reconciling other
/// processes' writes, checkpoints) until stopped; errors are logged.
async fn maintain(store: Arc<dyn Storage>, stop: watch::Receiver<bool>) {
    sweep::every(UPKEEP_INTERVAL, stop, || {
        let s = store.clone();
        async move {
            if let Err(e) = blocking(move || s.maintain()).await {
                tracing::error!(error = %e, "store upkeep failed; retrying");
            }
        }
    })
    .await;
}

impl Server {
    /// Serves on `listener` and returns once the database is ready.
    pub async fn start(
        settings: Settings,
        listener: TcpListener,
        clock: Arc<dyn Clock>,
    ) -> Result<Server> {
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Internal(format!("listener has no address: {e}")))?;
        // Before anything touches the database: a second server on the
        // same file is refused here.
        let lock = match settings.database.sqlite_path() {
            Some(path) => {
                crate::instance_lock::check_not_lost(path)?;
                Some(InstanceLock::acquire(path, addr)?)
            }
            None => None,
        };
        let state = AppState::new(&settings, clock.clone());
        let (stop, stop_rx) = watch::channel(false);

        let (max_connections, lowered) =
            listener::effective_max_connections(settings.max_connections);
        if let Some(why) = lowered {
            tracing::warn!("{why}");
        }
        let limits = listener::ConnLimits {
            max_connections,
            max_per_address: settings.max_connections_per_address,
            trusted: settings.trusted_proxies.clone(),
            header_timeout: Duration::from_secs(settings.client_timeout_seconds),
            drain: DRAIN_TIMEOUT,
        };
        let metrics_http = match settings.metrics {
            crate::config::MetricsMode::Separate(metrics_addr) => {
                let metrics_listener = TcpListener::bind(metrics_addr).await.map_err(|e| {
                    Error::Config(format!("cannot listen for metrics on {metrics_addr}: {e}"))
                })?;
                let mut metrics_stop = stop_rx.clone();
                tracing::info!("metrics on http://{metrics_addr}/metrics");
                Some(tokio::spawn(listener::serve(
                    metrics_listener,
                    crate::http::metrics::router_alone(state.clone()),
                    listener::ConnLimits {
                        max_connections: 64,
                        max_per_address: 64,
                        trusted: crate::proxy::TrustedProxies::default(),
                        header_timeout: Duration::from_secs(settings.client_timeout_seconds),
                        drain: Duration::from_secs(1),
                    },
                    async move {
                        let _ = metrics_stop.wait_for(|stopped| *stopped).await;
                    },
                )))
            }
            _ => None,
        };
        let mut http_stop = stop_rx.clone();
        let router = app(state.clone());
        let http = tokio::spawn(listener::serve(listener, router, limits, async move {
            let _ = http_stop.wait_for(|stopped| *stopped).await;
        }));

        let database = settings.database.clone();
        let opts = settings.live_options();
        let pg_opts = settings.postgres_options(clock.decides_leases());
        let store_clock = clock.clone();
        let signing_settings = SigningSettings::of(&settings);
        let opened = blocking(move || {
            let ready_at = store_clock.now();
            let (store, report): (Arc<dyn Storage>, _) = match &database {
                Database::Sqlite(path) => {
                    let (store, report) =
                        LiveStore::open(path, opts, store_clock.clone(), ready_at)?;
                    (Arc::new(store), report)
                }
                Database::Postgres(url) => {
                    let store = open_postgres_when_it_answers(url, pg_opts)?;
                    let report = store.resume_after_restart(ready_at, opts.timing)?;
                    (Arc::new(store), report)
                }
            };
            let first_run = store.list_keys(1, None, ready_at)?.keys.is_empty();
            let signing = signing_keys(&*store, &signing_settings, ready_at, true)?;
            Ok((store, report, first_run, signing))
        })
        .await;
        let (store, report, first_run, signing) = match opened {
            Ok(v) => v,
            Err(e) => {
                let _ = stop.send(true);
                let _ = http.await;
                return Err(e);
            }
        };
        if report.resumed > 0 {
            tracing::info!(
                sessions = report.resumed,
                "resumed session(s) live at the last stop; each has a full timeout from now"
            );
        }
        state.signer().replace(signing);
        state.set_ready(store.clone());

        let sweep = tokio::spawn(sweep::run(
            store.clone(),
            clock.clone(),
            Duration::from_secs(settings.sweep_interval_seconds),
            settings.history_days,
            stop_rx.clone(),
        ));
        let (control_stop, _control_rx) = watch::channel(false);
        // On PostgreSQL the CLI works on the database itself, as every
        // server does: there is no one server for it to go through.
        #[cfg(unix)]
        let control = match settings.database.sqlite_path() {
            Some(path) => {
                crate::control::ControlSocket::start(
                    path,
                    store.clone(),
                    clock.clone(),
                    _control_rx,
                )
                .await
            }
            None => None,
        };
        let upkeep = tokio::spawn(maintain(store.clone(), stop_rx.clone()));
        let signing_refresh = tokio::spawn(refresh_signing_keys(
            store.clone(),
            state.clone(),
            SigningSettings::of(&settings),
            stop_rx,
        ));

        tracing::info!(
            "keyseat {} listening on http://{addr} (database {})",
            env!("CARGO_PKG_VERSION"),
            settings.database
        );
        tracing::info!("{}", admin_line(addr, settings.admin_token.is_some()));
        if first_run {
            tracing::info!(
                "no access keys yet; create the first one with: {} --database {} keys create --label \"first customer\"",
                how_it_was_started(),
                shell_word(&settings.database.to_string())
            );
        }
        Ok(Server {
            held: state.held().clone(),
            addr,
            store,
            clock,
            stop,
            http,
            metrics_http,
            sweep,
            upkeep,
            signing_refresh,
            _lock: lock,
            #[cfg(unix)]
            control,
            control_stop,
        })
    }

    /// The address it listens on (the real port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its held heartbeats (for tests and the metrics).
    pub fn held(&self) -> Arc<crate::held::Held> {
        self.held.clone()
    }

    /// The storage it serves from.
    pub fn store(&self) -> Arc<dyn Storage> {
        self.store.clone()
    }

    /// Serves until `signal` completes, then stops cleanly.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<()> {
        signal.await;
        tracing::info!("stopping: finishing in-flight requests");
        self.stop().await
    }

    /// Stops: in-flight requests finish (bounded), the sweep stops, the
    /// stop is recorded and the database flushed.
    pub async fn stop(self) -> Result<()> {
        // Held heartbeats first: their clients heartbeat again elsewhere
        // instead of waiting out the drain.
        self.held.stop();
        let _ = self.stop.send(true);
        // The listener closes what is still open after DRAIN_TIMEOUT; the
        // extra second only guards against a listener that never returns.
        let mut http = self.http;
        match tokio::time::timeout(DRAIN_TIMEOUT + Duration::from_secs(1), &mut http).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "HTTP server task failed"),
            Err(_) => {
                tracing::warn!("the HTTP listener did not stop; aborting it");
                http.abort();
            }
        }
        if let Some(m) = self.metrics_http {
            let _ = tokio::time::timeout(Duration::from_secs(2), m).await;
        }
        let _ = self.sweep.await;
        let _ = self.upkeep.await;
        let _ = self.signing_refresh.await;
        let _ = self.control_stop.send(true);
        #[cfg(unix)]
        if let Some(control) = self.control {
            control.stopped().await;
        }
        let store = self.store;
        let now = self.clock.now();
        blocking(move || store.mark_stopped(now)).await?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Whether the admin API and the dashboard are on, and where, said once at
/// start-up: an operator who has not read docs/dashboard.md learns from the
/// log how to turn them on, and one who has sees where to go.
fn admin_line(addr: SocketAddr, on: bool) -> String {
    if on {
        format!(
            "admin API on http://{addr}/api/admin/ and dashboard on http://{addr}/admin \
             (sign in with the admin token)"
        )
    } else {
        format!(
            "admin API and dashboard off (no admin_token is set); to turn them on: \
             KEYSEAT_ADMIN_TOKEN=\"$(openssl rand -hex 32)\" {} serve, then open \
             http://{addr}/admin",
            how_it_was_started()
        )
    }
}

/// The command that runs this keyseat the way it was started, for hints:
/// `cargo run --release --` under cargo (which sets CARGO_MANIFEST_DIR for
/// what it runs), the path it was started by when that was a path, else
/// `keyseat` (found on PATH).
fn how_it_was_started() -> String {
    if std::env::var_os("CARGO_MANIFEST_DIR").is_some() {
        return "cargo run --release --".into();
    }
    match std::env::args().next() {
        Some(arg0) if arg0.contains('/') => arg0,
        _ => "keyseat".into(),
    }
}

/// Opens the PostgreSQL database, waiting for it while it does not
/// answer: a server started before its database (a machine booting, the
/// database restarting) answers 503 until it is there rather than exiting.
/// Any other failure (a wrong password, a bad URL) stops start-up at once.
fn open_postgres_when_it_answers(
    url: &crate::config::PostgresUrl,
    opts: crate::store::PostgresOptions,
) -> Result<PostgresStore> {
    let mut waited = Duration::ZERO;
    loop {
        match PostgresStore::open(url, OpenMode::CreateAndMigrate, opts) {
            Err(e) if e.is_transient() => {
                if waited.as_secs() % 30 == 0 {
                    tracing::warn!(error = %e, "waiting for the database; answering 503 meanwhile");
                }
                std::thread::sleep(Duration::from_secs(1));
                waited += Duration::from_secs(1);
            }
            other => return other,
        }
    }
}

/// A word as a shell reads it: quoted when it holds anything but the
/// characters of plain paths.
fn shell_word(word: &str) -> String {
    if word
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:,=@".contains(&b))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
