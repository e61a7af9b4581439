//! What `zoomhook serve` says on its own (issue 12): a one-line summary of each 10 s interval in
//! which something happened, and one warning per refused webhook — with source, reason and client,
//! never the secret or the body — rate-limited so a flood of forgeries cannot flood the log.
//! Runs the real binary with the log level a user gets by default.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::receiver::Receiver;
use common::*;
use serde_json::json;

/// Marks the bodies and the forged secret, so the test can tell if either reached the log.
const BODY_MARKER: &str = "BODY-MARKER-7f3a";
const FORGED_SECRET: &str = "forged-secret-91c2";

/// `zoomhook serve` with its stderr collected line by line.
struct Serve {
    child: Child,
    base: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    fn start(db: &TestDb) -> Serve {
        let mut command = Command::new(env!("CARGO_BIN_EXE_zoomhook"));
        for (key, _) in std::env::vars() {
            if key.starts_with("ZOOMHOOK_") || key.starts_with("ZOOM_") || key == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--database", &db.url])
            .env("ZOOM_WEBHOOK_SECRET_TOKEN", SECRET)
            .env("ZOOMHOOK_ADMIN_TOKEN", ADMIN)
            .env("ZOOMHOOK_DELIVERY_ALLOW_CIDRS", "127.0.0.0/8")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn zoomhook serve");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("lines").push(line);
            }
        });
        let started = Instant::now();
        let base = loop {
            let found = lines.lock().expect("lines").iter().find_map(|l| {
                l.split("listen=")
                    .nth(1)
                    .and_then(|a| a.split_whitespace().next())
                    .map(|a| format!("http://{a}"))
            });
            if let Some(base) = found {
                break base;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "serve did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Serve { child, base, lines }
    }

    fn log(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    fn matching(&self, needle: &str) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|l| l.contains(needle))
            .collect()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The number after `key=` in a log line.
fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.trim_matches('"').parse().ok())
        .unwrap_or(0)
}

async fn post(
    http: &reqwest::Client,
    base: &str,
    secret: &str,
    body: &[u8],
    request_id: &str,
) -> u16 {
    let ts = now_secs().to_string();
    http.post(format!("{base}/webhooks/zoom"))
        .header("content-type", "application/json")
        .header("x-zm-request-timestamp", &ts)
        .header("x-zm-signature", zoom_signature(secret, &ts, body))
        .header("x-zm-request-id", request_id)
        .body(body.to_vec())
        .send()
        .await
        .expect("POST")
        .status()
        .as_u16()
}

fn event(i: i64) -> Vec<u8> {
    serde_json::to_vec(&json!({"event": "meeting.created", "event_ts": 1_700_000_000_000_i64 + i,
        "payload": {"account_id": "A", "object": {"id": 87000000000_i64 + i, "topic": BODY_MARKER}}}))
    .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_a_summary_per_busy_interval_and_each_rejection_within_a_rate() {
    let db = TestDb::sqlite();
    let serve = Serve::start(&db);
    let http = reqwest::Client::new();
    let receiver = Receiver::ok().await;
    let sub = http
        .post(format!("{}/api/v1/subscriptions", serve.base))
        .bearer_auth(ADMIN)
        .json(&json!({"url": receiver.url("/hook"), "events": "meeting.*"}))
        .send()
        .await
        .expect("POST subscription");
    assert_eq!(sub.status(), 201);

    // Two events and one of them again (Zoom's retry): 2 accepted, 1 duplicate, 2 delivered.
    assert_eq!(
        post(&http, &serve.base, SECRET, &event(1), "r-1").await,
        200
    );
    assert_eq!(
        post(&http, &serve.base, SECRET, &event(2), "r-2").await,
        200
    );
    assert_eq!(
        post(&http, &serve.base, SECRET, &event(2), "r-2").await,
        200
    );
    // A correctly signed body that is not JSON, then a flood of forged signatures.
    let not_json = format!("not json {BODY_MARKER}");
    assert_eq!(
        post(&http, &serve.base, SECRET, not_json.as_bytes(), "r-3").await,
        400
    );
    let flood_started = Instant::now();
    for i in 0..200 {
        let status = post(&http, &serve.base, FORGED_SECRET, &event(100 + i), "f").await;
        assert_eq!(status, 401);
    }
    let flood_secs = flood_started.elapsed().as_secs();
    receiver.wait_for("/hook", 2).await;

    // One more forgery after the bucket refilled a little: its line reports what was held back.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(
        post(&http, &serve.base, FORGED_SECRET, &event(999), "f").await,
        401
    );

    // The summaries of the busy interval(s) add up to exactly what happened.
    let wanted = [
        ("accepted", 2),
        ("duplicates", 1),
        ("rejected", 202),
        ("delivered", 2),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let summaries = loop {
        let summaries = serve.matching("zoomhook::server::summary");
        let sum = |key: &str| summaries.iter().map(|l| field(l, key)).sum::<u64>();
        if wanted.iter().all(|(k, n)| sum(k) == *n) {
            break summaries;
        }
        assert!(
            Instant::now() < deadline,
            "summaries never added up to {wanted:?}: {summaries:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        summaries.iter().all(|l| l.contains("last 10s")),
        "{summaries:#?}"
    );
    assert!(
        summaries.len() <= 3,
        "one line per busy interval: {summaries:#?}"
    );

    // Each rejection says where from and why; the flood was held to the burst plus the rate.
    let rejections = serve.matching("rejected webhook");
    assert!(
        rejections[0].contains("not_json")
            && rejections[0].contains("status=400")
            && rejections[0].contains("client=127.0.0.1:")
            && rejections[0].contains("source=zoom "),
        "{rejections:#?}"
    );
    assert!(rejections[1].contains("bad_signature") && rejections[1].contains("status=401"));
    let allowed = 10 + flood_secs as usize + 2 + 1;
    assert!(
        rejections.len() <= allowed && rejections.len() < 50,
        "{} rejection lines for 202 rejections (allowed {allowed})",
        rejections.len()
    );
    eprintln!(
        "{} rejection lines for 202 rejections; summaries:\n{}",
        rejections.len(),
        summaries.join("\n")
    );
    let last = rejections.last().expect("a rejection line");
    assert!(
        field(last, "not_logged_before") > 0,
        "the next line counts what was held back: {last}"
    );

    // Never the secret, the forged signature's key, or the body.
    let log = serve.log().join("\n");
    for secret in [SECRET, FORGED_SECRET, BODY_MARKER, ADMIN] {
        assert!(!log.contains(secret), "{secret} reached the log:\n{log}");
    }

    // A quiet interval writes nothing.
    let before = serve.matching("zoomhook::server::summary").len();
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(
        serve.matching("zoomhook::server::summary").len(),
        before,
        "{:#?}",
        serve.log()
    );
}
