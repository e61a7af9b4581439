//! The periodic one-line summary `serve` logs: what the last interval brought.
//!
//! ```text
//! INFO zoomhook::server::summary: last 10s accepted=12 duplicates=3 rejected=1 unavailable=0 url_validations=0 delivered=11 delivery_failures=1
//! ```
//!
//! The numbers are the differences of this server's own `/metrics` counters
//! (`zoomhook_webhook_requests_total` by outcome, `zoomhook_deliveries_total` by outcome) between
//! two ticks, so the line and the metrics can never disagree, and nothing on the request path
//! pays for it. A quiet interval logs nothing: an idle server's log stays empty, a busy one gets
//! one line per interval.
//!
//! The interval is fixed at [`INTERVAL`] (10 s) rather than configured: short enough that someone
//! watching the terminal after sending a test event sees it acknowledged within seconds, long
//! enough that a busy server writes at most six lines a minute. Finer views belong to `/metrics`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::metrics::ServerMetrics;

/// How often the summary is considered.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Webhook request outcomes that are the sender's fault (see `ingest`).
const REJECTED: [&str; 5] = [
    "unauthorized",
    "forbidden",
    "bad_body",
    "bad_request",
    "unknown_source",
];
/// Webhook request outcomes that are ours: answered 503 so Zoom retries.
const UNAVAILABLE: [&str; 2] = ["unavailable", "overloaded"];

/// Counters by `(metric, outcome)`, summed over every other label.
pub(crate) type Totals = BTreeMap<(String, String), f64>;

/// The counts of one interval.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub unavailable: u64,
    pub url_validations: u64,
    pub delivered: u64,
    /// Attempts that did not succeed (to be retried, or the last one).
    pub delivery_failures: u64,
}

impl Interval {
    fn is_quiet(&self) -> bool {
        *self == Interval::default()
    }

    /// The counts between two readings of the counters.
    fn between(before: &Totals, after: &Totals) -> Interval {
        let delta = |metric: &str, outcomes: &[&str]| -> u64 {
            outcomes
                .iter()
                .map(|o| {
                    let key = (metric.to_owned(), (*o).to_owned());
                    let now = after.get(&key).copied().unwrap_or(0.0);
                    let then = before.get(&key).copied().unwrap_or(0.0);
                    (now - then).max(0.0) as u64
                })
                .sum()
        };
        const REQUESTS: &str = "zoomhook_webhook_requests_total";
        const DELIVERIES: &str = "zoomhook_deliveries_total";
        Interval {
            accepted: delta(REQUESTS, &["accepted"]),
            duplicates: delta(REQUESTS, &["duplicate"]),
            rejected: delta(REQUESTS, &REJECTED),
            unavailable: delta(REQUESTS, &UNAVAILABLE),
            url_validations: delta(REQUESTS, &["url_validation"]),
            delivered: delta(DELIVERIES, &["succeeded"]),
            delivery_failures: delta(DELIVERIES, &["retry", "failed"]),
        }
    }
}

/// Logs a summary every [`INTERVAL`] in which something happened, until the task is aborted.
pub async fn log_summaries(metrics: ServerMetrics) {
    let mut ticker = tokio::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut before = totals(&metrics.render());
    loop {
        ticker.tick().await;
        let after = totals(&metrics.render());
        let counts = Interval::between(&before, &after);
        before = after;
        if counts.is_quiet() {
            continue;
        }
        tracing::info!(
            accepted = counts.accepted,
            duplicates = counts.duplicates,
            rejected = counts.rejected,
            unavailable = counts.unavailable,
            url_validations = counts.url_validations,
            delivered = counts.delivered,
            delivery_failures = counts.delivery_failures,
            "last {}s",
            INTERVAL.as_secs()
        );
    }
}

/// Sums the counters the summary reads out of the Prometheus text, by metric and `outcome`.
/// Also what `GET /api/v1/stats` reports, so the dashboard and this line never disagree.
pub(crate) fn totals(text: &str) -> Totals {
    let mut out = Totals::new();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once('{') else {
            continue;
        };
        if name != "zoomhook_webhook_requests_total" && name != "zoomhook_deliveries_total" {
            continue;
        }
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let (Some(outcome), Ok(value)) = (label(labels, "outcome"), value.trim().parse::<f64>())
        else {
            continue;
        };
        *out.entry((name.to_owned(), outcome)).or_default() += value;
    }
    out
}

/// The value of label `key` in a Prometheus label set (`a="x",b="y\"z"`), unescaped.
fn label(labels: &str, key: &str) -> Option<String> {
    let mut chars = labels.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next() != Some('"') {
            return None;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => return None,
                },
                '"' => break,
                other => value.push(other),
            }
        }
        if name.trim() == key {
            return Some(value);
        }
        match chars.next() {
            Some(',') => continue,
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# TYPE zoomhook_webhook_requests_total counter
zoomhook_webhook_requests_total{source="zoom",event="meeting.started",outcome="accepted"} 3
zoomhook_webhook_requests_total{source="a\",outcome=\"duplicate",event="unverified",outcome="unauthorized"} 1
zoomhook_deliveries_total{subscription="sub_1",outcome="succeeded"} 2
"#;

    const AFTER: &str = r#"zoomhook_webhook_requests_total{source="zoom",event="meeting.started",outcome="accepted"} 5
zoomhook_webhook_requests_total{source="zoom",event="meeting.ended",outcome="accepted"} 1
zoomhook_webhook_requests_total{source="zoom",event="meeting.ended",outcome="duplicate"} 4
zoomhook_webhook_requests_total{source="a\",outcome=\"duplicate",event="unverified",outcome="unauthorized"} 3
zoomhook_webhook_requests_total{source="zoom",event="unverified",outcome="overloaded"} 1
zoomhook_deliveries_total{subscription="sub_1",outcome="succeeded"} 2
zoomhook_deliveries_total{subscription="sub_1",outcome="retry"} 6
zoomhook_webhook_ack_seconds_count{outcome="accepted"} 9
"#;

    #[test]
    fn counts_are_the_differences_by_outcome() {
        let counts = Interval::between(&totals(BEFORE), &totals(AFTER));
        assert_eq!(
            counts,
            Interval {
                accepted: 3,
                duplicates: 4,
                rejected: 2,
                unavailable: 1,
                url_validations: 0,
                delivered: 0,
                delivery_failures: 6,
            }
        );
    }

    #[test]
    fn a_quiet_interval_is_quiet() {
        assert!(Interval::between(&totals(AFTER), &totals(AFTER)).is_quiet());
    }

    #[test]
    fn labels_are_read_with_their_escapes() {
        assert_eq!(
            label(r#"source="a\"b",outcome="x""#, "outcome").as_deref(),
            Some("x")
        );
        assert_eq!(label(r#"source="a\"b""#, "source").as_deref(), Some("a\"b"));
        assert_eq!(label(r#"source="a"#, "outcome"), None);
    }
}
