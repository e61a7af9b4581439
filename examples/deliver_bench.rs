//! The driver of `bench/deliver`.
//!
//! 1. **Sink capacity** (the baseline): a bare hyper sink in this process, driven directly by 64
//!    concurrent keep-alive clients for 5 s; measured again at the end, because on a shared
//!    VM it can swing by half within minutes. `ratio` is against the mean of the two,
//!    `ratio_range` against the higher and the lower.
//! 2. **Backlog drain**: a fresh SQLite log pre-filled with `EVENTS` events fanned out to one
//!    subscription pointing at the sink (all deliveries pending), then the real `zoomhook serve`
//!    (release build, given as `ZOOMHOOK_BIN`) is started and timed until the sink has them all;
//!    deliveries/s, the ratio to the sink's capacity, and the server's peak RSS.
//! 3. **Ingest → delivery delay**: `zoomhook simulate --rate 1000` for 10 s against that server;
//!    the sink measures now − `event_ts` of every delivery (p50/p99).
//!
//! `cargo run --release --example deliver_bench -- [EVENTS]` (default 100000). Prints one JSON line.
//! With `ZOOMHOOK_BENCH_PG` set to a PostgreSQL server's URL (`postgres://postgres@127.0.0.1:5432`),
//! the backlog is kept in a fresh database there (created, and dropped at the end) instead of SQLite.
//! `ZOOMHOOK_BENCH_MAX_IN_FLIGHT` sets the subscription's `max_in_flight` (default 64).
//!
//! With a server built with `--features count-allocations`, `allocations_per_delivery` is the
//! server's allocations (`zoomhook_allocations_total`, read from `/metrics` when it starts
//! listening and once the backlog is drained) over the deliveries made in between; `null` with
//! any other build.

use std::convert::Infallible;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use zoomhook::store::deliveries::Subscription;
use zoomhook::store::{self, NewEvent, StoreOptions};

const SECRET: &str = "bench-secret-xxxxxxxxxxxxxxxx";

#[derive(Default)]
struct Sink {
    received: AtomicU64,
    delays: std::sync::Mutex<Vec<i64>>,
    measure_delay: std::sync::atomic::AtomicBool,
}

