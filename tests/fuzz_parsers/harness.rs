//! The routes' bodies through the real router in-process: the harness,
//! structure-aware bodies per route, and what an accepted body must do.

use super::*;

use crate::common::fuzz::TOKEN;

/// The real router over a real store, in-process, with a key for the
/// session routes, a live session, and a second key for PATCH.
pub struct Harness {
    pub rt: tokio::runtime::Runtime,
    pub router: Router,
    pub key: String,
    pub session_id: String,
    pub patch_key_id: String,
    pub _dir: tempfile::TempDir,
}

impl Harness {
    pub fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let (rt, router) = common::fuzz::ready_router(&dir.path().join("fuzz.db"));
        let mut h = Harness {
            rt,
            router,
            key: String::new(),
            session_id: String::new(),
            patch_key_id: String::new(),
            _dir: dir,
        };
        let (_, key) = h.send("POST", "/api/admin/keys", b"{}", true);
        h.key = key["access_key"].as_str().unwrap().to_owned();
        let (_, other) = h.send("POST", "/api/admin/keys", b"{}", true);
        h.patch_key_id = other["key_id"].as_str().unwrap().to_owned();
        let start = json!({"access_key": h.key}).to_string();
        let (_, s) = h.send("POST", "/api/session/start", start.as_bytes(), true);
        h.session_id = s["session_id"].as_str().unwrap().to_owned();
        h
    }

    /// One JSON request; status and parsed body (checked to be JSON with
    /// a JSON content type).
    pub fn send(&self, method: &str, uri: &str, body: &[u8], admin: bool) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json");
        if admin {
            req = req.header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        }
        let mut req = req.body(Body::from(body.to_vec())).unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        self.rt.block_on(async {
            let resp = self.router.clone().oneshot(req).await.unwrap();
            let status = resp.status();
            let ctype = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap_or("").to_owned())
                .unwrap_or_default();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            assert!(
                ctype.starts_with("application/json"),
                "{method} {uri}: {status} with content type {ctype:?}: {text}"
            );
            let v = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{method} {uri}: {status} body not JSON ({e}): {text}"));
            (status, v)
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Route {
    Start,
    Heartbeat,
    End,
    Status,
    CreateKey,
    PatchKey,
}

impl Route {
    pub const ALL: [Route; 6] = [
        Route::Start,
        Route::Heartbeat,
        Route::End,
        Route::Status,
        Route::CreateKey,
        Route::PatchKey,
    ];

    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Route::Start => &["access_key", "session_id", "device"],
            Route::Heartbeat | Route::End => &["access_key", "session_id"],
            Route::Status => &["access_key"],
            Route::CreateKey => &["label", "max_sessions", "on_conflict", "expires_at"],
            Route::PatchKey => &[
                "label",
                "max_sessions",
                "on_conflict",
                "expires_at",
                "status",
            ],
        }
    }

    /// Statuses and codes the contract allows on this route for any body.
    pub fn allowed(self, status: u16, code: &str) -> bool {
        let common = matches!(
            (status, code),
            (400, "invalid_request") | (413, "payload_too_large") | (415, "unsupported_media_type")
        );
        let session = matches!(
            (status, code),
            (401, "invalid_key")
                | (403, "key_revoked" | "key_suspended" | "key_expired")
                | (404, "session_not_found")
                | (
                    409,
                    "session_id_taken" | "seats_full" | "session_superseded"
                )
                | (410, "session_expired" | "session_ended" | "session_revoked")
        );
        common
            || match self {
                Route::Start | Route::Heartbeat | Route::End | Route::Status => session,
                Route::CreateKey | Route::PatchKey => false,
            }
    }
}

