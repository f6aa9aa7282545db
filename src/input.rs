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
    if is_token(id) {
        refuse_secret("session_id", id)
    } else {
        Err(Error::InvalidRequest(
            "session_id must be 8 to 128 characters of A-Z, a-z, 0-9, '.', '_' or '-'".into(),
        ))
    }
}

/// The grammar session ids and nonces share: 8..=128 characters of
/// `[A-Za-z0-9._-]`.
fn is_token(text: &str) -> bool {
    (8..=128).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Checks a request's `nonce` (docs/api.md, "Signed answers"): 8..=128
/// characters of `[A-Za-z0-9._-]`.
pub fn nonce(nonce: &str) -> Result<()> {
    if is_token(nonce) {
        Ok(())
    } else {
        Err(Error::InvalidRequest(
            "nonce must be a string of 8 to 128 characters of A-Z, a-z, 0-9, '.', '_' or '-'"
                .into(),
        ))
    }
}

/// Whether `c` is invisible or changes the direction of the text around
/// it: bidirectional embeddings, overrides, isolates and marks, line and
/// paragraph separators, zero-width characters, word joiners and the other
/// invisible format characters, the byte-order mark, tag characters. Such
/// a character in a name lets one row pass for another (U+202E turns
/// `laptop-fp` into `pf-potpal` on screen) or two different fingerprints
/// look the same, so names, fingerprints and labels may not hold them, and
/// a stored one (from a release before this rule) is shown escaped.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}'                     // soft hyphen
        | '\u{034F}'                   // combining grapheme joiner
        | '\u{061C}'                   // Arabic letter mark
        | '\u{115F}' | '\u{1160}'       // Hangul fillers
        | '\u{17B4}' | '\u{17B5}'       // Khmer inherent vowels
        | '\u{180B}'..='\u{180F}'       // Mongolian selectors and separator
        | '\u{200B}'..='\u{200F}'       // zero-width space/joiners, LRM, RLM
        | '\u{2028}' | '\u{2029}'       // line and paragraph separators
        | '\u{202A}'..='\u{202E}'       // embeddings and overrides
        | '\u{2060}'..='\u{206F}'       // word joiner, invisible operators, isolates
        | '\u{3164}'                   // Hangul filler
        | '\u{FE00}'..='\u{FE0F}'       // variation selectors
        | '\u{FEFF}'                   // byte-order mark / zero-width no-break space
        | '\u{FFA0}'                   // halfwidth Hangul filler
        | '\u{FFF9}'..='\u{FFFB}'       // interlinear annotation
        | '\u{1D173}'..='\u{1D17A}'     // musical formatting
        | '\u{E0000}'..='\u{E0FFF}'     // tags and variation selectors supplement
    )
}

/// Joiners and selectors (ZWNJ, ZWJ, variation selectors) shape the
/// visible character before them: emoji sequences (`👩\u{200d}💻`, `❤\u{fe0f}`)
/// and Persian or Indic words need them. So they are allowed right after a
/// visible non-ASCII character (or another such joiner), and hidden
/// anywhere else, where they would only make `laptop` and `lap\u{200d}top`
/// look alike.
fn is_joiner(c: char) -> bool {
    matches!(c, '\u{200C}' | '\u{200D}' | '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}')
}

/// Whether `c`, coming after `prev`, is hidden from a reader: an invisible
/// or direction-changing character ([`is_invisible`]), except a joiner
/// where it shapes the character before it ([`is_joiner`]).
pub fn hides(prev: Option<char>, c: char) -> bool {
    if is_joiner(c) {
        !prev.is_some_and(|p| !p.is_ascii() && (is_joiner(p) || !is_invisible(p)))
    } else {
        is_invisible(c)
    }
}

/// The first hidden character of `text` (see [`hides`]) with its position
/// (in characters, from 0).
fn first_hidden(text: &str) -> Option<(usize, char)> {
    let mut prev = None;
    for (at, c) in text.chars().enumerate() {
        if hides(prev, c) {
            return Some((at, c));
        }
        prev = Some(c);
    }
    None
}

