//! One `keyseat serve` per database file, against the real binary: a second
//! server on the same file refuses to start (exit 2, one line naming the
//! file and the first server), and the lock is the operating system's, so a
//! SIGKILLed server leaves none behind. A busy port says what to do.

mod common;

use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

fn serve_command(db: &Path, port: u16) -> std::process::Command {
    let mut cmd = common::serve_command(db, port);
    cmd.stderr(Stdio::piped());
    cmd
}

/// Starts a server and waits until `/health` answers.
fn serve(db: &Path) -> (Child, u16) {
    let port = common::free_port();
    let mut child = serve_command(db, port)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(child.try_wait().unwrap().is_none(), "server exited early");
        assert!(Instant::now() < deadline, "server never became ready");
        if health_ok(port) {
            return (child, port);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn health_ok(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// Runs a second server to its exit (it must not keep running).
fn second(db: &Path, port: u16) -> Output {
    let mut child = serve_command(db, port).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the second server kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `keyseat --database DB keys list`, run to its end.
fn keys_list(db: &Path) -> Output {
    common::keyseat_command()
        .arg("--database")
        .arg(db)
        .args(["keys", "list"])
        .output()
        .unwrap()
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_second_server_on_the_same_file_refuses_to_start_and_a_crash_frees_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.db");
    let (mut first, first_port) = serve(&db);

    let out = second(&db, common::free_port());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    let line = &lines[0];
    assert!(line.contains(&db.display().to_string()), "{line}");
    assert!(line.contains(&format!("pid {}", first.id())), "{line}");
    assert!(
        line.contains(&format!("http://127.0.0.1:{first_port}")),
        "{line}"
    );
    assert!(line.contains("PostgreSQL"), "{line}");

    // SIGKILL: no clean stop, no cleanup; the lock goes with the process.
    first.kill().unwrap();
    first.wait().unwrap();
    let (mut again, _) = serve(&db);
    again.kill().unwrap();
    again.wait().unwrap();
}

#[test]
fn a_busy_port_asks_whether_another_keyseat_runs() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = second(&dir.path().join("k.db"), port);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("is another keyseat running? use --listen"),
        "{}",
        lines[0]
    );
}

/// The CLI never answers from the file behind a running server's back: a
/// server that holds the database but does not answer on its socket (here
/// the socket was removed) is refused after a short wait, with one line.
#[test]
fn the_cli_refuses_to_work_on_the_file_behind_a_server_it_cannot_reach() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.db");
    let (mut server, _) = serve(&db);
    let socket = dir.path().join("k.db.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "no control socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_file(&socket).unwrap();
    let out = keys_list(&db);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("does not answer on"), "{}", lines[0]);
    assert!(
        lines[0].contains(&format!("pid {}", server.id())),
        "{}",
        lines[0]
    );
    server.kill().unwrap();
    server.wait().unwrap();
    // No server: the file, as always.
    let out = keys_list(&db);
    assert!(out.status.success(), "{out:?}");
}
