//! `zoomhook replay` — re-deliver a range of events to a subscription and follow exactly the
//! deliveries this replay queued.
//!
//! The server answers a replay with the ids of the deliveries it queued; the command then asks
//! for those ids only (`GET …/deliveries?ids=`), so its counts are its own — not the
//! subscription's running totals, which fan-out of new events and earlier replays move too. It
//! shows each new failure as it happens (the destination's status or the connection error),
//! ends non-zero when any of its deliveries ends failed, and stops waiting after `--timeout`
//! with a message and a non-zero exit: a failing endpoint retries for hours (the retry schedule),
//! and a command that never returns is worse than one that says where things stand.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use jiff::Timestamp;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::ClientArgs;
use super::client::{AdminClient, NotFoundHint, with_hint};
use super::meetings::path_segment;
use super::time_filter::{self, TimeFilter};
use crate::store::deliveries::MAX_DELIVERIES_BY_ID;

/// `zoomhook replay`
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Subscription id.
    pub subscription: String,
    /// Events after this seq.
    #[arg(long)]
    pub after_seq: Option<i64>,
    /// Events up to this seq (inclusive).
    #[arg(long)]
    pub to_seq: Option<i64>,
    /// Received at or after: RFC 3339, epoch ms, a date (2026-11-01: midnight UTC) or a duration ago (30m, 2h, 7d).
    #[arg(long, value_parser = time_filter::parse)]
    pub since: Option<TimeFilter>,
    /// Received before: RFC 3339, epoch ms, a date (2026-11-01: midnight UTC) or a duration ago (30m, 2h, 7d).
    #[arg(long, value_parser = time_filter::parse)]
    pub until: Option<TimeFilter>,
    /// Only the events of one entity, e.g. a meeting id.
    #[arg(long)]
    pub entity: Option<String>,
    /// Return at once instead of following the progress.
    #[arg(long)]
    pub no_wait: bool,
    /// Stop following after this long (the deliveries stay queued and keep retrying), exiting
    /// non-zero: e.g. 30s, 5m, 1h.
    #[arg(long, default_value = "5m", value_parser = parse_timeout)]
    pub timeout: Duration,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    crate::config::parse_duration(text)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("expected a duration such as 30s, 5m or 1h, got {text:?}"))
}

const SUBSCRIPTION_HINT: &str = "subscription ids (sub_…) are listed by `zoomhook subs list`";

/// How often the command asks for its deliveries.
const POLL: Duration = Duration::from_millis(500);
/// At most this many ids are asked about per poll (in requests of [`MAX_DELIVERIES_BY_ID`]), so a
/// replay of a million events costs the server a bounded amount of work per poll; the rest are
/// asked about in the following polls.
const IDS_PER_POLL: usize = 10 * MAX_DELIVERIES_BY_ID;

/// At most this many failed attempts are printed per poll; the rest are counted in one line, so
/// a large replay against a dead endpoint does not scroll the terminal away.
const FAILURES_PER_POLL: usize = 3;

/// What the command knows of one of its deliveries.
#[derive(Debug, Clone, Deserialize)]
struct Seen {
    id: String,
    status: String,
    attempt_count: i64,
    next_attempt_at: Option<String>,
    last_status_code: Option<i64>,
    last_error: Option<String>,
    updated_at: String,
}

impl Seen {
    fn finished(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "failed")
    }

    /// Whether its last outcome was recorded after the replay queued it (at `queued_at`): a
    /// replayed delivery keeps the attempts and errors of its earlier life, which are not this
    /// replay's. An outcome is what moves a queued delivery to `failed`, or back to `pending`
    /// later than the replay.
    fn tried_since(&self, queued_at: Timestamp) -> bool {
        match self.status.as_str() {
            "failed" => true,
            "pending" => {
                self.attempt_count > 0
                    && self
                        .updated_at
                        .parse::<Timestamp>()
                        .is_ok_and(|t| t > queued_at)
            }
            _ => false,
        }
    }

    /// The outcome of its last attempt, if that was a failure made since the replay.
    fn failure(&self, queued_at: Timestamp) -> Option<String> {
        if !self.tried_since(queued_at) {
            return None;
        }
        let status = self.last_status_code.filter(|s| !(200..300).contains(s));
        match (status, &self.last_error) {
            (Some(code), Some(error)) if !error.contains(&code.to_string()) => {
                Some(format!("HTTP {code}: {error}"))
            }
            (_, Some(error)) => Some(error.clone()),
            (Some(code), None) => Some(format!("HTTP {code}")),
            (None, None) => None,
        }
    }
}

