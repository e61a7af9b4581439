//! Request extractors of the API that answer a rejection as `{"error", "detail"}` JSON.
//!
//! axum's own extractors reject in plain text (`?limit=abc`, a path id that is not UTF-8, a body
//! over the limit); a client that parses every error the same way should not have to guess.
//! Each extractor here wraps axum's and turns its rejection into an [`HttpError`] with the same
//! status and axum's explanation as the detail. Handlers use these, never axum's directly.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::errors::error_for_status;
use crate::http_error::HttpError;

/// The query string, deserialised into `T`; a bad one is a 400 that names the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|r| error_for_status(r.status(), r.body_text()))
    }
}

/// Path parameters, deserialised into `T`; one that is not valid UTF-8 (`%FF`) is a 400, one
/// with a NUL (`%00`) a 404 on both backends alike: no id zoomhook issues contains one, and
/// PostgreSQL could not even compare it (an entity whose Zoom id holds a NUL is still found with
/// `?entity=`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        if parts.uri.path().to_ascii_lowercase().contains("%00") {
            return Err(HttpError::not_found("no resource has a NUL in its id"));
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|r| error_for_status(r.status(), r.body_text()))
    }
}

/// The whole request body, within the router's body limit (413 beyond it).
///
/// JSON bodies are read as bytes and parsed by the handler (`json_body`) rather than with
/// axum's `Json`, which also demands `content-type: application/json`: `curl -d` sends a form
/// type, and refusing a well-formed JSON body for its label helps nobody.
#[derive(Debug, Clone, Default)]
pub struct Body(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = HttpError;

    async fn from_request(request: Request, state: &S) -> Result<Self, HttpError> {
        axum::body::Bytes::from_request(request, state)
            .await
            .map(Body)
            .map_err(|r| error_for_status(r.status(), r.body_text()))
    }
}
