//! The key search form's answer (`POST /admin/keys/search`).
//!
//! The search box is where an operator pastes the access key a customer
//! sent them. Were the form a GET, the secret would sit in the address bar,
//! the browser's history and every proxy's access log. So the form posts
//! (with the session's CSRF field, checked like every other POST) and the
//! text is read here:
//!
//! - a whole, valid access key is resolved by the store (checksum, hash,
//!   lookup; the store never echoes it) and the answer is a 303 to the
//!   key's page, whose address holds only the key id;
//! - a well-formed key that is not in the database, or text that looks
//!   like an access key but is not one (a mistyped character, one too few
//!   or too many), is the keys page with a sentence in `#error` naming only
//!   the prefix, the box refilled with that prefix and the keys that have
//!   it listed;
//! - any other text is a 303 to the ordinary `GET /admin/keys?q=…&page=1`,
//!   so that searches by label, prefix or key id stay bookmarkable.

use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Form};
use serde::Deserialize;

use super::auth::Signed;
use super::keys::{list_page, Listing};
use super::page::{enc, key_as_prefix, see_other, typed, PageResult};
use crate::error::Error;
use crate::keys::{AccessKey, KeyFormatError};
use crate::state::AppState;
use crate::store::blocking;

/// What the search form sends (its `csrf` field is read by
/// [`super::auth::require_session`] before this handler runs).
#[derive(Debug, Default, Deserialize)]
pub struct SearchForm {
    #[serde(default)]
    q: String,
}

/// What to do with the text of the search box.
#[derive(Debug, PartialEq, Eq)]
enum Typed {
    /// A whole access key that passes its checksum.
    AccessKey(AccessKey),
    /// Looks like an access key (`ks_`, 8 key characters, more) but is not
    /// one: the prefix, and why.
    NotAKey(String, KeyFormatError),
    /// Anything else: searched in the open, as typed (any key-like run cut
    /// to its prefix all the same).
    Text(String),
}

fn classify(text: &str) -> Typed {
    let t = text.trim();
    match AccessKey::parse(t) {
        Ok(k) => Typed::AccessKey(k),
        Err(why) => match key_as_prefix(t) {
            Some(prefix) => Typed::NotAKey(prefix, why),
            None => Typed::Text(typed(t)),
        },
    }
}

/// `POST /admin/keys/search`: the key search, see the module's doc.
pub async fn search(
    State(state): State<AppState>,
    Extension(me): Extension<Signed>,
    f: std::result::Result<Form<SearchForm>, FormRejection>,
) -> PageResult {
    let f = super::page::form(f)?;
    let (prefix, error) = match classify(&f.q) {
        Typed::Text(t) if t.is_empty() => return Ok(see_other("/admin/keys")),
        Typed::Text(t) => return Ok(see_other(&format!("/admin/keys?q={}&page=1", enc(&t)))),
        Typed::AccessKey(key) => {
            let store = state.store()?;
            let now = state.now();
            let prefix = key.prefix();
            // The store resolves the whole key by its hash; the secret
            // goes no further than this call.
            match blocking(move || store.get_key(key.expose_secret(), now)).await {
                Ok(k) => return Ok(see_other(&format!("/admin/keys/{}", k.key_id))),
                Err(Error::KeyNotFound(_)) => {
                    let msg = format!(
                        "No key in this database has the access key {prefix}… that was \
                         pasted: it is well-formed, so it may belong to another keyseat \
                         server, or its key was deleted."
                    );
                    (prefix, (StatusCode::NOT_FOUND, msg))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Typed::NotAKey(prefix, why) => {
            let msg = match why {
                KeyFormatError::Checksum => format!(
                    "The access key {prefix}… has a mistyped character (its checksum does \
                     not match); the keys with its prefix are listed below."
                ),
                KeyFormatError::Shape | KeyFormatError::Alphabet => format!(
                    "The text starting {prefix}… is not a whole access key ({why}); the \
                     keys with its prefix are listed below."
                ),
            };
            (prefix, (StatusCode::OK, msg))
        }
    };
    let (status, msg) = error;
    let listing = Listing {
        search: prefix,
        page: 1,
        done: None,
        error: Some(msg),
    };
    let page = list_page(&state, &me, listing).await?;
    Ok((status, page).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole key is looked up; a near miss is named by its prefix; other
    /// text is searched in the open, with any key-like run cut short.
    #[test]
    fn search_text_is_sorted_by_whether_it_is_an_access_key() {
        let key = AccessKey::generate();
        let secret = key.expose_secret();
        assert_eq!(
            classify(&format!(" {secret}\n")),
            Typed::AccessKey(key.clone())
        );
        let last = secret.chars().last().unwrap();
        let other = if last == 'a' { 'b' } else { 'a' };
        let typo = format!("{}{other}", &secret[..secret.len() - 1]);
        assert_eq!(
            classify(&typo),
            Typed::NotAKey(key.prefix(), KeyFormatError::Checksum)
        );
        assert_eq!(
            classify(&secret[..30]),
            Typed::NotAKey(key.prefix(), KeyFormatError::Shape)
        );
        assert_eq!(classify("Acme Ltd"), Typed::Text("Acme Ltd".into()));
        assert_eq!(classify("ks_3f9a"), Typed::Text("ks_3f9a".into()));
        let Typed::Text(behind) = classify(&format!("order {secret}")) else {
            panic!("text with a key behind it is text");
        };
        assert!(!behind.contains(&secret[11..]), "{behind}");
    }
}
