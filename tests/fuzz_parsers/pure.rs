//! Targets on the pure functions: key format, `session_id`, texts, seat
//! limits, event types, RFC 3339 times, JSON bodies, key references.

use super::*;

/// `AccessKey::parse` agrees with the spec's format on every input; an
/// accepted key round-trips, and its `Debug`, prefix and redaction never
/// show more than the prefix. A single edit of a valid key is always caught.
#[test]
fn access_key_parsing_matches_the_spec() {
    let input = prop_oneof![3 => key_like(), 1 => any_text(), 1 => valid_key()];
    fuzz("access_key", 3000, input, |text| {
        let got = AccessKey::parse(&text);
        let want = reference_key(&text);
        prop_assert_eq!(got.as_ref().map(|_| ()).map_err(|e| *e), want, "{:?}", text);
        // whatever it is, redaction never shows a full key
        let shown = keys::redact_secret(&text);
        prop_assert_eq!(
            leaks_a_key(&text, &shown),
            None,
            "{:?} -> {:?}",
            text,
            shown
        );
        let cut = keys::redact(&text);
        prop_assert_eq!(leaks_a_key(&text, &cut), None, "{:?} -> {:?}", text, cut);
        if let Ok(key) = got {
            prop_assert_eq!(key.expose_secret(), text.as_str());
            prop_assert_eq!(key.prefix(), &text[..11]);
            let debug = format!("{key:?}");
            prop_assert!(!debug.contains(&text[11..]), "{}", debug);
            prop_assert_eq!(AccessKey::parse(key.expose_secret()), Ok(key.clone()));
            prop_assert_eq!(keys::redact(&text), format!("{}…", &text[..11]));
        }
        Ok(())
    });

    // Every single-character substitution, deletion or insertion inside a
    // valid key is refused (CRC32 catches every burst of <= 32 bits).
    let single_edit = (valid_key(), any::<usize>(), tricky_char(), 0..3u8);
    fuzz(
        "access_key_single_edit",
        2000,
        single_edit,
        |(k, i, c, kind)| {
            let e = match kind {
                0 => Edit::Replace(3 + i % 38, c),
                1 => Edit::Delete(3 + i % 38),
                _ => Edit::Insert(3 + i % 39, c),
            };
            let typo = apply(&k, &e);
            prop_assume!(typo != k);
            prop_assert!(AccessKey::parse(&typo).is_err(), "{} accepted", typo);
            Ok(())
        },
    );
}

/// `session_id` accepts exactly the contract's ids; a refusal names the field.
#[test]
fn session_id_validation_matches_the_contract() {
    let input = prop_oneof![
        2 => "[A-Za-z0-9._-]{0,140}",
        1 => any_text(),
        1 => ("[A-Za-z0-9._-]{8,128}", edit()).prop_map(|(s, e)| apply(&s, &e)),
    ];
    fuzz("session_id", 3000, input, |id| {
        let got = input::session_id(&id);
        prop_assert_eq!(got.is_ok(), reference_session_id(&id), "{:?}", id);
        if let Some(m) = invalid_request_message(got) {
            prop_assert!(m.starts_with("session_id"), "{}", m);
        } else {
            prop_assert!(reference_session_id(&id));
        }
        Ok(())
    });
}

/// Device name (128), fingerprint (256) and label (200): trimmed, empty is
/// absent, control characters and over-long values refused naming the field.
#[test]
fn text_fields_obey_their_limits() {
    let field = prop::sample::select(vec![
        ("device.name", 128usize),
        ("device.fingerprint", 256),
        ("label", 200),
    ]);
    fuzz(
        "text_fields",
        3000,
        (field, any_text()),
        |((name, max), text)| {
            let got = if name == "label" {
                input::label(Some(text.clone()))
            } else {
                input::optional_text(Some(text.clone()), name, max)
            };
            match (&got, reference_text(&text, max)) {
                (Ok(v), Ok(want)) => prop_assert_eq!(v, &want),
                (Err(Error::InvalidRequest(m)), Err(())) => {
                    prop_assert!(m.starts_with(name), "{}", m);
                }
                (got, want) => prop_assert!(false, "{:?}: got {:?}, want {:?}", text, got, want),
            }
            Ok(())
        },
    );
}

