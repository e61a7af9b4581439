//! `zoomhook simulate` — the load generator, and the driver of `bench/ingest`.
//!
//! Keeps `--connections` HTTP/1.1 keep-alive connections busy (flat out, or at `--rate` events/s
//! in total), each request a realistic, uniquely identified Zoom event signed as Zoom signs it.
//! A `--duplicates` fraction re-sends an earlier body with its original `x-zm-request-id`, as Zoom
//! retries do. Bodies are rendered from pre-serialised templates with only the unique parts
//! filled in, so the generator spends its CPU on sending, not on building JSON.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::json;

use super::WebhookTarget;
use crate::core::clock::now_millis;
use crate::zoom::sender::{ZOOM_USER_AGENT, ZoomHeaders, new_request_id};
use crate::zoom::signature::{REQUEST_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::zoom::templates;

#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    // Where to post (plain http).
    #[command(flatten)]
    pub target: WebhookTarget,
    /// Webhook secret token to sign with.
    #[arg(long, env = "ZOOM_WEBHOOK_SECRET_TOKEN", hide_env_values = true)]
    pub secret: Option<String>,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Target events per second in total; 0 sends flat out.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// How long to run.
    #[arg(long, default_value = "10s", value_parser = |s: &str| crate::config::parse_duration(s).ok_or("expected a duration like 15s"))]
    pub duration: Duration,
    /// Stop after this many requests (whichever comes first with --duration).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Fraction (0..1) of requests that re-send an earlier event with its request id.
    #[arg(long, default_value_t = 0.0)]
    pub duplicates: f64,
    /// Print the summary as JSON (for scripts such as bench/ingest).
    #[arg(long)]
    pub json: bool,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
}

/// Counters shared by the workers, read by the progress printer.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    errors: AtomicU64,
}

/// Final numbers of a run.
#[derive(Debug)]
pub struct Summary {
    pub sent: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
}

/// Runs `simulate`.
pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    if !(0.0..1.0).contains(&args.duplicates) {
        bail!(
            "--duplicates must be a fraction in [0, 1), got {}",
            args.duplicates
        );
    }
    let Some(secret) = args.secret.clone() else {
        bail!("no secret to sign with: pass --secret or set ZOOM_WEBHOOK_SECRET_TOKEN");
    };
    let summary = simulate(&args, &secret).await?;
    let ok = summary.accepted + summary.duplicates;
    let secs = summary.elapsed.as_secs_f64();
    let ms = |q: f64| summary.latency.value_at_quantile(q) as f64 / 1000.0;
    if args.json {
        println!(
            "{}",
            json!({
                "sent": summary.sent, "accepted": summary.accepted, "duplicates": summary.duplicates,
                "errors": summary.errors, "seconds": secs, "events_per_sec": ok as f64 / secs,
                "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99),
                "max_ms": summary.latency.max() as f64 / 1000.0,
            })
        );
    } else {
        println!(
            "sent {}  accepted {}  duplicates {}  errors {}  in {secs:.1}s",
            summary.sent, summary.accepted, summary.duplicates, summary.errors
        );
        println!(
            "{:.0} events/s   latency p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            ok as f64 / secs,
            ms(0.5),
            ms(0.9),
            ms(0.99),
            summary.latency.max() as f64 / 1000.0
        );
    }
    if summary.errors > 0 && ok == 0 {
        bail!("every request failed");
    }
    Ok(())
}