/// `text` with every hidden character (see [`hides`]) written as its code
/// point, `\u{202e}`, so stored names show what they hold.
pub fn escape_invisible(text: &str) -> std::borrow::Cow<'_, str> {
    escape_where(text, hides)
}

/// `text` with control characters (`\n`, `\u{1b}`…) and hidden ones
/// escaped: for terminals and logs, where input refuses both but a database
/// from an earlier release may hold them.
pub fn printable(text: &str) -> String {
    escape_where(text, |prev, c| c.is_control() || hides(prev, c)).into_owned()
}

fn escape_where(
    text: &str,
    escaped: impl Fn(Option<char>, char) -> bool,
) -> std::borrow::Cow<'_, str> {
    let mut prev = None;
    let mut out: Option<String> = None;
    for (i, c) in text.char_indices() {
        if escaped(prev, c) {
            let o = out.get_or_insert_with(|| text[..i].to_owned());
            if c.is_control() {
                o.extend(c.escape_default());
            } else {
                o.extend(c.escape_unicode());
            }
        } else if let Some(o) = out.as_mut() {
            o.push(c);
        }
        prev = Some(c);
    }
    match out {
        Some(o) => o.into(),
        None => text.into(),
    }
}

/// Whether `text` holds something shaped like an access key (`ks_` and
/// at least 32 more key characters: a whole key, a typo of one, or most of
/// one). Such a value in a name or id is a pasted secret; it is refused
/// before it can be stored, logged or shown.
pub fn holds_access_key(text: &str) -> bool {
    text.match_indices(crate::keys::KEY_TAG).any(|(at, tag)| {
        text[at + tag.len()..]
            .bytes()
            .take_while(u8::is_ascii_alphanumeric)
            .count()
            >= 32
    })
}

/// A key reference from a URL (a path or a query): a key id or display
/// prefix. The full access key is refused here, though the CLI accepts it:
/// in a URL it would be kept by proxies, access logs and browser history.
pub fn key_ref_in_url(key_ref: String) -> Result<String> {
    if holds_access_key(&key_ref) {
        return Err(Error::KeyNotFound(format!(
            "{} (an access key is not accepted in a URL, where proxies and logs keep it; use \
             the key id or the prefix)",
            crate::keys::redact_secret(key_ref.trim())
        )));
    }
    Ok(key_ref)
}

fn refuse_secret(field: &str, text: &str) -> Result<()> {
    if holds_access_key(text) {
        return Err(Error::InvalidRequest(format!(
            "{field} must not contain an access key (it would be stored and logged); \
             send the key only as access_key"
        )));
    }
    Ok(())
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
    if let Some((at, c)) = first_hidden(&value) {
        return Err(Error::InvalidRequest(format!(
            "{field} must not contain invisible or direction-changing characters \
             (found {} at character {})",
            c.escape_unicode(),
            at + 1
        )));
    }
    refuse_secret(field, &value)?;
    if value.chars().count() > max_chars {
        return Err(Error::InvalidRequest(format!(
            "{field} must be at most {max_chars} characters"
        )));
    }
    Ok((!value.is_empty()).then_some(value))
}

/// A paging cursor naming a key id (`after`, the previous page's
/// `next_after`): `key_` and base62. Anything else is refused here, before
/// the store, so the message can quote it safely (a pasted access key only
/// by its prefix).
pub fn key_id_cursor(field: &str, text: &str) -> Result<()> {
    let ok = text.strip_prefix("key_").is_some_and(|rest| {
        (1..=64).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "{field} must be a key id such as key_…, the previous page's next_after (got `{}`)",
            crate::keys::redact_secret(text)
        )))
    }
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

