//! The devices: the Rust client and the Python client, both talking to
//! nginx only, as a device behind a load balancer would; every event the
//! Rust client reports is recorded so a failure can say what it saw.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use keyseat::client::{Client, Session, SessionEvent};
use serde_json::{json, Value};

use crate::common;
use crate::topology::Topology;

/// Every device's events, as `NAME: EVENT`, in the order they came.
pub type Events = Arc<Mutex<Vec<String>>>;

/// A device: the Rust client through nginx, recording every event.
pub fn device(topo: &Topology, key: &str, name: &str, events: &Events) -> Session {
    let events = events.clone();
    let name_for_events = name.to_owned();
    Client::new(&topo.url, key)
        .unwrap()
        .device_name(name)
        .on_event(move |e: &SessionEvent| {
            events
                .lock()
                .unwrap()
                .push(format!("{name_for_events}: {e:?}"));
        })
        .start()
        .unwrap_or_else(|e| panic!("{name} starts through nginx: {e}"))
}

/// A start of session `id` on `key` from the local address `from` (a
/// device at 127.0.0.2, say), with an `X-Forwarded-For` header when
/// `forwarded` is given; the status nginx answered.
pub fn start_from(
    topo: &Topology,
    from: &str,
    forwarded: Option<&str>,
    key: &str,
    id: &str,
) -> reqwest::StatusCode {
    let http = reqwest::Client::builder()
        .local_address(from.parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    let mut req = http
        .post(format!("{}/api/session/start", topo.url))
        .json(&json!({"access_key": key, "session_id": id}));
    if let Some(f) = forwarded {
        req = req.header("X-Forwarded-For", f);
    }
    let resp = topo.rt.block_on(req.send()).expect("start through nginx");
    resp.status()
}

/// Runs tests/high_availability/python_takeover.py with `python` on the
/// one-seat `key` through nginx (the package from clients/python/src,
/// which needs nothing beyond the standard library); what it printed:
/// how device A's client was told it lost its seat, and how soon.
pub fn python_takeover(python: PathBuf, topo: &Topology, key: &str) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = common::clean_command(python)
        .arg(root.join("tests/high_availability/python_takeover.py"))
        .env("PYTHONPATH", root.join("clients/python/src"))
        .env("KEYSEAT_HA_URL", &topo.url)
        .env("KEYSEAT_HA_KEY", key)
        .env("NO_PROXY", "127.0.0.1")
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python_takeover.py failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|_| panic!("python_takeover.py printed {stdout:?}\n{stderr}"))
}