/// Drives the load and returns the summary (also used by tests).
pub async fn simulate(args: &SimulateArgs, secret: &str) -> anyhow::Result<Summary> {
    let url = args.target.endpoint();
    let uri: hyper::Uri = url.parse().with_context(|| {
        format!("invalid endpoint URL {url:?} (--url or --server/ZOOMHOOK_URL)")
    })?;
    if uri.scheme_str() != Some("http") {
        bail!("simulate speaks plain http only (it is a local load generator); got {url}");
    }
    let host = uri
        .host()
        .with_context(|| format!("{url} has no host"))?
        .to_owned();
    let addr = format!("{host}:{}", uri.port_u16().unwrap_or(80));
    let path = uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "/".into());
    let mix = Arc::new(EventMix::new());
    let counters = Arc::new(Counters::default());
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + args.duration;
    let progress =
        (!args.quiet).then(|| tokio::spawn(print_progress(Arc::clone(&counters), started)));
    let mut workers = Vec::with_capacity(args.connections);
    for worker in 0..args.connections.max(1) {
        let job = Worker {
            addr: addr.clone(),
            host: host.clone(),
            path: path.clone(),
            secret: secret.to_owned(),
            mix: Arc::clone(&mix),
            counters: Arc::clone(&counters),
            issued: Arc::clone(&issued),
            started,
            deadline,
            rate: args.rate,
            max_requests: args.requests,
            duplicates: args.duplicates,
            seed: worker as u64,
        };
        workers.push(tokio::spawn(job.run()));
    }
    let mut latency = new_histogram();
    for worker in workers {
        let histogram = worker.await.context("worker task")??;
        latency
            .add(histogram)
            .context("merging latency histograms")?;
    }
    if let Some(p) = progress {
        p.abort();
        eprintln!();
    }
    Ok(Summary {
        sent: counters.sent.load(Ordering::Relaxed),
        accepted: counters.accepted.load(Ordering::Relaxed),
        duplicates: counters.duplicates.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        latency,
    })
}

fn new_histogram() -> Histogram<u64> {
    // Microseconds, 1 µs .. 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures are valid"))
    })
}

async fn print_progress(counters: Arc<Counters>, started: Instant) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut last = 0;
    loop {
        ticker.tick().await;
        let ok =
            counters.accepted.load(Ordering::Relaxed) + counters.duplicates.load(Ordering::Relaxed);
        eprint!(
            "\r{:>4.0}s  sent {:>9}  ok {:>9}  errors {:>6}  {:>7}/s   ",
            started.elapsed().as_secs_f64(),
            counters.sent.load(Ordering::Relaxed),
            ok,
            counters.errors.load(Ordering::Relaxed),
            ok - last
        );
        last = ok;
    }
}

struct Worker {
    addr: String,
    host: String,
    path: String,
    secret: String,
    mix: Arc<EventMix>,
    counters: Arc<Counters>,
    issued: Arc<AtomicU64>,
    started: Instant,
    deadline: Instant,
    rate: u64,
    max_requests: Option<u64>,
    duplicates: f64,
    seed: u64,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

impl Worker {
    async fn connect(&self) -> anyhow::Result<Sender> {
        let stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .with_context(|| format!("cannot connect to {}", self.addr))?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(sender)
    }

