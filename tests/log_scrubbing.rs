//! Logs never contain secrets (issue 11), at any level and in either format. Runs the real
//! `zoomhook serve` with its stderr captured, at `ZOOMHOOK_LOG=trace` down to `error`, as text and as
//! JSON (`--log-format`), on SQLite and PostgreSQL, and during each run does everything that
//! carries a secret: admin tokens (right and wrong, in the header and in `?token=` on the stream),
//! signed and forged webhooks, the URL validation challenge, a source checked by Basic auth, an
//! issued Bearer token, a verification token and a custom header, a `zoom_websocket` source (OAuth
//! client secret, access token in its URL, a revoked token), subscriptions with their own secrets,
//! headers and secret URL queries, a secret rotation and a test send, an email subscription through
//! an SMTP server with a password, a recording event whose body carries `download_token`, and
//! deliveries to a local sink and to a dead one; on PostgreSQL the database URL carries a password.
//! Every secret is a long random value made for the run, so one found in a line is unambiguously a
//! leak.
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
use common::fake_zoom::{self, FakeZoom};
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

/// The binary, without the configuration of the environment the tests run in.
fn zoomhook() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_zoomhook"));
    for (key, _) in std::env::vars() {
        if key.starts_with("ZOOMHOOK_") || key.starts_with("ZOOM_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command
}

/// `zoomhook serve` at a log level and format, its stderr collected line by line.
struct Serve {
    child: Child,
    base: String,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Serve {
    fn start(database: &str, level: &str, format: &str, env: &[(String, String)]) -> Serve {
        // The level may hide the line naming the address, so the port is chosen here.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut command = zoomhook();
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
    let zoom = FakeZoom::start().await;
    let (smtp_port, smtp_sessions) = smtp_server().await;
    let setup = Setup::new(&db, &zoom, smtp_port, &mut secrets);
    let serve = Serve::start(&setup.database, level, format, &setup.env);
    let mut run = Run {
        http: reqwest::Client::new(),
        base: serve.base.clone(),
        admin: setup.admin.clone(),
        secrets,
    };
    serve.wait_ready(&run.http).await;

    let stream = run.admin_api_and_stream(&setup.database).await;
    let sink = run.subscriptions().await;
    run.webhooks(&setup.webhook_secret).await;
    run.guarded_source(&setup.guarded).await;
    run.zoom_websocket(&zoom).await;

    // The stream carries the events; the sink and the SMTP server receive theirs.
    run.deliveries_done(stream, &sink, &smtp_sessions).await;
    let lines = serve.stop();
    assert_clean(&lines, &run.secrets, level, format, &setup.canary);
    lines
}

/// The server's configuration for a run.
struct Setup {
    env: Vec<(String, String)>,
    database: String,
    admin: String,
    webhook_secret: String,
    guarded: Guarded,
    /// The positive control: the name of a source without a secret, which the server names in
    /// a start-up warning.
    canary: String,
}

/// The credentials of the `guarded` source (every check but a signature).
struct Guarded {
    basic_password: String,
    token_client_secret: String,
    custom_header_value: String,
    verification_token: String,
}

impl Setup {
    fn new(db: &TestDb, zoom: &FakeZoom, smtp_port: u16, secrets: &mut Secrets) -> Setup {
        let b64 = |text: String| base64::engine::general_purpose::STANDARD.encode(text);
        let webhook_secret = secrets.make("webhook-secret");
        let admin = secrets.make("admin-token");
        let smtp_password = secrets.make("smtp-password");
        secrets.watch(
            "smtp-auth-plain",
            &b64(format!("\0mailer\0{smtp_password}")),
        );
        let guarded = Guarded {
            basic_password: secrets.make("basic-password"),
            token_client_secret: secrets.make("token-client-secret"),
            custom_header_value: secrets.make("custom-header-value"),
            verification_token: secrets.make("verification-token"),
        };
        secrets.watch(
            "basic-credentials",
            &b64(format!("zoom-basic:{}", guarded.basic_password)),
        );
        secrets.watch(
            "token-client-credentials",
            &b64(format!("guard-client:{}", guarded.token_client_secret)),
        );
        secrets.watch("zoom-client-secret", fake_zoom::CLIENT_SECRET);
        secrets.watch(
            "zoom-client-credentials",
            &b64(format!(
                "{}:{}",
                fake_zoom::CLIENT_ID,
                fake_zoom::CLIENT_SECRET
            )),
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
        let canary = format!(
            "canary-{}",
            ulid::Ulid::generate().to_string().to_lowercase()
        );
        let mut env = vec![
            (
                "ZOOM_WEBHOOK_SECRET_TOKEN".to_owned(),
                webhook_secret.clone(),
            ),
            (
                "ZOOMHOOK_SOURCE_ZOOM_PREVIOUS_SECRET".to_owned(),
                secrets.make("previous-webhook-secret"),
            ),
            ("ZOOMHOOK_ADMIN_TOKEN".to_owned(), admin.clone()),
            (
                "ZOOMHOOK_SMTP_URL".to_owned(),
                format!("smtp://mailer:{smtp_password}@127.0.0.1:{smtp_port}"),
            ),
            (
                format!(
                    "ZOOMHOOK_SOURCE_{}_KIND",
                    canary.replace('-', "_").to_uppercase()
                ),
                "webhook".to_owned(),
            ),
        ];
        for (field, value) in [
            ("BASIC_USERNAME", "zoom-basic"),
            ("BASIC_PASSWORD", &guarded.basic_password),
            ("TOKEN_CLIENT_ID", "guard-client"),
            ("TOKEN_CLIENT_SECRET", &guarded.token_client_secret),
            ("CUSTOM_HEADER_NAME", "x-guard"),
            ("CUSTOM_HEADER_VALUE", &guarded.custom_header_value),
            ("VERIFICATION_TOKEN", &guarded.verification_token),
        ] {
            env.push((format!("ZOOMHOOK_SOURCE_GUARDED_{field}"), value.to_owned()));
        }
        for (key, value) in zoom.source_settings("live") {
            let field = key.trim_start_matches("sources.live.").to_uppercase();
            env.push((format!("ZOOMHOOK_SOURCE_LIVE_{field}"), value));
        }
        Setup {
            env,
            database,
            admin,
            webhook_secret,
            guarded,
            canary,
        }
    }
}

type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A run in progress: the server and the secrets made so far.
struct Run {
    http: reqwest::Client,
    base: String,
    admin: String,
    secrets: Secrets,
}

impl Run {
    /// The admin API with the right token and a wrong one; the stream with `?token=` (a token
    /// of the store's own, from `token create`) and with a wrong one.
    async fn admin_api_and_stream(&mut self, database: &str) -> Stream {
        let subscriptions = format!("{}/api/v1/subscriptions", self.base);
        let (status, _) = self.api(reqwest::Method::GET, &subscriptions, None).await;
        assert_eq!(status, 200);
        let wrong_admin = self.secrets.make("wrong-admin-token");
        let wrong = self
            .http
            .get(&subscriptions)
            .bearer_auth(&wrong_admin)
            .send()
            .await;
        assert_eq!(wrong.expect("GET").status(), 401);

        let created = zoomhook()
            .args([
                "token",
                "create",
                "--name",
                "stream",
                "--database",
                database,
            ])
            .env("ZOOMHOOK_LOG", "error")
            .output()
            .expect("token create");
        assert!(created.status.success(), "{created:?}");
        let stream_token = String::from_utf8(created.stdout)
            .expect("utf8")
            .trim()
            .to_owned();
        self.secrets.watch("stream-token", &stream_token);
        let ws_base = self.base.replacen("http", "ws", 1);
        let wrong_stream = self.secrets.make("wrong-stream-token");
        assert!(
            tokio_tungstenite::connect_async(format!(
                "{ws_base}/api/v1/stream?token={wrong_stream}"
            ))
            .await
            .is_err(),
            "a wrong stream token is refused"
        );
        tokio_tungstenite::connect_async(format!("{ws_base}/api/v1/stream?token={stream_token}"))
            .await
            .expect("stream handshake with ?token=")
            .0
    }

    /// A sink with its own secret, headers and a secret in its query, rotated to another secret
    /// of its own and test-sent; a dead destination with a generated secret; email. Returns the
    /// sink.
    async fn subscriptions(&mut self) -> Receiver {
        let subscriptions = format!("{}/api/v1/subscriptions", self.base);
        let sink = Receiver::ok().await;
        let sink_query = self.secrets.make("sink-query-key");
        let header_secret = self.secrets.make("subscription-authorization-header");
        let api_key = self.secrets.make("subscription-api-key-header");
        let own_secret = self.secrets.make("subscription-secret");
        let (status, sub) = self
            .api(
                reqwest::Method::POST,
                &subscriptions,
                Some(json!({
                    "url": sink.url(&format!("/hook?key={sink_query}")),
                    "events": ["meeting.*", "recording.*"],
                    "scheme": "zoom",
                    "secret": own_secret,
                    "headers": {"Authorization": format!("Bearer {header_secret}"), "X-Api-Key": api_key},
                })),
            )
            .await;
        assert_eq!(status, 201, "{sub}");
        let sub = format!("{subscriptions}/{}", sub["id"].as_str().expect("id"));
        let rotated = self.secrets.make("rotated-subscription-secret");
        let rotation = json!({"rotate_secret": true, "secret": rotated, "rotation_overlap": "1h"});
        let (status, patched) = self.api(reqwest::Method::PATCH, &sub, Some(rotation)).await;
        assert_eq!(status, 200, "{patched}");
        // The reveal answers both secrets in its body; no log line may carry them.
        let (status, revealed) = self
            .api(reqwest::Method::GET, &format!("{sub}/secret"), None)
            .await;
        assert_eq!(status, 200, "{revealed}");
        assert_eq!(revealed["secret"], rotated.as_str(), "{revealed}");
        let (status, tested) = self
            .api(reqwest::Method::POST, &format!("{sub}/test"), None)
            .await;
        assert_eq!(status, 200, "{tested}");

        let dead_query = self.secrets.make("dead-query-key");
        let dead = json!({"url": format!("http://127.0.0.1:{}/hook?key={dead_query}", dead_port()),
                          "events": ["meeting.*"]});
        let (status, dead) = self
            .api(reqwest::Method::POST, &subscriptions, Some(dead))
            .await;
        assert_eq!(status, 201, "{dead}");
        let generated = dead["secret"].as_str().expect("a generated secret");
        self.secrets
            .watch("generated-subscription-secret", generated);
        let email = json!({"kind": "email", "events": ["recording.*"],
                           "email": {"to": "ops@example.com", "subject": null, "body": null}});
        let (status, email) = self
            .api(reqwest::Method::POST, &subscriptions, Some(email))
            .await;
        assert_eq!(status, 201, "{email}");
        sink
    }

    /// The URL validation challenge, events, the recording, and a forgery, to `/webhooks/zoom`.
    async fn webhooks(&mut self, webhook_secret: &str) {
        let plain_token = format!("plain-{}", ulid::Ulid::generate());
        let challenge = serde_json::to_vec(&json!({"event": "endpoint.url_validation",
            "event_ts": 1_700_000_000_000_i64, "payload": {"plainToken": plain_token}}))
        .expect("json");
        let answer = self.post_signed(webhook_secret, &challenge).await;
        assert_eq!(answer.status(), 200);
        let answer: Value = answer.json().await.expect("challenge answer");
        let encrypted = answer["encryptedToken"].as_str().expect("encryptedToken");
        self.secrets.watch("encrypted-token", encrypted);
        for name in ["meeting.created.json", "meeting.started.json"] {
            let response = self.post_signed(webhook_secret, &fixture(name)).await;
            assert_eq!(response.status(), 200, "{name}");
        }
        let recording = recording_with_secrets(&mut self.secrets);
        let response = self.post_signed(webhook_secret, &recording).await;
        assert_eq!(response.status(), 200);
        let forged_secret = self.secrets.make("forged-secret");
        let response = self
            .post_signed(&forged_secret, &fixture("meeting.ended.json"))
            .await;
        assert_eq!(response.status(), 401);
    }

    /// `/webhooks/zoom/guarded`: a token from zoomhook's own token endpoint, then Basic, Bearer
    /// and the legacy verification token, each with the custom header; and a wrong password.
    async fn guarded_source(&mut self, guarded: &Guarded) {
        let token = self
            .http
            .post(format!(
                "{}/oauth/token/guarded?grant_type=client_credentials",
                self.base
            ))
            .basic_auth("guard-client", Some(&guarded.token_client_secret))
            .send()
            .await
            .expect("token request");
        assert_eq!(token.status(), 200);
        let token: Value = token.json().await.expect("token json");
        let access_token = token["access_token"].as_str().expect("access_token");
        self.secrets.watch("issued-source-token", access_token);
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("zoom-basic:{}", guarded.basic_password));
        let wrong = base64::engine::general_purpose::STANDARD.encode(format!(
            "zoom-basic:{}",
            self.secrets.make("wrong-basic-password")
        ));
        self.secrets.watch("wrong-basic-credentials", &wrong);
        for (authorization, expected) in [
            (format!("Bearer {access_token}"), 200),
            (format!("Basic {basic}"), 200),
            (guarded.verification_token.clone(), 200),
            (format!("Basic {wrong}"), 401),
        ] {
            let response = self
                .http
                .post(format!("{}/webhooks/zoom/guarded", self.base))
                .header("authorization", authorization)
                .header("x-guard", &guarded.custom_header_value)
                .header("content-type", "application/json")
                .body(fixture("meeting.updated.json"))
                .send()
                .await
                .expect("POST guarded");
            assert_eq!(response.status(), expected);
        }
    }

    /// The `zoom_websocket` source: connected with an OAuth token (in its URL), an event with
    /// secrets in it, the token revoked and a new one fetched.
    async fn zoom_websocket(&mut self, zoom: &FakeZoom) {
        zoom.wait_connected(1).await;
        zoom.send_event(&recording_with_secrets(&mut self.secrets));
        zoom.invalidate_token();
        zoom.wait_connected(2).await;
        for token in zoom.tokens_issued() {
            self.secrets.watch("zoom-access-token", &token);
        }
    }

    async fn deliveries_done(&self, mut stream: Stream, sink: &Receiver, smtp: &Mutex<usize>) {
        use futures_util::StreamExt as _;
        let frame = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("a stream frame");
        assert!(frame.is_some());
        drop(stream);
        // Test send, two meetings, two recordings (webhook and WebSocket).
        sink.wait_for("/hook", 5).await;
        let started = Instant::now();
        while *smtp.lock().unwrap() == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no SMTP session"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Time for the dead destination's first attempt (and its 1 s retry) to fail and be
        // logged.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }

    /// POSTs `body` to `/webhooks/zoom` signed with `secret` as Zoom does, watching the
    /// signature header's value.
    async fn post_signed(&mut self, secret: &str, body: &[u8]) -> reqwest::Response {
        let ts = now_secs().to_string();
        let signature = zoom_signature(secret, &ts, body);
        self.secrets.watch("x-zm-signature", &signature);
        self.http
            .post(format!("{}/webhooks/zoom", self.base))
            .header("content-type", "application/json")
            .header("x-zm-request-timestamp", &ts)
            .header("x-zm-signature", &signature)
            .header("x-zm-request-id", uuid::Uuid::new_v4().to_string())
            .body(body.to_vec())
            .send()
            .await
            .expect("POST webhook")
    }

    /// An admin API request with the admin token: status and JSON answer.
    async fn api(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, url).bearer_auth(&self.admin);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("API request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// No line carries a secret, and (unless the level hides warnings) the positive control is
/// there.
fn assert_clean(lines: &[String], secrets: &Secrets, level: &str, format: &str, canary: &str) {
    let found = leaks(lines, secrets);
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
            lines.iter().any(|l| l.contains(canary)),
            "the log at {level}/{format} lacks the start-up warning naming source {canary}: \
             the capture is not what the server wrote ({} lines)",
            lines.len()
        );
    }
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

/// The error that ends the process is JSON too, whichever layer chose the format (file,
/// environment, flag), and no `ZOOMHOOK_LOG` filter hides it.
#[test]
fn a_fatal_error_in_json_mode_is_one_json_line_whatever_the_filter() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("zoomhook.toml");
    std::fs::write(&file, "log_format = \"json\"\n").expect("config file");
    let file = file.display().to_string();
    // (flags, environment) that each choose JSON.
    type Way<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let ways: [Way; 3] = [
        (&["--config", &file], &[]),
        (&[], &[("ZOOMHOOK_LOG_FORMAT", "json")]),
        (
            &["--log-format", "json"],
            &[("ZOOMHOOK_LOG_FORMAT", "text")],
        ),
    ];
    for (args, env) in ways {
        let output = zoomhook()
            .args(["serve", "--listen", "not-an-address"])
            .args(args)
            .envs(env.iter().copied())
            .env("ZOOMHOOK_LOG", "off")
            .output()
            .expect("run zoomhook");
        assert!(!output.status.success());
        let stderr = String::from_utf8(output.stderr).expect("utf8");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?} {env:?}: {stderr}");
        let line: Value = serde_json::from_str(lines[0]).expect("a JSON line");
        assert_eq!(line["level"], "ERROR");
        assert!(
            line["message"]
                .as_str()
                .is_some_and(|m| m.contains("`listen`")),
            "{line}"
        );
    }
}

/// The one deliberate exception: the admin token made at a first start (no `admin_token`
/// configured) is handed out once on stderr — in the JSON format as a JSON line of its own, so
/// the output stays one object per line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_start_token_is_one_json_line_in_json_mode() {
    let db = TestDb::sqlite();
    let serve = Serve::start(&db.url, "info", "json", &[]);
    serve.wait_ready(&reqwest::Client::new()).await;
    let lines = serve.stop();
    assert_json_lines(&lines);
    let announced: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("admin_token").is_some())
        .collect();
    assert_eq!(announced.len(), 1, "announced once: {lines:?}");
    let token = announced[0]["admin_token"].as_str().expect("a token");
    assert!(token.starts_with("zh_"), "{token}");
}
