//! Validation of what clients and operators type, shared by the HTTP API
//! and the CLI so both refuse the same things with the same words.

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::model::EventType;

/// Label limit (characters).
pub const MAX_LABEL: usize = 200;

/// Checks a client-supplied `session_id`: 8..=128 characters of
/// `[A-Za-z0-9._-]`.
pub fn session_id(id: &str) -> Result<()> {
    let ok = (8..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRequest(
            "session_id must be 8 to 128 characters of A-Z, a-z, 0-9, '.', '_' or '-'".into(),
        ))
    }
}

/// An optional text field: trimmed, empty treated as absent, length-checked.
pub fn optional_text(
    value: Option<String>,
    field: &str,
    max_chars: usize,
) -> Result<Option<String>> {
    let Some(value) = value else { return Ok(None) };
    let value = value.trim().to_owned();
    if value.chars().any(char::is_control) {
        return Err(Error::InvalidRequest(format!(
            "{field} must not contain control characters (newlines, tabs, escapes)"
        )));
    }
    if value.chars().count() > max_chars {
        return Err(Error::InvalidRequest(format!(
            "{field} must be at most {max_chars} characters"
        )));
    }
    Ok((!value.is_empty()).then_some(value))
}

/// A seat limit (contract: 1..=1000).
pub fn max_sessions(max: u32) -> Result<u32> {
    if (1..=1000).contains(&max) {
        Ok(max)
    } else {
        Err(Error::InvalidRequest(format!(
            "max_sessions must be between 1 and 1000 (got {max})"
        )))
    }
}

/// A key label: at most 200 characters; empty means none.
pub fn label(label: Option<String>) -> Result<Option<String>> {
    optional_text(label, "label", MAX_LABEL)
}

/// An RFC 3339 time for a named field.
pub fn time(field: &str, text: &str) -> Result<Timestamp> {
    Timestamp::parse_rfc3339(text).ok_or_else(|| {
        Error::InvalidRequest(format!(
            "{field} must be an RFC 3339 time such as 2027-01-31T00:00:00Z (got `{}`)",
            crate::keys::redact_secret(text)
        ))
    })
}

/// A time given either as RFC 3339 or as an age before `now` such as
/// `30m`, `12h` or `7d` (for `--since`).
pub fn time_or_age(field: &str, text: &str, now: Timestamp) -> Result<Timestamp> {
    let t = text.trim();
    let unit_secs = match t.chars().last() {
        Some('s') => Some(1),
        Some('m') => Some(60),
        Some('h') => Some(3_600),
        Some('d') => Some(86_400),
        _ => None,
    };
    if let Some(unit) = unit_secs {
        if let Ok(n) = t[..t.len() - 1].parse::<u64>() {
            return Ok(now.minus_secs(n.saturating_mul(unit)));
        }
    }
    time(field, t).map_err(|_| {
        Error::InvalidRequest(format!(
            "{field} must be an RFC 3339 time or an age such as 30m, 12h, 7d (got `{}`)",
            crate::keys::redact_secret(text)
        ))
    })
}

/// An event type name, listing the valid ones when it is wrong.
pub fn event_type(text: &str) -> Result<EventType> {
    EventType::parse(text).ok_or_else(|| {
        let all: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        Error::InvalidRequest(format!("type must be one of: {}", all.join(", ")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_follow_the_contract() {
        assert!(session_id("abcdefgh").is_ok());
        assert!(session_id("a.b_c-d.0123").is_ok());
        assert!(session_id(&"x".repeat(128)).is_ok());
        assert!(session_id("short").is_err());
        assert!(session_id(&"x".repeat(129)).is_err());
        assert!(session_id("has space1").is_err());
        assert!(session_id("ünicode-id").is_err());
    }

    #[test]
    fn ages_and_times() {
        let now = Timestamp(10_000_000);
        assert_eq!(
            time_or_age("since", "1h", now).unwrap(),
            Timestamp(10_000_000 - 3_600_000)
        );
        assert_eq!(
            time_or_age("since", "1970-01-01T00:00:01Z", now).unwrap(),
            Timestamp(1_000)
        );
        assert!(time_or_age("since", "soon", now).is_err());
        assert!(time_or_age("since", "", now).is_err());
    }

    #[test]
    fn limits() {
        assert!(max_sessions(0).is_err());
        assert!(max_sessions(1001).is_err());
        assert_eq!(max_sessions(1000).unwrap(), 1000);
        assert_eq!(label(Some("  ".into())).unwrap(), None);
        assert!(label(Some("x".repeat(201))).is_err());
        assert!(label(Some("a\nb".into())).is_err());
        assert!(optional_text(Some("x\u{1b}[31m".into()), "device.name", 128).is_err());
        assert!(event_type("session_started").is_ok());
        assert!(event_type("nope")
            .unwrap_err()
            .to_string()
            .contains("key_created"));
    }
}
