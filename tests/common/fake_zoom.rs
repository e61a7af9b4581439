//! A fake Zoom for the WebSocket source: the OAuth token endpoint (`POST /oauth/token`, Basic
//! client credentials, `grant_type=account_credentials&account_id=…` in the query) and the event
//! WebSocket (`GET /ws?subscriptionId=…&access_token=…`) speaking Zoom's frames: a
//! `build_connection` frame on connect, `{"module":"heartbeat","success":true,"content":"live"}`
//! answers, `message` frames whose `content` is the event's JSON as a string, and
//! `"Invalid Token"` for a token it does not know. Tests drive it: send an event, drop the
//! connection, go silent, revoke the token.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use futures_util::SinkExt;
use serde_json::json;
use tokio::sync::{Notify, mpsc};

pub const CLIENT_ID: &str = "fake-client-id";
pub const CLIENT_SECRET: &str = "fake-client-secret-0123456789";
pub const ACCOUNT_ID: &str = "fake-account-id";
pub const SUBSCRIPTION_ID: &str = "fake-subscription-AbC123";

/// A command for the open connection.
enum Command {
    Frame(String),
    Drop,
    Silent,
}

/// One WebSocket connection the fake accepted.
#[derive(Debug, Clone)]
pub struct Connection {
    pub token: String,
    /// When the upgrade was accepted (epoch ms).
    pub opened_at: i64,
    /// When it ended (epoch ms).
    pub closed_at: Option<i64>,
    /// Heartbeats received on it (epoch ms).
    pub heartbeats: Vec<i64>,
}

#[derive(Default)]
struct Inner {
    /// Every token issued, valid or not.
    issued: Vec<String>,
    valid: HashSet<String>,
    /// Token requests refused (bad credentials or parameters).
    refused: u32,
    connections: Vec<Connection>,
    /// Connections refused for an unknown token.
    rejected_tokens: u32,
    control: HashMap<usize, mpsc::UnboundedSender<Command>>,
}

#[derive(Default)]
pub struct Shared {
    inner: Mutex<Inner>,
    changed: Notify,
    expires_in: u64,
}

/// A running fake Zoom.
pub struct FakeZoom {
    pub base: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

fn now_ms() -> i64 {
    zoomhook::core::clock::now_millis()
}

impl FakeZoom {
    pub async fn start() -> FakeZoom {
        let shared = Arc::new(Shared {
            expires_in: 3599,
            ..Shared::default()
        });
        let app = Router::new()
            .route("/oauth/token", post(token))
            .route("/ws", get(websocket))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake zoom");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeZoom { base, shared, task }
    }

    /// The source settings pointing at this fake (`sources.NAME.*`).
    pub fn source_settings(&self, name: &str) -> Vec<(String, String)> {
        let key = |k: &str| format!("sources.{name}.{k}");
        vec![
            (key("kind"), "zoom_websocket".into()),
            (key("subscription_id"), SUBSCRIPTION_ID.into()),
            (key("account_id"), ACCOUNT_ID.into()),
            (key("client_id"), CLIENT_ID.into()),
            (key("client_secret"), CLIENT_SECRET.into()),
            (key("oauth_url"), format!("{}/oauth/token", self.base)),
            (
                key("websocket_url"),
                format!("{}/ws", self.base.replacen("http", "ws", 1)),
            ),
            (key("heartbeat_interval"), "200ms".into()),
            (key("silence_timeout"), "1500ms".into()),
        ]
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = self.shared.inner.lock().expect("fake zoom state");
        f(&mut inner)
    }

    pub fn connections(&self) -> Vec<Connection> {
        self.with(|i| i.connections.clone())
    }

    pub fn tokens_issued(&self) -> Vec<String> {
        self.with(|i| i.issued.clone())
    }

    pub fn rejected_tokens(&self) -> u32 {
        self.with(|i| i.rejected_tokens)
    }

    pub fn refused_token_requests(&self) -> u32 {
        self.with(|i| i.refused)
    }

