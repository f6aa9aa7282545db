//! `log_format = "json"` (one JSON object a line, with the text line's
//! fields) and `keyseat health`, against a real server: the same session
//! traffic (`keyseat check` on a key the CLI created through the server)
//! is logged once as text and once as JSON, and the two are compared.

use std::collections::BTreeSet;

use super::*;

/// What one server run logged, and the key it served.
struct Run {
    lines: Vec<String>,
    key: String,
    prefix: String,
}

/// `serve` with `--log-format format` at debug level on a fresh file; a key
/// made by the CLI through it; `keyseat health` and `keyseat check`
/// against it; then SIGTERM. Every line it wrote to stderr.
fn logged_run(format: &str) -> Run {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("logs.db");
    let mut cmd = keyseat();
    cmd.arg("--database")
        .arg(&db)
        .args(["--log-format", format, "--log", "debug", "serve"])
        .args(["--listen", "127.0.0.1:0"]);
    let serve = LoggedServe::spawn(cmd);
    let mut lines = Vec::new();
    let (ready, port) = serve.listening(&mut lines);
    lines.push(ready);
    let url = format!("http://127.0.0.1:{port}");

    let created = create_key(&db, &["--label", "logs test"]);
    let key = field(&created, "access_key").to_owned();
    let prefix = field(&created, "prefix").to_owned();
    let health = ok(&keyseat().args(["health", "--url", &url]).output().unwrap());
    assert!(health.contains("/health: ok"), "{health}");
    ok(&keyseat()
        .args(["check", "--server", &url, "--key", &key])
        .output()
        .unwrap());

    lines.extend(serve.stop());
    Run { lines, key, prefix }
}

/// The `name=` fields a text line shows after its message.
fn text_fields(line: &str, message: &str) -> BTreeSet<String> {
    let rest = &line[line.find(message).unwrap() + message.len()..];
    rest.split(' ')
        .filter_map(|token| token.split_once('='))
        .map(|(name, _)| name)
        .filter(|name| {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
        .map(str::to_owned)
        .collect()
}

/// Every line of a JSON run is one JSON object with a time, a level and a
/// message; the lines carry the same fields as the text run's lines with
/// the same message; keys appear by their prefix, never whole.
#[test]
fn json_logs_are_one_object_a_line_with_the_text_lines_fields() {
    let json = logged_run("json");
    let text = logged_run("text");
    let mut compared = 0;
    let mut session_lines = 0;
    for line in &json.lines {
        assert!(!line.contains(&json.key), "a full key in the log: {line}");
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {line}"));
        for name in ["timestamp", "level", "message"] {
            assert!(obj[name].is_string(), "no {name} in {line}");
        }
        let message = obj["message"].as_str().unwrap();
        if message == "session started" {
            assert_eq!(obj["key"], json.prefix.as_str(), "{line}");
            session_lines += 1;
        }
        let fields: BTreeSet<String> = obj
            .keys()
            .filter(|k| !["timestamp", "level", "message"].contains(&k.as_str()))
            .cloned()
            .collect();
        let level = obj["level"].as_str().unwrap();
        // Lines whose message differs between runs (ports, paths, ids) are
        // not compared; the session and key lines are.
        if let Some(same) = text
            .lines
            .iter()
            .find(|l| l.contains(&format!("{level} {message}")))
        {
            assert_eq!(
                fields,
                text_fields(same, message),
                "json: {line}\ntext: {same}"
            );
            compared += 1;
        }
    }
    assert!(
        session_lines >= 2,
        "`check` starts sessions: {:?}",
        json.lines
    );
    assert!(compared >= 5, "too few lines compared: {:?}", json.lines);
    for line in &text.lines {
        assert!(!line.contains(&text.key), "a full key in the log: {line}");
        assert!(
            serde_json::from_str::<Value>(line).is_err(),
            "text mode wrote JSON: {line}"
        );
    }
}

/// A CLI command's own warnings follow `log_format` too, and a bad value
/// is one line naming the setting.
#[test]
fn cli_warnings_follow_log_format_and_a_bad_value_is_one_line() {
    let db = fresh_db();
    let out = run_env(
        db.path(),
        &["--log-format", "json", "keys", "list"],
        &[("KEYSEAT_NO_SUCH", "1")],
    );
    ok(&out);
    let lines: Vec<Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["message"] == "ignoring unknown environment variable KEYSEAT_NO_SUCH"),
        "{lines:?}"
    );
    let line = fails_with_2(&run_env(
        db.path(),
        &["keys", "list"],
        &[("KEYSEAT_LOG_FORMAT", "yaml")],
    ));
    assert!(
        line.contains("log_format = `yaml`") && line.contains("must be `text` or `json`"),
        "{line}"
    );
}

/// `keyseat health` fails with exit 1 and one line when nothing listens,
/// when the URL is not one, and when the answer is not 200.
#[test]
fn health_fails_with_one_line() {
    let nobody = format!("http://127.0.0.1:{}", common::free_port());
    let cases: [(&str, &str); 2] = [
        (&nobody, "unreachable"),
        ("localhost:8080", "must start with http://"),
    ];
    for (url, expected) in cases {
        let out = keyseat().args(["health", "--url", url]).output().unwrap();
        let line = fails(&out);
        assert_eq!(out.status.code(), Some(1), "{line}");
        assert!(line.contains(expected), "{url}: {line}");
    }
    // A listener that answers something else than keyseat's /health.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = [0u8; 1024];
        let _ = conn.read(&mut request);
        let body = "<html>\n bad gateway\n</html>";
        let head = format!(
            "HTTP/1.1 502 Bad Gateway\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        let _ = conn.write_all(format!("{head}{body}").as_bytes());
    });
    let out = keyseat().args(["health", "--url", &url]).output().unwrap();
    let line = fails(&out);
    assert_eq!(out.status.code(), Some(1), "{line}");
    assert!(line.contains("502"), "{line}");
    server.join().unwrap();
}
