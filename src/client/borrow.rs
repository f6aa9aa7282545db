//! Borrowing a seat for offline use (docs/api.md, "Borrowing"): the app
//! asks for a seat for some hours while it is online, keeps the lease
//! token, and on a start without the network checks the token with the
//! pinned public key instead of asking the server.
//!
//! ```no_run
//! use keyseat::client::{verify_lease_token, Client};
//!
//! const PUBLIC_KEY: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
//! let client = Client::new("https://licenses.example.com", "ks_…")?.public_key(PUBLIC_KEY)?;
//! let borrowed = client.borrow(72)?; // before the flight
//! std::fs::write("lease.jws", &borrowed.lease_token).ok();
//! // … later, offline, at the app's start:
//! let token = std::fs::read_to_string("lease.jws").unwrap_or_default();
//! match verify_lease_token(&token, PUBLIC_KEY) {
//!     Ok(claims) => println!("licensed offline until {}", claims.exp),
//!     Err(e) => eprintln!("no offline licence: {e}"),
//! }
//! # Ok::<(), keyseat::client::ClientError>(())
//! ```

use super::{Api, Client, ClientError};
use crate::clock::{Clock, Timestamp};
use crate::lease_token::{LeaseClaims, LeaseTokenError};
use crate::signing::PinnedKey;

/// A seat held offline: no heartbeats until `borrowed_until`.
#[derive(Debug, Clone)]
pub struct Borrowed {
    /// The session that holds the seat.
    pub session_id: String,
    /// Its fence.
    pub fence: i64,
    /// Until when the seat is held.
    pub borrowed_until: Timestamp,
    /// The compact JWS to keep and check offline ([`verify_lease_token`]).
    pub lease_token: String,
    /// Whether this borrow superseded another device's session.
    pub previous_session_terminated: bool,
    api: Api,
    access_key: String,
}

impl Borrowed {
    /// Gives the seat back early (`/api/session/end`); the token still
    /// verifies offline until its `exp`, so an app that returns the seat
    /// should delete its copy.
    pub fn give_back(&self) -> Result<(), ClientError> {
        self.api
            .end(&self.access_key, &self.session_id, None)
            .map(drop)
            .map_err(Into::into)
    }
}

impl Client {
    /// Borrows a seat for `hours` (1 up to the key's `max_borrow_hours`).
    /// Retried on transient failures with the same session id, which the
    /// server treats as the same borrow. Refusals: 403
    /// `borrow_not_allowed`, 400 `invalid_request` (too many hours), 409
    /// `seats_full`.
    pub fn borrow(&self, hours: u32) -> Result<Borrowed, ClientError> {
        let session_id = uuid::Uuid::new_v4().to_string();
        let result = self.borrow_as(&session_id, hours);
        if let Err(ClientError::Untrusted(_) | ClientError::Unreachable(_)) = &result {
            // The real server may have taken the seat before the answer was
            // lost or forged on the way: a borrowed seat is never
            // superseded, so give it back rather than lock the key for
            // hours (harmless if nothing was taken).
            let _ = self.api.end(&self.access_key, &session_id, None);
        }
        result
    }

    /// Borrows the live session `session_id` of this key (an app that is
    /// running and about to go offline) for `hours`.
    pub fn borrow_as(&self, session_id: &str, hours: u32) -> Result<Borrowed, ClientError> {
        let answer = self.retried(|| {
            self.api.borrow(
                &self.access_key,
                Some(session_id),
                self.device_name.as_deref(),
                self.fingerprint.as_deref(),
                hours,
            )
        })?;
        Ok(Borrowed {
            session_id: answer.session.session_id,
            fence: answer.session.fence,
            borrowed_until: answer.borrowed_until,
            lease_token: answer.lease_token,
            previous_session_terminated: answer.session.previous_session_terminated,
            api: self.api.clone(),
            access_key: self.access_key.clone(),
        })
    }
}

/// Checks a lease token offline against the pinned `public_key` (the
/// base64url text `keyseat signing-key show --pin` prints): EdDSA, signed
/// by that key, issued by keyseat, not past its `exp` on this machine's
/// clock. The claims say which session and key prefix it is for.
pub fn verify_lease_token(token: &str, public_key: &str) -> Result<LeaseClaims, LeaseTokenError> {
    let pinned = PinnedKey::parse(public_key).map_err(LeaseTokenError::BadPublicKey)?;
    crate::lease_token::verify(token, &[pinned], crate::clock::SystemClock.now())
}
