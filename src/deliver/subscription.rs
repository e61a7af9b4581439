//! Subscriptions as the API and CLI give them: validation of every field with a clear message,
//! defaults, secret generation or a secret the user gives, and rotation.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::http::request_uri;
use super::signing;
use super::ssrf::SsrfPolicy;
use crate::core::pattern::EventPattern;
use crate::store::deliveries::Subscription;

/// Defaults of a new subscription.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_IN_FLIGHT: i64 = 16;
/// How long the previous secret keeps signing after a rotation, unless told otherwise.
pub const DEFAULT_ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// Email settings of an `email` subscription.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailInput {
    /// Recipients, comma-separated; `{{payload.object.host_email}}` takes them from the event.
    pub to: Option<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
}

/// The fields of a create or update request (all optional for an update).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionInput {
    /// `webhook` (default) or `email`.
    #[schema(pattern = "^(webhook|email)$")]
    pub kind: Option<String>,
    /// Where webhooks go (`http://` or `https://`); not for `email`.
    #[schema(format = "uri")]
    pub url: Option<String>,
    /// Patterns as a list (or one comma-separated string).
    #[schema(value_type = Option<Vec<String>>)]
    pub events: Option<Value>,
    /// `standard` (default, Standard Webhooks) or `zoom` (`x-zm-signature`).
    #[schema(pattern = "^(standard|zoom)$")]
    pub scheme: Option<String>,
    /// A secret of the user's own instead of a generated one: the consumer's Zoom secret token
    /// (`zoom`), or an existing `whsec_…` secret (`standard`). On update only with
    /// `rotate_secret`, so every change of secret goes through the rotation overlap.
    pub secret: Option<String>,
    /// `raw` (default) or `compact` (`zoom` only): see [`signing::wire_body`].
    #[schema(pattern = "^(raw|compact)$")]
    pub body_format: Option<String>,
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>)]
    pub headers: Option<serde_json::Map<String, Value>>,
    /// A duration from `100ms` to `60s`, such as `10s`.
    #[schema(pattern = "^[0-9]+(ms|s|m|h)$")]
    pub timeout: Option<String>,
    /// Requests in flight to the endpoint at once, over every instance sharing the store.
    #[schema(minimum = 1, maximum = 256)]
    pub max_in_flight: Option<i64>,
    /// Deliveries per second, per instance; `0` removes the limit.
    #[schema(minimum = 0, maximum = 100000)]
    pub rate_limit: Option<i64>,
    /// `none` (default) or `entity`: the events of one entity in log order.
    #[schema(pattern = "^(none|entity)$")]
    pub ordering: Option<String>,
    pub https_only: Option<bool>,
    pub enabled: Option<bool>,
    pub description: Option<String>,
    pub email: Option<EmailInput>,
    /// Update only: make a new secret (or take `secret`); the old one keeps signing for
    /// `rotation_overlap` (beside the new one with `standard`, instead of it with `zoom`, whose
    /// header has one signature).
    pub rotate_secret: Option<bool>,
    /// How long the previous secret keeps signing (default 24h; up to 30 days).
    #[schema(pattern = "^[0-9]+(ms|s|m|h|d)$")]
    pub rotation_overlap: Option<String>,
}

