//! Zoom's `x-zm-signature` scheme, the one place it is computed.
//!
//! `x-zm-signature = "v0=" + hex(HMAC-SHA256(secret, "v0:" + timestamp + ":" + raw body))`.
//! The receiver, `zoomhook send`, `zoomhook simulate` and outbound `zoom`-scheme signing all use
//! these functions, so a change to the scheme happens here once.
//!
//! The message is built from the **raw body bytes**: verifying over re-serialised JSON is the most
//! common Zoom integration bug (key order, spacing and escaping change), see PROTOCOL.md §2.1.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-zm-signature";
/// Header carrying the Unix timestamp (seconds) that is part of the signed message.
pub const TIMESTAMP_HEADER: &str = "x-zm-request-timestamp";
/// Header carrying Zoom's request id, stable across Zoom's retries of one delivery.
pub const REQUEST_ID_HEADER: &str = "x-zm-request-id";

fn mac_for(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length (long keys are hashed), so this cannot fail.
    match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA256 accepts keys of every length"),
    }
}

fn signing_mac(secret: &[u8], timestamp: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = mac_for(secret);
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac
}

/// The full `x-zm-signature` header value (`v0=<lowercase hex>`) for `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let digest = signing_mac(secret, timestamp, body).finalize().into_bytes();
    format!("v0={}", hex::encode(digest))
}

/// Whether a received `x-zm-signature` value has the scheme's shape (`v0=` and 64 hex digits).
/// The receiver checks this before reading the body, so a request that cannot possibly verify
/// is refused without ever holding its body in memory.
pub fn is_well_formed(header_value: &str) -> bool {
    header_value
        .trim()
        .strip_prefix("v0=")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Checks a received `x-zm-signature` header value against `body` and `timestamp`.
///
/// The comparison is constant-time (`Mac::verify_slice`): a byte-by-byte early exit would let an
/// attacker learn the expected signature one byte at a time from response timings.
pub fn verify(secret: &[u8], timestamp: &str, body: &[u8], header_value: &str) -> bool {
    let Some(hex_part) = header_value.trim().strip_prefix("v0=") else {
        return false;
    };
    let Ok(given) = hex::decode(hex_part) else {
        return false;
    };
    signing_mac(secret, timestamp, body)
        .verify_slice(&given)
        .is_ok()
}

/// The `encryptedToken` of Zoom's URL-validation handshake: hex(HMAC-SHA256(secret, plainToken)).
pub fn url_validation_token(secret: &[u8], plain_token: &str) -> String {
    let mut mac = mac_for(secret);
    mac.update(plain_token.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A keyed MAC over arbitrary parts, used for zoomhook's own stateless bearer tokens.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = mac_for(key);
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Constant-time equality for secrets of possibly different lengths (length is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_zoom_documented_construction() {
        // Independent computation with the hmac crate directly over the concatenated message.
        let body = br#"{"event":"meeting.started","payload":{}}"#;
        let mut mac = mac_for(b"secret");
        mac.update(b"v0:1739923528:");
        mac.update(body);
        let expected = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(sign(b"secret", "1739923528", body), expected);
        assert!(verify(b"secret", "1739923528", body, &expected));
    }

    #[test]
    fn rejects_wrong_secret_timestamp_body_and_malformed_headers() {
        let body = b"{}";
        let good = sign(b"secret", "100", body);
        assert!(!verify(b"other", "100", body, &good));
        assert!(!verify(b"secret", "101", body, &good));
        assert!(!verify(b"secret", "100", b"{ }", &good));
        assert!(!verify(
            b"secret",
            "100",
            body,
            good.trim_start_matches("v0=")
        ));
        assert!(!verify(b"secret", "100", body, "v0=zz"));
        assert!(!verify(b"secret", "100", body, "v1=00"));
    }

    #[test]
    fn url_validation_token_is_hex_hmac_of_plain_token() {
        // Known-answer test: HMAC-SHA256(key="key", "The quick brown fox jumps over the lazy dog").
        assert_eq!(
            url_validation_token(b"key", "The quick brown fox jumps over the lazy dog"),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }
}
