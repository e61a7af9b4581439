//! Shared test harness: real servers on ephemeral ports, real databases (a temporary SQLite file,
//! or a uniquely named PostgreSQL database created and dropped per test), and a faithful fake
//! Zoom sender (the signing code of the product is *not* reused for the expected values where a
//! test checks the scheme itself).
#![allow(dead_code)]

pub mod binary;
pub mod contract;
pub mod delivery;
pub mod fake_zoom;
pub mod receiver;

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use zoomhook::config::{Config, RawConfig};
use zoomhook::store::{self, EventStore, StoreOptions};

pub const SECRET: &str = "test-webhook-secret-token";
pub const ADMIN: &str = "test-admin-token";

/// Which backend a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database private to one test; dropped (files removed / database dropped) at the end.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

/// Base URL of the PostgreSQL server for tests (`ZOOMHOOK_TEST_PG`).
pub fn pg_base() -> String {
    std::env::var("ZOOMHOOK_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub async fn pg_admin() -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(&format!("{}/postgres", pg_base()), tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL must be reachable for the PostgreSQL tests (see .ci/run)");
    tokio::spawn(connection);
    client
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => TestDb::sqlite(),
            Backend::Postgres => TestDb::postgres().await,
        }
    }

    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("zoomhook.db").display());
        TestDb {
            url,
            backend: Backend::Sqlite,
            _dir: Some(dir),
            pg_name: None,
        }
    }

    pub async fn postgres() -> TestDb {
        let name = format!(
            "zoomhook_test_{}",
            ulid::Ulid::generate().to_string().to_lowercase()
        );
        pg_admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        TestDb {
            url: format!("{}/{name}", pg_base()),
            backend: Backend::Postgres,
            _dir: None,
            pg_name: Some(name),
        }
    }

    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self.url.strip_prefix("sqlite://").map(PathBuf::from)
    }

    pub fn pg_name(&self) -> Option<&str> {
        self.pg_name.as_deref()
    }

    /// A client of this test's own PostgreSQL database (its connection runs as a task).
    pub async fn pg_client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test database");
        tokio::spawn(connection);
        client
    }

    pub async fn open_store(&self) -> Arc<dyn EventStore> {
        store::open(&self.url, &StoreOptions::default())
            .await
            .expect("open store")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            // Drop runs outside async context: use a private runtime on a helper thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async {
                    let client = pg_admin().await;
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                });
                Some(())
            })
            .join();
        }
    }
}

/// Builds a configuration as the server would resolve it, from `key = value` settings.
pub fn config(db: &TestDb, settings: &[(&str, &str)]) -> Config {
    let mut raw = RawConfig::default();
    raw.set("listen", "127.0.0.1:0", "test");
    raw.set("database_url", db.url.clone(), "test");
    raw.set("admin_token", ADMIN, "test");
    raw.set("sources.zoom.secret", SECRET, "test");
    for (key, value) in settings {
        raw.set(key, *value, "test");
    }
    Config::resolve(&raw).expect("valid test configuration")
}

