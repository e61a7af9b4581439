//! Zoom's "Token Authentication" option, hosted by zoomhook.
//!
//! Zoom first calls our token endpoint (`POST /oauth/token` for the default source,
//! `/oauth/token/{source}` for others) with `authorization: Basic base64(client_id:client_secret)`
//! and `grant_type=client_credentials`, then sends events with `authorization: Bearer <token>`.
//!
//! Tokens are stateless: `zhb_<base64url(source:expiry)>.<hex HMAC(client_secret, …)>`. Every
//! instance sharing the configuration can verify them without a database lookup, and rotating the
//! client secret revokes every token at once.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::json;

use super::verify::strip_scheme;
use crate::config::{DEFAULT_SOURCE, TokenAuth};
use crate::core::clock::now_secs;
use crate::http_error::HttpError;
use crate::server::AppState;
use crate::zoom::signature;

/// Token lifetime. Zoom requires `expires_in` ≥ 3599 (PROTOCOL.md §1.3).
pub const TOKEN_TTL_SECS: i64 = 3600;

fn mac(auth: &TokenAuth, payload: &str) -> String {
    hex::encode(signature::hmac_sha256(
        auth.client_secret.expose().as_bytes(),
        &[b"zoomhook-bearer:", payload.as_bytes()],
    ))
}

/// Issues a token for `source` valid until `expires_at` (Unix seconds).
pub fn issue(auth: &TokenAuth, source: &str, expires_at: i64) -> String {
    let payload = URL_SAFE_NO_PAD.encode(format!("{source}:{expires_at}"));
    format!("zhb_{payload}.{}", mac(auth, &payload))
}

/// Whether `token` was issued for `source` with this client secret and has not expired.
pub fn verify(auth: &TokenAuth, source: &str, token: &str) -> bool {
    let Some((payload, given_mac)) = token.strip_prefix("zhb_").and_then(|t| t.split_once('.'))
    else {
        return false;
    };
    if !signature::constant_time_eq(given_mac.as_bytes(), mac(auth, payload).as_bytes()) {
        return false;
    }
    let Some(decoded) = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
    else {
        return false;
    };
    match decoded.rsplit_once(':') {
        Some((token_source, expiry)) => {
            token_source == source && expiry.parse::<i64>().is_ok_and(|e| e > now_secs())
        }
        None => false,
    }
}

/// `POST /oauth/token` — the default source's token endpoint.
pub async fn token_default(
    state: State<AppState>,
    query: Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    issue_for(&state, DEFAULT_SOURCE, &query, &headers, body).await
}

/// `POST /oauth/token/{source}` — a named source's token endpoint.
pub async fn token_named(
    state: State<AppState>,
    Path(source): Path<String>,
    query: Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    issue_for(&state, &source, &query, &headers, body).await
}

/// The largest token-request body read: Zoom sends an empty form, or `grant_type=…` alone.
const MAX_TOKEN_FORM_BYTES: usize = 4096;

/// Checks the client credentials first (they are in the headers), so an unauthenticated client
/// never gets the server to wait for its body; then reads the small form within `read_timeout`.
async fn issue_for(
    state: &AppState,
    source_name: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let Some(auth) = state
        .config
        .source(source_name)
        .and_then(|s| s.token_auth.as_ref())
    else {
        return HttpError::not_found(format!(
            "source `{source_name}` has no token authentication configured"
        ))
        .into_response();
    };
    if !client_credentials_valid(auth, headers) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client id or secret is wrong",
        );
    }
    let read = axum::body::to_bytes(body, MAX_TOKEN_FORM_BYTES);
    let body = match tokio::time::timeout(state.config.read_timeout, read).await {
        Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(Err(_)) | Err(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the form body is unreadable, too slow, or over 4096 bytes",
            );
        }
    };
    let form: HashMap<String, String> = body
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let grant = query.get("grant_type").or_else(|| form.get("grant_type"));
    if grant.map(String::as_str) != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be client_credentials",
        );
    }
    let token = issue(auth, source_name, now_secs() + TOKEN_TTL_SECS);
    // Zoom's documentation shows expires_in as a string; answer the same form.
    Json(json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": (TOKEN_TTL_SECS - 1).to_string(),
    }))
    .into_response()
}

/// `authorization: Basic base64(client_id:client_secret)` matches the source's credentials.
fn client_credentials_valid(auth: &TokenAuth, headers: &HeaderMap) -> bool {
    let credentials = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| strip_scheme(v, "basic"))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    credentials
        .as_deref()
        .and_then(|c| c.split_once(':'))
        .is_some_and(|(id, secret)| {
            // Evaluate both comparisons so timing does not reveal which half was wrong.
            let id_ok = signature::constant_time_eq(id.as_bytes(), auth.client_id.as_bytes());
            let secret_ok = signature::constant_time_eq(
                secret.as_bytes(),
                auth.client_secret.expose().as_bytes(),
            );
            id_ok & secret_ok
        })
}

fn oauth_error(status: StatusCode, error: &'static str, detail: &str) -> Response {
    (status, Json(json!({"error": error, "detail": detail}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn auth(secret: &str) -> TokenAuth {
        TokenAuth {
            client_id: "id".into(),
            client_secret: Secret::new(secret),
        }
    }

    #[test]
    fn tokens_verify_only_for_their_source_secret_and_lifetime() {
        let a = auth("s1");
        let token = issue(&a, "zoom", now_secs() + 60);
        assert!(verify(&a, "zoom", &token));
        assert!(!verify(&a, "sales", &token));
        assert!(!verify(&auth("s2"), "zoom", &token));
        assert!(!verify(&a, "zoom", &issue(&a, "zoom", now_secs() - 1)));
        assert!(!verify(&a, "zoom", &token.replace("zhb_", "zhb_x")));
    }
}
