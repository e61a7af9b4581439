//! Errors nobody's handler wrote: unknown routes, wrong methods, over-long URIs, and a last net
//! that turns any remaining plain-text or empty error answer into `{"error", "detail"}` JSON.
//!
//! What hyper answers on its own, before any of this runs, stays as hyper writes it (an empty
//! body): a request line over 64 KiB (414) or a header section over its buffer (431). URIs from
//! [`MAX_URI_BYTES`] up to that size get a JSON 414 here.

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http_error::HttpError;

/// Longest path and query the API accepts; its longest legitimate query (a few event patterns,
/// times and cursors) is far below this.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// The most of a plain-text error body carried over into `detail`.
const MAX_DETAIL_BYTES: usize = 4 * 1024;

/// The stable `error` code of a status.
pub fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        409 => "conflict",
        411 => "length_required",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        422 => "unprocessable_entity",
        429 => "too_many_requests",
        431 => "headers_too_large",
        503 => "unavailable",
        500..=599 => "internal",
        _ => "error",
    }
}

/// An [`HttpError`] for a status and an explanation (an axum rejection's text).
pub fn error_for_status(status: StatusCode, detail: impl Into<String>) -> HttpError {
    HttpError::new(status, code_for(status), detail)
}

/// The router's fallback: no route has this path.
pub async fn no_route(request: Request) -> HttpError {
    HttpError::not_found(format!(
        "no route for {} {}; the API is under /api/v1 (see /api/openapi.json)",
        request.method(),
        request.uri().path()
    ))
}

/// Refuses a path and query over [`MAX_URI_BYTES`] with 414 before any handler parses it.
pub async fn limit_uri_length(request: Request, next: Next) -> Response {
    let length = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if length > MAX_URI_BYTES {
        return error_for_status(
            StatusCode::URI_TOO_LONG,
            format!("the path and query are {length} bytes; at most {MAX_URI_BYTES} are accepted"),
        )
        .into_response();
    }
    next.run(request).await
}

/// Rewrites an error answer that is not JSON (axum's 405 for a wrong method, any plain-text
/// rejection no extractor here saw) as `{"error", "detail"}`, keeping its status and headers such
/// as `Allow` and `Retry-After`.
pub async fn ensure_json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_DETAIL_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let detail = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let mut json = error_for_status(status, detail).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            json.headers_mut().append(name, value.clone());
        }
    }
    json
}
