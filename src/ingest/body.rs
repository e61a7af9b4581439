//! Reading a webhook body within three limits: its size (`max_body_bytes`), its time
//! (`read_timeout`), and the memory all bodies together may hold (`max_body_bytes_in_flight`).
//!
//! The budget is what keeps unauthenticated clients from growing memory: the header checks run
//! first, but a forger can still send a well-formed signature with a fresh timestamp, and the
//! HMAC can only be checked once the body is here. Each request reserves its bytes *before*
//! reading them (all of a declared `Content-Length` at once, chunked bodies chunk by chunk) and
//! keeps the reservation until it is answered, because the body stays in memory until its
//! commit. When the budget is spent the request gets 503 at once rather than a place in a queue
//! that would itself grow without bound; Zoom retries 5xx.
//!
//! Bodies up to [`UNCOUNTED_BODY_BYTES`] are not counted. The connection cap already bounds them
//! (`max_connections` × 64 KiB), and counting them would let a few forged multi-megabyte bodies
//! starve the ordinary webhooks, which are a few kilobytes.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::http_error::HttpError;

/// Seconds a client is asked to wait when the body budget is spent (`Retry-After`).
const RETRY_AFTER_SECS: &str = "1";
/// Bodies up to this size do not take from the budget (see the module comment).
pub const UNCOUNTED_BODY_BYTES: usize = 64 * 1024;
/// First allocation for a body of unknown length (chunked); grows as chunks arrive.
const UNKNOWN_LENGTH_CAPACITY: usize = 16 * 1024;

/// The global budget of body bytes held by requests, one semaphore permit per byte.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    total: usize,
}

/// Bytes reserved by one request; given back to the budget when dropped.
#[derive(Debug)]
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
}

impl BodyBudget {
    /// A budget of `total` bytes (validated by the configuration to fit in a `u32`).
    pub fn new(total: usize) -> BodyBudget {
        BodyBudget {
            bytes: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Bytes currently free.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    /// Reserves `n` more bytes for `reservation`, or fails without waiting.
    fn grow(&self, reservation: &mut Reservation, n: usize) -> Result<(), BodyError> {
        if n == 0 {
            return Ok(());
        }
        let n = u32::try_from(n).map_err(|_| BodyError::Busy)?;
        let permit = Arc::clone(&self.bytes)
            .try_acquire_many_owned(n)
            .map_err(|_| BodyError::Busy)?;
        match &mut reservation.permit {
            Some(held) => held.merge(permit),
            None => reservation.permit = Some(permit),
        }
        Ok(())
    }

    fn reserved(reservation: &Reservation) -> usize {
        reservation.permit.as_ref().map_or(0, |p| p.num_permits())
    }
}

/// Why a body could not be read; each maps to one answer.
#[derive(Debug)]
pub enum BodyError {
    TooLarge { limit: usize },
    Busy,
    TimedOut(Duration),
    Broken(String),
}

impl BodyError {
    /// A fixed label for the rejection log.
    pub fn reason(&self) -> &'static str {
        match self {
            BodyError::TooLarge { .. } => "too_large",
            BodyError::Busy => "busy",
            BodyError::TimedOut(_) => "body_timed_out",
            BodyError::Broken(_) => "body_broken",
        }
    }

    /// What went wrong, for the rejection log (limits and transport errors, never body bytes).
    pub fn describe(&self) -> String {
        match self {
            BodyError::TooLarge { limit } => format!("body over {limit} bytes (max_body_bytes)"),
            BodyError::Busy => "body budget spent (max_body_bytes_in_flight)".to_owned(),
            BodyError::TimedOut(limit) => format!("body not received within {limit:?}"),
            BodyError::Broken(detail) => format!("could not read the body: {detail}"),
        }
    }

    /// The answer: 413, 503 with `Retry-After`, 408 or 400.
    pub fn into_response(self, budget: &BodyBudget) -> Response {
        match self {
            BodyError::TooLarge { limit } => HttpError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("body exceeds the limit of {limit} bytes (max_body_bytes)"),
            )
            .into_response(),
            BodyError::Busy => {
                let mut response = HttpError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    format!(
                        "the server holds its limit of {} body bytes (max_body_bytes_in_flight); retry shortly",
                        budget.total
                    ),
                )
                .into_response();
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                );
                response
            }
            BodyError::TimedOut(limit) => HttpError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("the body was not received within {limit:?} (read_timeout)"),
            )
            .into_response(),
            BodyError::Broken(detail) => {
                HttpError::bad_request(format!("could not read the body: {detail}")).into_response()
            }
        }
    }
}

/// Reads the whole body into one buffer sized from `Content-Length`, reserving its bytes in
/// `budget` first. The reservation must be kept until the request is answered.
pub async fn read_body(
    budget: &BodyBudget,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<(Bytes, Reservation), BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let declared = declared.map(|len| len as usize);
    let mut reservation = Reservation { permit: None };
    if let Some(len) = declared.filter(|len| *len > UNCOUNTED_BODY_BYTES) {
        budget.grow(&mut reservation, len)?;
    }
    // One allocation of the final size: no chunk list to copy at the end, and no growth pattern
    // that leaves freed fragments of several sizes behind in the allocator.
    let capacity = declared.unwrap_or(UNKNOWN_LENGTH_CAPACITY);
    let read = collect_into(budget, &mut reservation, body, limit, capacity);
    match tokio::time::timeout(timeout, read).await {
        Err(_) => Err(BodyError::TimedOut(timeout)),
        Ok(Err(error)) => Err(error),
        Ok(Ok(bytes)) => Ok((bytes, reservation)),
    }
}

async fn collect_into(
    budget: &BodyBudget,
    reservation: &mut Reservation,
    mut body: Body,
    limit: usize,
    capacity: usize,
) -> Result<Bytes, BodyError> {
    let mut buffer = BytesMut::with_capacity(capacity);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Broken(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing we keep
        };
        let needed = buffer.len() + data.len();
        if needed > limit {
            return Err(BodyError::TooLarge { limit });
        }
        // Only chunked bodies get here with more than they reserved (hyper ends a body at its
        // declared Content-Length); past the uncounted size they count in full.
        let reserved = BodyBudget::reserved(reservation);
        if needed > UNCOUNTED_BODY_BYTES && needed > reserved {
            budget.grow(reservation, needed - reserved)?;
        }
        buffer.extend_from_slice(&data);
    }
    Ok(buffer.freeze())
}
