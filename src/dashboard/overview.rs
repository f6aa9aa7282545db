//! The overview: what the service is doing now and over the last day.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Extension;
use maud::{html, Markup};

use super::auth::Signed;
use super::page::{raw, when, Page, PageResult};
use crate::report::Activity;
use crate::state::AppState;
use crate::store::blocking;

/// Hours the chart covers.
const HOURS: usize = 24;

struct Numbers {
    live: usize,
    keys: usize,
    active_keys: usize,
    activity: Activity,
}

/// `GET /admin`.
pub async fn page(State(state): State<AppState>, Extension(me): Extension<Signed>) -> PageResult {
    let store = state.store()?;
    let now = state.now();
    let n = blocking(move || {
        // The same cheap counts the metrics gauges use (live sessions from
        // memory, keys grouped by status), not a scan of every key.
        let reading = store.metrics_reading(now)?;
        let count = |status: &str| {
            reading
                .keys_by_status
                .iter()
                .filter(|(s, _)| *s == status)
                .map(|(_, n)| *n as usize)
                .sum::<usize>()
        };
        let live = reading.live_sessions as usize;
        let keys = reading
            .keys_by_status
            .iter()
            .map(|(_, n)| *n as usize)
            .sum();
        let active_keys = count("active");
        let since = now.minus_secs(HOURS as u64 * 3600);
        let counts = store.event_counts(since, 3600)?;
        Ok(Numbers {
            live,
            keys,
            active_keys,
            activity: Activity::from_counts(&counts, HOURS),
        })
    })
    .await?;
    let (s1, t1, e1) = n.activity.last(1);
    let (s24, t24, e24) = n.activity.last(HOURS);
    let body = html! {
        h1 { "Overview" }
        p class="muted" { "As of " (when(now)) " (UTC)." }
        div class="stats" id="stats" {
            (stat("stat-live", n.live as u64, "live sessions", "/admin/sessions"))
            (stat("stat-active-keys", n.active_keys as u64, &format!("active keys of {}", n.keys), "/admin/keys"))
            (stat("stat-starts-hour", s1, "starts, last hour", &events("session_started", "1h")))
            (stat("stat-starts-day", s24, "starts, last 24 h", &events("session_started", "24h")))
            (stat("stat-takeovers-hour", t1, "takeovers, last hour", &events("session_superseded", "1h")))
            (stat("stat-takeovers-day", t24, "takeovers, last 24 h", &events("session_superseded", "24h")))
            (stat("stat-expiries-hour", e1, "expiries, last hour", &events("session_expired", "1h")))
            (stat("stat-expiries-day", e24, "expiries, last 24 h", &events("session_expired", "24h")))
        }
        section class="card chart" aria-labelledby="chart-h" {
            h2 id="chart-h" { "Starts and takeovers per hour, last 24 hours" }
            div class="legend" aria-hidden="true" { span { "starts" } span class="t" { "takeovers" } }
            (raw(chart_svg(&n.activity)))
            details {
                summary { "As a table" }
                div class="scroll" {
                    table id="hourly" {
                        thead { tr { th scope="col" { "Hour ending" } th scope="col" class="num" { "Starts" } th scope="col" class="num" { "Takeovers" } th scope="col" class="num" { "Expiries" } } }
                        tbody {
                            @for i in (0..HOURS).rev() {
                                tr {
                                    td { (when(now.minus_secs(((HOURS - 1 - i) * 3600) as u64))) }
                                    td class="num" { (n.activity.starts[i]) }
                                    td class="num" { (n.activity.takeovers[i]) }
                                    td class="num" { (n.activity.expiries[i]) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(Page::new("Overview")
        .nav("overview", &me.csrf)
        .live()
        .render(body)
        .into_response())
}

/// A figure and its caption; the caption links to the page that lists
/// what was counted, so every number can be looked into.
fn stat(id: &str, n: u64, label: &str, href: &str) -> Markup {
    html! {
        div class="stat" id=(id) {
            span class="n" { (n) }
            a class="l" href=(href) { (label) }
        }
    }
}

/// The events page filtered to what a card counts: the overview's starts,
/// takeovers (every superseded session) and expiries are these event types.
fn events(event_type: &str, since: &str) -> String {
    format!("/admin/events?type={event_type}&since={since}")
}

/// Bars per hour (starts, with takeovers in front), oldest on the left:
/// inline SVG so it needs no script and no request.
pub fn chart_svg(a: &Activity) -> String {
    // The bars stand on a baseline `pad_b` above the bottom. Every label
    // hangs from its top (`dominant-baseline="hanging"`) with room below it
    // for a phone's larger lettering (style.css), so none is cut at the
    // edge of the picture.
    let (w, h, pad_l, pad_b) = (720.0_f64, 172.0_f64, 40.0_f64, 30.0_f64);
    let label_y = h - pad_b + 4.0;
    let n = a.starts.len().max(1);
    let max = a
        .starts
        .iter()
        .chain(&a.takeovers)
        .copied()
        .max()
        .unwrap_or(0)
        .max(1);
    let slot = (w - pad_l) / n as f64;
    let scale = (h - pad_b - 6.0) / max as f64;
    let total: u64 = a.starts.iter().sum();
    let taken: u64 = a.takeovers.iter().sum();
    let mut s = format!(
        r#"<svg viewBox="0 0 {w} {h}" role="img" aria-label="Bar chart: {total} starts and {taken} takeovers in the last {n} hours; busiest hour {max}." id="chart">"#
    );
    s.push_str(&format!(
        r#"<line class="axis" x1="{pad_l}" y1="{y}" x2="{w}" y2="{y}" stroke-width="1"/>"#,
        y = h - pad_b
    ));
    s.push_str(&format!(
        r#"<text x="0" y="6" dominant-baseline="hanging">{max}</text><text x="0" y="{y}">0</text>"#,
        y = h - pad_b
    ));
    for (i, (&st, &tk)) in a.starts.iter().zip(&a.takeovers).enumerate() {
        let x = pad_l + i as f64 * slot + 1.0;
        let bw = (slot - 2.0).max(1.0);
        let when = match n - 1 - i {
            0 => "in the last hour".to_owned(),
            h => format!("{h}–{} h ago", h + 1),
        };
        for (class, v, inset) in [("bar", st, 0.0), ("bar2", tk, bw * 0.25)] {
            if v == 0 {
                continue;
            }
            let bh = v as f64 * scale;
            s.push_str(&format!(
                r#"<rect class="{class}" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"><title>{v} {} {when}</title></rect>"#,
                x + inset,
                h - pad_b - bh,
                bw - 2.0 * inset,
                bh,
                if class == "bar" { "start(s)" } else { "takeover(s)" },
            ));
        }
    }
    s.push_str(&format!(
        r#"<text x="{pad_l}" y="{label_y}" dominant-baseline="hanging">24 h ago</text><text x="{w}" y="{label_y}" dominant-baseline="hanging" text-anchor="end">now</text></svg>"#
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_has_a_bar_per_busy_hour_and_a_text_alternative() {
        let mut a = Activity {
            starts: vec![0; 24],
            takeovers: vec![0; 24],
            expiries: vec![0; 24],
        };
        a.starts[0] = 4;
        a.starts[23] = 2;
        a.takeovers[23] = 1;
        let svg = chart_svg(&a);
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains("aria-label=\"Bar chart: 6 starts and 1 takeovers"));
        assert!(svg.contains("2 start(s) in the last hour"));
        assert!(svg.contains("4 start(s) 23–24 h ago"));
        // Nothing at all still draws an axis, never divides by zero.
        let empty = chart_svg(&Activity::from_counts(&[], 24));
        assert!(!empty.contains("<rect") && !empty.contains("NaN"));
    }
}
