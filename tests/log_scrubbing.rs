//! Logs never contain secrets (issue 11), at any level and in either format. Runs the real
//! `zoomhook serve` with its stderr captured, at `ZOOMHOOK_LOG=trace` down to `error`, as text and as
//! JSON, and during each run does everything that carries a secret: admin tokens (right and wrong,
//! in the header and in `?token=` on the stream), signed and forged webhooks, the URL validation
//! challenge, subscriptions with their own secrets, headers and secret URL queries, a secret
//! rotation, an email subscription through an SMTP server with a password, a recording event whose
//! body carries `download_token`, and deliveries to a local sink and to a dead one. Every secret is
//! a long random value made for the run, so one found in a line is unambiguously a leak.
//!
//! Two checks keep the scan honest: the scanner itself finds a planted value (unit test below),
//! and each run finds a value the server *does* log (a source's name in its start-up warning), so
//! an empty or unread capture cannot pass as clean.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::receiver::Receiver;
use common::*;
use serde_json::{Value, json};

/// Named secret values the log must not contain.
#[derive(Default)]
struct Secrets(Vec<(String, String)>);

impl Secrets {
    /// Makes a fresh secret, long and random enough that a match cannot be chance.
    fn make(&mut self, what: &str) -> String {
        let value = format!(
            "{what}-{}{}",
            ulid::Ulid::generate().to_string().to_lowercase(),
            ulid::Ulid::generate().to_string().to_lowercase()
        );
        self.watch(what, &value);
        value
    }

    /// Watches a value made elsewhere (a generated secret, a signature).
    fn watch(&mut self, what: &str, value: &str) {
        assert!(
            value.len() >= 16,
            "{what} is too short to scan for: {value:?}"
        );
        self.0.push((what.to_owned(), value.to_owned()));
    }
}

/// Every `(secret name, line)` where a line contains a secret.
fn leaks<'a>(lines: &'a [String], secrets: &'a Secrets) -> Vec<(&'a str, &'a str)> {
    lines
        .iter()
        .flat_map(|line| {
            secrets
                .0
                .iter()
                .filter(|(_, value)| line.contains(value.as_str()))
                .map(move |(what, _)| (what.as_str(), line.as_str()))
        })
        .collect()
}

#[test]
fn the_scanner_finds_a_planted_secret_in_text_and_json_lines() {
    let mut secrets = Secrets::default();
    let token = secrets.make("admin-token");
    let lines = vec![
        "INFO zoomhook::server: listening listen=127.0.0.1:1".to_owned(),
        format!("DEBUG hyper: headers authorization=\"Bearer {token}\" x=1"),
        serde_json::to_string(
            &json!({"level": "DEBUG", "uri": format!("/api/v1/stream?token={token}")}),
        )
        .unwrap(),
    ];
    let found = leaks(&lines, &secrets);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().all(|(what, _)| *what == "admin-token"));
    assert!(leaks(&lines[..1], &secrets).is_empty());
}

