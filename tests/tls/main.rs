//! TLS in front of keyseat, as README.md's "TLS in front: nginx" shows it:
//! a real nginx terminating TLS with a certificate from a CA made here
//! with openssl, in front of the real binary. The Rust client, `keyseat
//! check` and `keyseat client` connect when given the CA (or through
//! `SSL_CERT_FILE`), refuse without it saying why, refuse a certificate
//! for another name and an expired one, never retry a refused certificate,
//! and a session that meets one is lost at once. `trusted_proxies` makes
//! the audit log name the device, not nginx. (The Python client's cases
//! are clients/python/tests/test_tls.py.)
//!
//! Needs Debian's nginx and openssl; without them the tests skip, saying
//! why, except under `CI=true` or `KEYSEAT_REQUIRE_NGINX=1` (`.ci/run`).
#![cfg(feature = "client")]

#[path = "../common/mod.rs"]
mod common;
mod front;
#[allow(dead_code)]
#[path = "../high_availability/host.rs"]
mod host;
#[allow(dead_code)]
#[path = "../high_availability/nginx.rs"]
mod nginx;
mod pki;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use front::{Front, NGINX_ADDR};
use keyseat::client::{CertificateProblem, Client, ClientError, LostReason};

const UNKNOWN_ISSUER: &str = "the server's certificate is not trusted: unknown issuer; \
                              pass --ca-file or add the CA to the system store";

/// `keyseat ARGS` without the caller's `KEYSEAT_*` or `SSL_CERT_*`, so only
/// what a test gives is trusted.
fn keyseat(args: &[&str]) -> Command {
    let mut cmd = common::keyseat_command();
    cmd.args(args)
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .stdin(Stdio::null());
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `keyseat check` against `url` with `key`, and `extra` flags.
fn check(url: &str, key: &str, extra: &[&str]) -> Command {
    let mut cmd = keyseat(&[&["check", "--server", url][..], extra].concat());
    cmd.env("KEYSEAT_KEY", key);
    cmd
}

/// With the CA the Rust client starts and ends a session through nginx;
/// without it the start fails at once (not retried) with the certificate
/// named, not as "unreachable".
#[test]
fn a_private_ca_is_trusted_with_the_ca_option() {
    let Some(front) = Front::start() else { return };
    let key = front.key();
    let url = front.url(front.good);
    let client = Client::new(&url, &key)
        .unwrap()
        .ca_file(&front.pki.ca)
        .unwrap();
    let session = client.start().expect("a start with the CA");
    assert!(session.end().unwrap());

    let without = Client::new(&url, &key).unwrap().start_attempts(10);
    let began = Instant::now();
    let err = without.start().expect_err("no CA given");
    assert_eq!(
        err,
        ClientError::Certificate(CertificateProblem::UnknownIssuer)
    );
    assert_eq!(err.to_string(), UNKNOWN_ISSUER);
    // Ten tries with backoff would take seconds: one handshake was made.
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
}

/// A certificate from the trusted CA for another name, and one that has
/// expired, are refused and named, each without retries.
#[test]
fn a_certificate_for_another_name_is_named() {
    let Some(front) = Front::start() else { return };
    let key = front.key();
    let start = |port: u16| {
        Client::new(&front.url(port), &key)
            .unwrap()
            .ca_file(&front.pki.ca)
            .unwrap()
            .start_attempts(10)
            .start()
            .expect_err("a refused certificate")
    };
    let wrong = start(front.wrong_name);
    assert!(
        matches!(&wrong, ClientError::Certificate(CertificateProblem::WrongName { presented })
            if presented.iter().any(|n| n == "wrong.example")),
        "{wrong:?}"
    );
    assert!(
        wrong.to_string().starts_with(
            "the server's certificate is not trusted: it is for another name (wrong.example"
        ),
        "{wrong}"
    );
    let expired = start(front.expired);
    assert_eq!(
        expired,
        ClientError::Certificate(CertificateProblem::Expired)
    );
    assert_eq!(
        expired.to_string(),
        "the server's certificate is not trusted: it has expired; the server's certificate must be renewed"
    );
}

/// `keyseat check --ca-file` passes every check through nginx; without the
/// CA it fails health with the certificate named and stops there; a wrong
/// name and an expired certificate are named too. Exit 1 on failure.
#[test]
fn keyseat_check_with_and_without_the_ca() {
    let Some(front) = Front::start() else { return };
    let key = front.key();
    let ca = front.pki.ca.display().to_string();
    let passed = check(&front.url(front.good), &key, &["--ca-file", &ca])
        .output()
        .unwrap();
    assert_eq!(passed.status.code(), Some(0), "{}", text(&passed));
    assert!(
        !String::from_utf8_lossy(&passed.stdout).contains("FAIL"),
        "{}",
        text(&passed)
    );

    for (port, ca_flag, said) in [
        (front.good, false, UNKNOWN_ISSUER.to_owned()),
        (
            front.wrong_name,
            true,
            "the server's certificate is not trusted: it is for another name (wrong.example)"
                .into(),
        ),
        (
            front.expired,
            true,
            "the server's certificate is not trusted: it has expired".into(),
        ),
    ] {
        let flags: &[&str] = if ca_flag { &["--ca-file", &ca] } else { &[] };
        let out = check(&front.url(port), &key, flags).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            stdout.contains(&format!("FAIL health: {said}")),
            "{}",
            text(&out)
        );
        assert!(stdout.contains("0/1 checks passed"), "{}", text(&out));
    }
}

