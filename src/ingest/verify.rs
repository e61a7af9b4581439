//! Verification of one inbound request against its source's configuration.
//!
//! Every configured check must pass: the Zoom signature (whenever the source has a secret),
//! the custom header, and — for the checks that share the `authorization` header (Basic, Bearer
//! from zoomhook's token endpoint, the legacy verification token) — at least one of them.
//! Secrets are compared in constant time everywhere.

use std::net::IpAddr;

use axum::http::HeaderMap;
use base64::Engine;

use super::bearer;
use crate::config::{Secret, SourceConfig};
use crate::core::clock::now_secs;
use crate::zoom::signature::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// Why verification failed. The message is safe to return (it never contains secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("source IP {0} is not in this source's allow-list")]
    IpNotAllowed(IpAddr),
    #[error(
        "source `{0}` has no verification configured; set its webhook secret (ZOOM_WEBHOOK_SECRET_TOKEN for the default source)"
    )]
    NotConfigured(String),
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("x-zm-request-timestamp is not a Unix timestamp in seconds")]
    BadTimestamp,
    #[error(
        "x-zm-request-timestamp is {skew_secs}s away from this server's clock (tolerance {tolerance_secs}s)"
    )]
    StaleTimestamp { skew_secs: i64, tolerance_secs: u64 },
    #[error(
        "x-zm-signature does not match the body (is the secret token right, and is the body forwarded unmodified?)"
    )]
    BadSignature,
    #[error(
        "authorization header does not match the configured Basic credentials, bearer token or verification token"
    )]
    BadAuthorization,
    #[error("custom header {0} is missing or wrong")]
    BadCustomHeader(String),
}

impl Rejection {
    /// Short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::IpNotAllowed(_) => "ip_not_allowed",
            Rejection::NotConfigured(_) => "not_configured",
            Rejection::MissingHeader(_) => "missing_header",
            Rejection::BadTimestamp => "bad_timestamp",
            Rejection::StaleTimestamp { .. } => "stale_timestamp",
            Rejection::BadSignature => "bad_signature",
            Rejection::BadAuthorization => "bad_authorization",
            Rejection::BadCustomHeader(_) => "bad_custom_header",
        }
    }
}

/// Checks the source IP against the allow-list (before the body is even read).
pub fn check_ip(source: &SourceConfig, peer: IpAddr) -> Result<(), Rejection> {
    // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d; compare as IPv4.
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
        v4 => v4,
    };
    if source.allow_ips.is_empty() || source.allow_ips.iter().any(|net| net.contains(&peer)) {
        Ok(())
    } else {
        Err(Rejection::IpNotAllowed(peer))
    }
}

/// The part of verification that needs the body: the signature over it. Returned by
/// [`verify_headers`] once every other check has passed. It owns what it needs, so a large
/// body's HMAC can be computed on a blocking thread.
pub struct PendingSignature {
    signed: Option<SignedHeaders>,
}

struct SignedHeaders {
    timestamp: String,
    signature: String,
    /// The source's active secrets (two during rotation).
    secrets: Vec<Secret>,
}

/// Runs every check that needs no body — source configured, signature header well-formed,
/// timestamp within tolerance, custom header, `authorization` — so an unauthenticated client is
/// refused before it can make the server wait for (and hold) its body.
pub fn verify_headers(
    source: &SourceConfig,
    headers: &HeaderMap,
) -> Result<PendingSignature, Rejection> {
    if !source.has_any_check() {
        return Err(Rejection::NotConfigured(source.name.clone()));
    }
    let signed = if source.secrets.is_empty() {
        None
    } else {
        Some(signature_headers(source, headers)?)
    };
    if let Some(custom) = &source.custom_header {
        let given = headers
            .get(&custom.name)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !signature::constant_time_eq(given, custom.value.expose().as_bytes()) {
            return Err(Rejection::BadCustomHeader(custom.name.to_string()));
        }
    }
    check_authorization(source, headers)?;
    Ok(PendingSignature { signed })
}

impl PendingSignature {
    /// Verifies the signature over the raw body. On success returns the secret that verified it
    /// (the URL-validation answer must be computed with that same secret), if the source has
    /// secrets.
    pub fn verify_body(&self, body: &[u8]) -> Result<Option<Secret>, Rejection> {
        let Some(signed) = &self.signed else {
            return Ok(None);
        };
        // Try every active secret (two during rotation); each comparison is constant-time.
        signed
            .secrets
            .iter()
            .find(|secret| {
                signature::verify(
                    secret.expose().as_bytes(),
                    &signed.timestamp,
                    body,
                    &signed.signature,
                )
            })
            .map(|secret| Some(secret.clone()))
            .ok_or(Rejection::BadSignature)
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<&'h str, Rejection> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or(Rejection::MissingHeader(name))
}

/// The signature and timestamp headers, checked for shape and freshness.
fn signature_headers(
    source: &SourceConfig,
    headers: &HeaderMap,
) -> Result<SignedHeaders, Rejection> {
    let given = header(headers, SIGNATURE_HEADER)?;
    let timestamp = header(headers, TIMESTAMP_HEADER)?;
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Rejection::BadTimestamp)?;
    let skew = now_secs().saturating_sub(ts);
    let tolerance = source.timestamp_tolerance.as_secs();
    if skew.unsigned_abs() > tolerance {
        return Err(Rejection::StaleTimestamp {
            skew_secs: skew,
            tolerance_secs: tolerance,
        });
    }
    if !signature::is_well_formed(given) {
        return Err(Rejection::BadSignature);
    }
    Ok(SignedHeaders {
        timestamp: timestamp.to_owned(),
        signature: given.to_owned(),
        secrets: source.secrets.clone(),
    })
}

fn check_authorization(source: &SourceConfig, headers: &HeaderMap) -> Result<(), Rejection> {
    let any_configured = source.basic_auth.is_some()
        || source.token_auth.is_some()
        || source.verification_token.is_some();
    if !any_configured {
        return Ok(());
    }
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim();
    let basic_ok = source.basic_auth.as_ref().is_some_and(|basic| {
        let expected = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            basic.username,
            basic.password.expose()
        ));
        strip_scheme(given, "basic")
            .is_some_and(|b| signature::constant_time_eq(b.as_bytes(), expected.as_bytes()))
    });
    let bearer_ok = source.token_auth.as_ref().is_some_and(|auth| {
        strip_scheme(given, "bearer").is_some_and(|token| bearer::verify(auth, &source.name, token))
    });
    let legacy_ok = source.verification_token.as_ref().is_some_and(|token| {
        signature::constant_time_eq(given.as_bytes(), token.expose().as_bytes())
    });
    if basic_ok || bearer_ok || legacy_ok {
        Ok(())
    } else {
        Err(Rejection::BadAuthorization)
    }
}

/// `"Basic xyz"` → `"xyz"` (scheme compared case-insensitively).
pub fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = value.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}
