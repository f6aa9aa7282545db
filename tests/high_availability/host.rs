//! What this machine must have for the tests (nginx, python3, openssl) and
//! who runs them: without a program a test skips, saying why, except under
//! `CI=true` or `KEYSEAT_REQUIRE_NGINX=1` (which `.ci/run` sets), where CI
//! must not pass by testing nothing. tests/tls/ uses this file too.

use std::path::PathBuf;

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
        || std::env::var("KEYSEAT_REQUIRE_NGINX").as_deref() == Ok("1")
}

/// Skips (None, with the reason on stderr), or panics in CI.
pub fn skip<T>(why: &str) -> Option<T> {
    assert!(
        !in_ci(),
        "CI=true or KEYSEAT_REQUIRE_NGINX=1, so this test must run: {why}"
    );
    eprintln!("skipping: {why}");
    None
}

/// Debian's nginx (/usr/sbin is not on every PATH).
pub fn nginx_binary() -> Option<PathBuf> {
    on_path("nginx")
        .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.is_file()))
        .or_else(|| skip("nginx is not installed (Debian: apt-get install nginx)"))
}

/// python3, if there is one (a failure in CI when missing).
pub fn python3() -> Option<PathBuf> {
    on_path("python3").or_else(|| skip("python3 is not installed"))
}

/// The openssl command line, which makes the TLS tests' certificates.
#[allow(dead_code)] // tests/tls/ only
pub fn openssl() -> Option<PathBuf> {
    on_path("openssl")
        .or_else(|| skip("openssl is not installed (Debian: apt-get install openssl)"))
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// Root must hand nginx's workers and PostgreSQL to unprivileged users.
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}
