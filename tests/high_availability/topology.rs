//! The topology under test: three `keyseat serve` processes on one
//! database behind nginx, started warm (every pool has connected) so that
//! the scenarios time servers that have been running, and torn down by
//! drop whatever the test did to them.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::common::api::{Answered, Api};
use crate::common::servers::Served;
use crate::nginx::Nginx;
use crate::{common, host, ADMIN_TOKEN, INTERVAL, TIMEOUT_SECS};

/// One `keyseat serve` on a fixed port, restartable there (its log goes
/// on in the same file); killed on drop.
pub struct Keyseat {
    served: Served,
    log: PathBuf,
}

impl Keyseat {
    /// The settings docs/high-availability.md describes for the test:
    /// short intervals, rate limits on, nginx trusted to name the client.
    fn new(db: &str, log: PathBuf) -> Keyseat {
        let served = Served::new(db, common::free_port())
            .env("KEYSEAT_ADMIN_TOKEN", ADMIN_TOKEN)
            .env(
                "KEYSEAT_HEARTBEAT_INTERVAL_SECONDS",
                INTERVAL.as_secs().to_string(),
            )
            .env("KEYSEAT_SESSION_TIMEOUT_SECONDS", TIMEOUT_SECS.to_string())
            .env("KEYSEAT_SWEEP_INTERVAL_SECONDS", "1")
            .env("KEYSEAT_TRUSTED_PROXIES", "127.0.0.1")
            .env("KEYSEAT_RATE_LIMITS", "on")
            .env("KEYSEAT_LOG", "info");
        Keyseat { served, log }
    }

    pub fn port(&self) -> u16 {
        self.served.port()
    }

    fn url(&self) -> String {
        self.served.url()
    }

    /// Starts it (again) on its port and waits until it is healthy.
    pub fn spawn(&mut self, rt: &tokio::runtime::Runtime) {
        rt.block_on(self.served.start(self.log.clone()));
    }

    /// SIGKILL: no clean stop, no last sweep.
    pub fn sigkill(&mut self) {
        let _ = self.served.sigkill();
    }
}

/// Three servers on one fresh database behind nginx.
pub struct Topology {
    pub rt: tokio::runtime::Runtime,
    db: String,
    pub servers: Vec<Keyseat>,
    pub nginx: Nginx,
    /// nginx's URL: the only one devices use.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Topology {
    /// None (the test skips) without PostgreSQL or nginx.
    pub fn start() -> Option<Topology> {
        let nginx = host::nginx_binary()?;
        let rt = runtime();
        let db = rt.block_on(common::postgres::fresh_database())?;
        Some(Topology::on(nginx, rt, db))
    }

    /// The servers on the database at `db`, nginx from `nginx_bin`.
    pub fn on(nginx_bin: PathBuf, rt: tokio::runtime::Runtime, db: String) -> Topology {
        let dir = tempfile::Builder::new().prefix("ks-ha-").tempdir().unwrap();
        // nginx's workers (nobody, as root) must reach their temp paths.
        set_mode(dir.path(), 0o755);

        let mut servers: Vec<Keyseat> = (0..3)
            .map(|i| Keyseat::new(&db, dir.path().join(format!("keyseat-{i}.log"))))
            .collect();
        for server in &mut servers {
            server.spawn(&rt);
        }
        warm_up(&rt, &servers);

        let listen = common::free_port();
        let ports: Vec<u16> = servers.iter().map(Keyseat::port).collect();
        let prefix = dir.path().join("nginx");
        std::fs::create_dir(&prefix).unwrap();
        set_mode(&prefix, 0o755);
        let nginx = Nginx::start(&nginx_bin, prefix, listen, &ports, &rt);
        Topology {
            rt,
            db,
            servers,
            nginx,
            url: format!("http://127.0.0.1:{listen}"),
            _dir: dir,
        }
    }

    /// The admin and session API through nginx.
    pub fn api(&self) -> Api {
        Api::new(&self.url).with_admin(ADMIN_TOKEN)
    }

    /// Creates a key through nginx: (access key, key id).
    pub fn create_key(&self, body: Value) -> (String, String) {
        let created = self
            .rt
            .block_on(self.api().create_key(body))
            .answer("create key");
        (created.access_key, created.key.key_id)
    }

    /// The key's live sessions, asked through nginx.
    pub fn live(&self, key: &str) -> Vec<String> {
        let status = self.rt.block_on(self.api().status(key)).answer("status");
        status.sessions.into_iter().map(|s| s.session_id).collect()
    }

    /// `upstream_addr` of the start requests nginx logged, in order.
    pub fn start_upstreams(&self) -> Vec<String> {
        self.nginx.start_upstreams()
    }

    /// Asserts no server panicked or logged the database password.
    pub fn check_logs(&self) {
        let password = database_password(&self.db).expect("the test database's URL has a password");
        for server in &self.servers {
            let log = server.served.log_text();
            assert!(!log.contains("panicked"), "a server panicked:\n{log}");
            assert!(
                !log.contains(&password),
                "{} shows the database password",
                server.log.display()
            );
        }
    }
}

/// The password in a `postgres://USER:PASSWORD@HOST/...` URL.
pub fn database_password(url: &str) -> Option<String> {
    url.split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(user_info, _)| user_info.split_once(':'))
        .map(|(_, pw)| pw.to_owned())
}

/// One request per pool on every server (a status and a heartbeat of an
/// unknown session), so that the scenarios measure servers that have been
/// running, not each pool's first connection to PostgreSQL (about 0.1 s
/// in a debug build, several times that on a loaded machine).
fn warm_up(rt: &tokio::runtime::Runtime, servers: &[Keyseat]) {
    let first = Api::new(&servers[0].url()).with_admin(ADMIN_TOKEN);
    let key = rt
        .block_on(first.create_key(json!({"label": "warm-up"})))
        .answer("create the warm-up key")
        .access_key;
    for server in servers {
        let api = Api::new(&server.url());
        rt.block_on(api.status(&key)).answer("warm-up status");
        rt.block_on(api.heartbeat(&key, "warm-up-unknown-session"))
            .refused(404, "session_not_found");
    }
}

/// The tests are plain `#[test]`s driving blocking clients; this runtime
/// runs the async API calls and the servers' health checks.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
