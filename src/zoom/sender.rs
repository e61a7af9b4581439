//! Sending events exactly as Zoom does (used by `send`, `simulate`, `demo` and the tests' fake
//! Zoom): the same headers, the signature over the exact bytes sent.

use crate::core::clock::now_secs;
use crate::zoom::signature::{self, REQUEST_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// The `user-agent` Zoom's webhook deliveries carry.
pub const ZOOM_USER_AGENT: &str = "Zoom Marketplace/1.0a";

/// The headers of one Zoom delivery of `body`.
#[derive(Debug, Clone)]
pub struct ZoomHeaders {
    pub timestamp: String,
    pub signature: String,
    /// `x-zm-request-id`: keep it across retries of the same delivery, as Zoom does.
    pub request_id: String,
}

impl ZoomHeaders {
    /// Signs `body` with `secret` at the current time under a new request id.
    pub fn sign(secret: &str, body: &[u8]) -> ZoomHeaders {
        ZoomHeaders::sign_at(secret, body, now_secs(), &new_request_id())
    }

    /// Signs `body` at a given time and request id (retries keep the id).
    pub fn sign_at(secret: &str, body: &[u8], timestamp: i64, request_id: &str) -> ZoomHeaders {
        let timestamp = timestamp.to_string();
        ZoomHeaders {
            signature: signature::sign(secret.as_bytes(), &timestamp, body),
            timestamp,
            request_id: request_id.to_owned(),
        }
    }

    /// `(name, value)` pairs, including content type and user agent.
    pub fn pairs(&self) -> [(&'static str, &str); 5] {
        [
            ("content-type", "application/json; charset=utf-8"),
            ("user-agent", ZOOM_USER_AGENT),
            (SIGNATURE_HEADER, &self.signature),
            (TIMESTAMP_HEADER, &self.timestamp),
            (REQUEST_ID_HEADER, &self.request_id),
        ]
    }
}

/// A request id in Zoom's format (a UUID with underscores, e.g. `6009d653_d487_445d_8406_42b654974899`).
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string().replace('-', "_")
}

/// POSTs `body` signed as Zoom would, with `reqwest`.
pub async fn post_signed(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    body: Vec<u8>,
) -> reqwest::Result<reqwest::Response> {
    let headers = ZoomHeaders::sign(secret, &body);
    let mut request = client.post(url);
    for (name, value) in headers.pairs() {
        request = request.header(name, value);
    }
    request.body(body).send().await
}