/// A JSON document written out by hand, so it can hold what
/// `serde_json::Value` cannot: huge or malformed numbers, lone surrogate
/// escapes, duplicate keys.
#[derive(Debug, Clone)]
pub enum J {
    Raw(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    pub fn write(&self, out: &mut String) {
        match self {
            J::Raw(r) => out.push_str(r),
            J::Str(s) => out.push_str(&serde_json::to_string(s).unwrap()),
            J::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            J::Obj(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).unwrap());
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }

    pub fn text(&self) -> String {
        let mut s = String::new();
        self.write(&mut s);
        s
    }
}

pub fn raw_scalar() -> impl Strategy<Value = J> {
    prop_oneof![
        prop::sample::select(vec![
            "null",
            "true",
            "false",
            "0",
            "-0",
            "1",
            "-1",
            "3",
            "1000",
            "1001",
            "4294967295",
            "4294967296",
            "18446744073709551616",
            "-9223372036854775809",
            "1e400",
            "-1e400",
            "1.5",
            "1e3",
            "1E2",
            "0.0",
            "1e-400",
            "NaN",
            "Infinity",
            "01",
            "1.",
            "+1",
            "0x10",
            "\"\\ud800\"",
            "\"\\u0000\"",
            "\"\\x\"",
            "\"\\uDFFF\\uD800\"",
            "\"",
            "tru",
            "nul",
            "[",
            "{",
            "]",
            "}",
            "",
        ])
        .prop_map(|s| J::Raw(s.to_owned())),
        any::<i64>().prop_map(|n| J::Raw(n.to_string())),
        any::<f64>().prop_map(|f| J::Raw(if f.is_finite() {
            f.to_string()
        } else {
            "1e999".into()
        })),
        (1..300usize).prop_map(|n| J::Raw(format!("{}{}", "[".repeat(n), "]".repeat(n)))),
        (1..300usize).prop_map(|n| J::Raw(format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n)))),
    ]
}

/// Any string a field might get: keys (valid, mistyped, other people's),
/// key ids, times, ids, limit-sized, unicode and control characters.
pub fn string_value(key: String) -> impl Strategy<Value = String> {
    prop_oneof![
        2 => any_text(),
        1 => (Just(key), edit()).prop_map(|(k, e)| apply(&k, &e)),
        1 => key_like(),
        1 => "key_[A-Za-z0-9]{0,20}",
        1 => time_like(),
        1 => "[A-Za-z0-9._-]{0,140}",
        1 => near_limit_string(),
        1 => prop::sample::select(vec![
            "takeover", "reject", "active", "suspended", "revoked", "Takeover", "TAKEOVER", "",
        ]).prop_map(str::to_owned),
    ]
}

pub fn any_value(key: String) -> BoxedStrategy<J> {
    let leaf = prop_oneof![
        2 => raw_scalar(),
        2 => string_value(key).prop_map(J::Str),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(J::Arr),
            prop::collection::vec(("[a-z_]{0,12}", inner), 0..4).prop_map(J::Obj),
        ]
    })
    .boxed()
}

