//! An event's detail (a JSON object in the audit log) as text an operator
//! reads at a glance: one `key: value` line per field, nested objects
//! flattened to dotted names, lists joined by commas, with the raw JSON
//! behind a `<details>` toggle (no script needed) for when the exact form
//! matters.
//!
//! Every value passes through [`crate::input::printable`] (a control or
//! invisible character shows as its code point, so a value cannot fake a
//! second line) and [`crate::keys::redact_secret`] (the log never holds an
//! access key, but if one ever got there only its prefix would show), and
//! is HTML-escaped by the template.

use maud::{html, Markup};
use serde_json::Value;

/// Lines shown at most; the rest is in the raw JSON.
const MAX_LINES: usize = 20;
/// Characters of one value shown at most.
const MAX_VALUE_CHARS: usize = 200;

/// Safe to show: printable, no access key, not overlong.
fn shown(text: &str) -> String {
    let safe = crate::keys::redact_secret(&crate::input::printable(text));
    match safe.char_indices().nth(MAX_VALUE_CHARS) {
        Some((i, _)) => format!("{}…", &safe[..i]),
        None => safe,
    }
}

/// A leaf value as text: strings without quotes, `none` for null and for
/// an empty list, lists of plain values joined by commas.
fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "none".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "none".into(),
        Value::Array(items) if items.iter().all(|i| !i.is_array() && !i.is_object()) => {
            items.iter().map(scalar).collect::<Vec<_>>().join(", ")
        }
        other => other.to_string(),
    }
}

/// The `(name, value)` lines of a detail, in the stored order.
pub fn lines(detail: &Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(map) if !map.is_empty() => {
                for (k, inner) in map {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&name, inner, out);
                }
            }
            Value::Object(_) => out.push((prefix.to_owned(), "none".into())),
            other => out.push((prefix.to_owned(), scalar(other))),
        }
    }
    let mut out = Vec::new();
    walk("", detail, &mut out);
    out.into_iter()
        .map(|(k, v)| (shown(&k), shown(&v)))
        .collect()
}

/// The detail cell: `key: value` lines, then the raw JSON behind a toggle.
pub fn cell(detail: &Value) -> Markup {
    let all = lines(detail);
    let more = all.len().saturating_sub(MAX_LINES);
    html! {
        div class="kv" {
        ul {
            @for (k, v) in all.iter().take(MAX_LINES) {
                li {
                    @if !k.is_empty() { span class="k" { (k) ":" } " " }
                    span class="v" { (v) }
                }
            }
            @if more > 0 { li class="muted" { "… " (more) " more in the JSON" } }
        }
        details class="raw" {
            summary { "JSON" }
            code class="small" { (shown_json(detail)) }
        }
        }
    }
}

/// The raw JSON, made safe like the values (no length cut: it is the
/// exact form, behind a toggle).
fn shown_json(detail: &Value) -> String {
    crate::keys::redact_secret(&crate::input::printable(&detail.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Fields become `name: value` lines: strings unquoted, null and empty
    /// lists as `none`, nested objects with dotted names, lists joined.
    #[test]
    fn a_detail_reads_as_name_value_lines() {
        let d = json!({
            "label": "Acme \"Ltd\"",
            "expires_at": null,
            "max_sessions": 2,
            "terminated": [],
            "ids": ["a", "b"],
            "changed": {"label": {"from": "x", "to": "y"}},
            "pairs": [{"a": 1}],
        });
        let got: Vec<String> = lines(&d).iter().map(|(k, v)| format!("{k}: {v}")).collect();
        assert_eq!(
            got,
            [
                "changed.label.from: x",
                "changed.label.to: y",
                "expires_at: none",
                "ids: a, b",
                "label: Acme \"Ltd\"",
                "max_sessions: 2",
                "pairs: [{\"a\":1}]",
                "terminated: none",
            ]
        );
        assert_eq!(lines(&json!("kicked")), [("".into(), "kicked".into())]);
    }

    /// A control character cannot start a fake line, an access key shows
    /// only as its prefix, markup is escaped, in the lines and in the JSON.
    #[test]
    fn a_detail_never_shows_a_key_a_control_character_or_markup() {
        let key = crate::keys::AccessKey::generate();
        let d = json!({"note": format!("x\ny {}", key.expose_secret()), "<b>": "<i>"});
        let html = cell(&d).into_string();
        assert!(!html.contains(key.expose_secret()), "{html}");
        assert!(html.contains(&key.prefix()), "{html}");
        assert!(!html.contains('\n'), "{html}");
        assert!(!html.contains("<b>") && !html.contains("<i>"), "{html}");
        assert!(html.contains("<details class=\"raw\">"), "{html}");
    }
}