/// Seat limits 1..=1000; event types exactly the contract's list.
#[test]
fn seat_limits_and_event_types() {
    fuzz("max_sessions", 2000, any::<u32>(), |n| {
        let got = input::max_sessions(n);
        prop_assert_eq!(got.is_ok(), (1..=1000).contains(&n));
        if let Some(m) = invalid_request_message(got) {
            prop_assert!(m.starts_with("max_sessions"), "{}", m);
        }
        Ok(())
    });
    let names: Vec<String> = EventType::ALL
        .iter()
        .map(|t| t.as_str().to_owned())
        .collect();
    let input = prop_oneof![
        (prop::sample::select(names.clone()), edit()).prop_map(|(n, e)| apply(&n, &e)),
        any_text(),
    ];
    fuzz("event_type", 2000, input, |text| {
        let got = input::event_type(&text);
        prop_assert_eq!(got.is_ok(), names.contains(&text), "{:?}", text);
        match got {
            Ok(t) => prop_assert_eq!(t.as_str(), text.as_str()),
            Err(Error::InvalidRequest(m)) => prop_assert!(m.starts_with("type"), "{}", m),
            Err(e) => prop_assert!(false, "{:?}", e),
        }
        Ok(())
    });
}

/// RFC 3339 times (PATCH/POST `expires_at`, events `since`): an accepted
/// time round-trips through the server's own rendering; a well-formed
/// in-range time is accepted with the right instant; a refusal names the
/// field and never echoes a full key.
#[test]
fn rfc3339_times_round_trip() {
    let input = prop_oneof![3 => time_like(), 1 => any_text(), 1 => key_like()];
    fuzz("rfc3339", 3000, input, |text| {
        let got = input::time("expires_at", &text);
        match &got {
            Ok(t) => {
                let shown = t.to_rfc3339();
                prop_assert!(shown.contains('T'), "{:?} rendered as {}", text, shown);
                prop_assert_eq!(Timestamp::parse_rfc3339(&shown), Some(*t), "{}", shown);
            }
            Err(Error::InvalidRequest(m)) => {
                prop_assert!(m.starts_with("expires_at"), "{}", m);
                prop_assert_eq!(leaks_a_key(&text, m), None, "{}", m);
            }
            Err(e) => prop_assert!(false, "{:?}", e),
        }
        // an age or a time for `--since`: never panics, same message rules
        let now = Timestamp(1_800_000_000_000);
        match input::time_or_age("since", &text, now) {
            Ok(t) => prop_assert!(t <= now || Timestamp::parse_rfc3339(&text).is_some()),
            Err(Error::InvalidRequest(m)) => prop_assert!(m.starts_with("since"), "{}", m),
            Err(e) => prop_assert!(false, "{:?}", e),
        }
        Ok(())
    });

    // Well-formed, in-range: must be accepted, at the right instant.
    let valid = (
        1970..=9998i32,
        1..=12u8,
        1..=28u8,
        0..=23u8,
        0..=59u8,
        0..=59u8,
        0..=999u16,
        -(23 * 60 + 59)..=(23 * 60 + 59i32),
    );
    fuzz(
        "rfc3339_valid",
        2000,
        valid,
        |(y, mo, d, h, mi, s, ms, off)| {
            let zone = if off == 0 {
                "Z".to_owned()
            } else {
                let a = off.abs();
                format!(
                    "{}{:02}:{:02}",
                    if off < 0 { '-' } else { '+' },
                    a / 60,
                    a % 60
                )
            };
            let text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}{zone}");
            let date =
                time::Date::from_calendar_date(y, time::Month::try_from(mo).unwrap(), d).unwrap();
            let local = date.with_hms_milli(h, mi, s, ms).unwrap().assume_utc();
            let want = (local.unix_timestamp_nanos() / 1_000_000) as i64 - i64::from(off) * 60_000;
            let got = input::time("expires_at", &text);
            prop_assert_eq!(got.ok(), Some(Timestamp(want)), "{}", text);
            Ok(())
        },
    );
}

