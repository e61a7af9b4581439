//! The driver of `bench/sync`: how fast the sync reader applies a pre-filled log, against the
//! speed of merely reading that log in the same run (the baseline: sync cannot be faster than
//! reading its input).
//!
//! `cargo run --release --example sync_bench -- [EVENTS] [DATABASE_URL]` (default 200000 events,
//! a fresh SQLite file under bench/out). The log holds realistic meeting lifecycles — created,
//! updated, started, participants joining and leaving, ended, recording completed — from
//! `zoomhook::zoom::templates`, 8 participants per meeting.

use std::time::Instant;

use bytes::Bytes;
use zoomhook::store::{self, EventQuery, NewEvent, StoreOptions};
use zoomhook::zoom::envelope::Envelope;
use zoomhook::zoom::templates::{self, Meeting, Participant};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(200_000);
    let dir = tempfile_dir()?;
    let url = std::env::args()
        .nth(2)
        .unwrap_or_else(|| format!("sqlite://{}/sync-bench.db", dir.display()));
    let store = store::open(&url, &StoreOptions::default()).await?;

    let fill = Instant::now();
    let mut appended = 0usize;
    let mut meeting = 0i64;
    while appended < events {
        let mut batch = Vec::with_capacity(1000);
        while batch.len() < 1000 && appended + batch.len() < events {
            let m = Meeting::random(1_700_000_000_000 + meeting * 3_600_000);
            let people: Vec<Participant> = (0..8).map(Participant::random).collect();
            for value in templates::lifecycle(&m, &people) {
                let body = templates::to_bytes(&value);
                let env = Envelope::parse(&body)?;
                batch.push(NewEvent::from_envelope(
                    &env,
                    "zoom",
                    Bytes::from(body),
                    None,
                    0,
                ));
            }
            meeting += 1;
        }
        appended += batch.len();
        store.append_batch(batch, 86_400_000).await?;
    }
    let head = store.head_seq().await?;
    eprintln!(
        "filled {head} events ({meeting} meetings) in {:.1}s",
        fill.elapsed().as_secs_f64()
    );

    // Baseline: read the whole log in the batches sync reads, without applying anything.
    let read = Instant::now();
    let mut after = 0;
    let mut bytes = 0usize;
    loop {
        let page = store
            .list_events(&EventQuery {
                after_seq: Some(after),
                limit: zoomhook::sync::BATCH,
                ..Default::default()
            })
            .await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        bytes += page.iter().map(|e| e.body.len()).sum::<usize>();
    }
    let read_secs = read.elapsed().as_secs_f64();

    let sync = Instant::now();
    let position = zoomhook::sync::catch_up(store.as_ref()).await?;
    let sync_secs = sync.elapsed().as_secs_f64();
    assert_eq!(position.applied, head, "every event applied once");

    let read_rate = head as f64 / read_secs;
    let sync_rate = head as f64 / sync_secs;
    println!(
        "{{\"events\": {head}, \"body_mb\": {:.1}, \"read_per_sec\": {read_rate:.0}, \"sync_per_sec\": {sync_rate:.0}, \"ratio\": {:.3}, \"sync_seconds\": {sync_secs:.2}}}",
        bytes as f64 / 1e6,
        sync_rate / read_rate
    );
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("bench/out")
        .join(format!("sync-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