async fn sink_answer(
    sink: Arc<Sink>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    sink.received.fetch_add(1, Ordering::Relaxed);
    if sink.measure_delay.load(Ordering::Relaxed)
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
        && let Some(ts) = v["event_ts"].as_i64()
    {
        let delay = zoomhook::core::clock::now_millis() - ts;
        sink.delays.lock().map(|mut d| d.push(delay)).ok();
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

async fn start_sink(sink: Arc<Sink>) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sink = Arc::clone(&sink);
            tokio::spawn(async move {
                let service = service_fn(move |r| sink_answer(Arc::clone(&sink), r));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(format!("http://{addr}"))
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A connection to the server's `postgres` database, for creating and dropping the bench's own.
async fn pg_admin(base: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) =
        tokio_postgres::connect(&format!("{base}/postgres"), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The sink's own rate: 64 concurrent keep-alive clients in this process, flat out, for 5 s.
async fn sink_capacity(client: &reqwest::Client, base: &str, sink: &Sink) -> anyhow::Result<f64> {
    let body = Bytes::from(zoomhook::zoom::templates::to_bytes(
        &zoomhook::zoom::templates::template("meeting.participant_joined", 1_700_000_000_000)
            .unwrap_or_default(),
    ));
    let until = Instant::now() + Duration::from_secs(5);
    let before = sink.received.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (client, url, body) = (client.clone(), format!("{base}/sink"), body.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let _ = client
                    .post(&url)
                    .body(body.clone())
                    .send()
                    .await
                    .map(|r| r.bytes());
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok((sink.received.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events: i64 = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(100_000);
    // The subscription's `max_in_flight`: how many outcomes one pass of the pump can carry.
    let max_in_flight: i64 = std::env::var("ZOOMHOOK_BENCH_MAX_IN_FLIGHT")
        .ok()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(64);
    let bin = std::env::var("ZOOMHOOK_BIN").unwrap_or_else(|_| "target/release/zoomhook".into());
    let sink = Arc::new(Sink::default());
    let base = start_sink(Arc::clone(&sink)).await?;

    // 1. Sink capacity: 64 concurrent keep-alive clients, flat out, 5 s. Measured again after
    // the drain: on a shared VM the sink's own rate can swing by half within minutes.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let sink_before = sink_capacity(&client, &base, &sink).await?;
    eprintln!("sink capacity: {sink_before:.0} req/s");

    // 2. A backlog of pending deliveries, then the real server.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("bench/out/deliver-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let pg = std::env::var("ZOOMHOOK_BENCH_PG").ok().map(|base| {
        let name = format!("zoomhook_deliver_bench_{}", std::process::id());
        (base, name)
    });
    let url = match &pg {
        Some((base, name)) => {
            pg_admin(base)
                .await?
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await?;
            format!("{base}/{name}")
        }
        None => format!("sqlite://{}/deliver.db", dir.display()),
    };
    {
        let store = store::open(&url, &StoreOptions::default()).await?;
        let mut sub = zoomhook::deliver::subscription::create(
            serde_json::from_value(serde_json::json!({"url": format!("{base}/sink"), "events": "*", "max_in_flight": max_in_flight}))?,
            &zoomhook::deliver::ssrf::SsrfPolicy::new(vec!["127.0.0.0/8".parse()?]),
            0,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        sub.created_at = 0;
        store.insert_subscription(&sub).await?;
        let fill = Instant::now();
        let mut n = 0;
        while n < events {
            let batch: Vec<NewEvent> = (0..1000.min(events - n))
                .map(|i| {
                    let value = zoomhook::zoom::templates::template(
                        "meeting.participant_joined",
                        1_700_000_000_000 + n + i,
                    )
                    .unwrap_or_default();
                    let body = zoomhook::zoom::templates::to_bytes(&value);
                    let env = zoomhook::zoom::envelope::Envelope::parse(&body)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    Ok(NewEvent::from_envelope(&env, "zoom", body.into(), None, 1))
                })
                .collect::<anyhow::Result<_>>()?;
            n += batch.len() as i64;
            append_as_a_client_would(store.as_ref(), batch).await?;
        }
        while zoomhook::deliver::fanout::fan_out_batch(store.as_ref(), 1000)
            .await?
            .0
            > 0
        {}
        // Sync is not what this measures: mark it caught up.
        let head = store.head_seq().await?;
        let from = store.reader_position(zoomhook::sync::READER).await?;
        store
            .commit_reader_batch(
                zoomhook::sync::READER,
                from,
                zoomhook::store::ReaderPosition {
                    seq: head,
                    applied: head,
                },
                Vec::new(),
            )
            .await?;
        let pending = store.delivery_counts(&sub.id).await?.pending;
        eprintln!(
            "{pending} deliveries pending after {:.1}s of filling",
            fill.elapsed().as_secs_f64()
        );
        let _: &Subscription = &sub;
    }
    let before = sink.received.load(Ordering::Relaxed);
    let mut child = tokio::process::Command::new(&bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--database", &url])
        .env("ZOOM_WEBHOOK_SECRET_TOKEN", SECRET)
        .env("ZOOMHOOK_ADMIN_TOKEN", "zh_bench_admin_token_0123456789")
        .env("ZOOMHOOK_DELIVERY_ALLOW_CIDRS", "127.0.0.0/8")
        .env("ZOOMHOOK_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap_or_default();
    let mut lines = BufReader::new(
        child
            .stderr
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stderr"))?,
    )
    .lines();
    let mut listen = String::new();
    while let Some(line) = lines.next_line().await? {
        if let Some(addr) = line.split("listen=").nth(1) {
            listen = addr
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            break;
        }
    }
    if listen.is_empty() {
        anyhow::bail!("`{bin} serve` exited before listening (its stderr ended)");
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let started = Instant::now();
    let allocations_before = (
        allocations(&client, &listen).await,
        sink.received.load(Ordering::Relaxed),
    );
    while sink.received.load(Ordering::Relaxed) - before < events as u64
        && started.elapsed() < Duration::from_secs(600)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_secs = started.elapsed().as_secs_f64();
    let delivered = sink.received.load(Ordering::Relaxed) - before;
    let allocations_per_delivery = match (allocations_before, allocations(&client, &listen).await) {
        ((Some(a0), d0), Some(a1)) => {
            let made = sink
                .received
                .load(Ordering::Relaxed)
                .saturating_sub(d0)
                .max(1);
            format!("{:.1}", a1.saturating_sub(a0) as f64 / made as f64)
        }
        _ => "null".to_owned(),
    };
    let drain_rss = peak_rss_mib(pid);
    eprintln!("drained {delivered} in {drain_secs:.1}s, peak RSS {drain_rss:.1} MiB");
    let drain_rate = delivered as f64 / drain_secs;

    // 3. Ingest → delivery delay at 1,000 events/s.
    sink.measure_delay.store(true, Ordering::Relaxed);
    let status = Command::new(&bin)
        .args([
            "simulate",
            "--url",
            &format!("http://{listen}/webhooks/zoom"),
            "--secret",
            SECRET,
            "--rate",
            "1000",
            "--duration",
            "10s",
            "--connections",
            "16",
            "--quiet",
        ])
        .stdout(Stdio::null())
        .status()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut delays = sink.delays.lock().map(|d| d.clone()).unwrap_or_default();
    delays.sort_unstable();
    let q = |p: f64| {
        delays
            .get(((delays.len() as f64 * p) as usize).min(delays.len().saturating_sub(1)))
            .copied()
            .unwrap_or(-1)
    };
    let _ = child.kill().await;
    // Measured as the first one was: with no server running.
    let sink_after = sink_capacity(&client, &base, &sink).await?;
    eprintln!("sink capacity at the end: {sink_after:.0} req/s");
    let sink_rate = (sink_before + sink_after) / 2.0;
    std::fs::remove_dir_all(&dir).ok();
    if let Some((base, name)) = &pg {
        pg_admin(base)
            .await?
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
    }
    println!(
        "{{\"backend\": \"{}\", \"events\": {events}, \"sink_per_sec\": {sink_rate:.0}, \"sink_before\": {sink_before:.0}, \"sink_after\": {sink_after:.0}, \"delivered\": {delivered}, \"deliveries_per_sec\": {drain_rate:.0}, \"ratio\": {:.3}, \"ratio_range\": [{:.3}, {:.3}], \"peak_rss_mib\": {drain_rss:.1}, \"delay_samples\": {}, \"delay_p50_ms\": {}, \"delay_p99_ms\": {}, \"simulate_ok\": {}, \"allocations_per_delivery\": {allocations_per_delivery}}}",
        if pg.is_some() { "postgres" } else { "sqlite" },
        drain_rate / sink_rate,
        drain_rate / sink_before.max(sink_after),
        drain_rate / sink_before.min(sink_after).max(1.0),
        delays.len(),
        q(0.5),
        q(0.99),
        status.success()
    );
    Ok(())
}

/// The server's `zoomhook_allocations_total`, if its build counts allocations.
async fn allocations(client: &reqwest::Client, listen: &str) -> Option<u64> {
    let text = client
        .get(format!("http://{listen}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("zoomhook_allocations_total "))
        .and_then(|value| value.trim().parse().ok())
}

/// Appends `batch`, waiting and trying again while the store answers "unavailable" — what a
/// sender does with a 503. Filling far faster than any webhook sender, the log indexer falls
/// behind, and the store holds appends back until it catches up (up to a minute here).
async fn append_as_a_client_would(
    store: &dyn zoomhook::store::EventStore,
    batch: Vec<NewEvent>,
) -> anyhow::Result<()> {
    let refused_since = Instant::now();
    loop {
        match store.append_batch(batch.clone(), 86_400_000).await {
            Ok(_) => return Ok(()),
            Err(store::StoreError::Unavailable(reason))
                if refused_since.elapsed() < Duration::from_secs(60) =>
            {
                note_held_back(&reason);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Says once that the fill is being held back.
fn note_held_back(reason: &str) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| eprintln!("filling is held back ({reason}); waiting, as a sender would"));
}
