//! Admin API authentication: `Authorization: Bearer <token>` (the stream also takes `?token=`).
//!
//! Accepted tokens are the configured `ZOOMHOOK_ADMIN_TOKEN` (compared in constant time) and
//! tokens created by `zoomhook token create` or at first start, of which the store keeps only a
//! SHA-256 hash: a leaked database does not leak working tokens.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::core::clock::now_millis;
use crate::http_error::HttpError;
use crate::ingest::verify::strip_scheme;
use crate::server::AppState;
use crate::store::{AdminTokenRecord, EventStore, StoreError};
use crate::zoom::signature::constant_time_eq;

/// Hex SHA-256 of a token, the form stored.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Creates a new admin token, stores its hash, and returns the token (shown once).
pub async fn create_token(store: &dyn EventStore, name: &str) -> Result<String, StoreError> {
    let mut secret = [0u8; 32];
    rand::fill(&mut secret);
    let token = format!(
        "zh_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    store
        .insert_admin_token(&AdminTokenRecord {
            id: crate::core::ids::new_id("tok"),
            name: name.to_owned(),
            token_hash: hash_token(&token),
            created_at: now_millis(),
        })
        .await?;
    Ok(token)
}

/// At first start with no configured token and none stored, creates one to print once.
pub async fn bootstrap_token(
    store: &dyn EventStore,
    config: &Config,
) -> Result<Option<String>, StoreError> {
    if config.admin_token.is_some() || store.count_admin_tokens().await? > 0 {
        return Ok(None);
    }
    create_token(store, "bootstrap").await.map(Some)
}

/// Middleware guarding `/api/v1/*`: the token comes from the `Authorization` header only.
pub async fn require_admin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let given = bearer_token(request.headers());
    match check_admin_token(&state, given.as_deref()).await {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| strip_scheme(v, "bearer"))
        .map(str::to_owned)
}

/// Whether `given` is an accepted admin token; the refusal is the 401 (or 503) to answer.
/// Shared by the middleware and by the stream, which also takes the token from `?token=`.
pub async fn check_admin_token(state: &AppState, given: Option<&str>) -> Result<(), HttpError> {
    let Some(given) = given else {
        return Err(HttpError::unauthorized(
            "send the admin token as `Authorization: Bearer <token>` (create one with `zoomhook token create`)",
        ));
    };
    if let Some(configured) = &state.config.admin_token
        && constant_time_eq(given.as_bytes(), configured.expose().as_bytes())
    {
        return Ok(());
    }
    // Looking up by hash is not a timing oracle: the hash of a guess reveals nothing usable.
    match state.store.find_admin_token(&hash_token(given)).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(HttpError::unauthorized("unknown admin token")),
        Err(e) => Err(HttpError::from(e)),
    }
}
