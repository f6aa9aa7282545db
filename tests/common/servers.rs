//! `keyseat serve` as a child process: the real binary on a port of
//! 127.0.0.1 that the test chose, so that it can be killed like a crash
//! and started again where its clients (or a proxy) expect it.
//!
//! [`serve_command`] and [`wait_healthy`] are the pieces; [`Served`] puts
//! them together for tests that run several servers, restart them, and
//! read their logs afterwards. The process is SIGKILLed on drop, so a
//! failing test leaves no server behind.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Child;

/// A port free on 127.0.0.1 right now, for a server that must be started
/// on a known port (to restart it on the same one).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `keyseat serve` on `db` at `127.0.0.1:port` (the real binary, via
/// [`keyseat_command`](super::keyseat_command)), with standard input and output closed; callers add
/// their settings (`KEYSEAT_*`) and where its log goes.
pub fn serve_command(db: impl AsRef<std::ffi::OsStr>, port: u16) -> std::process::Command {
    let mut cmd = super::keyseat_command();
    cmd.arg("serve")
        .arg("--database")
        .arg(db)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    cmd
}

/// Waits until the server at `url` answers `/health` with 200; panics with
/// its log if it exits first or is not ready within a minute.
pub async fn wait_healthy(child: &mut std::process::Child, url: &str, log: &std::path::Path) {
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "server exited ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server never became ready"
        );
        if let Ok(resp) = client.get(format!("{url}/health")).send().await {
            if resp.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// One `keyseat serve` on a fixed port with the settings it was given,
/// started and restarted by [`Served::start`]; SIGKILLed on drop.
pub struct Served {
    db: String,
    port: u16,
    /// The `KEYSEAT_*` settings (and anything else, such as libfaketime's
    /// variables) every run of it gets.
    env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
}

impl Served {
    /// Not running yet: `keyseat serve` on `db` at 127.0.0.1:`port`.
    pub fn new(db: &str, port: u16) -> Served {
        Served {
            db: db.to_owned(),
            port,
            env: Vec::new(),
            child: None,
            log: PathBuf::new(),
        }
    }

    /// An environment variable of every run.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Served {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Spawns it on its port, standard error appended to `log`, and waits
    /// until `/health` answers 200 (panicking with the log if it exits
    /// first, see [`wait_healthy`]).
    pub async fn start(&mut self, log: PathBuf) {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let mut cmd = serve_command(&self.db, self.port);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v))).stderr(file);
        let mut child = cmd.spawn().expect("spawn keyseat serve");
        self.log = log;
        wait_healthy(&mut child, &self.url(), &self.log).await;
        self.child = Some(child);
    }

    /// SIGKILL, as a crash: no clean stop, no last sweep. Ok when it was
    /// not running; the error of kill(2) or of the wait otherwise.
    pub fn sigkill(&mut self) -> std::io::Result<()> {
        match self.child.take() {
            Some(mut child) => {
                let killed = child.kill();
                child.wait()?;
                killed
            }
            None => Ok(()),
        }
    }

    /// The log of the latest run.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// What the latest run logged so far (empty if nothing yet).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.sigkill();
    }
}
