//! How an operator's reference to a key is read, for every engine: a key
//! id, a display prefix with or without `ks_`, or the full access key
//! itself (what an operator has in hand when a customer pastes it),
//! checked and hashed like a device's and never echoed.

use crate::error::Error;
use crate::keys::{AccessKey, KeyFormatError, KeyHash, KEY_TAG, PREFIX_LEN};

/// What to look for once no key has the reference as its id.
#[derive(Debug)]
pub(in crate::store) enum KeyRef {
    /// A well-formed access key: look it up by hash; `missing` if absent.
    Hash { hash: KeyHash, missing: Error },
    /// A display prefix (`ks_` + 8): one key by it, else `missing`.
    Prefix { prefix: String, missing: Error },
    /// Nothing else to try.
    Missing(Error),
}

impl KeyRef {
    /// Reads a reference (already tried as a key id).
    pub(in crate::store) fn read(key_ref: &str) -> KeyRef {
        let key_ref = key_ref.trim();
        // Someone may paste the secret itself here: never echo more than
        // its prefix.
        let not_found = || Error::KeyNotFound(crate::keys::redact_secret(key_ref));
        match AccessKey::parse(key_ref) {
            Ok(access) => {
                return KeyRef::Hash {
                    hash: access.hash(),
                    missing: Error::KeyNotFound(format!(
                        "{} (a well-formed access key that is not in this database)",
                        access.prefix()
                    )),
                }
            }
            Err(KeyFormatError::Checksum) => {
                return KeyRef::Missing(Error::KeyNotFound(format!(
                    "{} (an access key with a mistyped character: its checksum does not match)",
                    crate::keys::redact_secret(key_ref)
                )))
            }
            Err(_) => {}
        }
        let bare = key_ref.strip_prefix(KEY_TAG).unwrap_or(key_ref);
        if bare.len() == PREFIX_LEN && bare.bytes().all(|b| b.is_ascii_alphanumeric()) {
            KeyRef::Prefix {
                prefix: format!("{KEY_TAG}{bare}"),
                missing: not_found(),
            }
        } else {
            KeyRef::Missing(not_found())
        }
    }
}

/// The refusal when a display prefix names more than one key.
pub(in crate::store) fn ambiguous_prefix(prefix: &str) -> Error {
    Error::Conflict(format!(
        "prefix {prefix} matches more than one key; use the key id"
    ))
}
