//! The JSON error body every endpoint uses: `{"error": "...", "detail": "..."}`.
//! `error` is a stable machine-readable code; `detail` helps a human and never contains secrets.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An HTTP error answer.
#[derive(Debug, Clone)]
pub struct HttpError {
    pub status: StatusCode,
    pub error: &'static str,
    pub detail: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    detail: &'a str,
}

impl HttpError {
    /// Builds an error answer.
    pub fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> HttpError {
        HttpError {
            status,
            error,
            detail: detail.into(),
        }
    }

    /// 401: the request could not be verified.
    pub fn unauthorized(detail: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// 400: the request is malformed.
    pub fn bad_request(detail: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 409: the request conflicts with the current state; it may succeed later.
    pub fn conflict(detail: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::CONFLICT, "conflict", detail)
    }

    /// 503: the store could not commit; the client (Zoom) should retry.
    pub fn unavailable(detail: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", detail)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = Json(Body {
            error: self.error,
            detail: &self.detail,
        });
        (self.status, body).into_response()
    }
}

impl From<crate::store::StoreError> for HttpError {
    /// A store that cannot answer is a 503 (retry later); a value the store cannot hold or match
    /// is the request's fault and a retry would fail the same way, so it is a 400.
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Rejected(reason) => {
                tracing::info!(%reason, "store refused a value of the request");
                HttpError::new(StatusCode::BAD_REQUEST, "unstorable_value", reason)
            }
            other => {
                tracing::warn!(error = %other, "store error");
                HttpError::unavailable("the event store is unavailable; retry later")
            }
        }
    }
}