/// A value of the field's own type, most of the time: what a buggy or
/// hostile client sends when it nearly follows the contract.
pub fn field_value(field: &'static str, key: String, session_id: String) -> BoxedStrategy<J> {
    let typed: BoxedStrategy<J> = match field {
        "access_key" => prop_oneof![
            3 => Just(J::Str(key.clone())),
            2 => (Just(key.clone()), edit()).prop_map(|(k, e)| J::Str(apply(&k, &e))),
            1 => valid_key().prop_map(J::Str),
            1 => any_text().prop_map(J::Str),
        ]
        .boxed(),
        "session_id" => prop_oneof![
            2 => Just(J::Str(session_id.clone())),
            2 => "[A-Za-z0-9._-]{6,130}".prop_map(J::Str),
            1 => (Just(session_id.clone()), edit()).prop_map(|(s, e)| J::Str(apply(&s, &e))),
            1 => any_text().prop_map(J::Str),
        ]
        .boxed(),
        "device" => prop::collection::vec(
            (
                prop::sample::select(vec!["name", "fingerprint", "Name", "x"]),
                prop_oneof![
                    3 => prop_oneof![near_limit_string(), any_text(), tricky_string(300)].prop_map(J::Str),
                    1 => raw_scalar(),
                ],
            ),
            0..3,
        )
        .prop_map(|fs| J::Obj(fs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
        .boxed(),
        "label" => prop_oneof![
            near_limit_string(),
            any_text(),
            tricky_string(250),
        ]
        .prop_map(J::Str)
        .boxed(),
        "max_sessions" => prop_oneof![
            prop::sample::select(vec![0u64, 1, 2, 999, 1000, 1001, u64::from(u32::MAX), u64::from(u32::MAX) + 1])
                .prop_map(|n| J::Raw(n.to_string())),
            any::<u32>().prop_map(|n| J::Raw(n.to_string())),
            raw_scalar(),
        ]
        .boxed(),
        "on_conflict" | "status" => prop::sample::select(vec![
            "takeover", "reject", "active", "suspended", "revoked", "Reject", "", " takeover",
        ])
        .prop_map(|s| J::Str(s.to_owned()))
        .boxed(),
        "expires_at" => prop_oneof![
            3 => time_like().prop_map(J::Str),
            1 => Just(J::Raw("null".into())),
        ]
        .boxed(),
        _ => unreachable!(),
    };
    prop_oneof![
        4 => typed,
        1 => any_value(key),
        1 => Just(J::Raw("null".into())),
    ]
    .boxed()
}

/// Request bodies for a route: mostly objects with the route's fields
/// (each present or not, of the right type or not, plus strays and
/// duplicates), sometimes any JSON, arbitrary UTF-8, arbitrary bytes
/// (lossy), or a structured body cut short.
pub fn body_for(route: Route, key: String, session_id: String) -> BoxedStrategy<String> {
    let fields: Vec<BoxedStrategy<Option<(String, J)>>> = route
        .fields()
        .iter()
        .map(|&f| {
            prop::option::weighted(0.8, field_value(f, key.clone(), session_id.clone()))
                .prop_map(move |v| v.map(|v| (f.to_owned(), v)))
                .boxed()
        })
        .collect();
    let extras = prop::collection::vec(
        (
            prop_oneof![
                "[a-z_]{1,10}",
                prop::sample::select(route.fields().to_vec()).prop_map(str::to_owned)
            ],
            any_value(key.clone()),
        ),
        0..3,
    );
    let object = (fields, extras, any::<bool>()).prop_map(|(fields, extras, extras_first)| {
        let mut all: Vec<(String, J)> = fields.into_iter().flatten().collect();
        if extras_first {
            let mut e = extras;
            e.extend(all);
            all = e;
        } else {
            all.extend(extras);
        }
        J::Obj(all).text()
    });
    prop_oneof![
        8 => object.clone(),
        1 => (object, any::<usize>()).prop_map(|(s, cut)| {
            let mut cut = cut % (s.len() + 1);
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s[..cut].to_owned()
        }),
        1 => any_value(key).prop_map(|j| j.text()),
        1 => any::<String>(),
        1 => prop::collection::vec(any::<u8>(), 0..100)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        1 => prop::sample::select(vec!["", " ", "\n\t", "null", "{}", "[]", "\"\"", "0"])
            .prop_map(str::to_owned),
    ]
    .boxed()
}

pub fn is_snake_case(code: &str) -> bool {
    !code.is_empty()
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// serde's derived `Deserialize` accepts a struct as a JSON array of
/// exactly its fields in declaration order. `parse_json` refuses a body
/// that is an array and `device` refuses one (`object_or_null`); the
/// reference reading still maps such an array to the object it stands for
/// (anything else is returned unchanged), so a regression would be checked
/// field by field.
pub fn tuple_form(v: &Value, fields: &[&str]) -> Value {
    match v {
        Value::Array(items) if items.len() == fields.len() => Value::Object(
            fields
                .iter()
                .map(|f| f.to_string())
                .zip(items.iter().cloned())
                .collect(),
        ),
        other => other.clone(),
    }
}

/// What the route must have refused: an accepted body follows the
/// contract's limits, checked field by field against a reference reading.
pub fn check_accepted(
    route: Route,
    h: &Harness,
    body: &str,
    answer: &Value,
) -> Result<(), TestCaseError> {
    let v: Value = if body.trim().is_empty() {
        json!({})
    } else {
        match serde_json::from_str(body) {
            Ok(v) => v,
            // Deeper than `Value` can hold, in a field the route ignores
            // (serde skips ignored values without recursing): fine.
            // Or with a number `Value` cannot hold (1e400) there, or a
            // lone surrogate escape (`"\ud800"`: JSON's grammar allows it,
            // `Value` refuses it, serde skips it unread).
            Err(e)
                if [
                    "recursion limit",
                    "number out of range",
                    "surrogate",
                    "hex escape",
                ]
                .iter()
                .any(|m| e.to_string().contains(m)) =>
            {
                return Ok(())
            }
            Err(e) => {
                return Err(TestCaseError::fail(format!(
                    "accepted a body that is not JSON ({e}): {body:?}"
                )))
            }
        }
    };
    let obj = v
        .as_object()
        .ok_or_else(|| TestCaseError::fail(format!("accepted a non-object body: {body:?}")))?;
    let text_ok = |name: &str, max: usize| -> bool {
        match obj.get(name) {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => reference_text(s, max).is_ok(),
            _ => false,
        }
    };
    match route {
        Route::Start | Route::Heartbeat | Route::End | Route::Status => {
            let k = obj["access_key"].as_str().unwrap_or_default();
            prop_assert_eq!(k.trim(), h.key.as_str(), "accepted key in {:?}", body);
            match obj.get("session_id") {
                Some(Value::String(id)) => prop_assert!(reference_session_id(id), "{:?}", body),
                None | Some(Value::Null) => prop_assert!(
                    route == Route::Start || route == Route::Status,
                    "{:?}",
                    body
                ),
                Some(_) => prop_assert!(false, "accepted a non-string session_id: {:?}", body),
            }
            if route == Route::Start {
                match obj
                    .get("device")
                    .map(|d| tuple_form(d, &["name", "fingerprint"]))
                {
                    None | Some(Value::Null) => {}
                    Some(Value::Object(d)) => {
                        for (name, max) in [("name", 128), ("fingerprint", 256)] {
                            match d.get(name) {
                                None | Some(Value::Null) => {}
                                Some(Value::String(s)) => {
                                    prop_assert!(reference_text(s, max).is_ok(), "{:?}", body)
                                }
                                Some(_) => prop_assert!(false, "accepted device.{name}: {body:?}"),
                            }
                        }
                    }
                    Some(_) => prop_assert!(false, "accepted a non-object device: {:?}", body),
                }
                prop_assert!(answer["fence"].is_i64(), "{}", answer);
            }
        }
        Route::CreateKey | Route::PatchKey => {
            prop_assert!(text_ok("label", 200), "accepted label in {:?}", body);
            let want_label = match obj.get("label") {
                Some(Value::String(s)) => reference_text(s, 200).unwrap(),
                _ => None,
            };
            if route == Route::CreateKey || obj.contains_key("label") {
                prop_assert_eq!(&answer["label"], &json!(want_label), "{:?}", body);
            }
            match obj.get("max_sessions") {
                Some(Value::Number(n)) => {
                    let n = n.as_u64().unwrap_or(0);
                    prop_assert!((1..=1000).contains(&n), "{:?}", body);
                    prop_assert_eq!(&answer["max_sessions"], &json!(n));
                }
                None | Some(Value::Null) => {
                    if route == Route::CreateKey {
                        prop_assert_eq!(&answer["max_sessions"], &json!(1));
                    }
                }
                Some(_) => prop_assert!(false, "accepted max_sessions in {:?}", body),
            }
            match obj.get("on_conflict") {
                Some(Value::String(p)) => {
                    prop_assert!(p == "takeover" || p == "reject", "{:?}", body);
                    prop_assert_eq!(&answer["on_conflict"], &json!(p));
                }
                None | Some(Value::Null) => {}
                Some(_) => prop_assert!(false, "accepted on_conflict in {:?}", body),
            }
            match obj.get("expires_at") {
                Some(Value::String(t)) => {
                    let at = Timestamp::parse_rfc3339(t);
                    prop_assert!(at.is_some(), "accepted expires_at {:?}", t);
                    let shown = answer["expires_at"].as_str().unwrap_or_default();
                    prop_assert_eq!(Timestamp::parse_rfc3339(shown), at, "{}", answer);
                }
                None => {}
                Some(Value::Null) => prop_assert!(answer["expires_at"].is_null()),
                Some(_) => prop_assert!(false, "accepted expires_at in {:?}", body),
            }
            if let Some(s) = obj.get("status").filter(|s| !s.is_null()) {
                prop_assert!(s == "active" || s == "suspended", "{:?}", body);
            }
            if route == Route::CreateKey {
                let secret = answer["access_key"].as_str().unwrap_or_default();
                let parsed = AccessKey::parse(secret);
                prop_assert!(parsed.is_ok(), "created key does not parse: {}", answer);
                prop_assert_eq!(answer["prefix"].as_str(), Some(&secret[..11]));
            }
        }
    }
    Ok(())
}
