//! The deployment under test: the real `keyseat serve` on plain HTTP,
//! and nginx in front of it terminating TLS with README.md's block, once
//! per certificate (good, wrong name, expired) on ports of its own.

use std::path::{Path, PathBuf};

use crate::common::api::Api;
use crate::common::servers::Served;
use crate::nginx::{documented_block, swapped, Nginx};
use crate::pki::{Leaf, Pki};

pub const ADMIN_TOKEN: &str = "tls-test-admin-token-0123456789abcdef";
/// The address nginx connects to keyseat from (`proxy_bind`), apart from
/// the clients' 127.0.0.1, so the audit log shows whose address it took.
pub const NGINX_ADDR: &str = "127.0.0.3";
const DOC: &str = "README.md";

pub struct Front {
    pub keyseat: Served,
    pub nginx: Nginx,
    pub pki: Pki,
    /// nginx's TLS ports: the good certificate's, the wrong name's, the
    /// expired one's.
    pub good: u16,
    pub wrong_name: u16,
    pub expired: u16,
    pub rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Front {
    /// Everything started, or None (the test skips, failing in CI) without
    /// nginx or openssl.
    pub fn start() -> Option<Front> {
        let nginx_bin = crate::host::nginx_binary()?;
        let openssl = crate::host::openssl()?;
        let dir = tempfile::tempdir().unwrap();
        // nginx's workers (nobody, as root) must read the keys and reach
        // their temp paths.
        let pki_dir = dir.path().join("pki");
        let prefix = dir.path().join("nginx");
        for d in [&pki_dir, &prefix] {
            std::fs::create_dir(d).unwrap();
        }
        open_to_all(dir.path());
        let pki = Pki::make(&openssl, &pki_dir);
        open_to_all(&pki_dir);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut keyseat = Served::new(
            &dir.path().join("keyseat.db").display().to_string(),
            crate::common::free_port(),
        )
        .env("KEYSEAT_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("KEYSEAT_TRUSTED_PROXIES", NGINX_ADDR)
        .env("KEYSEAT_HEARTBEAT_INTERVAL_SECONDS", "1")
        .env("KEYSEAT_SESSION_TIMEOUT_SECONDS", "10")
        .env("KEYSEAT_RATE_LIMITS", "off");
        rt.block_on(keyseat.start(dir.path().join("keyseat.log")));
        let (good, wrong_name, expired) = (
            crate::common::free_port(),
            crate::common::free_port(),
            crate::common::free_port(),
        );
        let conf = blocks(
            keyseat.port(),
            &[
                (good, &pki.good),
                (wrong_name, &pki.wrong_name),
                (expired, &pki.expired),
            ],
        );
        let mut nginx = Nginx::spawn(&nginx_bin, prefix, &conf);
        wait_listening(&mut nginx, &[good, wrong_name, expired]);
        Some(Front {
            keyseat,
            nginx,
            pki,
            good,
            wrong_name,
            expired,
            rt,
            _dir: dir,
        })
    }

    /// `https://127.0.0.1:port`.
    pub fn url(&self, port: u16) -> String {
        format!("https://127.0.0.1:{port}")
    }

    /// The admin API, straight to keyseat (plain HTTP).
    pub fn admin(&self) -> Api {
        Api::new(&self.keyseat.url()).with_admin(ADMIN_TOKEN)
    }

    /// A new one-seat takeover key.
    pub fn key(&self) -> String {
        let body = serde_json::json!({"max_sessions": 1, "on_conflict": "takeover"});
        self.rt
            .block_on(self.admin().create_key(body))
            .unwrap_or_else(|e| panic!("create key: {e:?}"))
            .access_key
    }

    /// The address the audit log recorded for the start of `session_id`.
    pub fn started_from(&self, session_id: &str) -> Option<String> {
        let page = self
            .rt
            .block_on(self.admin().events("type=session_started&limit=100"))
            .unwrap_or_else(|e| panic!("events: {e:?}"));
        page.events
            .into_iter()
            .find(|e| e.session_id.as_deref() == Some(session_id))
            .and_then(|e| e.client_addr)
    }

    /// Has nginx serve `leaf` on the good port from now on (the others as
    /// they were).
    pub fn swap_good_certificate(&mut self, leaf_of: impl Fn(&Pki) -> &Leaf) {
        let leaf = leaf_of(&self.pki);
        let conf = blocks(
            self.keyseat.port(),
            &[
                (self.good, leaf),
                (self.wrong_name, &self.pki.wrong_name),
                (self.expired, &self.pki.expired),
            ],
        );
        self.nginx.reload(&conf);
    }
}

/// README.md's block once per (port, certificate), proxying to keyseat on
/// `upstream` from [`NGINX_ADDR`]; nothing else is changed.
fn blocks(upstream: u16, servers: &[(u16, &Leaf)]) -> String {
    let block = documented_block(DOC, "tests/tls/ runs nginx with exactly");
    servers
        .iter()
        .map(|(port, leaf)| {
            let swaps = [
                (
                    "listen 443 ssl;".to_owned(),
                    format!("listen 127.0.0.1:{port} ssl;"),
                ),
                (
                    "/etc/ssl/keyseat/fullchain.pem;".to_owned(),
                    format!("{};", leaf.cert.display()),
                ),
                (
                    "/etc/ssl/keyseat/privkey.pem;".to_owned(),
                    format!("{};", leaf.key.display()),
                ),
                (
                    "proxy_pass http://127.0.0.1:8080;".to_owned(),
                    format!(
                        "proxy_pass http://127.0.0.1:{upstream};\n        proxy_bind {NGINX_ADDR};"
                    ),
                ),
            ];
            swapped(DOC, block.clone(), &swaps) + "\n"
        })
        .collect()
}

/// Until nginx accepts connections on every port (it binds them before
/// serving; a TLS client retrying on a refused connection is not what is
/// tested here).
fn wait_listening(nginx: &mut Nginx, ports: &[u16]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    for port in ports {
        while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
            nginx.assert_running();
            assert!(
                std::time::Instant::now() < deadline,
                "nginx never listened on {port}:\n{}",
                nginx.error_log()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Readable (and enterable) by nginx's workers, which run as nobody when
/// the tests run as root.
fn open_to_all(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut paths: Vec<PathBuf> = vec![path.to_owned()];
    if path.is_dir() {
        paths.extend(std::fs::read_dir(path).unwrap().map(|e| e.unwrap().path()));
    }
    for p in paths {
        let mode = if p.is_dir() { 0o777 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}
