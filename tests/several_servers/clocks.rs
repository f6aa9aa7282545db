//! Skewed wall clocks: libfaketime under a server moves its wall clock
//! (not its monotonic one), and the leases in its answers are judged
//! against this machine's clock, which the database shares.

use std::path::Path;

use crate::common::unix_ms;
use crate::TIMEOUT_SECS;

/// Where Debian's `faketime` package puts its library (as tests/accidents.rs).
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

pub fn faketime_available() -> bool {
    if Path::new(LIBFAKETIME).exists() {
        true
    } else if std::env::var_os("KEYSEAT_REQUIRE_FAKETIME").is_some() {
        panic!("{LIBFAKETIME} not found and KEYSEAT_REQUIRE_FAKETIME is set: install faketime");
    } else {
        eprintln!(
            "skipping: {LIBFAKETIME} not found (Debian's faketime package; .ci/run installs it)"
        );
        false
    }
}

/// How far the server's wall clock is from this test's, in seconds, by
/// the `Date` header of its `/health` answer (the time of day is enough
/// for offsets of minutes).
pub async fn wall_offset_secs(url: &str) -> i64 {
    let resp = reqwest::get(format!("{url}/health")).await.expect("health");
    let date = resp.headers()[reqwest::header::DATE]
        .to_str()
        .unwrap()
        .to_owned();
    // "Mon, 07 Dec 2026 02:31:53 GMT"
    let hms: Vec<i64> = date
        .split(' ')
        .nth(4)
        .unwrap_or_else(|| panic!("Date: {date}"))
        .split(':')
        .map(|n| n.parse().unwrap())
        .collect();
    let theirs = hms[0] * 3600 + hms[1] * 60 + hms[2];
    let ours = (unix_ms() / 1000) % 86_400;
    (theirs - ours + 86_400 + 43_200) % 86_400 - 43_200
}

/// A lease in an answer is the database's: about now + timeout on this
/// machine's clock (the database runs here), whichever server answered.
pub fn lease_from_db(what: &str, expires_at: i64, sent: i64, answered: i64) -> Result<(), String> {
    let timeout = (TIMEOUT_SECS * 1000) as i64;
    if expires_at < sent + timeout - 1_000 || expires_at > answered + timeout + 1_000 {
        Err(format!(
            "{what}: expires_at is {:+} ms from now + timeout (the database's clock, within a second)",
            expires_at - (answered + timeout)
        ))
    } else {
        Ok(())
    }
}