/// A key's longest borrow, in hours: 0 (off) to a year.
pub fn max_borrow_hours(hours: u32) -> Result<u32> {
    let max = crate::rules::MAX_BORROW_HOURS;
    if hours <= max {
        Ok(hours)
    } else {
        Err(Error::InvalidRequest(format!(
            "max_borrow_hours must be between 0 and {max} (got {hours})"
        )))
    }
}

/// A borrow's `hours`: at least 1 (the key's own limit is the rules').
pub fn borrow_hours(hours: u32) -> Result<u32> {
    let max = crate::rules::MAX_BORROW_HOURS;
    if (1..=max).contains(&hours) {
        Ok(hours)
    } else {
        Err(Error::InvalidRequest(format!(
            "hours must be between 1 and {max} (got {hours})"
        )))
    }
}

/// A heartbeat's `wait_seconds`: 0 (answer at once) up to the interval
/// the server asks for, so a held heartbeat is always answered before the
/// next one is due.
pub fn wait_seconds(wait: Option<u64>, interval_secs: u64) -> Result<u64> {
    match wait.unwrap_or(0) {
        w if w <= interval_secs => Ok(w),
        w => Err(Error::InvalidRequest(format!(
            "wait_seconds must be between 0 and the heartbeat interval, {interval_secs} (got {w})"
        ))),
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
    if let Some(secs) = duration_secs(t) {
        return Ok(now.minus_secs(secs));
    }
    time(field, t).map_err(|_| {
        Error::InvalidRequest(format!(
            "{field} must be an RFC 3339 time or an age such as 30m, 12h, 7d (got `{}`)",
            crate::keys::redact_secret(text)
        ))
    })
}

/// The one grammar of durations and ages, everywhere one is typed (report
/// windows, event filters): digits then a unit, `s`, `m` or `min`, `h`,
/// `d`, `w` (`90s`, `30m`, `24h`, `7d`, `2w`). Saturates rather than
/// overflows; callers bound the result.
fn duration_secs(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    let unit_secs = match unit {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    Some(n.saturating_mul(unit_secs))
}

/// A window's length such as `30m`, `24h` or `7d`, in seconds: more than
/// zero and at most ten years (`flag` names the option in the error).
pub fn duration(flag: &str, text: &str) -> Result<u64> {
    match duration_secs(text.trim()) {
        Some(secs) if secs > 0 && secs <= 10 * 365 * 86_400 => Ok(secs),
        _ => Err(Error::InvalidRequest(format!(
            "{flag} must be a duration such as 30m, 24h or 7d (got `{}`)",
            crate::keys::redact_secret(text)
        ))),
    }
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
    #[test]
    fn durations() {
        assert_eq!(super::duration("--since", "30m").unwrap(), 1_800);
        assert_eq!(super::duration("--since", "24h").unwrap(), 86_400);
        assert_eq!(super::duration("--since", " 7d ").unwrap(), 604_800);
        assert_eq!(super::duration("--since", "2w").unwrap(), 1_209_600);
        for bad in ["", "7", "d", "0d", "-1d", "7x", "1.5h", "99999999999d"] {
            let e = super::duration("--since", bad).unwrap_err().to_string();
            assert!(e.starts_with("--since must be a duration"), "{bad}: {e}");
            assert!(!e.contains('\n'));
        }
    }

    /// Emoji sequences and joined scripts keep their joiners; a joiner
    /// between ASCII letters, which only makes two names look alike, is
    /// refused.
    #[test]
    fn joiners_are_allowed_where_they_shape_the_character_before_them() {
        for ok in [
            "👩\u{200d}💻 laptop",
            "❤\u{fe0f}",
            "🏳\u{fe0f}\u{200d}🌈",
            "می\u{200c}خواهم",
        ] {
            assert_eq!(
                label(Some(ok.into())).unwrap().as_deref(),
                Some(ok),
                "{ok:?}"
            );
            assert_eq!(printable(ok), ok);
        }
        for bad in ["lap\u{200d}top", "\u{200d}x", "a\u{fe0f}", " \u{200c}"] {
            let err = label(Some(bad.into())).unwrap_err().to_string();
            assert!(err.contains("invisible"), "{bad:?}: {err}");
        }
        assert_eq!(printable("lap\u{200d}top\n"), "lap\\u{200d}top\\n");
        assert_eq!(escape_invisible("a\u{202e}b"), "a\\u{202e}b");
    }

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

    /// Bidirectional controls, isolates, separators, zero-width characters
    /// and the byte-order mark are refused in names, fingerprints and
    /// labels, with the field and the character named.
    #[test]
    fn invisible_and_direction_changing_characters_are_refused() {
        for c in [
            '\u{202A}',
            '\u{202B}',
            '\u{202C}',
            '\u{202D}',
            '\u{202E}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{2028}',
            '\u{2029}',
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{200E}',
            '\u{200F}',
            '\u{2060}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{061C}',
            '\u{E0041}',
        ] {
            let text = format!("lap{c}top");
            let err = optional_text(Some(text.clone()), "device.name", 128)
                .unwrap_err()
                .to_string();
            assert!(err.contains("device.name"), "{err}");
            assert!(err.contains(&c.escape_unicode().to_string()), "{err}");
            assert!(err.contains("character 4"), "{err}");
            assert!(label(Some(text)).is_err());
        }
        // Other non-ASCII text is welcome.
        for fine in [
            "Ünïcødé laptop",
            "ノートパソコン",
            "حاسوب",
            "laptop 💻",
            "a–b · “c”",
        ] {
            assert_eq!(label(Some(fine.into())).unwrap().as_deref(), Some(fine));
        }
    }

    /// Stored values from before the rule are shown with each invisible
    /// character as its code point; everything else is left alone.
    #[test]
    fn invisible_characters_are_escaped_for_display() {
        assert_eq!(
            escape_invisible("fp-\u{202e}1\u{200b}"),
            "fp-\\u{202e}1\\u{200b}"
        );
        assert_eq!(escape_invisible("plain ü"), "plain ü");
    }

    /// A pasted access key is refused where a name, fingerprint, label or
    /// session id is expected, and the message does not repeat it.
    #[test]
    fn access_keys_are_refused_outside_access_key() {
        let key = crate::keys::AccessKey::generate();
        let key = key.expose_secret();
        let err = session_id(key).unwrap_err().to_string();
        assert!(
            err.contains("session_id") && !err.contains(&key[11..]),
            "{err}"
        );
        for text in [
            key.to_owned(),
            format!("my {key} laptop"),
            key[..36].to_owned(),
        ] {
            let err = optional_text(Some(text), "device.fingerprint", 256)
                .unwrap_err()
                .to_string();
            assert!(err.contains("device.fingerprint"), "{err}");
            assert!(!err.contains(&key[11..20]), "{err}");
        }
        assert!(session_id("ks_client-chosen-id").is_ok());
        assert!(label(Some("ks_short label".into())).is_ok());
    }

    /// A paging cursor must be a key id; a pasted key is quoted by prefix.
    #[test]
    fn cursors_are_key_ids() {
        assert!(key_id_cursor("after", "key_3f9aQ2xY7bLm0pKc").is_ok());
        let key = crate::keys::AccessKey::generate();
        let err = key_id_cursor("after", key.expose_secret())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("after") && err.contains(&key.prefix()),
            "{err}"
        );
        assert!(!err.contains(&key.expose_secret()[11..]), "{err}");
        assert!(key_id_cursor("after", "key_").is_err());
        assert!(key_id_cursor("after", "key_a b").is_err());
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
        assert_eq!(max_borrow_hours(0).unwrap(), 0);
        assert_eq!(max_borrow_hours(8760).unwrap(), 8760);
        assert!(max_borrow_hours(8761).is_err());
        assert!(borrow_hours(0).is_err());
        assert!(borrow_hours(8761).is_err());
        assert_eq!(borrow_hours(1).unwrap(), 1);
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