/// The JSON parser behind every body: any bytes give either a value or
/// `invalid_request`, never a position ("line 1 column 17") instead of a
/// field, and a refused JSON object is refused naming one of its fields.
#[test]
fn json_bodies_parse_or_name_the_field() {
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Start {
        access_key: String,
        session_id: Option<String>,
        device: Option<Device>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Device {
        name: Option<String>,
        fingerprint: Option<String>,
    }
    let fields = ["access_key", "session_id", "device"];
    let input = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        body_for(Route::Start, "ks_x".into(), "sess-0001".into()).prop_map(String::into_bytes),
    ];
    fuzz("json_body", 3000, input, |bytes| {
        match parse_json::<Start>(&bytes) {
            Ok(s) => {
                if let Some(v) = reference_json(&bytes) {
                    let v = tuple_form(&v, &fields);
                    prop_assert_eq!(v["access_key"].as_str(), Some(s.access_key.as_str()));
                }
            }
            Err(Error::InvalidRequest(m)) => {
                prop_assert!(!m.is_empty());
                prop_assert!(!m.contains(" at line "), "{}", m);
                if let Ok(Value::Object(_)) = serde_json::from_slice::<Value>(&bytes) {
                    let body = String::from_utf8_lossy(&bytes);
                    let named = fields.iter().any(|f| m.contains(f));
                    prop_assert!(named, "{} for {:?}", m, body);
                }
            }
            Err(e) => prop_assert!(false, "{:?}", e),
        }
        Ok(())
    });
}

/// The key lookup of the admin API and the CLI (`keys show`, `update`,
/// `revoke`, events `key_id`): finds a key only by its exact id, display
/// prefix (with or without `ks_`) or the whole, exact access key (which
/// the HTTP layer refuses in URLs), never by a pattern or a near-miss, and
/// answers anything else `key_not_found` without echoing a full key.
#[test]
fn key_references_resolve_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("refs.db"), OpenMode::CreateAndMigrate).unwrap();
    let now = Timestamp(1_800_000_000_000);
    let created: Vec<_> = (0..3)
        .map(|_| {
            store
                .create_key(&NewKey::default(), now, &Actor::cli())
                .unwrap()
        })
        .collect();
    let mut known = Vec::new();
    for c in &created {
        let k = &c.key;
        known.push(k.key_id.clone());
        known.push(k.prefix.clone());
        known.push(k.prefix["ks_".len()..].to_owned());
        known.push(c.access_key.expose_secret().to_owned());
    }
    let secrets: Vec<String> = created
        .iter()
        .map(|c| c.access_key.expose_secret().to_owned())
        .collect();
    let input = prop_oneof![
        3 => (prop::sample::select(known), edit(), any::<bool>())
            .prop_map(|(k, e, keep)| if keep { k } else { apply(&k, &e) }),
        1 => any_text(),
        1 => prop::sample::select(vec![
            "%", "_", "ks_%", "key_%", "' OR '1'='1", "ks_", "key_", "", " ", "*", "\\",
        ])
        .prop_map(str::to_owned),
    ];
    fuzz("key_ref", 2000, input, |r| {
        let got = store.get_key(&r, now);
        let t = r.trim();
        let exact = created.iter().find(|c| {
            let k = &c.key;
            t == k.key_id
                || t == k.prefix
                || format!("ks_{t}") == k.prefix
                || t == c.access_key.expose_secret()
        });
        match (&got, exact) {
            (Ok(k), Some(c)) => prop_assert_eq!(&k.key_id, &c.key.key_id),
            (Err(Error::KeyNotFound(_)), None) => {}
            (got, want) => prop_assert!(
                false,
                "{:?}: got {:?}, want {:?}",
                r,
                got,
                want.map(|c| &c.key.key_id)
            ),
        }
        if let Err(e) = &got {
            let m = e.to_string();
            prop_assert_eq!(leaks_a_key(&r, &m), None, "{}", m);
            for s in secrets.iter() {
                prop_assert!(!m.contains(s.as_str()), "echoes the secret: {}", m);
            }
        }
        Ok(())
    });
}
