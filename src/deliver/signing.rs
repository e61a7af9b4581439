//! How deliveries are signed, and which bytes they carry.
//!
//! The HMAC key differs per scheme, because each follows the convention its consumers' libraries
//! already implement:
//! - `standard` — Standard Webhooks: `webhook-id`, `webhook-timestamp` (Unix seconds) and
//!   `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, where the key is
//!   the **base64-decoded part after `whsec_`** of the secret. During a rotation both secrets sign;
//!   the header then carries both signatures, space-separated, so consumers can move to the new
//!   secret whenever they like within the overlap.
//! - `zoom` — exactly what Zoom sends: `x-zm-signature: v0=<hex HMAC-SHA256(key, "v0:{ts}:{body}")>`,
//!   `x-zm-request-timestamp` and `x-zm-request-id` (the delivery id), where the key is the
//!   **secret's bytes as they are**, as Zoom uses its secret token: a consumer's existing Zoom
//!   secret token when one was given, else the whole generated `whsec_…` string, prefix included.
//!   Zoom's header carries exactly one signature, so both secrets cannot sign at once: during a
//!   rotation the **previous** secret keeps signing until the overlap ends (the consumer, which
//!   knows only that one, keeps working), then the new one takes over.
//!
//! A `zoom` subscription can carry the body `compact` instead of `raw`
//! ([`super::compact_json`]); the signature always covers the bytes actually sent.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hyper::header::HeaderName;

use crate::zoom::signature::hmac_sha256;

/// Prefix of generated subscription secrets.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new random secret: `whsec_` + base64 of 24 random bytes (valid for both schemes).
pub fn new_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    format!("{SECRET_PREFIX}{}", B64.encode(bytes))
}

/// Longest secret a user may give (Zoom's secret tokens are 22 characters, Standard Webhooks
/// secrets at most `whsec_` + 88): anything longer is a paste gone wrong.
pub const MAX_GIVEN_SECRET_LEN: usize = 256;

/// Size range of the key of a given Standard Webhooks secret, as Svix accepts it.
const STANDARD_KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// Checks a secret the user gives (instead of a generated one) for `scheme`. The message never
/// quotes the secret, since error answers end up in logs.
///
/// - `zoom`: the consumer's Zoom secret token, used as the HMAC key as it is. It must be 1 to 256
///   printable ASCII characters without spaces: Zoom's tokens are letters and digits, and a
///   space, a control character or non-ASCII text can only be a copy-and-paste accident that
///   would make every signature wrong without a visible cause.
/// - `standard`: like Svix, an existing `whsec_…` secret is accepted, so consumers keep theirs;
///   it must be `whsec_` and the base64 of 24 to 64 bytes, since Standard Webhooks libraries
///   base64-decode it to get their key.
pub fn check_given_secret(scheme: &str, secret: &str) -> Result<(), String> {
    if secret.is_empty() {
        return Err("must not be empty".into());
    }
    if secret.len() > MAX_GIVEN_SECRET_LEN {
        return Err(format!(
            "must be at most {MAX_GIVEN_SECRET_LEN} bytes (this one has {})",
            secret.len()
        ));
    }
    if let Some((at, _)) = secret.char_indices().find(|(_, c)| !c.is_ascii_graphic()) {
        return Err(format!(
            "must be printable ASCII without spaces (as Zoom's secret tokens are); character {} is not",
            secret[..at].chars().count() + 1
        ));
    }
    if scheme == "standard" {
        let key_len = secret
            .strip_prefix(SECRET_PREFIX)
            .and_then(|b64| B64.decode(b64).ok())
            .map(|key| key.len());
        if !key_len.is_some_and(|n| STANDARD_KEY_BYTES.contains(&n)) {
            return Err(format!(
                "must be {SECRET_PREFIX} followed by the base64 of 24 to 64 bytes, as Standard Webhooks \
                 (and Svix) make them; for a Zoom secret token use the zoom scheme"
            ));
        }
    }
    Ok(())
}

/// How a delivery carries the body: the stored bytes as they are.
pub const BODY_RAW: &str = "raw";
/// How a delivery carries the body: `JSON.stringify(JSON.parse(body))` (zoom scheme only).
pub const BODY_COMPACT: &str = "compact";

/// The bytes a delivery sends, and signs: the stored body, or its compact form.
pub fn wire_body<'a>(
    body_format: &str,
    stored: &'a [u8],
) -> Result<Cow<'a, [u8]>, super::compact_json::CompactError> {
    if body_format == BODY_COMPACT {
        super::compact_json::compact(stored).map(Cow::Owned)
    } else {
        Ok(Cow::Borrowed(stored))
    }
}

