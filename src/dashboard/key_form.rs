//! The key form (create and edit): its fields as the browser sends them,
//! the inputs that render them, and the parsing of what was typed into
//! the store's [`NewKey`] and [`KeyPatch`].
//!
//! Separate from [`super::keys`] (the pages and actions) because it is
//! the part with rules of its own: every field is text as typed, kept to
//! show the form again after a refusal, and checked here with the same
//! limits as the admin API ([`crate::input`]), so a bad value (`abc`,
//! `9000`) is a readable message on the form, never a panic. It also keeps
//! `keys.rs` under the repository's 650-line limit.

use maud::{html, Markup};
use serde::Deserialize;

use super::page::parse_expiry;
use crate::error::{Error, Result};
use crate::input;
use crate::model::{ConflictPolicy, Key};
use crate::store::{KeyPatch, NewKey};

/// What the create form holds (kept to show it again after an error).
#[derive(Debug, Default, Deserialize)]
pub struct KeyForm {
    #[serde(default)]
    label: String,
    #[serde(default)]
    max_sessions: String,
    #[serde(default)]
    on_conflict: String,
    #[serde(default)]
    expires_at: String,
    /// Absent (a form from before borrowing): unchanged; empty: 0.
    #[serde(default)]
    max_borrow_hours: Option<String>,
    /// The create form's one-time id (see [`super::auth::OnceForms`]).
    #[serde(default)]
    pub form_id: String,
}

impl KeyForm {
    /// An empty create form with a new one-time id.
    pub fn blank() -> KeyForm {
        KeyForm {
            form_id: super::auth::OnceForms::new_id(),
            ..Default::default()
        }
    }

    /// The edit form filled with `k`'s current terms.
    pub fn of(k: &Key) -> KeyForm {
        KeyForm {
            label: k.label.clone().unwrap_or_default(),
            max_sessions: k.max_sessions.to_string(),
            on_conflict: k.on_conflict.as_str().into(),
            expires_at: k.expires_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
            max_borrow_hours: Some(k.max_borrow_hours.to_string()),
            form_id: String::new(),
        }
    }
}

/// The form's inputs, filled from `f` (the create form, the edit form,
/// either again after a refusal).
pub fn key_fields(f: &KeyForm) -> Markup {
    let policy = if f.on_conflict.is_empty() {
        "takeover"
    } else {
        f.on_conflict.as_str()
    };
    let seats = if f.max_sessions.is_empty() {
        "1".to_owned()
    } else {
        super::page::typed(&f.max_sessions)
    };
    html! {
        div class="field" {
            label for="label" { "Label" }
            // Refilled after a refusal: a pasted key comes back as its
            // prefix only (as in every other refilled field).
            input type="text" id="label" name="label" value=(super::page::typed(&f.label)) maxlength="200"
                aria-describedby="label-hint";
            small id="label-hint" { "A note for you: customer, order number. Empty for none." }
        }
        div class="field" {
            label for="max_sessions" { "Seats (devices at once)" }
            input type="number" id="max_sessions" name="max_sessions" value=(seats)
                min="1" max="1000" required inputmode="numeric";
        }
        div class="field" {
            label for="on_conflict" { "When all seats are taken" }
            select id="on_conflict" name="on_conflict" {
                option value="takeover" selected[policy == "takeover"] { "takeover: the new device wins" }
                option value="reject" selected[policy == "reject"] { "reject: the new device is refused" }
            }
        }
        div class="field" {
            label for="max_borrow_hours" { "Offline borrowing (hours, 0 = off)" }
            input type="number" id="max_borrow_hours" name="max_borrow_hours"
                value=(super::page::typed(f.max_borrow_hours.as_deref().unwrap_or("0")))
                min="0" max="8760" inputmode="numeric" aria-describedby="borrow-hint";
            small id="borrow-hint" { "How long a device may take its seat offline. A borrowed seat cannot be taken back until it runs out." }
        }
        div class="field" {
            label for="expires_at" { "Expires (UTC)" }
            input type="text" id="expires_at" name="expires_at" value=(super::page::typed(&f.expires_at))
                placeholder="2027-01-31 or 2027-01-31T12:00:00Z" aria-describedby="expires-hint";
            small id="expires-hint" { "Empty: never expires." }
        }
    }
}

