//! The receiver: `POST /webhooks/zoom` and `POST /webhooks/zoom/{source}`.
//!
//! Order of work for one request, cheapest rejection first:
//! source known → IP allowed → every header check (signature present and well-formed, timestamp
//! fresh, Basic/Bearer/custom header/verification token) → body reserved in the global budget
//! and read (size limit, read timeout) → signature over the **raw bytes** → envelope parsed →
//! URL-validation challenge answered, or the event appended through group commit → 200 only
//! after the commit is durable, 503 if it could not be.
//!
//! Nothing that can be decided from the headers waits for the body: an unauthenticated client
//! never gets the server to hold (or wait for) up to `max_body_bytes` of its data.

pub mod bearer;
pub mod body;
pub mod rejections;
pub mod verify;

use std::net::SocketAddr;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

use crate::config::{DEFAULT_SOURCE, Secret, SourceConfig};
use crate::core::clock::now_millis;
use crate::http_error::HttpError;
use crate::metrics as m;
use crate::server::AppState;
use crate::store::{AppendOutcome, NewEvent};
use crate::zoom::envelope::{Envelope, URL_VALIDATION_EVENT};
use crate::zoom::signature::{REQUEST_ID_HEADER, url_validation_token};

/// Routes of the receiver.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/webhooks/zoom",
            post(receive_default).fallback(method_not_allowed),
        )
        .route(
            "/webhooks/zoom/{source}",
            post(receive_named).fallback(method_not_allowed),
        )
        .route("/oauth/token", post(bearer::token_default))
        .route("/oauth/token/{source}", post(bearer::token_named))
}

async fn method_not_allowed() -> Response {
    let mut response = HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Zoom webhooks are delivered with POST",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
    response
}

async fn receive_default(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    receive(&state, DEFAULT_SOURCE, peer, &headers, body).await
}

async fn receive_named(
    State(state): State<AppState>,
    Path(source): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    receive(&state, &source, peer, &headers, body).await
}

/// The outcome label and response of one request, for metrics and the reply.
struct Answer {
    outcome: &'static str,
    event: String,
    response: Response,
    /// Why the request was refused (a fixed label and a message without secrets or body), for
    /// the rejection log; `None` when it was not refused for what it sent.
    refused: Option<(&'static str, String)>,
}

async fn receive(
    state: &AppState,
    source_name: &str,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let answer = match state.config.source(source_name) {
        Some(source) if source.is_websocket() => rejected(
            "unknown_source",
            "websocket_source",
            HttpError::not_found(format!(
                "source `{source_name}` reads Zoom's WebSocket (kind = \"zoom_websocket\"); it does not receive webhooks"
            )),
        ),
        Some(source) => handle(state, source, peer, headers, body).await,
        None => rejected(
            "unknown_source",
            "unknown_source",
            HttpError::not_found("no source of that name is configured"),
        ),
    };
    if let Some((reason, detail)) = &answer.refused {
        state.rejections.record(rejections::Rejected {
            source: source_name,
            reason,
            status: answer.response.status().as_u16(),
            detail,
            client: peer,
        });
    }
    let label_source = if state.config.source(source_name).is_some() {
        source_name
    } else {
        "unknown"
    };
    m::record_request(
        label_source,
        &answer.event,
        answer.outcome,
        started.elapsed(),
    );
    answer.response
}

fn unauthorized(rejection: verify::Rejection) -> Answer {
    rejected(
        "unauthorized",
        rejection.reason(),
        HttpError::unauthorized(rejection.to_string()),
    )
}

/// A refusal of what the request sent: answered with `error`, logged with `reason`.
fn rejected(outcome: &'static str, reason: &'static str, error: HttpError) -> Answer {
    let detail = error.detail.clone();
    Answer {
        outcome,
        event: "unverified".into(),
        response: error.into_response(),
        refused: Some((reason, detail)),
    }
}

async fn handle(
    state: &AppState,
    source: &SourceConfig,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
) -> Answer {
    if let Err(rejection) = verify::check_ip(source, peer.ip()) {
        return rejected(
            "forbidden",
            rejection.reason(),
            HttpError::new(StatusCode::FORBIDDEN, "forbidden", rejection.to_string()),
        );
    }
    let pending = match verify::verify_headers(source, headers) {
        Ok(pending) => pending,
        Err(rejection) => return unauthorized(rejection),
    };
    let config = &state.config;
    // The reservation lives until the answer: the body stays in memory until it is committed.
    let (body, _reservation) = match body::read_body(
        &state.body_budget,
        headers,
        body,
        config.max_body_bytes,
        config.read_timeout,
    )
    .await
    {
        Ok(read) => read,
        Err(error) => {
            // Too busy is our state, not the sender's fault: counted, not logged per request.
            let (outcome, refused) = match &error {
                body::BodyError::Busy => ("overloaded", None),
                other => ("bad_body", Some((other.reason(), other.describe()))),
            };
            return Answer {
                outcome,
                event: "unverified".into(),
                response: error.into_response(&state.body_budget),
                refused,
            };
        }
    };
    let signed_with = match verify_body(pending, &body).await {
        Ok(secret) => secret,
        Err(rejection) => return unauthorized(rejection),
    };
    let envelope = match Envelope::parse(&body) {
        Ok(envelope) => envelope,
        Err(e) => {
            return rejected(
                "bad_request",
                envelope_reason(&e),
                HttpError::bad_request(e.to_string()),
            );
        }
    };
    let event_label = metric_label(&envelope.event);
    let request_id = headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map(str::to_owned);
    let is_validation = envelope.event == URL_VALIDATION_EVENT;
    let new_event =
        NewEvent::from_envelope(&envelope, &source.name, body, request_id, now_millis());
    if is_validation {
        return answer_url_validation(
            state,
            source,
            signed_with.as_ref().map(|s| s.expose()),
            &envelope,
            new_event,
        )
        .await;
    }
    let (outcome, response) = match state.appender.append(new_event).await {
        Ok(AppendOutcome::Appended { id, seq }) => {
            state.log_advanced.send_modify(|n| *n = n.wrapping_add(1));
            (
                "accepted",
                Json(json!({"status": "accepted", "id": id, "seq": seq})).into_response(),
            )
        }
        Ok(AppendOutcome::Duplicate { id, seq }) => (
            "duplicate",
            Json(json!({"status": "duplicate", "id": id, "seq": seq})).into_response(),
        ),
        Err(error) => ("unavailable", HttpError::from(error).into_response()),
    };
    Answer {
        outcome,
        event: event_label,
        response,
        refused: None,
    }
}

/// The rejection-log label of a body that is not a Zoom event.
fn envelope_reason(error: &crate::zoom::envelope::EnvelopeError) -> &'static str {
    use crate::zoom::envelope::EnvelopeError;
    match error {
        EnvelopeError::NotJson(_) => "not_json",
        EnvelopeError::NotObject => "not_an_object",
        EnvelopeError::MissingEvent => "no_event",
    }
}

