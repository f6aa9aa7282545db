//! The nginx in front of the servers: the very block docs/high-availability.md
//! shows (read from the document, so the document cannot drift from what
//! is tested), nginx started on it in the foreground under a prefix of its
//! own, and its access log read back to see which server answered what.
//! tests/tls/ runs README.md's TLS block with the same pieces
//! ([`Nginx::spawn`], [`documented_block`], [`swapped`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::api::Api;
use crate::host::running_as_root;

/// The document whose nginx block the test runs.
const DOC: &str = "docs/high-availability.md";

/// nginx in the foreground on its own config and prefix; stopped on drop
/// (SIGTERM to the master, which stops its workers; SIGKILL if it hangs).
pub struct Nginx {
    child: Child,
    prefix: PathBuf,
}

impl Nginx {
    /// `bin` on the documented block, listening on 127.0.0.1:`listen` and
    /// proxying to the servers on `servers`, everything it writes under
    /// `prefix`; returns once it answers `/health` (a server's, through it).
    pub fn start(
        bin: &Path,
        prefix: PathBuf,
        listen: u16,
        servers: &[u16],
        rt: &tokio::runtime::Runtime,
    ) -> Nginx {
        let mut nginx = Nginx::spawn(bin, prefix, &tested_nginx_block(listen, servers));
        let health = Api::new(&format!("http://127.0.0.1:{listen}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            nginx.assert_running();
            if rt.block_on(health.health()).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "nginx never answered /health:\n{}",
                nginx.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    /// `bin` in the foreground on `http_block` (the inside of nginx.conf's
    /// `http {}`), everything it writes under `prefix`; not waited for.
    pub fn spawn(bin: &Path, prefix: PathBuf, http_block: &str) -> Nginx {
        let conf = prefix.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(&prefix, http_block)).unwrap();
        let child = Command::new(bin)
            .arg("-e")
            .arg(prefix.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(&prefix)
            .arg("-g")
            .arg("daemon off;")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(prefix.join("stderr.log")).unwrap())
            .spawn()
            .expect("spawn nginx");
        Nginx { child, prefix }
    }

    /// Panics with nginx's logs if it has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "nginx exited ({status}):\n{}\n{}",
                std::fs::read_to_string(self.prefix.join("stderr.log")).unwrap_or_default(),
                self.error_log()
            );
        }
    }

    /// Rewrites nginx.conf with `http_block` and has nginx reload it
    /// (SIGHUP: new workers on the new configuration, the old ones finish).
    #[allow(dead_code)] // tests/tls/ only
    pub fn reload(&mut self, http_block: &str) {
        std::fs::write(
            self.prefix.join("nginx.conf"),
            nginx_conf(&self.prefix, http_block),
        )
        .unwrap();
        signal(self.child.id(), "HUP");
    }

    /// The access log: `METHOD URI STATUS UPSTREAM_ADDR SECONDS` per
    /// request (UPSTREAM_ADDR lists every server tried, `a, b`).
    pub fn access_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.prefix.join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `upstream_addr` of the start requests logged, in order.
    pub fn start_upstreams(&self) -> Vec<String> {
        self.access_log()
            .iter()
            .filter(|l| l.starts_with("POST /api/session/start "))
            .filter_map(|l| l.split(' ').nth(3).map(str::to_owned))
            .collect()
    }

    /// How many requests nginx sent to the server on `port` and, that
    /// failing, to another (`a, b` in the log).
    pub fn moved_away_from(&self, port: u16) -> usize {
        let tried_first = format!("127.0.0.1:{port}, ");
        self.access_log()
            .iter()
            .filter(|l| l.contains(&tried_first))
            .count()
    }

    /// Whether the server on `port` answered 200 to any request logged
    /// after the first `since` lines.
    pub fn served_since(&self, since: usize, port: u16) -> bool {
        let answered = format!(" 200 127.0.0.1:{port} ");
        self.access_log()[since..]
            .iter()
            .any(|l| l.contains(&answered))
    }

    /// The status of every heartbeat logged, in order.
    pub fn heartbeat_statuses(&self) -> Vec<String> {
        self.access_log()
            .iter()
            .filter(|l| l.starts_with("POST /api/session/heartbeat "))
            .map(|l| l.split(' ').nth(2).unwrap_or("?").to_owned())
            .collect()
    }

    /// The longest `request_time` logged, in seconds.
    pub fn slowest_request(&self) -> f64 {
        self.access_log()
            .iter()
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(0.0, f64::max)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        signal(self.child.id(), "TERM");
        if !wait_exit(&mut self.child, Duration::from_secs(5)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends `signal` (a name such as `TERM`) to `pid` with kill(1).
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// Waits up to `limit` for `child` to exit; whether it did.
fn wait_exit(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The ```nginx fence of `doc` (a path in the repository) after the
/// comment containing `marker`.
pub fn documented_block(doc: &str, marker: &str) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(doc))
        .unwrap_or_else(|e| panic!("reading {doc}: {e}"));
    let marker = text
        .find(marker)
        .unwrap_or_else(|| panic!("{doc} lost the comment marking the tested nginx block"));
    let after = &text[marker..];
    let open = after
        .find("```nginx\n")
        .expect("a ```nginx block after the marker")
        + 9;
    let len = after[open..].find("\n```").expect("the nginx block's end");
    after[open..open + len].to_owned()
}

/// The documented block with the document's addresses (nginx on
/// 10.0.0.10:80, keyseat on 10.0.0.11-13:8080) swapped for local ports;
/// each must occur exactly once, so the document cannot drift from this.
fn tested_nginx_block(listen: u16, servers: &[u16]) -> String {
    let block = documented_block(DOC, "tests/high_availability/ runs nginx with exactly");
    let mut swaps = vec![(
        "listen 10.0.0.10:80;".to_owned(),
        format!("listen 127.0.0.1:{listen};"),
    )];
    for (i, port) in servers.iter().enumerate() {
        swaps.push((
            format!("server 10.0.0.{}:8080 ", 11 + i),
            format!("server 127.0.0.1:{port} "),
        ));
    }
    swapped(DOC, block, &swaps)
}

/// `block` (from `doc`) with each `(from, to)` swapped; each `from` must
/// occur exactly once, so the document cannot drift from the test.
pub fn swapped(doc: &str, mut block: String, swaps: &[(String, String)]) -> String {
    for (from, to) in swaps {
        assert_eq!(
            block.matches(from.as_str()).count(),
            1,
            "{doc}'s nginx block should contain `{from}` once:\n{block}"
        );
        block = block.replace(from.as_str(), to);
    }
    block
}

/// The whole nginx.conf: everything nginx writes is under `prefix`, and the
/// http block is the documented one plus an access log naming the upstream.
fn nginx_conf(prefix: &Path, block: &str) -> String {
    let p = prefix.display();
    // As root the master starts its workers as `user` (nginx's default,
    // nobody, needs a group that exists: Debian's is nogroup); otherwise
    // nginx ignores the directive with a warning, so it is left out.
    let user = if running_as_root() {
        "user nobody nogroup;\n"
    } else {
        ""
    };
    let block: String = block.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "{user}worker_processes 1;\n\
         pid {p}/nginx.pid;\n\
         error_log {p}/error.log info;\n\
         events {{ worker_connections 512; }}\n\
         http {{\n\
         \x20   log_format upstreams '$request_method $uri $status $upstream_addr $request_time';\n\
         \x20   access_log {p}/access.log upstreams;\n\
         \x20   client_body_temp_path {p}/client_body;\n\
         \x20   proxy_temp_path {p}/proxy;\n\
         \x20   fastcgi_temp_path {p}/fastcgi;\n\
         \x20   uwsgi_temp_path {p}/uwsgi;\n\
         \x20   scgi_temp_path {p}/scgi;\n\
         {block}}}\n"
    )
}
