//! Borrowing a seat for offline use (docs/api.md, "Borrowing"), as a
//! device and an operator see it: the seat is held without heartbeats
//! until `borrowed_until`, never superseded, given back early by `end`,
//! ended by a kick or a revoke, and proven offline by the lease token.
//! Runs on both engines (`KEYSEAT_TEST_ENGINE=postgres`).

mod common;

use common::{assert_error, TestServer};
use keyseat::clock::Timestamp;
use keyseat::lease_token::{self, LeaseTokenError};
use keyseat::signing::PinnedKey;
use serde_json::{json, Value};

const HOUR: u64 = 3600;

async fn borrow(s: &TestServer, body: Value) -> (reqwest::StatusCode, Value) {
    s.post("/api/session/borrow", body).await
}

/// Borrows for `hours` from a device and asserts success.
async fn borrowed(s: &TestServer, key: &str, device: &str, hours: u32) -> Value {
    let (status, body) = borrow(
        s,
        json!({"access_key": key, "hours": hours,
               "device": {"name": device, "fingerprint": format!("fp-{device}")}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn time(v: &Value) -> Timestamp {
    Timestamp::parse_rfc3339(v.as_str().expect("a time")).expect("RFC 3339")
}

/// The server's current public key, as an app pins it (base64url).
async fn pin_text(s: &TestServer) -> String {
    let (status, set) = s.get("/api/signing-keys").await;
    assert_eq!(status, 200, "{set}");
    set["keys"][0]["x"].as_str().unwrap().to_owned()
}

/// [`pin_text`], parsed.
async fn pinned(s: &TestServer) -> PinnedKey {
    PinnedKey::parse(&pin_text(s).await).unwrap()
}

#[tokio::test]
async fn a_borrowed_seat_is_held_without_heartbeats_until_borrowed_until() {
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({"max_borrow_hours": 24})).await;
    let body = borrowed(&s, &key, "laptop", 8).await;
    let until = s.now().plus_secs(8 * HOUR);
    assert_eq!(time(&body["borrowed_until"]), until);
    assert_eq!(time(&body["expires_at"]), until);
    assert_eq!(body["fence"], 1);
    assert_eq!(body["resumed"], false);
    let id = body["session_id"].as_str().unwrap().to_owned();

    // Seven hours without a heartbeat: still live, shown as borrowed.
    s.clock.advance_secs(7 * HOUR);
    let (_, status) = s.status(&key).await;
    assert_eq!(status["sessions"][0]["session_id"], id.as_str());
    assert_eq!(time(&status["sessions"][0]["borrowed_until"]), until);
    let (_, list) = s.admin("GET", "/api/admin/sessions", None).await;
    assert_eq!(time(&list["sessions"][0]["borrowed_until"]), until);

    // A heartbeat (the device came back online) never shortens it.
    let (code, beat) = s.heartbeat(&key, &id).await;
    assert_eq!(code, 200, "{beat}");
    assert_eq!(time(&beat["expires_at"]), until);

    // At borrowed_until the seat is free again; the session is over.
    s.clock.advance_secs(HOUR);
    let (code, beat) = s.heartbeat(&key, &id).await;
    assert_error(code, &beat, 410, "session_expired");
    s.started(&key, "desktop").await;
}

#[tokio::test]
async fn a_borrowed_session_is_never_superseded() {
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({"max_borrow_hours": 24})).await;
    let id = borrowed(&s, &key, "laptop", 2).await["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Takeover is the policy, but the borrowed device cannot be told.
    let (code, body) = s.start_session(&key, "desktop").await;
    assert_error(code, &body, 409, "seats_full");
    let (code, body) = borrow(&s, json!({"access_key": key, "hours": 1})).await;
    assert_error(code, &body, 409, "seats_full");
    assert_eq!(s.heartbeat(&key, &id).await.0, 200);

    // With two seats, one borrowed, takeover takes the other one's seat.
    let (key2, key2_json) = s
        .create_key(json!({"max_borrow_hours": 24, "max_sessions": 2}))
        .await;
    let away = borrowed(&s, &key2, "laptop", 2).await["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let online = s.started(&key2, "desktop").await;
    let (code, body) = s.start_session(&key2, "tablet").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["terminated_sessions"][0]["session_id"],
        online.as_str()
    );
    assert_eq!(s.heartbeat(&key2, &away).await.0, 200);
    let (code, beat) = s.heartbeat(&key2, &online).await;
    assert_error(code, &beat, 409, "session_superseded");
    let id2 = key2_json["key_id"].as_str().unwrap();
    let (_, key2_now) = s
        .admin("GET", &format!("/api/admin/keys/{id2}"), None)
        .await;
    assert_eq!(key2_now["live_sessions"], 2);
}

#[tokio::test]
async fn end_gives_a_borrowed_seat_back_early_and_a_kick_or_revoke_ends_it() {
    let s = TestServer::start().await;
    let (key, key_json) = s.create_key(json!({"max_borrow_hours": 48})).await;
    let id = borrowed(&s, &key, "laptop", 48).await["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, body) = s.end(&key, &id).await;
    assert_eq!((code.as_u16(), body["ended"].clone()), (200, json!(true)));
    s.started(&key, "desktop").await;
    let ended = s.events_of("session_ended").await;
    assert_eq!(ended[0]["session_id"], id.as_str());

    // A kick ends a borrowed session (the token stays valid offline).
    let (key2, _) = s.create_key(json!({"max_borrow_hours": 48})).await;
    let id2 = borrowed(&s, &key2, "laptop", 4).await["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, kick) = s
        .admin("DELETE", &format!("/api/admin/sessions/{id2}"), None)
        .await;
    assert_eq!((code.as_u16(), kick["ended"].clone()), (200, json!(true)));
    let (code, beat) = s.heartbeat(&key2, &id2).await;
    assert_error(code, &beat, 410, "session_revoked");

    // Revoking the key ends it too.
    let (key3, key3_json) = s.create_key(json!({"max_borrow_hours": 48})).await;
    let id3 = borrowed(&s, &key3, "laptop", 4).await["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let key3_id = key3_json["key_id"].as_str().unwrap();
    let (code, _) = s
        .admin("POST", &format!("/api/admin/keys/{key3_id}/revoke"), None)
        .await;
    assert_eq!(code, 200);
    let (code, beat) = s.heartbeat(&key3, &id3).await;
    assert_error(code, &beat, 403, "key_revoked");
    let _ = key_json;
}

#[tokio::test]
async fn the_lease_token_proves_the_borrow_offline_and_a_changed_one_does_not() {
    let s = TestServer::start().await;
    let (key, key_json) = s.create_key(json!({"max_borrow_hours": 72})).await;
    let body = borrowed(&s, &key, "laptop", 72).await;
    let token = body["lease_token"].as_str().unwrap();
    let pin = pinned(&s).await;
    let claims = lease_token::verify(token, std::slice::from_ref(&pin), s.now()).unwrap();
    assert_eq!(claims.iss, "keyseat");
    assert_eq!(claims.sub, body["session_id"].as_str().unwrap());
    assert_eq!(claims.key_prefix, key_json["prefix"].as_str().unwrap());
    assert_eq!(claims.fence, 1);
    assert_eq!(claims.device_fingerprint.as_deref(), Some("fp-laptop"));
    assert_eq!(claims.iat, s.now().0 / 1000);
    assert_eq!(claims.exp, time(&body["borrowed_until"]).0 / 1000);

    // Offline, on the device's clock: valid until exp, not at exp.
    let exp = Timestamp(claims.exp * 1000);
    assert!(lease_token::verify(token, std::slice::from_ref(&pin), exp.minus_secs(1)).is_ok());
    assert_eq!(
        lease_token::verify(token, std::slice::from_ref(&pin), exp),
        Err(LeaseTokenError::Expired(exp))
    );
    // A longer exp spliced in: the signature no longer matches.
    let parts: Vec<&str> = token.split('.').collect();
    let mut forged: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, parts[1])
            .unwrap(),
    )
    .unwrap();
    forged["exp"] = json!(claims.exp + 365 * 86_400);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            forged.to_string()
        ),
        parts[2]
    );
    assert_eq!(
        lease_token::verify(&forged, &[pin], s.now()),
        Err(LeaseTokenError::BadSignature)
    );
}

#[tokio::test]
async fn borrowing_a_live_session_keeps_its_fence_and_a_retry_never_shortens_it() {
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({"max_borrow_hours": 24})).await;
    let id = s.started(&key, "laptop").await;
    s.clock.advance_secs(10);
    let (code, body) = borrow(
        &s,
        json!({"access_key": key, "session_id": id, "hours": 12}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (body["fence"].clone(), body["resumed"].clone()),
        (json!(1), json!(true))
    );
    let until = s.now().plus_secs(12 * HOUR);
    assert_eq!(time(&body["borrowed_until"]), until);
    // The token names a device only when the borrow did.
    let token = body["lease_token"].as_str().unwrap();
    let claims = lease_token::verify(token, &[pinned(&s).await], s.now()).unwrap();
    assert_eq!(claims.device_fingerprint, None);
    // A retry with fewer hours keeps the later end.
    s.clock.advance_secs(60);
    let (code, again) = borrow(&s, json!({"access_key": key, "session_id": id, "hours": 1})).await;
    assert_eq!(code, 200, "{again}");
    assert_eq!(time(&again["borrowed_until"]), until);
    let borrows = s.events_of("session_borrowed").await;
    assert_eq!(borrows.len(), 2);
    assert_eq!(borrows[0]["detail"]["hours"], 1);
    assert_eq!(borrows[1]["detail"]["fence"], 1);
    // The start and the borrows: one session_started, no second seat.
    assert_eq!(s.events_of("session_started").await.len(), 1);
    let (_, status) = s.status(&key).await;
    assert_eq!(status["sessions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_borrow_is_refused_precisely() {
    let s = TestServer::start().await;
    let (off, _) = s.create_key(json!({})).await;
    let (code, body) = borrow(&s, json!({"access_key": off, "hours": 1})).await;
    assert_error(code, &body, 403, "borrow_not_allowed");

    let (key, _) = s.create_key(json!({"max_borrow_hours": 24})).await;
    let (code, body) = borrow(&s, json!({"access_key": key, "hours": 25})).await;
    let e = assert_error(code, &body, 400, "invalid_request");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("max_borrow_hours (24)"),
        "{e}"
    );
    for (hours, what) in [
        (json!(0), "between 1 and 8760"),
        (json!(8761), "between 1 and 8760"),
        (json!(-1), "hours"),
        (json!(1.5), "hours"),
        (json!("2"), "hours"),
    ] {
        let (code, body) = borrow(&s, json!({"access_key": key, "hours": hours})).await;
        let e = assert_error(code, &body, 400, "invalid_request");
        assert!(
            e["message"].as_str().unwrap().contains(what),
            "{hours}: {e}"
        );
    }
    let (code, body) = borrow(&s, json!({"access_key": key})).await;
    let e = assert_error(code, &body, 400, "invalid_request");
    assert!(e["message"].as_str().unwrap().contains("hours"), "{e}");
    let (code, body) = borrow(&s, json!({"access_key": "ks_nope", "hours": 1})).await;
    assert_error(code, &body, 401, "invalid_key");
    // Nothing was borrowed by any of these.
    assert!(s.events_of("session_borrowed").await.is_empty());

    // The key field itself: 0..=8760 through the admin API.
    let (code, body) = s
        .admin(
            "POST",
            "/api/admin/keys",
            Some(json!({"max_borrow_hours": 8761})),
        )
        .await;
    let e = assert_error(code, &body, 400, "invalid_request");
    assert!(
        e["message"].as_str().unwrap().contains("max_borrow_hours"),
        "{e}"
    );
    let (_, created) = s.create_key(json!({"max_borrow_hours": 8760})).await;
    assert_eq!(created["max_borrow_hours"], 8760);
    let id = created["key_id"].as_str().unwrap();
    let (code, patched) = s
        .admin(
            "PATCH",
            &format!("/api/admin/keys/{id}"),
            Some(json!({"max_borrow_hours": 0})),
        )
        .await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["max_borrow_hours"], 0);
    let (_, off_key) = s.create_key(json!({})).await;
    assert_eq!(off_key["max_borrow_hours"], 0);
}

#[tokio::test]
async fn a_borrow_never_outlives_its_key() {
    let s = TestServer::start().await;
    let expiry = s.now().plus_secs(2 * HOUR);
    let (key, _) = s
        .create_key(json!({"max_borrow_hours": 24, "expires_at": expiry.to_rfc3339()}))
        .await;
    let body = borrowed(&s, &key, "laptop", 24).await;
    assert_eq!(time(&body["borrowed_until"]), expiry);
    let pin = pinned(&s).await;
    let claims =
        lease_token::verify(body["lease_token"].as_str().unwrap(), &[pin], s.now()).unwrap();
    assert_eq!(claims.exp, expiry.0 / 1000);
}

/// The key's expiry moved earlier after a borrow caps what a re-borrow
/// adds, not what the first token already promised: the retry answers the
/// borrow it gave, and its session's `expires_at` agrees. (Found by the
/// model-based test: the retry answered an end before the one given.)
#[tokio::test]
async fn a_key_expiry_moved_earlier_never_shortens_a_borrow_handed_out() {
    let s = TestServer::start().await;
    let (key, key_json) = s.create_key(json!({"max_borrow_hours": 2})).await;
    let first = borrowed(&s, &key, "laptop", 1).await;
    let given = time(&first["borrowed_until"]);
    let key_id = key_json["key_id"].as_str().unwrap();
    let soon = s.now().plus_secs(60).to_rfc3339();
    let (code, patched) = s
        .admin(
            "PATCH",
            &format!("/api/admin/keys/{key_id}"),
            Some(json!({"expires_at": soon})),
        )
        .await;
    assert_eq!(code, 200, "{patched}");
    let id = first["session_id"].as_str().unwrap();
    let (code, again) = borrow(&s, json!({"access_key": key, "session_id": id, "hours": 1})).await;
    assert_eq!(code, 200, "{again}");
    assert_eq!(time(&again["borrowed_until"]), given);
    assert_eq!(time(&again["expires_at"]), given);
}

#[tokio::test]
async fn a_borrowed_session_outlives_a_restart() {
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({"max_borrow_hours": 24})).await;
    let id = borrowed(&s, &key, "laptop", 6).await["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let until = s.now().plus_secs(6 * HOUR);
    // Down for two hours: far past the restart rule's one timeout.
    let s = s.restart_after(2 * HOUR).await;
    let (code, body) = s.start_session(&key, "desktop").await;
    assert_error(code, &body, 409, "seats_full");
    let (_, status) = s.status(&key).await;
    assert_eq!(status["sessions"][0]["session_id"], id.as_str());
    assert_eq!(time(&status["sessions"][0]["borrowed_until"]), until);
    s.clock.advance_secs(4 * HOUR);
    s.started(&key, "desktop").await;
}

/// The Rust client: `borrow` hands back a token that
/// `verify_lease_token` proves with the pinned key (and no other), and
/// `give_back` returns the seat.
#[cfg(feature = "client")]
#[tokio::test]
async fn a_borrow_holds_the_seat_and_its_token_verifies_offline() {
    use keyseat::client::{verify_lease_token, Client};
    let s = TestServer::start().await;
    let (key, key_json) = s.create_key(json!({"max_borrow_hours": 24})).await;
    let pin = pin_text(&s).await;
    let url = s.url.clone();
    let prefix = key_json["prefix"].as_str().unwrap().to_owned();
    let key2 = key.clone();
    tokio::task::spawn_blocking(move || {
        let client = Client::new(&url, &key)
            .unwrap()
            .public_key(&pin)
            .unwrap()
            .device_name("laptop")
            .fingerprint("fp-laptop");
        let borrowed = client.borrow(4).unwrap();
        let claims = verify_lease_token(&borrowed.lease_token, &pin).unwrap();
        assert_eq!(claims.sub, borrowed.session_id);
        assert_eq!(claims.key_prefix, prefix);
        assert_eq!(claims.exp, borrowed.borrowed_until.0 / 1000);
        let stranger = keyseat::signing::KeyRecord::generate(keyseat::clock::Timestamp(0));
        assert!(matches!(
            verify_lease_token(&borrowed.lease_token, &stranger.jwk().x),
            Err(LeaseTokenError::UnknownKey(_))
        ));
        assert!(matches!(
            verify_lease_token(&borrowed.lease_token, "not a key"),
            Err(LeaseTokenError::BadPublicKey(_))
        ));
        borrowed.give_back().unwrap();
    })
    .await
    .unwrap();
    // Given back: the seat is free at once.
    s.started(&key2, "desktop").await;
}

/// Borrowing off for the key, or more hours than it allows: typed errors
/// with the contract's codes; a refused borrow of a running session leaves
/// it heartbeating.
#[cfg(feature = "client")]
#[tokio::test]
async fn borrow_refusals_are_typed() {
    use keyseat::client::{Client, ClientError};
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({"max_borrow_hours": 24})).await;
    let (off, _) = s.create_key(json!({})).await;
    let pin = pin_text(&s).await;
    let url = s.url.clone();
    tokio::task::spawn_blocking(move || {
        let refused = |e: ClientError| match e {
            ClientError::Refused { status, code, .. } => (status, code),
            other => panic!("{other:?}"),
        };
        let client = Client::new(&url, &key).unwrap().public_key(&pin).unwrap();
        assert_eq!(
            refused(client.borrow(25).unwrap_err()),
            (400, "invalid_request".into())
        );
        let off = Client::new(&url, &off).unwrap().public_key(&pin).unwrap();
        assert_eq!(
            refused(off.borrow(1).unwrap_err()),
            (403, "borrow_not_allowed".into())
        );
        let session = off.start().unwrap();
        assert_eq!(
            refused(off.borrow_as(session.id(), 1).unwrap_err()),
            (403, "borrow_not_allowed".into())
        );
        assert!(session.is_usable(), "still heartbeating");
        assert_eq!(session.end(), Ok(true));
    })
    .await
    .unwrap();
}

/// `keyseat client --borrow HOURS`: prints the token, checks it with
/// `--public-key`, exits 0 leaving the seat borrowed; 10 when the key does
/// not allow the borrow, 8 when every seat is borrowed.
#[cfg(feature = "client")]
#[tokio::test]
async fn the_reference_client_borrows_and_exits() {
    let s = TestServer::start().await;
    let (key, _) = s.create_key(json!({"max_borrow_hours": 24})).await;
    let (off, _) = s.create_key(json!({})).await;
    let pin = pin_text(&s).await;
    let run = |key: String, hours: &'static str| {
        let mut cmd = common::keyseat_command();
        cmd.args([
            "client",
            "--server",
            &s.url,
            "--borrow",
            hours,
            "--public-key",
            &pin,
        ])
        .env("KEYSEAT_KEY", key);
        // Off the runtime the server answers on.
        async move {
            let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            (out.status.code(), text)
        }
    };
    let (code, text) = run(key.clone(), "3").await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("lease token: ey"), "{text}");
    assert!(text.contains("lease token verified offline"), "{text}");
    let (code, text) = run(key.clone(), "3").await;
    assert_eq!(code, Some(8), "{text}");
    let (code, text) = run(off.clone(), "3").await;
    assert_eq!(code, Some(10), "{text}");
    assert!(text.contains("borrow_not_allowed"), "{text}");
    let (code, text) = run(key.clone(), "99").await;
    assert_eq!(code, Some(10), "{text}");
    assert!(text.contains("max_borrow_hours (24)"), "{text}");
    assert_eq!(s.events_of("session_borrowed").await.len(), 1);

    // Pinned to another key: every answer is refused, and the seat the
    // real server lent on the way is given back, not left borrowed.
    let (key3, _) = s.create_key(json!({"max_borrow_hours": 24})).await;
    let stranger = keyseat::signing::KeyRecord::generate(keyseat::clock::Timestamp(0))
        .jwk()
        .x;
    let mut cmd = common::keyseat_command();
    cmd.args([
        "client",
        "--server",
        &s.url,
        "--borrow",
        "3",
        "--public-key",
        &stranger,
    ])
    .env("KEYSEAT_KEY", &key3);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(9), "{out:?}");
    s.started(&key3, "desktop").await;
}
