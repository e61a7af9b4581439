//! How deliveries are signed.
//!
//! - `standard` — Standard Webhooks: `webhook-id`, `webhook-timestamp` (Unix seconds) and
//!   `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, where the key is
//!   the base64 part of the `whsec_…` secret. During a rotation both secrets sign; the header then
//!   carries both signatures, space-separated.
//! - `zoom` — exactly what Zoom sends: `x-zm-signature: v0=<hex HMAC-SHA256(secret, "v0:{ts}:{body}")>`,
//!   `x-zm-request-timestamp` and `x-zm-request-id` (the delivery id), with the whole `whsec_…`
//!   string as the secret token, so an existing Zoom consumer works unchanged behind zoomhook.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::zoom::signature::hmac_sha256;

/// Prefix of generated subscription secrets.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new random secret: `whsec_` + base64 of 24 random bytes.
pub fn new_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    format!("{SECRET_PREFIX}{}", B64.encode(bytes))
}

/// The HMAC key of a Standard Webhooks secret (base64 after `whsec_`; other text as is).
fn standard_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix(SECRET_PREFIX)
        .and_then(|b64| B64.decode(b64).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// `v1,<signature>` for one secret.
pub fn standard_signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let prefix = format!("{id}.{timestamp}.");
    let mac = hmac_sha256(&standard_key(secret), &[prefix.as_bytes(), body]);
    format!("v1,{}", B64.encode(mac))
}

/// The headers of one attempt (name, value), for all signing secrets.
pub fn headers(
    scheme: &str,
    secrets: &[&str],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    match scheme {
        "zoom" => {
            let secret = secrets.first().copied().unwrap_or_default();
            let ts = timestamp.to_string();
            vec![
                (
                    "x-zm-signature",
                    crate::zoom::signature::sign(secret.as_bytes(), &ts, body),
                ),
                ("x-zm-request-timestamp", ts),
                ("x-zm-request-id", id.to_owned()),
            ]
        }
        _ => {
            let signatures: Vec<String> = secrets
                .iter()
                .map(|s| standard_signature(s, id, timestamp, body))
                .collect();
            vec![
                ("webhook-id", id.to_owned()),
                ("webhook-timestamp", timestamp.to_string()),
                ("webhook-signature", signatures.join(" ")),
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_reference_vector() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            standard_signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn rotation_signs_with_both_secrets() {
        let h = headers("standard", &["whsec_AAAA", "whsec_BBBB"], "msg_1", 1, b"{}");
        let sig = &h.iter().find(|(k, _)| *k == "webhook-signature").unwrap().1;
        assert_eq!(sig.split(' ').count(), 2);
        assert!(new_secret().starts_with(SECRET_PREFIX));
    }
}
