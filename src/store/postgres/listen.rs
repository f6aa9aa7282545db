//! Ends heard from every server: one connection per server LISTENs on the
//! channel the schema's trigger notifies for every session that ends
//! (migrations/postgres/V4), and tells the [`EndListener`], so a heartbeat
//! held on this server is answered at once when another server, or the
//! CLI, ends its session.
//!
//! A lost connection may have missed ends: once it listens again the
//! listener is told "any session may have ended" (`None`), and each held
//! heartbeat looks again. Reconnects back off to a few seconds; repeated
//! failures are logged as a warning.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::AsyncMessage;

use super::connect::{self, Tls};
use crate::config::PostgresUrl;
use crate::error::Result;
use crate::store::EndListener;

/// The channel the trigger notifies.
pub(super) const CHANNEL: &str = "keyseat_session_ended";

/// Listens until the runtime stops, reconnecting after any failure (the
/// wake for ends it may have missed comes once it listens again, not now:
/// waking every held heartbeat while the database is unreachable would
/// only send them all to it at once).
pub(super) async fn run(url: PostgresUrl, listener: EndListener) {
    let mut pause = Duration::from_millis(200);
    let mut failures = 0u32;
    loop {
        let since = std::time::Instant::now();
        let outcome = listen(&url, &listener).await;
        if since.elapsed() > Duration::from_secs(30) {
            // It listened for a while: start again from a short pause.
            pause = Duration::from_millis(200);
            failures = 0;
        }
        failures += 1;
        match outcome {
            Ok(()) => tracing::debug!("the end notifications' connection closed; reconnecting"),
            Err(e) if failures >= 5 => tracing::warn!(
                error = %e,
                "cannot listen for session ends; held heartbeats run their full wait until it can"
            ),
            Err(e) => {
                tracing::debug!(error = %e, "the end notifications' connection failed; reconnecting")
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

async fn listen(url: &PostgresUrl, listener: &EndListener) -> Result<()> {
    let (mut config, tls) = connect::parse(url)?;
    // A connection that only listens sends nothing: TCP keepalives notice
    // one that died silently in minutes, not the system's two hours.
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30));
    match tls {
        Tls::Off => {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            drive(client, connection, listener).await
        }
        _ => {
            let (client, connection) = config.connect(connect::connector(&tls)?).await?;
            drive(client, connection, listener).await
        }
    }
}

async fn drive<S, T>(
    client: tokio_postgres::Client,
    mut connection: tokio_postgres::Connection<S, T>,
    listener: &EndListener,
) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let statement = format!("LISTEN {CHANNEL}");
    let listen = client.batch_execute(&statement);
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        let message = std::future::poll_fn(|cx| connection.poll_message(cx));
        tokio::select! {
            done = &mut listen, if !listening => {
                done?;
                listening = true;
                // Ends while no connection listened are not lost.
                listener(None);
            }
            message = message => match message {
                Some(Ok(AsyncMessage::Notification(n))) if n.channel() == CHANNEL => {
                    listener(Some(n.payload()));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
        }
    }
}