    /// Waits until `f` holds of the state (at most 20 s).
    pub async fn wait_for(&self, what: &str, f: impl Fn(&FakeZoom) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let notified = self.shared.changed.notified();
            if f(self) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("fake Zoom: timed out waiting for {what}");
            }
        }
    }

    /// Waits until `n` connections have been opened (and the n-th is still open).
    pub async fn wait_connected(&self, n: usize) {
        self.wait_for(&format!("connection #{n}"), |z| {
            let c = z.connections();
            c.len() >= n && c[n - 1].closed_at.is_none()
        })
        .await;
    }

    fn command(&self, command: Command) {
        self.with(|i| {
            let latest = i.connections.len().checked_sub(1)?;
            i.control.get(&latest)?.send(command).ok()
        })
        .expect("an open connection to command");
    }

    /// Sends an event over the open connection, as Zoom does: the event's JSON as a string.
    pub fn send_event(&self, body: &[u8]) {
        let content = String::from_utf8(body.to_vec()).expect("utf-8 event");
        self.command(Command::Frame(
            json!({"module": "message", "content": content}).to_string(),
        ));
    }

    /// Sends a raw frame.
    pub fn send_frame(&self, frame: &str) {
        self.command(Command::Frame(frame.to_owned()));
    }

    /// Closes the TCP connection without a close frame.
    pub fn drop_connection(&self) {
        self.command(Command::Drop);
    }

    /// Stops answering and sending anything, keeping the connection open.
    pub fn go_silent(&self) {
        self.command(Command::Silent);
    }

    /// Revokes every token and tells the open connection "Invalid Token", as Zoom does when a
    /// token expires or the app's credentials change.
    pub fn invalidate_token(&self) {
        self.with(|i| i.valid.clear());
        self.command(Command::Frame(
            json!({"module": "heartbeat", "success": false, "content": "Invalid Token"})
                .to_string(),
        ));
    }
}

impl Drop for FakeZoom {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(serde::Deserialize)]
struct TokenParams {
    grant_type: Option<String>,
    account_id: Option<String>,
}

async fn token(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<TokenParams>,
    headers: HeaderMap,
) -> Response {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected);
    let grant_ok = params.grant_type.as_deref() == Some("account_credentials")
        && params.account_id.as_deref() == Some(ACCOUNT_ID);
    let mut inner = shared.inner.lock().expect("state");
    if !authorized || !grant_ok {
        inner.refused += 1;
        drop(inner);
        shared.changed.notify_waiters();
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!({"reason": "Invalid client_id or client_secret", "error": "invalid_client"}),
            ),
        )
            .into_response();
    }
    let token = format!(
        "fake-access-token-{}-{}",
        inner.issued.len() + 1,
        uuid::Uuid::new_v4().simple()
    );
    inner.issued.push(token.clone());
    inner.valid.insert(token.clone());
    drop(inner);
    shared.changed.notify_waiters();
    axum::Json(json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": shared.expires_in,
        "scope": "marketplace:read:list_apps",
        "api_url": "https://api.zoom.us"
    }))
    .into_response()
}

#[derive(serde::Deserialize)]
struct WsParams {
    #[serde(rename = "subscriptionId")]
    subscription_id: Option<String>,
    access_token: Option<String>,
}

async fn websocket(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<WsParams>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if params.subscription_id.as_deref() != Some(SUBSCRIPTION_ID) {
        return (StatusCode::NOT_FOUND, "unknown subscription").into_response();
    }
    let token = params.access_token.unwrap_or_default();
    upgrade.on_upgrade(move |socket| serve_socket(shared, socket, token))
}

async fn serve_socket(shared: Arc<Shared>, mut socket: WebSocket, token: String) {
    let valid = shared.inner.lock().expect("state").valid.contains(&token);
    if !valid {
        shared.inner.lock().expect("state").rejected_tokens += 1;
        shared.changed.notify_waiters();
        let _ = socket
            .send(Message::text(
                json!({"module": "build_connection", "success": false, "content": "Invalid Token"})
                    .to_string(),
            ))
            .await;
        let _ = socket.close().await;
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let index = {
        let mut inner = shared.inner.lock().expect("state");
        inner.connections.push(Connection {
            token: token.clone(),
            opened_at: now_ms(),
            closed_at: None,
            heartbeats: Vec::new(),
        });
        let index = inner.connections.len() - 1;
        inner.control.insert(index, tx);
        index
    };
    shared.changed.notify_waiters();
    let _ = socket
        .send(Message::text(
            json!({"module": "build_connection", "success": true, "content": "success"})
                .to_string(),
        ))
        .await;
    let mut silent = false;
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    if silent {
                        continue;
                    }
                    let is_heartbeat = serde_json::from_str::<serde_json::Value>(text.as_str())
                        .ok()
                        .is_some_and(|v| v["module"] == "heartbeat");
                    if is_heartbeat {
                        shared.inner.lock().expect("state").connections[index].heartbeats.push(now_ms());
                        shared.changed.notify_waiters();
                        let _ = socket.send(Message::text(
                            json!({"module": "heartbeat", "success": true, "content": "live", "header": {}}).to_string(),
                        )).await;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
            command = rx.recv() => match command {
                Some(Command::Frame(frame)) => {
                    if socket.send(Message::text(frame)).await.is_err() {
                        break;
                    }
                }
                Some(Command::Silent) => silent = true,
                Some(Command::Drop) | None => break,
            },
        }
    }
    // Dropping the socket closes TCP without a close frame.
    drop(socket);
    let mut inner = shared.inner.lock().expect("state");
    inner.connections[index].closed_at = Some(now_ms());
    inner.control.remove(&index);
    drop(inner);
    shared.changed.notify_waiters();
}