/// `SSL_CERT_FILE` naming the CA is honoured (it replaces the system
/// store, the OpenSSL convention): `keyseat check` passes without
/// `--ca-file`.
#[test]
fn ssl_cert_file_is_honoured() {
    let Some(front) = Front::start() else { return };
    let key = front.key();
    let out = check(&front.url(front.good), &key, &[])
        .env("SSL_CERT_FILE", &front.pki.ca)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// `keyseat client --ca-file` holds a seat until SIGTERM (exit 0, the
/// session ended); without the CA it exits 11 with one line naming the
/// certificate problem, as for a wrong name and an expired certificate.
#[test]
fn keyseat_client_with_and_without_the_ca() {
    let Some(front) = Front::start() else { return };
    let key = front.key();
    let url = front.url(front.good);
    let ca = front.pki.ca.display().to_string();
    let mut child = keyseat(&["client", "--server", &url, "--ca-file", &ca])
        .env("KEYSEAT_KEY", &key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a line").unwrap();
    assert!(first.starts_with("started session "), "{first}");
    // It prints the line before it listens for SIGTERM: wait until it does.
    catches_sigterm(child.id());
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{rest:?}");
    assert!(rest.iter().any(|l| l == "ended by user"), "{rest:?}");

    let out = keyseat(&["client", "--server", &url])
        .env("KEYSEAT_KEY", &key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(11), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("keyseat: cannot start a session: {UNKNOWN_ISSUER}\n")
    );
    for (port, said) in [
        (front.wrong_name, "it is for another name (wrong.example)"),
        (front.expired, "it has expired"),
    ] {
        let out = keyseat(&["client", "--server", &front.url(port), "--ca-file", &ca])
            .env("KEYSEAT_KEY", &key)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(11), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with(&format!(
                "keyseat: cannot start a session: the server's certificate is not trusted: {said}"
            )),
            "{stderr}"
        );
    }
}

/// Waits until process `pid` has a SIGTERM handler (SigCgt in
/// /proc/PID/status, signal 15 at bit 14).
fn catches_sigterm(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << 14) != 0);
        if caught {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "keyseat client never caught SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A missing `--ca-file` and one that is not PEM are one line on stderr
/// and exit 2, for both commands, before any request.
#[test]
fn a_bad_ca_file_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let not_pem = dir.path().join("notes.txt");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    let key = keyseat::keys::AccessKey::generate();
    for command in ["client", "check"] {
        for (file, said) in [
            (&missing, "cannot be read"),
            (&not_pem, "holds no certificate"),
        ] {
            let file = file.display().to_string();
            let out = keyseat(&[
                command,
                "--server",
                "https://127.0.0.1:9",
                "--ca-file",
                &file,
            ])
            .env("KEYSEAT_KEY", key.expose_secret())
            .output()
            .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{command}: {}", text(&out));
            assert_eq!(stderr.lines().count(), 1, "{command}: {}", text(&out));
            assert!(
                stderr.starts_with(&format!("keyseat: --ca-file: the CA file {file} {said}")),
                "{command}: {stderr}"
            );
            assert!(!String::from_utf8_lossy(&out.stdout).contains("Checking"));
        }
    }
}

/// With `trusted_proxies` set to nginx's address, the audit log records
/// the device's address (127.0.0.1), not nginx's (127.0.0.3).
#[test]
fn trusted_proxies_names_the_device_in_the_audit_log() {
    let Some(front) = Front::start() else { return };
    let key = front.key();
    let client = Client::new(&front.url(front.good), &key)
        .unwrap()
        .ca_file(&front.pki.ca)
        .unwrap();
    let session = client.start().unwrap();
    let recorded = front.started_from(session.id());
    session.end().unwrap();
    assert_eq!(
        recorded.as_deref(),
        Some("127.0.0.1"),
        "nginx is {NGINX_ADDR}"
    );
}

/// A running session whose heartbeat meets a refused certificate (here
/// nginx reloaded with an expired one) is lost at once as
/// `LostReason::Certificate`, well before its lease would run out.
#[test]
fn a_certificate_refused_mid_session_loses_it_at_once() {
    let Some(mut front) = Front::start() else {
        return;
    };
    let key = front.key();
    let session = Client::new(&front.url(front.good), &key)
        .unwrap()
        .ca_file(&front.pki.ca)
        .unwrap()
        .waiting_heartbeats(false)
        .start()
        .unwrap();
    front.swap_good_certificate(|pki| &pki.expired);
    let began = Instant::now();
    let lost = session.wait_lost(Some(Duration::from_secs(9)));
    assert_eq!(
        lost,
        Some(LostReason::Certificate(CertificateProblem::Expired))
    );
    // The lease is 10 s: lost at the first refused handshake, not at its end.
    assert!(
        began.elapsed() < Duration::from_secs(6),
        "{:?}",
        began.elapsed()
    );
}
