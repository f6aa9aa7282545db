//! Ends heard from every server: one connection per server LISTENs on the
//! channel the schema's trigger notifies for every session that ends
//! (migrations/postgres/V4), and tells the [`EndListener`], so a heartbeat
//! held on this server is answered at once when another server, or the
//! CLI, ends its session.
//!
//! A lost connection may have missed ends: on every (re)connect the
//! listener is told "any session may have ended" (`None`), and each held
//! heartbeat looks again. Reconnects back off to a few seconds.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::AsyncMessage;

use super::connect::{self, Tls};
use crate::config::PostgresUrl;
use crate::error::Result;
use crate::store::EndListener;

/// The channel the trigger notifies.
pub(super) const CHANNEL: &str = "keyseat_session_ended";

/// Listens until the runtime stops, reconnecting after any failure.
pub(super) async fn run(url: PostgresUrl, listener: EndListener) {
    let mut pause = Duration::from_millis(200);
    loop {
        match listen(&url, &listener).await {
            Ok(()) => tracing::debug!("the end notifications' connection closed; reconnecting"),
            Err(e) => {
                tracing::debug!(error = %e, "the end notifications' connection failed; reconnecting")
            }
        }
        listener(None);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

async fn listen(url: &PostgresUrl, listener: &EndListener) -> Result<()> {
    let (config, tls) = connect::parse(url)?;
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