/// The HMAC key of a Standard Webhooks secret (base64 after `whsec_`; other text as is).
fn standard_key(secret: &str) -> Cow<'_, [u8]> {
    secret
        .strip_prefix(SECRET_PREFIX)
        .and_then(|b64| B64.decode(b64).ok())
        .map_or(Cow::Borrowed(secret.as_bytes()), Cow::Owned)
}

/// `v1,<signature>` for one secret: the HMAC of `<id>.<timestamp>.<body>`, fed in parts.
pub fn standard_signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    let mac = hmac_sha256(
        &standard_key(secret),
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    );
    let mut signature = String::with_capacity(3 + 44);
    signature.push_str("v1,");
    B64.encode_string(mac, &mut signature);
    signature
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
}

/// Zoom's signature header (`v0=<hex HMAC>`).
const X_ZM_SIGNATURE: HeaderName = HeaderName::from_static("x-zm-signature");
/// The timestamp Zoom's signature covers.
const X_ZM_REQUEST_TIMESTAMP: HeaderName = HeaderName::from_static("x-zm-request-timestamp");
/// The delivery's id, where Zoom puts its request id.
const X_ZM_REQUEST_ID: HeaderName = HeaderName::from_static("x-zm-request-id");
/// Standard Webhooks: the message id.
const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
/// Standard Webhooks: the timestamp the signatures cover.
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
/// Standard Webhooks: `v1,<base64 HMAC>` per secret, space-separated.
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// The headers of one attempt (name, value), signed as the scheme allows. The names are
/// constants, checked when this is compiled.
pub fn headers(
    scheme: &str,
    secrets: SigningSecrets<'_>,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> [(HeaderName, String); 3] {
    match scheme {
        "zoom" => {
            let secret = secrets.single();
            let ts = timestamp.to_string();
            [
                (
                    X_ZM_SIGNATURE,
                    crate::zoom::signature::sign(secret.as_bytes(), &ts, body),
                ),
                (X_ZM_REQUEST_TIMESTAMP, ts),
                (X_ZM_REQUEST_ID, id.to_owned()),
            ]
        }
        _ => {
            // Every secret that may sign: the current one first, then the previous one while
            // the rotation overlap lasts.
            let mut signatures = standard_signature(secrets.current, id, timestamp, body);
            if let Some(previous) = secrets.previous {
                signatures.push(' ');
                signatures.push_str(&standard_signature(previous, id, timestamp, body));
            }
            [
                (WEBHOOK_ID, id.to_owned()),
                (WEBHOOK_TIMESTAMP, timestamp.to_string()),
                (WEBHOOK_SIGNATURE, signatures),
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

    fn header(h: &[(HeaderName, String)], name: &str) -> String {
        h.iter()
            .find(|(k, _)| k.as_str() == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    #[test]
    fn given_secrets_are_checked_per_scheme_without_being_quoted() {
        let zoom_token = "aB3dE5fG7hI9jK1lM3nO5p";
        assert_eq!(check_given_secret("zoom", zoom_token), Ok(()));
        assert_eq!(check_given_secret("zoom", &new_secret()), Ok(()));
        assert_eq!(check_given_secret("standard", &new_secret()), Ok(()));
        // Svix's own example secret (24 bytes of key).
        assert_eq!(
            check_given_secret("standard", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Ok(())
        );
        let long = "x".repeat(MAX_GIVEN_SECRET_LEN + 1);
        for (scheme, bad) in [
            ("zoom", ""),
            ("zoom", "tok en"),
            ("zoom", "token\n"),
            ("zoom", "tok\0en"),
            ("zoom", "tökenü"),
            ("zoom", "token\u{2028}"),
            ("zoom", long.as_str()),
            ("standard", zoom_token),
            ("standard", "whsec_c2hvcnQ="),
            ("standard", "whsec_!!!!"),
        ] {
            let message = check_given_secret(scheme, bad).expect_err(bad);
            assert!(
                bad.is_empty() || !message.contains(bad),
                "the message quotes the secret: {message}"
            );
        }
    }

    #[test]
    fn the_compact_body_is_what_is_sent_and_signed() {
        let stored = br#"{ "event": "meeting.started", "n": 1.0 }"#;
        assert_eq!(&*wire_body(BODY_RAW, stored).unwrap_or_default(), stored);
        assert_eq!(
            &*wire_body(BODY_COMPACT, stored).unwrap_or_default(),
            br#"{"event":"meeting.started","n":1}"#
        );
        assert!(wire_body(BODY_COMPACT, b"{").is_err());
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