    async fn run(self) -> anyhow::Result<Histogram<u64>> {
        let mut histogram = new_histogram();
        let mut sender: Option<Sender> = None;
        let mut recent: Vec<(Bytes, String)> = Vec::new();
        let interval = (self.rate > 0).then(|| Duration::from_secs_f64(1.0 / self.rate as f64));
        let mut unique = self.seed << 40;
        loop {
            let k = self.issued.fetch_add(1, Ordering::Relaxed);
            if self.max_requests.is_some_and(|max| k >= max) || Instant::now() >= self.deadline {
                break;
            }
            if let Some(interval) = interval {
                let due = self.started + interval.mul_f64(k as f64);
                if due >= self.deadline {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
            }
            let duplicate = !recent.is_empty() && rand::random::<f64>() < self.duplicates;
            let (body, request_id) = if duplicate {
                recent[rand::random::<u64>() as usize % recent.len()].clone()
            } else {
                unique += 1;
                let body = self.mix.render(unique);
                let pair = (body, new_request_id());
                if self.duplicates > 0.0 {
                    if recent.len() >= 64 {
                        recent.swap_remove(0);
                    }
                    recent.push(pair.clone());
                }
                pair
            };
            if sender.is_none() {
                match self.connect().await {
                    Ok(s) => sender = Some(s),
                    Err(_) => {
                        self.counters.errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
            let Some(conn) = sender.as_mut() else {
                continue;
            };
            let headers = ZoomHeaders::sign_at(
                &self.secret,
                &body,
                crate::core::clock::now_secs(),
                &request_id,
            );
            let request = Request::post(&self.path)
                .header("host", &self.host)
                .header("content-type", "application/json; charset=utf-8")
                .header("user-agent", ZOOM_USER_AGENT)
                .header(SIGNATURE_HEADER, &headers.signature)
                .header(TIMESTAMP_HEADER, &headers.timestamp)
                .header(REQUEST_ID_HEADER, &headers.request_id)
                .body(Full::new(body))?;
            self.counters.sent.fetch_add(1, Ordering::Relaxed);
            let sent_at = Instant::now();
            let outcome = async {
                conn.ready().await?;
                let response = conn.send_request(request).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                anyhow::Ok((status, body))
            }
            .await;
            let micros = sent_at.elapsed().as_micros() as u64;
            match outcome {
                Ok((status, body)) if status.is_success() => {
                    let _ = histogram.record(micros.max(1));
                    let is_duplicate = body
                        .windows(21)
                        .any(|w| w == b"\"status\":\"duplicate\"" as &[u8]);
                    let counter = if is_duplicate {
                        &self.counters.duplicates
                    } else {
                        &self.counters.accepted
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    sender = None;
                }
            }
        }
        Ok(histogram)
    }
}

/// Pre-serialised event templates with holes for the parts that make each event unique.
struct EventMix {
    templates: Vec<Vec<Segment>>,
}

enum Segment {
    Literal(Vec<u8>),
    EventTs,
    Uuid,
}

const TS_SENTINEL: i64 = 1_111_111_111_111;
const UUID_SENTINEL: &str = "ZZUNIQUEUUIDZZ";

/// The mix: mostly participant traffic, as real meetings produce.
const MIX: &[&str] = &[
    "meeting.participant_joined",
    "meeting.participant_joined",
    "meeting.participant_left",
    "meeting.participant_left",
    "meeting.started",
    "meeting.ended",
    "meeting.created",
    "meeting.updated",
    "recording.completed",
    "user.updated",
];

impl EventMix {
    fn new() -> EventMix {
        let templates = MIX
            .iter()
            .filter_map(|name| templates::template(name, TS_SENTINEL))
            .map(|mut value| {
                value["event_ts"] = json!(TS_SENTINEL);
                if let Some(object) = value.pointer_mut("/payload/object") {
                    object["uuid"] = json!(UUID_SENTINEL);
                }
                split_template(&templates::to_bytes(&value))
            })
            .collect();
        EventMix { templates }
    }

    fn render(&self, unique: u64) -> Bytes {
        let template = &self.templates[(unique as usize) % self.templates.len()];
        let mut out = Vec::with_capacity(1400);
        for segment in template {
            match segment {
                Segment::Literal(bytes) => out.extend_from_slice(bytes),
                // The time it is sent, as Zoom's event_ts is when the event happened; the
                // uuid keeps every event unique. Receivers can measure delay against it.
                Segment::EventTs => out.extend_from_slice(now_millis().to_string().as_bytes()),
                Segment::Uuid => out.extend_from_slice(format!("sim{unique:016x}==").as_bytes()),
            }
        }
        Bytes::from(out)
    }
}

fn split_template(bytes: &[u8]) -> Vec<Segment> {
    let ts = TS_SENTINEL.to_string();
    let mut segments = Vec::new();
    let mut literal = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(ts.as_bytes()) {
            segments.push(Segment::Literal(std::mem::take(&mut literal)));
            segments.push(Segment::EventTs);
            i += ts.len();
        } else if bytes[i..].starts_with(UUID_SENTINEL.as_bytes()) {
            segments.push(Segment::Literal(std::mem::take(&mut literal)));
            segments.push(Segment::Uuid);
            i += UUID_SENTINEL.len();
        } else {
            literal.push(bytes[i]);
            i += 1;
        }
    }
    segments.push(Segment::Literal(literal));
    segments
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoom::envelope::Envelope;

    #[test]
    fn rendered_events_are_valid_and_unique() {
        let mix = EventMix::new();
        let keys: std::collections::HashSet<_> = (1..=200u64)
            .map(|n| Envelope::parse(&mix.render(n)).unwrap().semantic_key)
            .collect();
        assert_eq!(keys.len(), 200);
    }
}
