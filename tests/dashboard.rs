//! The web dashboard in a real browser: the system Chromium driven by `playwright-core`
//! (tests/browser/dashboard.mjs) against the real `zoomhook serve` binary on 127.0.0.1.
//!
//! The script signs in, watches a webhook posted mid-test arrive in the live tail, opens it,
//! pauses and resumes the tail, creates a subscription to a sink that answers 500, delivers the
//! event to it again, sees the delivery fail and retries it, posts a meeting lifecycle and reads
//! the attendance (and its CSV), and fails on any console error. It writes a screenshot of every
//! page at laptop (1280×800) and phone (390×844) size to `target/dashboard-screenshots/`.
//!
//! Nothing downloads a browser: `playwright-core` (pinned by the committed package-lock.json) is
//! installed with `npm ci` into the target directory once, with `PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD`
//! set, and launches `/usr/bin/chromium` (or `ZOOMHOOK_TEST_CHROMIUM`). Like the other Node-based
//! tests, this one fails — it does not skip — when node, npm or Chromium is missing, and says what
//! to install.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::binary::Binary;
use common::receiver::Receiver;
use common::{ADMIN, SECRET, TestDb, TestServer};
use serde_json::{Value, json};
use sha2::Digest;
use zoomhook::zoom::templates::{self, Meeting, Participant};

/// The browser test's whole run, npm install excluded.
const RUN_LIMIT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_events_failed_deliveries_and_attendance_in_a_browser() {
    let chromium = chromium();
    let modules = playwright_dir();
    let sink = Receiver::start(Arc::new(|_, _| (500, vec![], Duration::ZERO))).await;
    let db = TestDb::sqlite();
    let server = Binary::start_with(
        &db,
        &[
            ("ZOOMHOOK_DELIVERY_ALLOW_CIDRS", "127.0.0.1/32"),
            // Two quick attempts, then the delivery is failed: the page can see it end.
            ("ZOOMHOOK_DELIVERY_RETRY_SCHEDULE", "200ms"),
        ],
    );

    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("dashboard-screenshots");
    // Only this run's pictures (a failure-*.png of an earlier run would mislead).
    let _ = std::fs::remove_dir_all(&screenshots);
    std::fs::create_dir_all(&screenshots).expect("create the screenshot directory");
    let work = tempfile::tempdir().expect("temp dir");
    let plan_path = work.path().join("plan.json");
    let plan = plan(
        &server.base,
        &sink.url("/hook"),
        &chromium,
        &modules,
        &screenshots,
    );
    std::fs::write(&plan_path, serde_json::to_vec_pretty(&plan).expect("plan")).expect("plan");

    let summary = run_browser(&plan_path);
    assert_eq!(
        summary["ok"],
        true,
        "the browser run failed: {}",
        summary["error"].as_str().unwrap_or("?")
    );

    // What the page did happened on the server: the replayed delivery was tried twice by the
    // schedule, and once more by the Retry button.
    // The test send ("send test event") went there too, with a body of its own.
    let live = plan["live_event"].as_str().unwrap_or_default().as_bytes();
    let attempts = sink
        .received_at("/hook")
        .into_iter()
        .filter(|r| r.body == live)
        .count();
    assert!(
        attempts >= 3,
        "the sink got the event (verbatim) twice, then once more for the retry; it got it {attempts} times"
    );
}

#[tokio::test]
async fn stats_count_what_the_receiver_answered_and_what_the_store_holds() {
    let db = TestDb::sqlite();
    let server = TestServer::start(common::config(&db, &[])).await;
    let body = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/zoom/meeting.started.json"),
    )
    .expect("fixture");
    let request_id = Some("req-stats-1");
    for _ in 0..2 {
        let answer = server
            .post_signed("/webhooks/zoom", SECRET, &body, request_id)
            .await;
        assert!(answer.status().is_success());
    }
    let forged = server
        .post_signed("/webhooks/zoom", "not-the-secret", &body, None)
        .await;
    assert_eq!(forged.status(), 401);

    let stats = server.api("/api/v1/stats").await;
    assert_eq!(stats["ingest"]["accepted_count"], 1, "{stats:#}");
    assert_eq!(stats["ingest"]["duplicate_count"], 1, "{stats:#}");
    assert_eq!(
        stats["ingest"]["rejected_counts"],
        json!({"unauthorized": 1}),
        "{stats:#}"
    );
    assert_eq!(stats["deliveries"]["succeeded_count"], 0);
    assert_eq!(stats["deliveries"]["pending_count"], 0);
    assert_eq!(stats["deliveries"]["oldest_pending_at"], Value::Null);
    assert_eq!(stats["sync"]["head"], 1, "{stats:#}");
    assert_eq!(stats["store"], json!({"backend": "sqlite", "ok": true}));
    assert!(
        stats["generated_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{stats:#}"
    );
}

#[tokio::test]
async fn stats_want_the_admin_token_and_the_dashboard_does_not() {
    let db = TestDb::sqlite();
    let server = TestServer::start(common::config(&db, &[])).await;
    let http = reqwest::Client::new();
    let stats = http
        .get(server.url("/api/v1/stats"))
        .send()
        .await
        .expect("GET");
    assert_eq!(stats.status(), 401);

    let page = http.get(server.url("/")).send().await.expect("GET /");
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    let html = page.text().await.expect("body");
    assert!(html.contains("src=\"/ui/app.js\""), "{html}");
    let script = http
        .get(server.url("/ui/app.js"))
        .send()
        .await
        .expect("GET");
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let missing = http
        .get(server.url("/ui/nope.js"))
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), 404);
}

