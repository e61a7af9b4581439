//! Durability and availability through the real binary and real failures: `kill -9` mid-flood,
//! SIGTERM with requests in flight, and a store that cannot commit.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::binary::Binary;
use common::*;
use serde_json::Value;

/// Sends distinct signed events from `workers` tasks until told to stop; returns acked ids.
/// Floods `base` with distinct signed events from `workers` connections until `stop`; returns the
/// ids of the acknowledged events, and a live count of acknowledgements to wait on.
fn flood(
    base: String,
    workers: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (
    tokio::task::JoinHandle<HashSet<String>>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    let acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&acks);
    let handle = tokio::spawn(async move {
        let acked = Arc::new(Mutex::new(HashSet::new()));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut tasks = Vec::new();
        for w in 0..workers {
            let (client, base, stop, acked, counter) = (
                client.clone(),
                base.clone(),
                Arc::clone(&stop),
                Arc::clone(&acked),
                Arc::clone(&counter),
            );
            tasks.push(tokio::spawn(async move {
                let mut n = 0i64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let value = zoomhook::zoom::templates::template(
                        "meeting.participant_joined",
                        1_700_000_000_000 + (w as i64) * 10_000_000 + n,
                    )
                    .unwrap();
                    let body = zoomhook::zoom::templates::to_bytes(&value);
                    let ts = now_secs().to_string();
                    let sent = client
                        .post(format!("{base}/webhooks/zoom"))
                        .header("x-zm-request-timestamp", &ts)
                        .header("x-zm-signature", zoom_signature(SECRET, &ts, &body))
                        .body(body)
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status().is_success() => {
                            if let Ok(v) = r.json::<Value>().await
                                && let Some(id) = v["id"].as_str()
                            {
                                acked.lock().unwrap().insert(id.to_owned());
                                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                        }
                        Ok(r) => assert!(r.status().is_server_error(), "unexpected {}", r.status()),
                        Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        acked.lock().unwrap().clone()
    });
    (handle, acks)
}

/// Waits until the flood has `n` acknowledgements (panics after `limit`).
async fn wait_for_acks(acks: &std::sync::atomic::AtomicUsize, n: usize, limit: Duration) {
    let started = Instant::now();
    while acks.load(std::sync::atomic::Ordering::SeqCst) < n {
        assert!(
            started.elapsed() < limit,
            "only {} of {n} acknowledgements after {limit:?}",
            acks.load(std::sync::atomic::Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn stored_ids(db: &TestDb) -> (HashSet<String>, Vec<i64>) {
    let store = db.open_store().await;
    let mut ids = HashSet::new();
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .list_events(&zoomhook::store::EventQuery {
                after_seq: Some(after),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            return (ids, seqs);
        }
        for e in page {
            after = e.seq;
            seqs.push(e.seq);
            ids.insert(e.id);
        }
    }
}

both_backends!(
    kill_9_mid_sync_backlog_applies_every_event_exactly_once,
    kill_9_mid_flood_loses_no_acknowledged_event,
    sigterm_finishes_in_flight_requests
);

async fn kill_9_mid_flood_loses_no_acknowledged_event(db: TestDb) {
    let server = Binary::start(&db);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (flooding, acks) = flood(server.base.clone(), 16, Arc::clone(&stop));
    // Let a few hundred events be acknowledged, then kill without warning while requests are in
    // flight.
    wait_for_acks(&acks, 300, Duration::from_secs(60)).await;
    server.signal("-KILL");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = flooding.await.unwrap();
    drop(server);
    assert!(
        acked.len() >= 300,
        "the flood got {} acks before the kill",
        acked.len()
    );

    // Restart on the same store: every acknowledged event is there, seq has no gaps.
    let restarted = Binary::start(&db);
    drop(restarted);
    let (stored, seqs) = stored_ids(&db).await;
    let missing: Vec<_> = acked.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
}

async fn sigterm_finishes_in_flight_requests(db: TestDb) {
    let mut server = Binary::start(&db);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (flooding, acks) = flood(server.base.clone(), 8, Arc::clone(&stop));
    wait_for_acks(&acks, 20, Duration::from_secs(30)).await;
    server.signal("-TERM");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "zoomhook did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "graceful exit, got {status}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = flooding.await.unwrap();
    assert!(!acked.is_empty());
    let (stored, _) = stored_ids(&db).await;
    assert!(
        acked.is_subset(&stored),
        "every acknowledged event was committed before exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_that_cannot_commit_answers_503_and_recovers() {
    let db = TestDb::sqlite();
    let server = TestServer::start(config(&db, &[("sqlite_busy_timeout", "200ms")])).await;
    assert_eq!(
        server.send(&fixture("meeting.created.json")).await.status(),
        200
    );

    // Another process holds the write lock: zoomhook cannot commit.
    let path = db.sqlite_path().unwrap();
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let r = server.send(&fixture("meeting.started.json")).await;
    assert_eq!(r.status(), 503, "never 2xx when the event is not committed");
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "store_unavailable"
    );

    blocker.execute_batch("COMMIT").unwrap();
    drop(blocker);
    // Recovers by itself; Zoom's retry of the same event is then stored once.
    assert_eq!(
        server.send(&fixture("meeting.started.json")).await.status(),
        200
    );
    let events = server.all_events().await;
    assert_eq!(events.len(), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connection_loss_answers_503_and_recovers() {
    let db = TestDb::postgres().await;
    let name = db.pg_name().unwrap().to_owned();
    let server = TestServer::start(config(&db, &[])).await;
    assert_eq!(
        server.send(&fixture("meeting.created.json")).await.status(),
        200
    );

    // The database goes away: existing connections are killed and new ones refused.
    let admin = pg_admin().await;
    admin
        .batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .await
        .unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&name],
        )
        .await
        .unwrap();
    for fixture_name in ["meeting.started.json", "meeting.ended.json"] {
        let r = server.send(&fixture(fixture_name)).await;
        assert_eq!(
            r.status(),
            503,
            "never 2xx while the database is unreachable"
        );
    }
    let ready = server.http.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);

    admin
        .batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
    let mut recovered = false;
    for _ in 0..300 {
        if server.send(&fixture("meeting.started.json")).await.status() == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "zoomhook reconnects by itself");
    assert_eq!(server.all_events().await.len(), 2);
    server.stop().await;
}

/// Appends `total` distinct `meeting.participant_joined` events straight into the store, in
/// batches of 1,000, all received at `received_at`.
async fn prefill(store: &dyn zoomhook::store::EventStore, total: i64, received_at: i64) {
    let mut n = 0i64;
    while n < total {
        let batch: Vec<zoomhook::store::NewEvent> = (0..1000)
            .map(|i| {
                let value = zoomhook::zoom::templates::template(
                    "meeting.participant_joined",
                    1_700_000_000_000 + n + i,
                )
                .unwrap();
                let body = zoomhook::zoom::templates::to_bytes(&value);
                let env = zoomhook::zoom::envelope::Envelope::parse(&body).unwrap();
                zoomhook::store::NewEvent::from_envelope(
                    &env,
                    "zoom",
                    body.into(),
                    None,
                    received_at,
                )
            })
            .collect();
        store.append_batch(batch, 86_400_000).await.unwrap();
        n += 1000;
    }
}

/// Guarantee 4's machinery under a real crash: the sync reader of the real binary is killed with
/// `kill -9` in the middle of a backlog; after a restart it finishes with every event applied
/// exactly once (its counter of applied events equals the log head).
async fn kill_9_mid_sync_backlog_applies_every_event_exactly_once(db: TestDb) {
    let store = db.open_store().await;
    let total = 20_000i64;
    prefill(store.as_ref(), total, 0).await;
    assert_eq!(store.head_seq().await.unwrap(), total);

    let mut binary = Binary::start(&db);
    let mut position = Default::default();
    for _ in 0..600 {
        position = store.reader_position(zoomhook::sync::READER).await.unwrap();
        if position.seq > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Killed directly (no `kill` process to start), so the reader is still mid-backlog.
    binary.kill();
    let at_kill = store.reader_position(zoomhook::sync::READER).await.unwrap();
    assert!(at_kill.seq >= position.seq);
    assert!(
        at_kill.seq < total,
        "killed in the middle of the backlog (at {})",
        at_kill.seq
    );

    let _binary = Binary::start(&db);
    let mut done = at_kill;
    for _ in 0..1200 {
        done = store.reader_position(zoomhook::sync::READER).await.unwrap();
        if done.seq == total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(done.seq, total, "none skipped");
    assert_eq!(done.applied, total, "none applied twice");
}

/// Peak resident memory of a process (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Guarantee 3 under a large backlog: 100,000 deliveries pending in the store when the real
/// binary starts; it delivers every one (each webhook-id once) and its memory stays bounded,
/// because the backlog lives in the store, not in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_100k_pending_deliveries_delivers_all_with_bounded_memory() {
    use zoomhook::store::deliveries::Subscription;
    let db = TestDb::sqlite();
    let receiver = common::receiver::Receiver::ok().await;
    let total = 100_000i64;
    {
        let store = db.open_store().await;
        let sub = Subscription {
            id: zoomhook::core::ids::new_id("sub"),
            kind: "webhook".into(),
            url: receiver.url("/sink"),
            events: "*".into(),
            secret: zoomhook::deliver::signing::new_secret(),
            previous_secret: None,
            previous_until: None,
            scheme: "standard".into(),
            body_format: "raw".into(),
            headers: "{}".into(),
            timeout_ms: 10_000,
            max_in_flight: 64,
            rate_limit: None,
            ordering: "none".into(),
            https_only: false,
            enabled: true,
            disabled_reason: None,
            failing_since: None,
            email_to: None,
            email_subject: None,
            email_body: None,
            description: String::new(),
            created_at: 0,
            updated_at: 0,
            revision: 0,
        };
        store.insert_subscription(&sub).await.unwrap();
        prefill(store.as_ref(), total, 1).await;
        // Fan out everything, so the deliveries are pending in the store before the start.
        while zoomhook::deliver::fanout::fan_out_batch(store.as_ref(), 1000)
            .await
            .unwrap()
            .0
            > 0
        {}
        let counts = store.delivery_counts(&sub.id).await.unwrap();
        assert_eq!(counts.pending, total);
        // Measure delivery alone: sync is marked caught up (its own backlog test is above).
        let from = store.reader_position(zoomhook::sync::READER).await.unwrap();
        let to = zoomhook::store::ReaderPosition {
            seq: total,
            applied: total,
        };
        assert!(
            store
                .commit_reader_batch(zoomhook::sync::READER, from, to, Vec::new())
                .await
                .unwrap()
        );
    }
    let binary = Binary::start_with(
        &db,
        &[
            ("ZOOMHOOK_DELIVERY_ALLOW_CIDRS", "127.0.0.0/8"),
            ("ZOOMHOOK_LOG", "warn,zoomhook::server=info"),
        ],
    );
    let mut delivered = 0;
    // Generous: this is about completeness and memory, not speed (bench/deliver measures that).
    for _ in 0..6000 {
        delivered = receiver.count("/sink") as i64;
        if delivered >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let peak = peak_rss_mib(binary.child.id());
    assert_eq!(delivered, total, "every pending delivery was delivered");
    let ids: HashSet<String> = receiver
        .received_at("/sink")
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    assert_eq!(ids.len() as i64, total, "each once");
    assert!(peak < 128.0, "peak RSS {peak:.1} MiB with a 100k backlog");
}