/// `zoomhook serve` at a log level and format, its stderr collected line by line.
struct Serve {
    child: Child,
    base: String,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Serve {
    fn start(database: &str, level: &str, format: &str, env: &[(&str, String)]) -> Serve {
        // The level may hide the line naming the address, so the port is chosen here.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_zoomhook"));
        for (key, _) in std::env::vars() {
            if key.starts_with("ZOOMHOOK_") || key.starts_with("ZOOM_") || key == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        let listen = format!("127.0.0.1:{port}");
        let mut child = command
            .args(["serve", "--listen", &listen, "--database", database])
            .args(["--log-format", format])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("ZOOMHOOK_LOG", level)
            .env("ZOOMHOOK_DELIVERY_ALLOW_CIDRS", "127.0.0.0/8")
            .env("ZOOMHOOK_DELIVERY_RETRY_SCHEDULE", "1s")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn zoomhook serve");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        // Reads to the end, so the child never blocks on a full pipe even at `trace`.
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("lines").push(line);
            }
        });
        Serve {
            child,
            base: format!("http://{listen}"),
            lines,
            reader: Some(reader),
        }
    }

    async fn wait_ready(&self, http: &reqwest::Client) {
        let started = Instant::now();
        while http
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .map_or(true, |r| !r.status().is_success())
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "serve did not become ready; its log:\n{}",
                self.lines.lock().expect("lines").join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM (so shutdown logs too), then every line it wrote.
    fn stop(mut self) -> Vec<String> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let started = Instant::now();
        while self.child.try_wait().expect("wait").is_none() {
            if started.elapsed() > Duration::from_secs(40) {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(reader) = self.reader.take() {
            reader.join().expect("stderr reader");
        }
        self.lines.lock().expect("lines").clone()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An SMTP server that offers and accepts AUTH; returns its port and how many sessions it had.
async fn smtp_server() -> (u16, Arc<Mutex<usize>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sessions = Arc::new(Mutex::new(0));
    let count = Arc::clone(&sessions);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            *count.lock().unwrap() += 1;
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 test.local ESMTP\r\n").await.ok();
                let mut in_data = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = match () {
                        _ if in_data && line == "." => {
                            in_data = false;
                            b"250 2.0.0 queued\r\n"
                        }
                        _ if in_data => continue,
                        _ if upper.starts_with("EHLO") || upper.starts_with("HELO") => {
                            b"250-test.local\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n"
                        }
                        _ if upper.starts_with("AUTH") => b"235 2.7.0 accepted\r\n",
                        _ if upper.starts_with("DATA") => {
                            in_data = true;
                            b"354 go ahead\r\n"
                        }
                        _ if upper.starts_with("QUIT") => {
                            write.write_all(b"221 bye\r\n").await.ok();
                            break;
                        }
                        _ => b"250 OK\r\n",
                    };
                    if write.write_all(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, sessions)
}

/// A port nothing listens on (deliveries to it fail with a connection error).
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// POSTs `body` signed with `secret` as Zoom does, watching the signature header's value.
async fn post_signed(
    http: &reqwest::Client,
    base: &str,
    secrets: &mut Secrets,
    secret: &str,
    body: &[u8],
) -> reqwest::Response {
    let ts = now_secs().to_string();
    let signature = zoom_signature(secret, &ts, body);
    secrets.watch("x-zm-signature", &signature);
    http.post(format!("{base}/webhooks/zoom"))
        .header("content-type", "application/json")
        .header("x-zm-request-timestamp", &ts)
        .header("x-zm-signature", &signature)
        .header("x-zm-request-id", uuid::Uuid::new_v4().to_string())
        .body(body.to_vec())
        .send()
        .await
        .expect("POST webhook")
}

async fn api(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("API request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `recording.completed` with its `download_token` and meeting password replaced by fresh secrets.
fn recording_with_secrets(secrets: &mut Secrets) -> Vec<u8> {
    let mut event: Value =
        serde_json::from_slice(&fixture("recording.completed.json")).expect("fixture");
    assert!(
        event["download_token"].is_string(),
        "the fixture has a download_token"
    );
    event["download_token"] = secrets.make("download-token").into();
    event["payload"]["object"]["password"] = secrets.make("meeting-password").into();
    event["payload"]["object"]["recording_files"][0]["download_url"] = format!(
        "https://example.com/rec/download/abc?access_token={}",
        secrets.make("download-url-token")
    )
    .into();
    serde_json::to_vec(&event).expect("json")
}

/// One run: the server at `level` in `format` on `db`, every secret-carrying request, then the
/// log scanned. Returns the log for format-specific checks.
async fn run(db: TestDb, level: &str, format: &str) -> Vec<String> {
    let mut secrets = Secrets::default();
    let http = reqwest::Client::new();
    let webhook_secret = secrets.make("webhook-secret");
    let previous_secret = secrets.make("previous-webhook-secret");
    let admin = secrets.make("admin-token");
    let (smtp_port, smtp_sessions) = smtp_server().await;
    let smtp_password = secrets.make("smtp-password");
    secrets.watch(
        "smtp-auth-plain",
        &base64::engine::general_purpose::STANDARD.encode(format!("\0mailer\0{smtp_password}")),
    );
    // A password in the database URL; the local PostgreSQL trusts the connection, so it is
    // carried and never checked.
    let database = match db.backend {
        Backend::Sqlite => db.url.clone(),
        Backend::Postgres => db.url.replacen(
            "postgres://postgres@",
            &format!("postgres://postgres:{}@", secrets.make("database-password")),
            1,
        ),
    };
    // The positive control: a source without a secret is named in a start-up warning.
    let canary = format!(
        "canary-{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    );
    let canary_kind = format!(
        "ZOOMHOOK_SOURCE_{}_KIND",
        canary.replace('-', "_").to_uppercase()
    );
    let env = [
        ("ZOOM_WEBHOOK_SECRET_TOKEN", webhook_secret.clone()),
        ("ZOOMHOOK_SOURCE_ZOOM_PREVIOUS_SECRET", previous_secret),
        ("ZOOMHOOK_ADMIN_TOKEN", admin.clone()),
        (
            "ZOOMHOOK_SMTP_URL",
            format!("smtp://mailer:{smtp_password}@127.0.0.1:{smtp_port}"),
        ),
        (canary_kind.as_str(), "webhook".to_owned()),
    ];
    let serve = Serve::start(&database, level, format, &env);
    serve.wait_ready(&http).await;
    let base = serve.base.clone();
    let subscriptions = format!("{base}/api/v1/subscriptions");

    // Admin API: the right token, a wrong one.
    let (status, _) = api(
        &http,
        reqwest::Method::GET,
        subscriptions.clone(),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let wrong_admin = secrets.make("wrong-admin-token");
    let (status, _) = api(
        &http,
        reqwest::Method::GET,
        subscriptions.clone(),
        &wrong_admin,
        None,
    )
    .await;
    assert_eq!(status, 401);

    // A token of the store's own (`token create`), used as the stream's `?token=`.
    let created = Command::new(env!("CARGO_BIN_EXE_zoomhook"))
        .args([
            "token",
            "create",
            "--name",
            "stream",
            "--database",
            &database,
        ])
        .env("ZOOMHOOK_LOG", "error")
        .output()
        .expect("token create");
    assert!(created.status.success(), "{created:?}");
    let stream_token = String::from_utf8(created.stdout)
        .expect("utf8")
        .trim()
        .to_owned();
    secrets.watch("stream-token", &stream_token);
    let ws_base = base.replacen("http", "ws", 1);
    let (mut stream, _) =
        tokio_tungstenite::connect_async(format!("{ws_base}/api/v1/stream?token={stream_token}"))
            .await
            .expect("stream handshake with ?token=");
    let wrong_stream = secrets.make("wrong-stream-token");
    assert!(
        tokio_tungstenite::connect_async(format!("{ws_base}/api/v1/stream?token={wrong_stream}"))
            .await
            .is_err(),
        "a wrong stream token is refused"
    );

    // Subscriptions: a sink with its own secret, headers and a secret in its query; a dead
    // destination with a generated secret; email.
    let sink = Receiver::ok().await;
    let sink_query = secrets.make("sink-query-key");
    let header_secret = secrets.make("subscription-authorization-header");
    let api_key = secrets.make("subscription-api-key-header");
    let sub_secret = secrets.make("subscription-secret");
    let (status, sub) = api(
        &http,
        reqwest::Method::POST,
        subscriptions.clone(),
        &admin,
        Some(json!({
            "url": sink.url(&format!("/hook?key={sink_query}")),
            "events": ["meeting.*", "recording.*"],
            "scheme": "zoom",
            "secret": sub_secret,
            "headers": {"Authorization": format!("Bearer {header_secret}"), "X-Api-Key": api_key},
        })),
    )
    .await;
    assert_eq!(status, 201, "{sub}");
    let sub_id = sub["id"].as_str().expect("id").to_owned();
    let dead_query = secrets.make("dead-query-key");
    let (status, dead) = api(
        &http,
        reqwest::Method::POST,
        subscriptions.clone(),
        &admin,
        Some(json!({
            "url": format!("http://127.0.0.1:{}/hook?key={dead_query}", dead_port()),
            "events": ["meeting.*"],
        })),
    )
    .await;
    assert_eq!(status, 201, "{dead}");
    secrets.watch(
        "generated-subscription-secret",
        dead["secret"].as_str().expect("secret"),
    );
    let (status, email) = api(
        &http,
        reqwest::Method::POST,
        subscriptions.clone(),
        &admin,
        Some(json!({"kind": "email", "events": ["recording.*"],
                    "email": {"to": "ops@example.com", "subject": null, "body": null}})),
    )
    .await;
    assert_eq!(status, 201, "{email}");

    // Rotation, to a secret of our own, and a test send signed with it.
    let rotated = secrets.make("rotated-subscription-secret");
    let (status, patched) = api(
        &http,
        reqwest::Method::PATCH,
        format!("{subscriptions}/{sub_id}"),
        &admin,
        Some(json!({"rotate_secret": true, "secret": rotated, "rotation_overlap": "1h"})),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    let (status, tested) = api(
        &http,
        reqwest::Method::POST,
        format!("{subscriptions}/{sub_id}/test"),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 200, "{tested}");

    // Webhooks: the URL validation challenge, events, the recording, a forgery.
    let plain_token = format!("plain-{}", ulid::Ulid::generate());
    let challenge = serde_json::to_vec(&json!({"event": "endpoint.url_validation",
        "event_ts": 1_700_000_000_000_i64, "payload": {"plainToken": plain_token}}))
    .expect("json");
    let answer = post_signed(&http, &base, &mut secrets, &webhook_secret, &challenge).await;
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.expect("challenge answer");
    secrets.watch(
        "encrypted-token",
        answer["encryptedToken"].as_str().expect("encryptedToken"),
    );
    for name in ["meeting.created.json", "meeting.started.json"] {
        let response =
            post_signed(&http, &base, &mut secrets, &webhook_secret, &fixture(name)).await;
        assert_eq!(response.status(), 200, "{name}");
    }
    let recording = recording_with_secrets(&mut secrets);
    let response = post_signed(&http, &base, &mut secrets, &webhook_secret, &recording).await;
    assert_eq!(response.status(), 200);
    let forged_secret = secrets.make("forged-secret");
    let response = post_signed(
        &http,
        &base,
        &mut secrets,
        &forged_secret,
        &fixture("meeting.ended.json"),
    )
    .await;
    assert_eq!(response.status(), 401);

    // The stream carries the events; the sink and the SMTP server receive theirs.
    use futures_util::StreamExt as _;
    let frame = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("a stream frame");
    assert!(frame.is_some());
    drop(stream);
    sink.wait_for("/hook", 4).await;
    let started = Instant::now();
    while *smtp_sessions.lock().unwrap() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no SMTP session"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Time for the dead destination's first attempt (and its 1 s retry) to fail and be logged.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let lines = serve.stop();
    let found = leaks(&lines, &secrets);
    assert!(
        found.is_empty(),
        "{} line(s) of the log at {level}/{format} carry a secret:\n{}",
        found.len(),
        found
            .iter()
            .take(20)
            .map(|(what, line)| format!("  [{what}] {}", truncate(line)))
            .collect::<Vec<_>>()
            .join("\n")
    );
    if level != "error" {
        assert!(
            lines.iter().any(|l| l.contains(&canary)),
            "the log at {level}/{format} lacks the start-up warning naming source {canary}: \
             the capture is not what the server wrote ({} lines)",
            lines.len()
        );
    }
    lines
}

fn truncate(line: &str) -> String {
    if line.len() <= 400 {
        return line.to_owned();
    }
    let mut end = 400;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
}

/// Every line a JSON object with the fields collectors key on.
fn assert_json_lines(lines: &[String]) {
    assert!(!lines.is_empty());
    for line in lines {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {}", truncate(line)));
        assert!(value.is_object(), "{line}");
        for field in ["timestamp", "level", "target"] {
            assert!(value.get(field).is_some(), "no {field}: {}", truncate(line));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_text_never_logs_a_secret() {
    run(TestDb::sqlite(), "trace", "text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_json_never_logs_a_secret_and_writes_one_object_per_line() {
    let lines = run(TestDb::sqlite(), "trace", "json").await;
    assert_json_lines(&lines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_text_never_logs_a_secret() {
    run(TestDb::sqlite(), "debug", "text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_json_never_logs_a_secret_and_writes_one_object_per_line() {
    let lines = run(TestDb::sqlite(), "info", "json").await;
    assert_json_lines(&lines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_text_never_logs_a_secret() {
    run(TestDb::sqlite(), "info", "text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warn_text_never_logs_a_secret() {
    run(TestDb::sqlite(), "warn", "text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_json_never_logs_a_secret() {
    let lines = run(TestDb::sqlite(), "error", "json").await;
    // At `error` a clean run may write nothing at all; whatever it writes is JSON.
    for line in &lines {
        serde_json::from_str::<Value>(line).expect("a JSON line");
    }
}

/// PostgreSQL's client library logs every statement's parameters at `debug`: event bodies,
/// subscription secrets and headers would all pass through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_json_on_postgres_never_logs_a_secret() {
    let lines = run(TestDb::postgres().await, "trace", "json").await;
    assert_json_lines(&lines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_text_on_postgres_never_logs_a_secret() {
    run(TestDb::postgres().await, "debug", "text").await;
}