/// Checks the signature over the body. A large body's HMAC costs milliseconds of CPU; computed
/// on a blocking thread, forged large bodies cannot hold up the async workers that serve every
/// other connection (the body budget bounds how many such threads there can be).
async fn verify_body(
    pending: verify::PendingSignature,
    body: &Bytes,
) -> Result<Option<Secret>, verify::Rejection> {
    if body.len() <= body::UNCOUNTED_BODY_BYTES {
        return pending.verify_body(body);
    }
    let body = body.clone();
    match tokio::task::spawn_blocking(move || pending.verify_body(&body)).await {
        Ok(verdict) => verdict,
        Err(error) => {
            tracing::error!(%error, "signature check did not complete; refusing the request");
            Err(verify::Rejection::BadSignature)
        }
    }
}

/// Answers Zoom's challenge — only when the challenge itself was signed with our secret.
/// Answering an unsigned challenge would give anyone `HMAC(secret, text of their choice)`.
async fn answer_url_validation(
    state: &AppState,
    source: &SourceConfig,
    signed_with: Option<&str>,
    envelope: &Envelope,
    event: NewEvent,
) -> Answer {
    let Some(secret) = signed_with else {
        m::record_url_validation(&source.name, "refused");
        return rejected(
            "unauthorized",
            "unsigned_url_validation",
            HttpError::unauthorized(
                "URL validation needs the source's webhook secret token to be configured",
            ),
        );
    };
    let Some(plain_token) = envelope.plain_token.as_deref().filter(|t| !t.is_empty()) else {
        m::record_url_validation(&source.name, "refused");
        return rejected(
            "bad_request",
            "no_plain_token",
            HttpError::bad_request("endpoint.url_validation without payload.plainToken"),
        );
    };
    let encrypted = url_validation_token(secret.as_bytes(), plain_token);
    // Recorded so the 72-hour revalidation can be monitored; the answer does not depend on the
    // store (a challenge carries no event to lose), so a store outage does not fail validation.
    if let Err(error) = state.appender.append(event).await {
        tracing::warn!(%error, source = %source.name, "could not record URL validation in the log");
    }
    m::record_url_validation(&source.name, "answered");
    tracing::info!(source = %source.name, "answered endpoint.url_validation");
    Answer {
        outcome: "url_validation",
        event: URL_VALIDATION_EVENT.into(),
        response: Json(json!({"plainToken": plain_token, "encryptedToken": encrypted}))
            .into_response(),
        refused: None,
    }
}

/// Event names come from the sender; keep the metric label set bounded and printable.
fn metric_label(event: &str) -> String {
    let plausible = event.len() <= 64
        && event
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if plausible {
        event.to_owned()
    } else {
        "other".to_owned()
    }
}
