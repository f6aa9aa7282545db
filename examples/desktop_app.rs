//! A desktop app's licence check in ten lines, with the keyseat client.
//!
//! Run a server and create a key first (see the README), then:
//!
//! ```text
//! cargo run --example desktop_app -- http://127.0.0.1:8080 ks_yourkey
//! ```
//!
//! Start it in two terminals with the same key: the first one is told which
//! device took over and stops.

use std::time::Duration;

use keyseat::client::{machine_fingerprint, Client, SessionState};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (server, key) = match (args.next(), args.next()) {
        (Some(s), Some(k)) => (s, k),
        _ => {
            eprintln!("usage: desktop_app SERVER_URL ACCESS_KEY");
            std::process::exit(2);
        }
    };

    // --- the integration: these lines are all an app needs ---------------
    let mut client = Client::new(&server, &key)?.device_name(hostname());
    if let Some(fp) = machine_fingerprint("com.example.desktop-app") {
        client = client.fingerprint(fp);
    }
    let session = client.start()?;
    if session.info().previous_session_terminated {
        println!("Previous session on another device was disconnected");
    }
    session.on_lost(|reason| println!("Licence lost: {reason}. Stopping work."));
    // ----------------------------------------------------------------------

    println!(
        "Licensed (session {}, fence {}). Working; Ctrl-C to quit.",
        session.id(),
        session.fence()
    );
    // The app's own work loop: check the state between units of work.
    for _ in 0..600 {
        match session.state() {
            SessionState::Active | SessionState::Retrying { .. } => {
                std::thread::sleep(Duration::from_millis(500));
            }
            SessionState::Lost(_) | SessionState::Ended => return Ok(()),
        }
    }
    session.end()?;
    println!("Done; session ended.");
    Ok(())
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .or_else(|_| std::env::var("COMPUTERNAME"))
        .unwrap_or_else(|_| "desktop app".into())
}