/// Counts of the replay's own deliveries.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
struct Tally {
    succeeded: usize,
    failed: usize,
    retrying: usize,
    waiting: usize,
}

impl Tally {
    fn of<'a>(deliveries: impl Iterator<Item = &'a Seen>, queued_at: Timestamp) -> Tally {
        let mut tally = Tally::default();
        for d in deliveries {
            match d.status.as_str() {
                "succeeded" => tally.succeeded += 1,
                "failed" => tally.failed += 1,
                _ if d.tried_since(queued_at) => tally.retrying += 1,
                _ => tally.waiting += 1,
            }
        }
        tally
    }

    fn done(&self) -> usize {
        self.succeeded + self.failed
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} succeeded, {} failed, {} retrying, {} not tried yet",
            self.succeeded, self.failed, self.retrying, self.waiting
        )
    }
}

/// Runs `zoomhook replay`.
pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let api = AdminClient::new(&args.client)?;
    let sub_path = format!("/api/v1/subscriptions/{}", path_segment(&args.subscription));
    let answer = api
        .send_json(
            Method::POST,
            &format!("{sub_path}/replay"),
            Some(&request_body(&args)),
        )
        .await
        .hint_if_not_found(SUBSCRIPTION_HINT)?;
    let queued_at = answer["queued_at"]
        .as_str()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .context(
            "the server did not say when it queued the replay (is it older than this zoomhook?)",
        )?;
    let ids: Vec<String> = answer["delivery_ids"]
        .as_array()
        .context(
            "the server did not list the deliveries it queued (is it older than this zoomhook?)",
        )?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    if ids.is_empty() {
        return Err(with_hint(
            anyhow::anyhow!(
                "nothing to replay: no event in that range matches the subscription's events"
            ),
            "`zoomhook events list` with the same --since/--until/--entity shows what the range holds; \
             `zoomhook subs show ID` shows the subscription's event patterns",
        ));
    }
    println!("queued {} deliveries to {}", ids.len(), args.subscription);
    if args.no_wait {
        return Ok(());
    }
    let replay = Replay {
        sub_path,
        sub_id: args.subscription.clone(),
        queued_at,
    };
    follow(&api, &replay, ids, args.timeout).await
}

/// The replay request: only the bounds that were given.
fn request_body(args: &ReplayArgs) -> Value {
    let body = json!({
        "after_seq": args.after_seq, "to_seq": args.to_seq,
        "since": args.since.map(|t| t.to_string()),
        "until": args.until.map(|t| t.to_string()), "entity": args.entity,
    });
    let fields: Map<String, Value> = body
        .as_object()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .collect();
    Value::Object(fields)
}

/// The replay being followed.
struct Replay {
    sub_path: String,
    sub_id: String,
    /// When the server queued it: outcomes recorded before belong to earlier attempts.
    queued_at: Timestamp,
}

