//! `GET /api/v1/stream`: the WebSocket stream of the event log (see `crate::stream`).
//!
//! Everything that can be refused is refused before the upgrade, as the same `{"error",
//! "detail"}` JSON as the rest of the API: a missing or unknown token (401), a bad `after_seq` or
//! pattern (400), a request that is not a WebSocket handshake (426). The token may come in the
//! query string because browsers cannot set headers on a WebSocket; the query string is
//! therefore never logged.

use axum::extract::State;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use crate::api::auth::{bearer_token, check_admin_token};
use crate::api::extract::Query;
use crate::core::pattern::EventPattern;
use crate::http_error::HttpError;
use crate::server::AppState;
use crate::stream::Session;

/// Most frames' worth of bytes the WebSocket layer may buffer for one client before a write
/// waits (then `stream_send_timeout` decides): bounds a slow client's memory.
const WRITE_BUFFER_BYTES: usize = 128 * 1024;
/// Read buffer of one client's socket. A client sends the server nothing but pongs and its close
/// frame, so a small buffer suffices (a larger frame still arrives whole: the buffer grows for
/// it). The WebSocket layer's default, 128 KiB, is zero-filled before the first read, which made
/// it resident for every connected client: 143 KB of server memory per idle client, measured
/// with `bench/stream`.
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// Query string of `GET /api/v1/stream`. Kept as text and parsed after the token is checked, so
/// a client without a token learns nothing about its other parameters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Comma-separated event patterns (`meeting.*,recording.completed`).
    pub events: Option<String>,
    /// Resume: send the matching events with a greater seq first.
    pub after_seq: Option<String>,
    /// The admin token, for clients that can set neither an `Authorization` header nor
    /// subprotocols. Prefer the header, or (browsers) the subprotocol
    /// `zoomhook.bearer.<base64url(token)>` offered beside `zoomhook.v1`: a URL may be logged.
    pub token: Option<String>,
}

/// `GET /api/v1/stream`
#[utoipa::path(get, path = "/api/v1/stream", operation_id = "open_stream", tag = "operations",
    summary = "WebSocket: every matching event as a JSON text frame, in log order, resumable with `after_seq`.",
    description = "The admin token goes in `Authorization: Bearer`, or, from a browser, as the subprotocol `zoomhook.bearer.<base64url(token)>` offered beside `zoomhook.v1` (which the server selects).",
    params(StreamParams),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 426, body = crate::api::model::ApiError, description = "Not a WebSocket handshake"),
        crate::api::openapi::Errors))]
pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<StreamParams>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, HttpError> {
    let token = bearer_token(&headers)
        .or_else(|| protocol_token(&headers))
        .or(params.token.clone());
    check_admin_token(&state, token.as_deref()).await?;
    let patterns = match params.events.as_deref() {
        Some(list) => {
            EventPattern::parse_list(list).map_err(|e| HttpError::bad_request(e.to_string()))?
        }
        None => Vec::new(),
    };
    let after_seq = parse_after_seq(params.after_seq.as_deref())?;
    let upgrade = upgrade.map_err(|rejection| {
        HttpError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            format!(
                "this endpoint is a WebSocket; connect with a WebSocket client ({})",
                rejection.body_text()
            ),
        )
    })?;
    let head = state.store.head_seq().await?;
    let session = Session {
        store: state.store.clone(),
        tail_advanced: state.stream_tail.subscribe(),
        tail: std::sync::Arc::clone(&state.stream_tail),
        stopping: state.stopping.clone(),
        patterns,
        after_seq: after_seq.unwrap_or(head),
        head,
        send_timeout: state.config.limits.stream_send_timeout,
        ping_interval: state.config.limits.stream_ping_interval,
    };
    Ok(start(upgrade, session))
}

/// Answers the handshake and runs the session on a task of its own. axum runs the upgrade
/// callback on a task it spawns, outside this server's metrics scope; so the session runs on a
/// task spawned here with `metrics::spawn` and the callback only hands it the socket.
fn start(upgrade: WebSocketUpgrade, session: Session) -> Response {
    let (socket_tx, socket_rx) = tokio::sync::oneshot::channel();
    crate::metrics::spawn(async move {
        // No socket: the upgrade failed and the client is gone; nothing to serve.
        if let Ok(socket) = socket_rx.await {
            session.run(socket).await;
        }
    });
    upgrade
        .protocols([PROTOCOL])
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| async move {
            let _ = socket_tx.send(socket);
        })
}

/// The subprotocol a client offers next to [`PROTOCOL_TOKEN_PREFIX`]`<token>`, and the one the
/// server selects: the token itself is never echoed back.
const PROTOCOL: &str = "zoomhook.v1";
/// A browser cannot set `Authorization` on a WebSocket, but can offer subprotocols: it sends
/// `Sec-WebSocket-Protocol: zoomhook.v1, zoomhook.bearer.<base64url(token)>`, which keeps the
/// token out of the URL (and so out of proxies' access logs and the browser's history).
const PROTOCOL_TOKEN_PREFIX: &str = "zoomhook.bearer.";

/// The admin token offered as a subprotocol, if any.
fn protocol_token(headers: &HeaderMap) -> Option<String> {
    use base64::Engine as _;
    headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(PROTOCOL_TOKEN_PREFIX))
        .and_then(|encoded| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(encoded.trim_end_matches('='))
                .ok()
        })
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

fn parse_after_seq(value: Option<&str>) -> Result<Option<i64>, HttpError> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    value
        .parse::<i64>()
        .ok()
        .filter(|seq| *seq >= 0)
        .map(Some)
        .ok_or_else(|| {
            HttpError::bad_request(format!(
                "`after_seq` must be a seq (a whole number, 0 or more), got {value:?}"
            ))
        })
}