/// A field that failed validation, and why.
#[derive(Debug, thiserror::Error)]
#[error("`{field}`: {message}")]
pub struct InvalidField {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidField {
    InvalidField {
        field,
        message: message.into(),
    }
}

/// Bounds on what a subscription may hold, so that one that is saved can also be sent: a URL
/// longer than HTTP clients accept, or thousands of headers, would only fail on every delivery.
pub mod limits {
    /// The longest URL (HTTP clients and servers commonly refuse beyond ~8 KiB).
    pub const URL_BYTES: usize = 2048;
    /// Event patterns per subscription, and the length of one.
    pub const PATTERNS: usize = 100;
    pub const PATTERN_BYTES: usize = 200;
    /// Custom headers, and their total size (names and values).
    pub const HEADERS: usize = 32;
    pub const HEADER_BYTES: usize = 8 * 1024;
    pub const DESCRIPTION_CHARS: usize = 1000;
    /// Recipients and subject of an email, and its body template.
    pub const EMAIL_LINE_BYTES: usize = 2000;
    pub const EMAIL_BODY_BYTES: usize = 64 * 1024;
}

/// Text that must fit in `max` bytes and hold no control character (a NUL cannot even be
/// stored by PostgreSQL); `multiline` allows line breaks and tabs.
fn plain_text(
    field: &'static str,
    text: &str,
    max: usize,
    multiline: bool,
) -> Result<(), InvalidField> {
    if text.len() > max {
        return Err(invalid(
            field,
            format!("must be at most {max} bytes (this one has {})", text.len()),
        ));
    }
    let allowed = |c: char| multiline && matches!(c, '\n' | '\r' | '\t');
    if text.chars().any(|c| c.is_control() && !allowed(c)) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// Headers zoomhook sets itself and a subscription may not override.
const RESERVED_HEADERS: &[&str] = &[
    "content-length",
    "host",
    "transfer-encoding",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-zm-signature",
    "x-zm-request-timestamp",
    "x-zm-request-id",
];

fn duration(
    field: &'static str,
    text: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, InvalidField> {
    let d = crate::config::parse_duration(text).ok_or_else(|| {
        invalid(
            field,
            format!("expected a duration such as 10s, got {text:?}"),
        )
    })?;
    if d < min || d > max {
        return Err(invalid(
            field,
            format!(
                "must be between {} and {}",
                crate::config::format_duration(min.as_millis() as i64),
                crate::config::format_duration(max.as_millis() as i64)
            ),
        ));
    }
    Ok(d)
}

/// Normalises the `events` field to a comma-separated list of valid patterns.
fn events(value: &Value) -> Result<String, InvalidField> {
    let list: Vec<String> = match value {
        Value::String(s) => s.split(',').map(|p| p.trim().to_owned()).collect(),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(|s| s.trim().to_owned()))
            .collect::<Option<_>>()
            .ok_or_else(|| invalid("events", "expected strings such as \"meeting.*\""))?,
        _ => {
            return Err(invalid(
                "events",
                "expected a list of patterns or a comma-separated string",
            ));
        }
    };
    let list: Vec<String> = list.into_iter().filter(|p| !p.is_empty()).collect();
    if list.len() > limits::PATTERNS || list.iter().any(|p| p.len() > limits::PATTERN_BYTES) {
        return Err(invalid(
            "events",
            format!(
                "at most {} patterns of {} bytes each",
                limits::PATTERNS,
                limits::PATTERN_BYTES
            ),
        ));
    }
    if list.is_empty() {
        return Err(invalid(
            "events",
            "give at least one pattern, e.g. \"*\" for every event",
        ));
    }
    EventPattern::parse_list(&list.join(",")).map_err(|e| invalid("events", e.to_string()))?;
    Ok(list.join(","))
}

/// Applies `input` to `sub` (a new one with defaults, or an existing one), validating each field.
pub fn apply(
    sub: &mut Subscription,
    input: SubscriptionInput,
    policy: &SsrfPolicy,
    now: i64,
) -> Result<(), InvalidField> {
    if let Some(kind) = input.kind {
        if !matches!(kind.as_str(), "webhook" | "email") {
            return Err(invalid("kind", "must be webhook or email"));
        }
        sub.kind = kind;
    }
    if let Some(url) = input.url {
        plain_text("url", &url, limits::URL_BYTES, false)?;
        sub.url = url;
    }
    if let Some(value) = &input.events {
        sub.events = events(value)?;
    }
    if let Some(scheme) = input.scheme {
        if !matches!(scheme.as_str(), "standard" | "zoom") {
            return Err(invalid(
                "scheme",
                "must be standard (Standard Webhooks) or zoom (x-zm-signature)",
            ));
        }
        sub.scheme = scheme;
    }
    if let Some(format) = input.body_format {
        if !matches!(format.as_str(), signing::BODY_RAW | signing::BODY_COMPACT) {
            return Err(invalid(
                "body_format",
                "must be raw (the body as Zoom sent it) or compact (as JSON.stringify(JSON.parse(body)) writes it)",
            ));
        }
        sub.body_format = format;
    }
    // `create` takes a given secret out of the input first, so here it is an update's.
    if input.secret.is_some() && input.rotate_secret != Some(true) {
        return Err(invalid(
            "secret",
            "a subscription's secret changes by rotation: give it with \"rotate_secret\": true (\"rotation_overlap\": \"0s\" switches at once)",
        ));
    }
    if let Some(headers) = input.headers {
        let size: usize = headers
            .iter()
            .map(|(name, value)| name.len() + value.as_str().map_or(0, str::len))
            .sum();
        if headers.len() > limits::HEADERS || size > limits::HEADER_BYTES {
            return Err(invalid(
                "headers",
                format!(
                    "at most {} headers of {} bytes in all",
                    limits::HEADERS,
                    limits::HEADER_BYTES
                ),
            ));
        }
        for (name, value) in &headers {
            let lower = name.to_ascii_lowercase();
            if RESERVED_HEADERS.contains(&lower.as_str()) {
                return Err(invalid("headers", format!("{name} is set by zoomhook")));
            }
            if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(invalid(
                    "headers",
                    format!("{name:?} is not a valid header name"),
                ));
            }
            let ok = value
                .as_str()
                .is_some_and(|v| axum::http::HeaderValue::from_str(v).is_ok());
            if !ok {
                return Err(invalid(
                    "headers",
                    format!("the value of {name} must be a valid header string"),
                ));
            }
        }
        sub.headers = Value::Object(headers).to_string();
    }
    if let Some(timeout) = input.timeout {
        let d = duration(
            "timeout",
            &timeout,
            Duration::from_millis(100),
            Duration::from_secs(60),
        )?;
        sub.timeout_ms = d.as_millis() as i64;
    }
    if let Some(n) = input.max_in_flight {
        if !(1..=256).contains(&n) {
            return Err(invalid("max_in_flight", "must be between 1 and 256"));
        }
        sub.max_in_flight = n;
    }
    if let Some(n) = input.rate_limit {
        if !(0..=100_000).contains(&n) {
            return Err(invalid(
                "rate_limit",
                "must be between 0 (no limit) and 100000 per second",
            ));
        }
        sub.rate_limit = (n > 0).then_some(n);
    }
    if let Some(ordering) = input.ordering {
        if !matches!(ordering.as_str(), "none" | "entity") {
            return Err(invalid("ordering", "must be none or entity"));
        }
        sub.ordering = ordering;
    }
    if let Some(https_only) = input.https_only {
        sub.https_only = https_only;
    }
    if let Some(enabled) = input.enabled {
        if enabled && !sub.enabled {
            sub.disabled_reason = None;
            sub.failing_since = None;
        }
        sub.enabled = enabled;
    }
    if let Some(description) = input.description {
        if description.chars().count() > limits::DESCRIPTION_CHARS {
            return Err(invalid(
                "description",
                format!("must be at most {} characters", limits::DESCRIPTION_CHARS),
            ));
        }
        plain_text("description", &description, usize::MAX, true)?;
        sub.description = description;
    }
    if let Some(email) = &input.email {
        if sub.kind != "email" {
            return Err(invalid(
                "email",
                "email settings are for \"kind\": \"email\" subscriptions",
            ));
        }
        for (field, text, max, multiline) in [
            ("email.to", &email.to, limits::EMAIL_LINE_BYTES, false),
            (
                "email.subject",
                &email.subject,
                limits::EMAIL_LINE_BYTES,
                false,
            ),
            ("email.body", &email.body, limits::EMAIL_BODY_BYTES, true),
        ] {
            if let Some(text) = text {
                plain_text(field, text, max, multiline)?;
            }
        }
    }
    if let Some(email) = input.email {
        sub.email_to = email.to.or(sub.email_to.take());
        sub.email_subject = email.subject.or(sub.email_subject.take());
        sub.email_body = email.body.or(sub.email_body.take());
    }
    if input.rotate_secret == Some(true) {
        let overlap = match &input.rotation_overlap {
            Some(text) => duration(
                "rotation_overlap",
                text,
                Duration::ZERO,
                Duration::from_secs(30 * 86_400),
            )?,
            None => DEFAULT_ROTATION_OVERLAP,
        };
        let new_secret = input.secret.clone().unwrap_or_else(signing::new_secret);
        let replaced = std::mem::replace(&mut sub.secret, new_secret);
        // The `zoom` scheme signs with one secret: during an overlap, the previous one. Rotating
        // again within it must keep that one (the secret the consumer verifies with) rather than
        // the intermediate secret that never signed anything.
        let zoom_overlap_active = sub.scheme == "zoom"
            && sub.previous_secret.is_some()
            && sub.previous_until.is_some_and(|until| now < until);
        if !zoom_overlap_active {
            sub.previous_secret = Some(replaced);
        }
        sub.previous_until = Some(now + overlap.as_millis() as i64);
    }
    validate(sub, policy)?;
    sub.updated_at = now;
    Ok(())
}

/// Checks the fields that depend on each other.
fn validate(sub: &Subscription, policy: &SsrfPolicy) -> Result<(), InvalidField> {
    if sub.events.is_empty() {
        return Err(invalid(
            "events",
            "give at least one pattern, e.g. \"*\" for every event",
        ));
    }
    match sub.kind.as_str() {
        "email" => {
            if sub.email_to.as_deref().is_none_or(str::is_empty) {
                return Err(invalid(
                    "email.to",
                    "an email subscription needs recipients",
                ));
            }
        }
        _ => {
            // Checked on every change, not only when given: a secret given for `zoom` is not a
            // Standard Webhooks key, so switching such a subscription to `standard` must say so.
            signing::check_given_secret(&sub.scheme, &sub.secret).map_err(|message| {
                invalid(
                    "secret",
                    format!("for the {} scheme, the secret {message}", sub.scheme),
                )
            })?;
            if sub.body_format == signing::BODY_COMPACT && sub.scheme != "zoom" {
                return Err(invalid(
                    "body_format",
                    "compact is for the zoom scheme (consumers that verify over JSON.stringify(JSON.parse(body))); Standard Webhooks consumers verify the raw body",
                ));
            }
            let url = reqwest::Url::parse(&sub.url)
                .map_err(|e| invalid("url", format!("{:?} is not a URL: {e}", sub.url)))?;
            request_uri(&url, &policy.clone().with_https_only(sub.https_only))
                .map_err(|e| invalid("url", e))?;
        }
    }
    Ok(())
}

/// A new subscription from a create request.
pub fn create(
    mut input: SubscriptionInput,
    policy: &SsrfPolicy,
    now: i64,
) -> Result<Subscription, InvalidField> {
    if input.kind.as_deref() != Some("email") && input.url.is_none() {
        return Err(invalid("url", "required"));
    }
    if input.events.is_none() {
        return Err(invalid("events", "required, e.g. [\"meeting.*\"] or \"*\""));
    }
    let given_secret = input.secret.take();
    if given_secret.is_some() && input.kind.as_deref() == Some("email") {
        return Err(invalid(
            "secret",
            "an email subscription is not signed, so it takes no secret",
        ));
    }
    let mut sub = Subscription {
        id: crate::core::ids::new_id("sub"),
        kind: "webhook".into(),
        url: String::new(),
        events: String::new(),
        secret: given_secret.unwrap_or_else(signing::new_secret),
        previous_secret: None,
        previous_until: None,
        scheme: "standard".into(),
        body_format: signing::BODY_RAW.into(),
        headers: "{}".into(),
        timeout_ms: DEFAULT_TIMEOUT.as_millis() as i64,
        max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        rate_limit: None,
        ordering: "none".into(),
        https_only: false,
        enabled: true,
        disabled_reason: None,
        failing_since: None,
        email_to: None,
        email_subject: None,
        email_body: None,
        description: String::new(),
        created_at: now,
        updated_at: now,
        revision: 0,
    };
    if input.rotate_secret.is_some() {
        return Err(invalid("rotate_secret", "only on update"));
    }
    apply(&mut sub, input, policy, now)?;
    Ok(sub)
}

/// The secrets that may sign a delivery at `now` (epoch ms): the current one, and the previous
/// one until the rotation overlap ends. Which of them sign depends on the scheme (see
/// [`signing`]).
pub fn signing_secrets(sub: &Subscription, now: i64) -> signing::SigningSecrets<'_> {
    let previous = match (&sub.previous_secret, sub.previous_until) {
        (Some(previous), Some(until)) if now < until => Some(previous.as_str()),
        _ => None,
    };
    signing::SigningSecrets {
        current: &sub.secret,
        previous,
    }
}

/// The patterns of a subscription.
pub fn patterns(sub: &Subscription) -> Vec<EventPattern> {
    EventPattern::parse_list(&sub.events).unwrap_or_default()
}
