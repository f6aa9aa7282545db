//! What this machine must have for the tests (nginx, python3) and who runs
//! them: without a program a test skips, saying why, except under
//! `CI=true`, where CI must not pass by testing nothing.

use std::path::PathBuf;

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Skips (None, with the reason on stderr), or panics under `CI=true`.
pub fn skip<T>(why: &str) -> Option<T> {
    assert!(!in_ci(), "CI=true, so this test must run: {why}");
    eprintln!("skipping a high-availability test: {why}");
    None
}

/// Debian's nginx (/usr/sbin is not on every PATH).
pub fn nginx_binary() -> Option<PathBuf> {
    on_path("nginx")
        .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.is_file()))
        .or_else(|| skip("nginx is not installed (Debian: apt-get install nginx)"))
}

/// python3, if there is one (a failure under `CI=true` when missing).
pub fn python3() -> Option<PathBuf> {
    on_path("python3").or_else(|| skip("python3 is not installed"))
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