/// Everything the browser script needs: the server, the bodies to post, what to expect.
fn plan(base: &str, sink: &str, chromium: &Path, modules: &Path, screenshots: &Path) -> Value {
    let fixture = |name: &str| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/zoom");
        std::fs::read_to_string(dir.join(format!("{name}.json"))).expect("fixture")
    };
    // The live event: a fixture's bytes exactly as they are (spacing and key order included),
    // so "raw body" can be compared byte for byte.
    let live = fixture("user.created");
    let paused = fixture("meeting.created");

    let now = zoomhook::core::clock::now_millis();
    let start = now - 3_600_000;
    let mut meeting = Meeting::random(start);
    meeting.topic = "Dashboard check: quarterly review".into();
    let people = [("Ada Lovelace", 60, 1_860), ("Grace Hopper", 300, 1_200)];
    let participants: Vec<Participant> = people
        .iter()
        .enumerate()
        .map(|(i, (name, _, _))| Participant {
            name: (*name).into(),
            email: format!("{}@example.com", name.to_lowercase().replace(' ', ".")),
            ..Participant::random(i)
        })
        .collect();
    let mut lifecycle = vec![templates::meeting_started(&meeting, start)];
    for (p, (_, join, _)) in participants.iter().zip(&people) {
        lifecycle.push(templates::participant_joined(
            &meeting,
            p,
            start + join * 1000,
        ));
    }
    for (p, (_, join, seconds)) in participants.iter().zip(&people) {
        let leave = start + (join + seconds) * 1000;
        lifecycle.push(templates::participant_left(&meeting, p, leave));
    }
    lifecycle.push(templates::meeting_ended(&meeting, start + 2_400_000));
    let lifecycle: Vec<String> = lifecycle
        .iter()
        .map(|v| String::from_utf8(templates::to_bytes(v)).expect("utf-8"))
        .collect();

    json!({
        "base": base,
        "token": ADMIN,
        "secret": SECRET,
        "sink_url": sink,
        "chromium": chromium,
        "modules_dir": modules,
        "screenshots_dir": screenshots,
        "live_event": live,
        "live_event_name": "user.created",
        "live_event_marker": "jchill@example.com",
        "live_event_entity": "abcD3ojfdbjfg",
        "paused_event": paused,
        "paused_event_name": "meeting.created",
        "lifecycle": lifecycle,
        // Answered, and recorded in the log as an operational event.
        "url_validation": fixture("endpoint.url_validation"),
        "meeting_topic": meeting.topic,
        "participants": participants.iter().zip(&people).map(|(p, (_, _, seconds))| json!({
            "name": p.name,
            "email": p.email,
            "total_seconds": seconds,
            // As the page writes a duration (dom.js `duration`).
            "duration_text": format!("{} min", seconds / 60),
        })).collect::<Vec<_>>(),
    })
}

/// Runs the browser script (bounded by [`RUN_LIMIT`]) and returns its JSON summary.
fn run_browser(plan: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.mjs");
    let mut child = Command::new("node")
        .arg(&script)
        .arg(plan)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("this test needs `node` on PATH (install nodejs): {e}"));
    let mut stdout = child.stdout.take().expect("node stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    while child.try_wait().expect("wait for node").is_none() {
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the browser script ran longer than {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = reader.join().expect("stdout reader");
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|_| panic!("the browser script wrote no summary; its output:\n{text}"))
}

/// The Chromium to drive: `ZOOMHOOK_TEST_CHROMIUM`, else Debian's `/usr/bin/chromium`.
fn chromium() -> PathBuf {
    let path = std::env::var_os("ZOOMHOOK_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "the dashboard test drives Chromium at {} (install it: apt-get install -y chromium, or set ZOOMHOOK_TEST_CHROMIUM)",
        path.display()
    );
    path
}

/// A directory with the pinned `playwright-core` installed by `npm ci`, cached under the target
/// directory by the hash of the lockfile. Installed into a private directory and renamed into
/// place, so concurrent runs never see half an install.
fn playwright_dir() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let lock =
        std::fs::read(source.join("package-lock.json")).expect("tests/browser/package-lock.json");
    let manifest = std::fs::read(source.join("package.json")).expect("tests/browser/package.json");
    let hash = hex::encode(&sha2::Sha256::digest([lock.as_slice(), &manifest].concat())[..8]);
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let cache = tmp.join(format!("dashboard-browser-{hash}"));
    let installed = |dir: &Path| {
        dir.join("node_modules/playwright-core/package.json")
            .exists()
    };
    if installed(&cache) {
        return cache;
    }
    let staging = tmp.join(format!("dashboard-browser-{hash}.{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&staging).expect("create the npm staging directory");
    std::fs::write(staging.join("package.json"), &manifest).expect("copy package.json");
    std::fs::write(staging.join("package-lock.json"), &lock).expect("copy package-lock.json");
    let output = Command::new("npm")
        .args([
            "ci",
            "--no-audit",
            "--no-fund",
            "--no-update-notifier",
            "--ignore-scripts",
        ])
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .current_dir(&staging)
        .output()
        .unwrap_or_else(|e| panic!("the dashboard test needs `npm` on PATH (install npm): {e}"));
    assert!(
        output.status.success(),
        "npm ci in tests/browser failed (is the npm registry reachable?): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    if std::fs::rename(&staging, &cache).is_err() {
        // Another run finished its install first; use that one.
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(
        installed(&cache),
        "playwright-core is in {}",
        cache.display()
    );
    cache
}
