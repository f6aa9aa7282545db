//! Abuse resistance at the edge: starts per key, trusted proxies, the
//! connection cap, slow clients, oversized headers and write shedding.
//! Each test sets only the limit it is about; raw sockets are used where
//! the point is what a misbehaving client sends.

mod common;

use std::time::Duration;

use common::TestServer;
use keyseat::proxy::TrustedProxies;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn host(server: &TestServer) -> String {
    server.url.trim_start_matches("http://").to_owned()
}

/// Everything the server sends until it closes the connection (bounded).
async fn read_all(stream: &mut TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(within, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn json_body(response: &str) -> Value {
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {response}"))
}

#[tokio::test]
async fn starts_per_key_are_limited_and_other_keys_are_not() {
    let server = TestServer::start_with(|s| {
        s.rate_limits = true;
        s.starts_per_key_per_minute = 3;
    })
    .await;
    let (pingpong, _) = server.create_key(json!({})).await;
    let (other, _) = server.create_key(json!({})).await;

    for i in 0..3 {
        let device = if i % 2 == 0 { "A" } else { "B" };
        let (status, _) = server.start_session(&pingpong, device).await;
        assert_eq!(status, StatusCode::OK, "start {i} is within the burst");
    }
    let resp = server
        .client
        .post(format!("{}/api/session/start", server.url))
        .json(&json!({ "access_key": pingpong, "device": { "name": "A" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "20", "one start per 20 s");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(body["error"]["retry_after_seconds"], 20);

    let (status, _) = server.start_session(&other, "C").await;
    assert_eq!(status, StatusCode::OK, "another key is unaffected");

    server.clock.advance_secs(20);
    let (status, _) = server.start_session(&pingpong, "B").await;
    assert_eq!(status, StatusCode::OK, "one start refilled after 20 s");
    let (status, _) = server.start_session(&pingpong, "A").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn rate_limits_off_allows_a_ping_pong() {
    let server = TestServer::start_with(|s| {
        s.rate_limits = false;
        s.starts_per_key_per_minute = 1;
    })
    .await;
    let (key, _) = server.create_key(json!({})).await;
    for i in 0..10 {
        let (status, body) = server
            .start_session(&key, if i % 2 == 0 { "A" } else { "B" })
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

async fn start_via_proxy(server: &TestServer, key: &str, forwarded: &str) -> (StatusCode, Value) {
    let resp = server
        .client
        .post(format!("{}/api/session/start", server.url))
        .header("x-forwarded-for", forwarded)
        .json(&json!({ "access_key": key }))
        .send()
        .await
        .unwrap();
    common::split(resp).await
}

#[tokio::test]
async fn a_trusted_proxy_names_the_client() {
    let server = TestServer::start_with(|s| {
        s.trusted_proxies = TrustedProxies::parse("127.0.0.1").unwrap();
        s.rate_limits = true;
        s.failed_key_lookups_per_minute = 2;
    })
    .await;
    let (key, _) = server.create_key(json!({})).await;
    // The client forged the first entry; the proxy appended the real one.
    let (status, _) = start_via_proxy(&server, &key, "6.6.6.6, 198.51.100.7").await;
    assert_eq!(status, StatusCode::OK);
    let started = server.events_of("session_started").await;
    assert_eq!(started[0]["client_addr"], "198.51.100.7");

    // Failed lookups are counted per real client, not per proxy.
    let unknown = keyseat::keys::AccessKey::generate();
    for _ in 0..2 {
        let (status, _) = start_via_proxy(&server, unknown.expose_secret(), "198.51.100.66").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, body) = start_via_proxy(&server, unknown.expose_secret(), "198.51.100.66").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let (status, _) = start_via_proxy(&server, &key, "198.51.100.7").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "another client behind the proxy is unaffected"
    );
}

#[tokio::test]
async fn a_non_ascii_forwarded_entry_cannot_hide_the_client() {
    let server = TestServer::start_with(|s| {
        s.trusted_proxies = TrustedProxies::parse("127.0.0.1").unwrap();
    })
    .await;
    let (key, _) = server.create_key(json!({})).await;
    // The client sent a non-ASCII X-Forwarded-For; the proxy appended the
    // real address to the same line.
    let forged = reqwest::header::HeaderValue::from_bytes(b"\xff\xfe, 203.0.113.50").unwrap();
    let resp = server
        .client
        .post(format!("{}/api/session/start", server.url))
        .header("x-forwarded-for", forged)
        .json(&json!({ "access_key": key }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let started = server.events_of("session_started").await;
    assert_eq!(started[0]["client_addr"], "203.0.113.50");
}

#[tokio::test]
async fn forwarded_for_is_ignored_from_an_untrusted_peer() {
    let server = TestServer::start().await;
    let (key, _) = server.create_key(json!({})).await;
    let (status, _) = start_via_proxy(&server, &key, "198.51.100.7").await;
    assert_eq!(status, StatusCode::OK);
    let started = server.events_of("session_started").await;
    assert_eq!(started[0]["client_addr"], "127.0.0.1");
}

#[tokio::test]
async fn connections_over_the_cap_get_a_json_503_and_the_server_recovers() {
    let server = TestServer::start_with(|s| s.max_connections = 2).await;
    let mut held = Vec::new();
    // From two addresses: one address alone gets only a quarter of the cap.
    for last in [1, 2] {
        let mut c = connect_from(&server, last).await;
        // A request in progress keeps the connection (and its slot) busy.
        c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        held.push(c);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = connect_from(&server, 3).await;
    third
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_all(&mut third, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert_eq!(json_body(&answer)["error"]["code"], "overloaded");

    drop(held);
    let mut ok = false;
    for _ in 0..50 {
        if let Ok(resp) = server
            .client
            .get(format!("{}/health", server.url))
            .send()
            .await
        {
            if resp.status() == StatusCode::OK {
                ok = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "served again once the held connections closed");
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let server = TestServer::start_with(|s| s.client_timeout_seconds = 1).await;
    let mut slow = TcpStream::connect(host(&server)).await.unwrap();
    slow.write_all(b"POST /api/session/start HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let answer = read_all(&mut slow, Duration::from_secs(5)).await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(4),
        "closed after the 1 s header deadline, not left open (waited {waited:?}, got {answer:?})"
    );
    let (status, _) = server.get("/health").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_slow_body_gets_408_in_the_contract_shape() {
    let server = TestServer::start_with(|s| s.client_timeout_seconds = 1).await;
    let mut slow = TcpStream::connect(host(&server)).await.unwrap();
    slow.write_all(
        b"POST /api/session/start HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60\r\n\r\n{\"access_key\":",
    )
    .await
    .unwrap();
    let answer = read_all(&mut slow, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body = json_body(&answer);
    assert_eq!(body["error"]["code"], "request_timeout");
    assert!(body["error"]["message"].as_str().unwrap().contains("1 s"));
}

#[tokio::test]
async fn oversized_headers_are_refused_and_the_server_goes_on() {
    let server = TestServer::start().await;
    let mut c = TcpStream::connect(host(&server)).await.unwrap();
    let huge = "a".repeat(20 * 1024);
    c.write_all(format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Junk: {huge}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let answer = read_all(&mut c, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");
    let (status, _) = server.get("/health").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn writes_over_the_limit_are_shed_while_heartbeats_go_on() {
    let server = TestServer::start_with(|s| s.max_pending_writes = 1).await;
    let (key, _) = server.create_key(json!({ "max_sessions": 2 })).await;
    let session = server.started(&key, "A").await;

    // Another process holds the database's write lock, so the next start
    // waits for it (up to the busy timeout) and holds the only writer slot.
    let locker = rusqlite::Connection::open(server.db_path()).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let waiting = {
        let (client, url, key) = (server.client.clone(), server.url.clone(), key.clone());
        tokio::spawn(async move {
            client
                .post(format!("{url}/api/session/start"))
                .json(&json!({ "access_key": key, "device": { "name": "B" } }))
                .send()
                .await
                .map(|r| r.status())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let resp = server
        .client
        .post(format!("{}/api/session/start", server.url))
        .json(&json!({ "access_key": key, "device": { "name": "C" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded");

    let (status, body) = server.heartbeat(&key, &session).await;
    assert_eq!(status, StatusCode::OK, "heartbeats are never shed: {body}");
    let (status, _) = server.status(&key).await;
    assert_eq!(status, StatusCode::OK);

    locker.execute_batch("ROLLBACK").unwrap();
    let first = waiting.await.unwrap().unwrap();
    assert_eq!(first, StatusCode::OK, "the waiting start went through");
    let (status, _) = server.start_session(&key, "C").await;
    assert_eq!(status, StatusCode::OK, "the slot is free again");
}

#[tokio::test]
async fn a_slow_body_does_not_hold_a_writer_slot() {
    let server = TestServer::start_with(|s| {
        s.max_pending_writes = 1;
        s.client_timeout_seconds = 5;
    })
    .await;
    let (key, _) = server.create_key(json!({})).await;
    let mut slow = TcpStream::connect(host(&server)).await.unwrap();
    slow.write_all(
        b"POST /api/session/start HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = server.start_session(&key, "A").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    drop(slow);
}

/// Item 5 of issue 11: a guesser on the same address (an office behind one
/// NAT) must not take a live device's seat. With the default limits, 31 bad
/// keys put the address over its limit; the device that was already using
/// its key there keeps heartbeating (and can check its status and restart)
/// for the whole window, while the guesser gets 429 for every key the
/// address has not proven, existing or not, with identical answers.
#[tokio::test]
async fn bad_keys_from_an_address_do_not_stop_a_valid_device_there() {
    let server = TestServer::start_with(|s| s.rate_limits = true).await;
    assert_eq!(server.settings.failed_key_lookups_per_minute, 30);
    let (key, _) = server.create_key(json!({})).await;
    let (unused, _) = server.create_key(json!({})).await;
    let session = server.started(&key, "office-pc").await;

    let unknown = keyseat::keys::AccessKey::generate();
    let mut last = (StatusCode::OK, Value::Null);
    for i in 0..31 {
        let bad = if i % 2 == 0 {
            unknown.expose_secret().to_owned()
        } else {
            "ks_typo".to_owned()
        };
        last = server.status(&bad).await;
    }
    common::assert_error(last.0, &last.1, 429, "rate_limited");

    // Heartbeats at 0, 25 and 50 s of the 60 s window.
    for i in 0..3 {
        if i > 0 {
            server.clock.advance_secs(25);
        }
        let (status, body) = server.heartbeat(&key, &session).await;
        assert_eq!(status, StatusCode::OK, "the device keeps its seat: {body}");
        // The guesser goes on meanwhile.
        let (status, _) = server.status(unknown.expose_secret()).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    }
    let (status, body) = server.status(&key).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A key this address never used is refused exactly like a guess: the
    // answer says nothing about whether it exists.
    let unused_answer = server.status(&unused).await;
    let guess_answer = server.status(unknown.expose_secret()).await;
    common::assert_error(unused_answer.0, &unused_answer.1, 429, "rate_limited");
    assert_eq!(unused_answer, guess_answer);

    let (status, body) = server.end(&key, &session).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ended"], true);
}

/// A TCP connection to the server from a chosen loopback address (any of
/// 127.0.0.0/8 reaches the server on Linux), as a different client would.
async fn connect_from(server: &TestServer, last: u8) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::from(([127, 0, 0, last], 0)))
        .unwrap();
    socket.connect(host(server).parse().unwrap()).await.unwrap()
}

/// One request on a kept-alive connection: status and JSON body.
async fn request_on(stream: &mut TcpStream, path: &str, body: Option<Value>) -> (u16, Value) {
    let request = match &body {
        Some(b) => {
            let b = b.to_string();
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )
        }
        None => format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"),
    };
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut chunk))
            .await
            .expect("an answer within 3 s")
            .unwrap();
        assert!(
            n > 0,
            "closed before a complete answer: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if rest.len() >= length {
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                return (status, serde_json::from_str(rest).unwrap_or(Value::Null));
            }
        }
    }
}

/// Item 5 of issue 11: idle sockets parked by one address take only that
/// address's share of the connections. A burst past
/// `max_connections_per_address` gets JSON 503s and is closed; a device on
/// another address is served, although the sockets would have filled the
/// whole server; and so is a device on the same address, in place of a
/// socket that sat idle.
#[tokio::test]
async fn idle_sockets_from_one_address_are_capped_and_others_are_served() {
    let server = TestServer::start_with(|s| {
        s.max_connections = 12;
        s.max_connections_per_address = 3;
    })
    .await;
    let (key, _) = server.create_key(json!({})).await;
    let mut parked = Vec::new();
    for _ in 0..3 {
        parked.push(connect_from(&server, 5).await);
    }
    // Accepted in order: these come after the three above.
    let mut refused = Vec::new();
    for _ in 0..17 {
        refused.push(connect_from(&server, 5).await);
    }
    for c in &mut refused {
        let answer = read_all(c, Duration::from_secs(3)).await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        let body = json_body(&answer);
        assert_eq!(body["error"]["code"], "overloaded");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("this address"),
            "{body}"
        );
    }

    let mut device = connect_from(&server, 2).await;
    let (status, body) = request_on(
        &mut device,
        "/api/session/start",
        Some(json!({ "access_key": key, "device": { "name": "B" } })),
    )
    .await;
    assert_eq!(status, 200, "another address is served: {body}");

    // A device behind the same address (one NAT) gets in too: it sends its
    // request at once, as the silent burst above did not, and takes the
    // place of a parked socket.
    let mut neighbour = connect_from(&server, 5).await;
    let (status, body) = request_on(
        &mut neighbour,
        "/api/session/status",
        Some(json!({ "access_key": key })),
    )
    .await;
    assert_eq!(
        status, 200,
        "a device on the parking address is served: {body}"
    );

    let mut operator = connect_from(&server, 3).await;
    operator
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let metrics = read_all(&mut operator, Duration::from_secs(3)).await;
    let refusals: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"keyseat_shed_total{reason="connections_per_address"} "#))
        .unwrap_or_else(|| panic!("no per-address refusals counted: {metrics}"))
        .parse()
        .unwrap();
    assert!(refusals >= 17.0, "{refusals}");
    drop(parked);
}

/// Item 5 of issue 11: when the server is full, a new client takes the slot
/// of an idle connection of the address holding the most, while a live
/// device's own keep-alive connection is never the one closed.
#[tokio::test]
async fn a_full_server_gives_way_to_new_clients_but_keeps_live_connections() {
    let server = TestServer::start_with(|s| {
        s.max_connections = 16;
        s.max_connections_per_address = 4;
    })
    .await;
    let (key, _) = server.create_key(json!({ "max_sessions": 2 })).await;

    // A live device with its keep-alive connection.
    let mut live = connect_from(&server, 10).await;
    let (status, body) = request_on(
        &mut live,
        "/api/session/start",
        Some(json!({ "access_key": key, "device": { "name": "live" } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let session = body["session_id"].as_str().unwrap().to_owned();

    // Four addresses park idle sockets until the server is full: 4 + 4 + 4
    // + 3, the live device's one, and the test client's kept-alive one from
    // 127.0.0.1 (if it has closed, the last parked socket filled the server
    // without taking anyone's place).
    let mut parked = Vec::new();
    for last in 21..=24u8 {
        for _ in 0..4 {
            if parked.len() == 15 {
                break;
            }
            parked.push(connect_from(&server, last).await);
        }
    }

    // Only a connection idle for a second gives way (a fresh one is about
    // to be used), so the parked sockets must age first.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    // A new device from elsewhere is served: a parked socket gave way.
    let mut newcomer = connect_from(&server, 11).await;
    let (status, body) = request_on(
        &mut newcomer,
        "/api/session/start",
        Some(json!({ "access_key": key, "device": { "name": "new" } })),
    )
    .await;
    assert_eq!(
        status, 200,
        "a new client is served on a full server: {body}"
    );

    // And the live device's connection is still there and served.
    let (status, body) = request_on(
        &mut live,
        "/api/session/heartbeat",
        Some(json!({ "access_key": key, "session_id": session })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    drop(parked);
}
