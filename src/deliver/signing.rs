//! How deliveries are signed.
//!
//! - `standard` — Standard Webhooks: `webhook-id`, `webhook-timestamp` (Unix seconds) and
//!   `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, where the key is
//!   the base64 part of the `whsec_…` secret. During a rotation both secrets sign; the header then
//!   carries both signatures, space-separated, so consumers can move to the new secret whenever
//!   they like within the overlap.
//! - `zoom` — exactly what Zoom sends: `x-zm-signature: v0=<hex HMAC-SHA256(secret, "v0:{ts}:{body}")>`,
//!   `x-zm-request-timestamp` and `x-zm-request-id` (the delivery id), with the whole `whsec_…`
//!   string as the secret token, so an existing Zoom consumer works unchanged behind zoomhook.
//!   Zoom's header carries exactly one signature, so both secrets cannot sign at once: during a
//!   rotation the **previous** secret keeps signing until the overlap ends (the consumer, which
//!   knows only that one, keeps working), then the new one takes over.

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

/// The secrets that may sign an attempt at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigningSecrets<'a> {
    /// The subscription's current secret.
    pub current: &'a str,
    /// The secret it replaced, while the rotation overlap lasts (`None` outside it).
    pub previous: Option<&'a str>,
}

impl<'a> SigningSecrets<'a> {
    /// The one secret of a scheme whose header holds a single signature (`zoom`): the previous
    /// secret during the overlap, since that is the one the consumer already knows.
    pub fn single(&self) -> &'a str {
        self.previous.unwrap_or(self.current)
    }

    /// Every secret that signs when the header can hold several (`standard`): the current one
    /// first, then the previous one during the overlap.
    pub fn all(&self) -> Vec<&'a str> {
        std::iter::once(self.current).chain(self.previous).collect()
    }
}

/// The headers of one attempt (name, value), signed as the scheme allows.
pub fn headers(
    scheme: &str,
    secrets: SigningSecrets<'_>,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    match scheme {
        "zoom" => {
            let secret = secrets.single();
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
                .all()
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

    const ROTATING: SigningSecrets<'static> = SigningSecrets {
        current: "whsec_AAAA",
        previous: Some("whsec_BBBB"),
    };

    fn header(h: &[(&'static str, String)], name: &str) -> String {
        h.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    #[test]
    fn standard_rotation_signs_with_both_secrets() {
        let h = headers("standard", ROTATING, "msg_1", 1, b"{}");
        assert_eq!(header(&h, "webhook-signature").split(' ').count(), 2);
        assert!(new_secret().starts_with(SECRET_PREFIX));
    }

    #[test]
    fn zoom_rotation_signs_with_the_previous_secret_until_the_overlap_ends() {
        let during = headers("zoom", ROTATING, "msg_1", 1, b"{}");
        let expected = crate::zoom::signature::sign(b"whsec_BBBB", "1", b"{}");
        assert_eq!(header(&during, "x-zm-signature"), expected);
        let after = SigningSecrets {
            previous: None,
            ..ROTATING
        };
        let expected = crate::zoom::signature::sign(b"whsec_AAAA", "1", b"{}");
        assert_eq!(
            header(&headers("zoom", after, "msg_1", 1, b"{}"), "x-zm-signature"),
            expected
        );
    }
}
