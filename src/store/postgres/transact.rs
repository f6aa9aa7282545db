//! Every operation but the heartbeat runs as a transaction that is
//! retried when the database says it raced (a serialization failure, a
//! deadlock, two servers inserting the same session id) and given up at a
//! deadline of its own. The macros are declared before the modules that
//! use them; they name everything by its full path, so a module needs no
//! imports to use them.

use std::time::Duration;

use tokio_postgres::error::SqlState;

use crate::error::Error;

/// Operations retried after a serialization failure, a deadlock, a
/// unique-key race or a connection found closed before the work began.
pub(super) const RETRIES: u32 = 5;
/// The longest one operation may take, commit included: past it the
/// device gets 503 and the connection is dropped. Longer than the
/// statement timeout, so it only ends waits that nothing else ends.
pub(super) const OPERATION_DEADLINE: Duration = Duration::from_secs(12);

/// Whether an error is worth running the whole operation again for.
pub(super) fn retryable(e: &Error) -> bool {
    match e {
        Error::Postgres(pe) => matches!(
            pe.code(),
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::UNIQUE_VIOLATION
        ),
        _ => false,
    }
}

/// Runs `$body` (which uses the transaction `$tx` and may `?`) in a
/// transaction on `$inner.pool`, commits, and runs it all again on a
/// retryable failure.
macro_rules! transact {
    ($inner:expr, |$tx:ident| $body:expr) => {{
        let inner = &$inner;
        let mut attempt = 0u32;
        loop {
            let mut client = inner.client(&inner.pool).await?;
            let mut begun = false;
            let timed = tokio::time::timeout(
                $crate::store::postgres::transact::OPERATION_DEADLINE,
                async {
                    let $tx = client.transaction().await?;
                    begun = true;
                    let value = $body;
                    $tx.commit().await?;
                    Ok::<_, $crate::error::Error>(value)
                },
            )
            .await;
            let outcome = match timed {
                Ok(outcome) => outcome,
                Err(_) => {
                    // Stuck (a commit waiting for a synchronous standby
                    // that is not there, which no statement timeout
                    // covers): this connection is not given back to the
                    // pool, and the device is told to retry.
                    drop(deadpool_postgres::Object::take(client));
                    break Err($crate::error::Error::Unavailable(format!(
                        "the database {} did not finish the change within {} s",
                        inner.url,
                        $crate::store::postgres::transact::OPERATION_DEADLINE.as_secs()
                    )));
                }
            };
            match outcome {
                // A pooled connection the database closed (it restarted)
                // before anything was done: take another.
                Err($crate::error::Error::Postgres(e))
                    if !begun
                        && e.is_closed()
                        && attempt < $crate::store::postgres::transact::RETRIES =>
                {
                    attempt += 1;
                }
                Err(e)
                    if $crate::store::postgres::transact::retryable(&e)
                        && attempt < $crate::store::postgres::transact::RETRIES =>
                {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(u64::from(attempt) * 5))
                        .await;
                }
                other => {
                    if let Err(e) = &other {
                        inner.note(e);
                    }
                    break other;
                }
            }
        }
    }};
}

/// Runs `$body` with a [`Work`](super::work::Work) named `$work` at the lease time `$given`.
macro_rules! with_work {
    ($inner:expr, $given:expr, |$work:ident| $body:expr) => {
        transact!($inner, |tx| {
            let now = $inner.now(&tx, $given).await?;
            let $work = $crate::store::postgres::work::Work { tx: &tx, now };
            $body
        })
    };
}