/// A client's end of `GET /api/v1/stream`.
pub type StreamSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A zoomhook server running in this process on an ephemeral port.
pub struct TestServer {
    pub base: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    pub http: reqwest::Client,
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        TestServer::start_with_state(config).await.0
    }

    /// Starts a server and hands out its state too (for fault injection).
    pub async fn start_with_state(config: Config) -> (TestServer, zoomhook::server::AppState) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let (started, state) = oneshot::channel();
        let task = tokio::spawn(zoomhook::server::run_with_state(
            config,
            listener,
            async move {
                let _ = stopped.await;
            },
            Some(started),
        ));
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let server = TestServer {
            base,
            stop: Some(stop),
            task: Some(task),
            http,
        };
        server.wait_ready().await;
        let state = state.await.expect("the server hands out its state");
        (server, state)
    }

    async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(r) = self.http.get(format!("{}/healthz", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("server at {} did not become healthy", self.base);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs `body` to `path` signed with `secret` as Zoom does.
    pub async fn post_signed(
        &self,
        path: &str,
        secret: &str,
        body: &[u8],
        request_id: Option<&str>,
    ) -> reqwest::Response {
        let ts = now_secs().to_string();
        let mut req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json; charset=utf-8")
            .header("user-agent", "Zoom Marketplace/1.0a")
            .header("x-zm-request-timestamp", &ts)
            .header("x-zm-signature", zoom_signature(secret, &ts, body));
        if let Some(id) = request_id {
            req = req.header("x-zm-request-id", id);
        }
        req.body(body.to_vec()).send().await.expect("POST")
    }

    /// POSTs to the default source with the default secret and a fresh request id.
    pub async fn send(&self, body: &[u8]) -> reqwest::Response {
        let rid = uuid::Uuid::new_v4().to_string();
        self.post_signed("/webhooks/zoom", SECRET, body, Some(&rid))
            .await
    }

    /// GET an admin API path with the admin token, returning JSON.
    pub async fn api(&self, path_and_query: &str) -> Value {
        let response = self
            .http
            .get(self.url(path_and_query))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("GET");
        assert!(
            response.status().is_success(),
            "GET {path_and_query}: {}",
            response.status()
        );
        response.json().await.expect("json")
    }

    /// Opens the stream (`GET /api/v1/stream{query}`) with the admin token in the header; the
    /// hello frame is left for the caller to read.
    pub async fn open_stream(&self, query: &str) -> StreamSocket {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!(
            "{}/api/v1/stream{query}",
            self.base.replacen("http", "ws", 1)
        );
        let mut request = url.into_client_request().expect("stream request");
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {ADMIN}").parse().expect("header"),
        );
        tokio_tungstenite::connect_async(request)
            .await
            .expect("WebSocket handshake")
            .0
    }

    /// `GET /readyz` as JSON, whatever its status.
    pub async fn readyz(&self) -> Value {
        self.http
            .get(self.url("/readyz"))
            .send()
            .await
            .expect("GET /readyz")
            .json()
            .await
            .expect("readyz json")
    }

    /// One source of `GET /api/v1/sources`.
    pub async fn source_view(&self, name: &str) -> Value {
        let sources = self.api("/api/v1/sources").await;
        sources["data"]
            .as_array()
            .expect("data")
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("source {name} is not listed: {sources:#}"))
    }

    /// The server's `/metrics` page (Prometheus text).
    pub async fn metrics_page(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("/metrics text")
    }

    /// All events in the log, oldest first (metadata and bodies).
    pub async fn all_events(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = self
                .api(&format!(
                    "/api/v1/events?after_seq={after}&limit=1000&include_body=true"
                ))
                .await;
            let data = page["data"].as_array().expect("data").clone();
            if let Some(last) = data.last() {
                after = last["seq"].as_i64().expect("seq");
            }
            out.extend(data);
            if page["next_cursor"].is_null() {
                return out;
            }
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server result");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Zoom's signature, computed here independently from the product code: HMAC-SHA256 over
/// `v0:{ts}:{body}`, lowercase hex, `v0=` prefix.
pub fn zoom_signature(secret: &str, ts: &str, body: &[u8]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha256>>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("v0:{ts}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// The fixture files, `(file name, exact bytes)`.
pub fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/zoom");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                std::fs::read(&p).expect("read fixture"),
            )
        })
        .collect()
}

pub fn fixture(name: &str) -> Vec<u8> {
    fixtures()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, b)| b)
        .unwrap_or_else(|| panic!("no fixture {name}"))
}

/// Runs a test body against both backends: `both_backends!(name);` for an
/// `async fn name(db: TestDb)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::TestDb::new($crate::common::Backend::Sqlite).await).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::common::TestDb::new($crate::common::Backend::Postgres).await).await;
                }
            }
        )*
    };
}
