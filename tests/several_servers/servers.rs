//! The servers: `keyseat serve` processes on one database with the
//! shortest timings the config allows, each on a fixed port so it can be
//! SIGKILLed and started again there, each run logging to a file of its
//! own so a failure can show what every run said.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::api::Api;
use crate::common::servers::Served;
use crate::{common, ADMIN_TOKEN, TIMEOUT_SECS};

/// One `keyseat serve` on a fixed port (so it can be restarted on it).
pub struct Srv {
    pub name: String,
    dir: PathBuf,
    runs: usize,
    served: Served,
    /// Its API, with the admin token and a 10 s deadline per request.
    pub api: Api,
}

impl Srv {
    /// Starts it and waits until `/health` answers 200.
    pub async fn start(db: &str, dir: &Path, name: &str, env: &[(&str, &str)]) -> Srv {
        Self::start_with_timeout(db, dir, name, env, TIMEOUT_SECS).await
    }

    /// [`Srv::start`] with a session timeout of `timeout_secs`; `env` is
    /// extra environment (libfaketime).
    pub async fn start_with_timeout(
        db: &str,
        dir: &Path,
        name: &str,
        env: &[(&str, &str)],
        timeout_secs: u64,
    ) -> Srv {
        let mut served = Served::new(db, common::free_port())
            .env("KEYSEAT_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("KEYSEAT_RATE_LIMITS", "off")
            .env("KEYSEAT_HEARTBEAT_INTERVAL_SECONDS", "1")
            .env("KEYSEAT_SESSION_TIMEOUT_SECONDS", timeout_secs.to_string())
            .env("KEYSEAT_SWEEP_INTERVAL_SECONDS", "1")
            .env("KEYSEAT_LOG", "warn");
        for (k, v) in env {
            served = served.env(*k, *v);
        }
        let api = Api::new(&served.url())
            .with_admin(ADMIN_TOKEN)
            .with_timeout(Duration::from_secs(10));
        let mut s = Srv {
            name: name.to_owned(),
            dir: dir.to_owned(),
            runs: 0,
            served,
            api,
        };
        s.run().await;
        s
    }

    pub fn url(&self) -> String {
        self.served.url()
    }

    /// Starts the process (again) on its port, logging to a new file, and
    /// waits until `/health` answers 200.
    pub async fn run(&mut self) {
        self.runs += 1;
        let log = self.log_of_run(self.runs);
        self.served.start(log).await;
    }

    /// SIGKILL, as a crash; fails if it had panicked.
    pub fn kill(&mut self) {
        self.served.sigkill().unwrap();
        self.assert_no_panic();
    }

    fn assert_no_panic(&self) {
        let log = self.served.log_text();
        assert!(!log.contains("panicked"), "{} panicked:\n{log}", self.name);
    }

    fn log_of_run(&self, run: usize) -> PathBuf {
        self.dir.join(format!("{}-{run}.log", self.name))
    }

    /// The server's logged errors and warnings (every run of it), to
    /// explain a failure.
    pub fn print_log_errors(&self) {
        for run in 1..=self.runs {
            let text = std::fs::read_to_string(self.log_of_run(run)).unwrap_or_default();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("ERROR") || l.contains("WARN"))
                .take(15)
                .collect();
            if !lines.is_empty() {
                println!(
                    "{} (run {run}) logged:\n  {}",
                    self.name,
                    lines.join("\n  ")
                );
            }
        }
    }
}

/// A number of seconds from the environment (run lengths), else `default`.
pub fn env_secs(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
