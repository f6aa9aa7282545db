//! `keyseat health --url URL`: one `GET /health` for service managers and
//! container health checks. Exit 0 when the server answers that it serves
//! and its database answers; otherwise (unreachable, not 200, not ok, not
//! a URL) one line on stderr and exit 1, the one failure code container
//! health checks know (Docker reserves 2). It is the reference client's own call
//! ([`crate::client::Api::health`]), so it speaks whatever the client
//! speaks (TLS included).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::client::exit;
use super::one_line;
use crate::client::Api;

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The server, e.g. http://127.0.0.1:8080 (`/health` is added unless
    /// the URL already ends with it)
    #[arg(long, value_name = "URL")]
    url: String,
    /// Seconds to wait for the answer
    #[arg(long, value_name = "SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
}

/// Asks once; exit 0 only for a 200 that says `ok` for server and
/// database.
pub fn run_health(args: HealthArgs) -> ExitCode {
    let url = args.url.trim().trim_end_matches('/');
    let base = url.strip_suffix("/health").unwrap_or(url);
    let api = match Api::new(base, Duration::from_secs(args.timeout)) {
        Ok(api) => api,
        Err(e) => {
            eprintln!("keyseat: {}", one_line(&e));
            return ExitCode::from(exit::ERROR);
        }
    };
    let shown = format!("{}/health", api.base());
    match api.health() {
        Ok(h) if h.is_ok() => {
            outln!(
                "{shown}: ok (keyseat {}, {} database ok)",
                h.version,
                h.backend
            );
            ExitCode::SUCCESS
        }
        Ok(h) => {
            let answer = serde_json::to_string(&h).unwrap_or_default();
            eprintln!("keyseat: {shown}: not ok: {}", one_line(&answer));
            ExitCode::from(exit::ERROR)
        }
        Err(e) => {
            eprintln!("keyseat: {shown}: {}", one_line(&e.to_string()));
            ExitCode::from(exit::ERROR)
        }
    }
}