fn parse_seats(text: &str) -> Result<u32> {
    let n = text.trim().parse::<u32>().map_err(|_| {
        Error::InvalidRequest(format!(
            "seats must be a whole number from 1 to 1000 (got `{}`)",
            text.trim()
        ))
    })?;
    input::max_sessions(n)
}

/// The borrowing field: `None` when the form did not carry it.
fn parse_borrow_hours(text: Option<&str>) -> Result<Option<u32>> {
    let Some(text) = text.map(str::trim) else {
        return Ok(None);
    };
    if text.is_empty() {
        return Ok(Some(0));
    }
    let n = text.parse::<u32>().map_err(|_| {
        Error::InvalidRequest(format!(
            "offline borrowing must be a whole number of hours from 0 to 8760 (got `{text}`)"
        ))
    })?;
    input::max_borrow_hours(n).map(Some)
}

fn parse_policy(text: &str) -> Result<ConflictPolicy> {
    ConflictPolicy::parse(text.trim()).ok_or_else(|| {
        Error::InvalidRequest("the conflict policy must be takeover or reject".into())
    })
}

/// The create form as a [`NewKey`], or the first field's problem.
pub fn new_key(f: &KeyForm) -> Result<NewKey> {
    Ok(NewKey {
        label: input::label(Some(f.label.clone()))?,
        max_sessions: Some(parse_seats(&f.max_sessions)?),
        on_conflict: Some(parse_policy(&f.on_conflict)?),
        expires_at: parse_expiry(&f.expires_at)?,
        max_borrow_hours: parse_borrow_hours(f.max_borrow_hours.as_deref())?,
    })
}

/// The fields of the form that differ from the key: only those are
/// changed (and recorded in the audit log).
pub fn patch_from(k: &Key, f: &KeyForm) -> Result<KeyPatch> {
    let label = input::label(Some(f.label.clone()))?;
    let seats = parse_seats(&f.max_sessions)?;
    let policy = parse_policy(&f.on_conflict)?;
    let expires = parse_expiry(&f.expires_at)?;
    let borrow = parse_borrow_hours(f.max_borrow_hours.as_deref())?;
    Ok(KeyPatch {
        label: (label != k.label).then_some(label),
        max_sessions: (seats != k.max_sessions).then_some(seats),
        on_conflict: (policy != k.on_conflict).then_some(policy),
        expires_at: (expires != k.expires_at).then_some(expires),
        status: None,
        max_borrow_hours: borrow.filter(|h| *h != k.max_borrow_hours),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;

    #[test]
    fn expiries_in_several_spellings() {
        let day = Timestamp::parse_rfc3339("2027-01-31T00:00:00Z");
        assert_eq!(parse_expiry("").unwrap(), None);
        assert_eq!(parse_expiry(" never ").unwrap(), None);
        assert_eq!(parse_expiry("2027-01-31").unwrap(), day);
        assert_eq!(parse_expiry("2027-01-31T00:00").unwrap(), day);
        assert_eq!(parse_expiry("2027-01-31 00:00:00").unwrap(), day);
        assert_eq!(parse_expiry("2027-01-31T01:00:00+01:00").unwrap(), day);
        assert!(parse_expiry("tomorrow").is_err());
    }

    #[test]
    fn seats_and_policy() {
        assert_eq!(parse_seats(" 3 ").unwrap(), 3);
        assert!(parse_seats("0").is_err());
        assert!(parse_seats("x").is_err());
        assert!(parse_policy("reject").is_ok());
        assert!(parse_policy("steal").is_err());
    }

    /// Absent keeps the key's value, empty is off, a bad value is a
    /// message naming the field and the range.
    #[test]
    fn borrow_hours() {
        assert_eq!(parse_borrow_hours(None).unwrap(), None);
        assert_eq!(parse_borrow_hours(Some(" ")).unwrap(), Some(0));
        assert_eq!(parse_borrow_hours(Some(" 72 ")).unwrap(), Some(72));
        assert_eq!(parse_borrow_hours(Some("8760")).unwrap(), Some(8760));
        for bad in ["9000", "abc", "-1", "1.5"] {
            let e = parse_borrow_hours(Some(bad)).unwrap_err().to_string();
            assert!(e.contains("8760"), "{bad}: {e}");
        }
    }
}
