//! `keyseat signing-key show|rotate`: the keys that sign answers
//! (docs/api.md, "Signed answers"). Only public halves are ever printed.

use clap::Subcommand;

use crate::clock::Timestamp;
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::signing::{self, KeyRecord};
use crate::store::Storage;
use crate::wire::JwkSet;

#[derive(Debug, Subcommand)]
pub enum SigningKeyCommand {
    /// Print the public signing keys as GET /api/signing-keys does (a JWK
    /// set, the current key first); a first key is made if there is none.
    Show {
        /// Print only the current public key (base64url), the text an app
        /// pins (`public_key(...)`, `--public-key`).
        #[arg(long)]
        pin: bool,
    },
    /// Make a new current signing key. The old one stays listed for
    /// signing_key_overlap_days; apps that pin only the old key refuse
    /// answers from now on, so ship the new key first.
    Rotate {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a signing-key command.
pub fn run(
    cmd: SigningKeyCommand,
    store: &dyn Storage,
    now: Timestamp,
    settings: &Settings,
) -> Result<()> {
    match cmd {
        SigningKeyCommand::Show { pin } => {
            let records = match &settings.signing_key_file {
                Some(path) => vec![KeyRecord::from_pem_file(path)?],
                None => store.ensure_signing_key(now)?,
            };
            let listed = signing::listed(&records, now, settings.signing_key_overlap_days);
            let current = listed
                .first()
                .ok_or_else(|| Error::Internal("no current signing key".into()))?;
            if pin {
                outln!("{}", current.jwk().x);
            } else {
                let set = JwkSet {
                    keys: listed.iter().map(KeyRecord::jwk).collect(),
                };
                outln!("{}", serde_json::json!(set));
            }
            Ok(())
        }
        SigningKeyCommand::Rotate { json } => {
            if let Some(path) = &settings.signing_key_file {
                return Err(Error::Config(format!(
                    "the signing key comes from signing_key_file = {}; to rotate, put a new key \
                     in that file and restart the server",
                    path.display()
                )));
            }
            let overlap_ms = i64::from(settings.signing_key_overlap_days) * 86_400_000;
            let key = store.rotate_signing_key(now, Timestamp(now.0.saturating_sub(overlap_ms)))?;
            if json {
                outln!("{}", serde_json::json!(key.jwk()));
            } else {
                outln!("new signing key: {} (kid {})", key.jwk().x, key.kid);
                outln!(
                    "running servers sign with it within seconds; the previous key stays listed for {} day(s)",
                    settings.signing_key_overlap_days
                );
            }
            Ok(())
        }
    }
}