/// Polls the replay's deliveries until all are finished, the subscription is disabled, or the
/// timeout passes.
async fn follow(
    api: &AdminClient,
    replay: &Replay,
    ids: Vec<String>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let (sub_path, sub_id) = (replay.sub_path.as_str(), replay.sub_id.as_str());
    let total = ids.len();
    let mut seen: BTreeMap<String, Option<Seen>> = ids.into_iter().map(|id| (id, None)).collect();
    let mut progress = Progress::new(total);
    let mut last_error: Option<String> = None;
    let started = Instant::now();
    let mut cursor = 0;
    loop {
        let open: Vec<String> = seen
            .iter()
            .filter(|(_, s)| !s.as_ref().is_some_and(Seen::finished))
            .map(|(id, _)| id.clone())
            .collect();
        let batch = next_batch(&open, &mut cursor);
        let mut failures = 0;
        for chunk in batch.chunks(MAX_DELIVERIES_BY_ID) {
            let page = api
                .send_json(
                    Method::GET,
                    &format!("{sub_path}/deliveries?ids={}", chunk.join(",")),
                    None,
                )
                .await
                .hint_if_not_found(SUBSCRIPTION_HINT)?;
            let fresh: Vec<Seen> = serde_json::from_value(page["data"].clone())
                .context("decoding the server's list of deliveries")?;
            for now in fresh {
                let before = seen.get(&now.id).cloned().flatten();
                let new_attempt = before
                    .as_ref()
                    .is_none_or(|b| b.attempt_count < now.attempt_count);
                if new_attempt && let Some(failure) = now.failure(replay.queued_at) {
                    if failures < FAILURES_PER_POLL {
                        progress.failure(&now, &failure);
                    }
                    failures += 1;
                    last_error = Some(format!("{}: {failure}", now.id));
                }
                seen.insert(now.id.clone(), Some(now));
            }
        }
        if failures > FAILURES_PER_POLL {
            progress.more_failures(failures - FAILURES_PER_POLL);
        }
        let tally = Tally::of(seen.values().flatten(), replay.queued_at);
        progress.show(tally, started.elapsed());
        if tally.done() == total {
            progress.finish();
            return finished(sub_id, total, tally, last_error);
        }
        if started.elapsed() >= timeout {
            progress.finish();
            return Err(timed_out(sub_id, total, tally, timeout, last_error));
        }
        let sub = api.send_json(Method::GET, sub_path, None).await?;
        if sub["enabled"] == false {
            progress.finish();
            bail!(
                "the subscription is disabled ({}); {} of {total} deliveries stay queued until it is enabled",
                sub["disabled_reason"].as_str().unwrap_or("no reason given"),
                total - tally.done()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The next at most [`IDS_PER_POLL`] of `open`, going round from `cursor`.
fn next_batch(open: &[String], cursor: &mut usize) -> Vec<String> {
    if open.len() <= IDS_PER_POLL {
        return open.to_vec();
    }
    let start = *cursor % open.len();
    let batch: Vec<String> = open
        .iter()
        .cycle()
        .skip(start)
        .take(IDS_PER_POLL)
        .cloned()
        .collect();
    *cursor = start + IDS_PER_POLL;
    batch
}

fn finished(
    sub_id: &str,
    total: usize,
    tally: Tally,
    last_error: Option<String>,
) -> anyhow::Result<()> {
    if tally.failed == 0 {
        println!("replay finished: {total} of {total} delivered");
        return Ok(());
    }
    Err(with_hint(
        anyhow::anyhow!(
            "replay finished: {} of {total} delivered, {} failed after their last attempt{}",
            tally.succeeded,
            tally.failed,
            last_error
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        ),
        format!(
            "`zoomhook deliveries list {sub_id} --status failed` lists them; `zoomhook deliveries show ID` has every attempt"
        ),
    ))
}

fn timed_out(
    sub_id: &str,
    total: usize,
    tally: Tally,
    timeout: Duration,
    last_error: Option<String>,
) -> anyhow::Error {
    with_hint(
        anyhow::anyhow!(
            "stopped waiting after {}: {} of {total} delivered, {} not yet ({tally}){}",
            humantime::format_duration(timeout),
            tally.succeeded,
            total - tally.succeeded,
            last_error
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        ),
        format!(
            "the deliveries stay queued and keep retrying on the subscription's schedule; \
             `zoomhook deliveries list {sub_id}` shows where they stand (raise --timeout to wait longer)"
        ),
    )
}

/// Where the progress goes: one line rewritten in place on a terminal; otherwise a line each
/// time the counts change (a log or a CI job gets every step, not carriage returns).
struct Progress {
    total: usize,
    tty: bool,
    shown: Option<Tally>,
}

impl Progress {
    fn new(total: usize) -> Progress {
        Progress {
            total,
            tty: std::io::stderr().is_terminal(),
            shown: None,
        }
    }

    fn show(&mut self, tally: Tally, elapsed: Duration) {
        let line = format!("replayed {}/{}: {tally}", tally.done(), self.total,);
        if self.tty {
            eprint!("\r{line}  {:.0}s \x1b[K", elapsed.as_secs_f64());
            let _ = std::io::stderr().flush();
        } else if self.shown != Some(tally) {
            eprintln!("{line}");
        }
        self.shown = Some(tally);
    }

    /// A new failed attempt, on its own line as it happens.
    fn failure(&mut self, delivery: &Seen, failure: &str) {
        let next = match (delivery.status.as_str(), &delivery.next_attempt_at) {
            ("failed", _) => "no attempts left".to_owned(),
            (_, Some(at)) => format!("next attempt {}", super::show_time::local(at)),
            (_, None) => "retrying".to_owned(),
        };
        if self.tty {
            eprint!("\r\x1b[K");
        }
        eprintln!(
            "attempt {} of {} failed: {failure} ({next})",
            delivery.attempt_count, delivery.id
        );
    }

    fn more_failures(&mut self, count: usize) {
        if self.tty {
            eprint!("\r\x1b[K");
        }
        eprintln!("… and {count} more failed attempts");
    }

    fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUEUED: &str = "2026-11-28T10:00:00Z";
    const LATER: &str = "2026-11-28T10:00:01.5Z";

    fn queued() -> Timestamp {
        QUEUED.parse().unwrap()
    }

    fn seen(status: &str, attempts: i64, last_status: Option<i64>, error: Option<&str>) -> Seen {
        Seen {
            id: "msg_1".into(),
            status: status.into(),
            attempt_count: attempts,
            next_attempt_at: None,
            last_status_code: last_status,
            last_error: error.map(str::to_owned),
            updated_at: LATER.into(),
        }
    }

    #[test]
    fn a_failure_names_the_status_or_the_error() {
        assert_eq!(
            seen("pending", 1, Some(500), None)
                .failure(queued())
                .as_deref(),
            Some("HTTP 500")
        );
        assert_eq!(
            seen("pending", 1, Some(503), Some("HTTP 503"))
                .failure(queued())
                .as_deref(),
            Some("HTTP 503")
        );
        assert_eq!(
            seen("pending", 1, Some(400), Some("rejected"))
                .failure(queued())
                .as_deref(),
            Some("HTTP 400: rejected")
        );
        assert_eq!(
            seen("failed", 3, None, Some("connection refused"))
                .failure(queued())
                .as_deref(),
            Some("connection refused")
        );
        assert_eq!(
            seen("succeeded", 2, Some(200), None).failure(queued()),
            None
        );
        assert_eq!(seen("pending", 0, None, None).failure(queued()), None);
        let requeued = Seen {
            updated_at: QUEUED.into(),
            ..seen("pending", 8, Some(500), None)
        };
        assert_eq!(
            requeued.failure(queued()),
            None,
            "history from before the replay"
        );
        assert_eq!(
            seen("delivering", 8, Some(500), None).failure(queued()),
            None,
            "being sent: its last outcome is older than the replay"
        );
    }

    #[test]
    fn the_tally_counts_only_what_it_is_given() {
        let all = [
            seen("succeeded", 1, Some(200), None),
            seen("failed", 8, Some(500), None),
            seen("pending", 2, Some(503), None),
            seen("pending", 0, None, None),
        ];
        let tally = Tally::of(all.iter(), queued());
        assert_eq!(
            tally,
            Tally {
                succeeded: 1,
                failed: 1,
                retrying: 1,
                waiting: 1
            }
        );
        assert_eq!(tally.done(), 2);
    }

    #[test]
    fn large_replays_are_asked_about_in_turns() {
        let open: Vec<String> = (0..IDS_PER_POLL + 10).map(|i| format!("msg_{i}")).collect();
        let mut cursor = 0;
        let first = next_batch(&open, &mut cursor);
        let second = next_batch(&open, &mut cursor);
        assert_eq!(first.len(), IDS_PER_POLL);
        assert_eq!(second[0], open[IDS_PER_POLL]);
        let small = next_batch(&open[..3], &mut cursor);
        assert_eq!(small.len(), 3);
    }
}
