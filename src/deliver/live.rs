//! A subscription as fan-out and the workers hold it: the stored row parsed once, when it is
//! (re)loaded, into what the hot path needs — the patterns, the kind, scheme, ordering and body
//! format as enums, the custom headers as a header map, the destination URL checked against the
//! SSRF policy, and the scrubber for its attempt records.
//!
//! The stored representation ([`Subscription`]: strings, as the API and the store keep it) is
//! unchanged; this is a view of it. Parsing per fan-out batch and per attempt cost more than the
//! attempt's own signing, and a typed value cannot hold a scheme the signer does not know.

use hyper::Uri;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};

use super::http::request_uri;
use super::redact::Scrubber;
use super::signing;
use super::ssrf::SsrfPolicy;
use crate::core::pattern::EventPattern;
use crate::store::deliveries::Subscription;

/// Where a subscription's deliveries go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Webhook,
    Email,
}

/// How a webhook is signed (see [`signing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    Standard,
    /// Zoom's own `x-zm-signature`.
    Zoom,
}

/// In which order deliveries may be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ordering {
    /// Any order, as many at once as `max_in_flight` allows.
    None,
    /// One at a time per entity, in log order.
    Entity,
}

/// Which bytes a webhook carries (see [`signing::wire_body`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Raw,
    Compact,
}

/// A subscription parsed for delivery.
#[derive(Debug, Clone)]
pub struct LiveSubscription {
    /// The row as stored: ids, secrets, limits and the email templates are read from it.
    pub stored: Subscription,
    pub kind: Kind,
    pub scheme: Scheme,
    pub ordering: Ordering,
    pub body_format: BodyFormat,
    /// The event patterns; none (an unparsable stored list) matches nothing.
    pub patterns: Vec<EventPattern>,
    /// The custom headers, validated when the subscription was written.
    pub headers: HeaderMap,
    /// The destination, or why it cannot be sent to (checked against the SSRF policy's static
    /// rules once; the resolved address is still checked on every connection).
    pub url: Result<Uri, String>,
    /// Removes this subscription's credentials from attempt errors and excerpts.
    pub scrubber: Scrubber,
}

impl LiveSubscription {
    /// Parses `stored` for delivery under `policy`, with `smtp_url` (whose credentials the
    /// scrubber of an email subscription removes too).
    pub fn load(stored: Subscription, policy: &SsrfPolicy, smtp_url: Option<&str>) -> Self {
        let kind = match stored.kind.as_str() {
            "email" => Kind::Email,
            _ => Kind::Webhook,
        };
        let scheme = match stored.scheme.as_str() {
            "zoom" => Scheme::Zoom,
            _ => Scheme::Standard,
        };
        let ordering = match stored.ordering.as_str() {
            "entity" => Ordering::Entity,
            _ => Ordering::None,
        };
        let body_format = match stored.body_format.as_str() {
            signing::BODY_COMPACT => BodyFormat::Compact,
            _ => BodyFormat::Raw,
        };
        let patterns = EventPattern::parse_list(&stored.events).unwrap_or_default();
        let header_pairs = header_pairs(&stored.headers);
        let mut headers = HeaderMap::with_capacity(header_pairs.len());
        for (name, value) in &header_pairs {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.append(name, value);
            }
        }
        let url = match kind {
            Kind::Email => Err("an email subscription has no URL".to_owned()),
            Kind::Webhook => reqwest::Url::parse(&stored.url)
                .map_err(|e| format!("invalid URL: {e}"))
                .and_then(|url| {
                    request_uri(&url, &policy.clone().with_https_only(stored.https_only))
                }),
        };
        let scrubber = scrubber(&stored, kind, &header_pairs, smtp_url);
        LiveSubscription {
            kind,
            scheme,
            ordering,
            body_format,
            patterns,
            headers,
            url,
            scrubber,
            stored,
        }
    }

    /// The subscription's id.
    pub fn id(&self) -> &str {
        &self.stored.id
    }

    /// Whether an event named `event` is one this subscription receives.
    pub fn wants(&self, event: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(event))
    }

    /// The scheme's name as [`signing::headers`] takes it.
    pub fn scheme_name(&self) -> &'static str {
        match self.scheme {
            Scheme::Standard => "standard",
            Scheme::Zoom => "zoom",
        }
    }

    /// The body format's name as [`signing::wire_body`] takes it.
    pub fn body_format_name(&self) -> &'static str {
        match self.body_format {
            BodyFormat::Raw => signing::BODY_RAW,
            BodyFormat::Compact => signing::BODY_COMPACT,
        }
    }
}

/// The custom headers of a stored subscription (a JSON object of strings), in order.
fn header_pairs(json: &str) -> Vec<(String, String)> {
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .filter_map(|(name, value)| value.as_str().map(|v| (name, v.to_owned())))
            .collect(),
        _ => Vec::new(),
    }
}

/// What must never appear in the records of a subscription's attempts: its URL's credentials
/// (query, user info, path), its secrets, its custom header values and, for email, the SMTP
/// URL's.
fn scrubber(
    sub: &Subscription,
    kind: Kind,
    headers: &[(String, String)],
    smtp_url: Option<&str>,
) -> Scrubber {
    let smtp = match kind {
        Kind::Email => smtp_url,
        Kind::Webhook => None,
    };
    // Custom header values are where users put credentials (`Authorization: Bearer …`); an
    // endpoint's error page may echo them back, whole or only the token after the scheme.
    let header_values: Vec<&str> = headers
        .iter()
        .flat_map(|(_, v)| [v.as_str(), v.rsplit(' ').next().unwrap_or(v)])
        .collect();
    let secrets = std::iter::once(sub.secret.as_str())
        .chain(sub.previous_secret.as_deref())
        .chain(header_values);
    Scrubber::new(std::iter::once(sub.url.as_str()).chain(smtp), secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> Subscription {
        let policy = SsrfPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let input = serde_json::from_value(serde_json::json!({
            "url": "http://127.0.0.1:9/hook?token=abcdef123456",
            "events": "meeting.*, *.deleted",
            "scheme": "zoom",
            "ordering": "entity",
            "headers": {"Authorization": "Bearer tok_secret_value", "X-Team": "crm"},
        }))
        .unwrap();
        super::super::subscription::create(input, &policy, 0).unwrap()
    }

    #[test]
    fn a_stored_subscription_is_parsed_into_typed_fields_once() {
        let policy = SsrfPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let live = LiveSubscription::load(stored(), &policy, None);
        assert_eq!(live.kind, Kind::Webhook);
        assert_eq!(live.scheme, Scheme::Zoom);
        assert_eq!(live.ordering, Ordering::Entity);
        assert_eq!(live.body_format, BodyFormat::Raw);
        assert!(live.wants("meeting.started"));
        assert!(live.wants("recording.deleted"));
        assert!(!live.wants("user.created"));
        assert_eq!(
            live.headers.get("x-team").map(|v| v.as_bytes()),
            Some(&b"crm"[..])
        );
        assert!(live.url.is_ok());
        let scrubbed = live
            .scrubber
            .scrub("echo: Bearer tok_secret_value at /hook?token=abcdef123456");
        assert!(!scrubbed.contains("tok_secret_value"), "{scrubbed}");
        assert!(!scrubbed.contains("abcdef123456"), "{scrubbed}");
    }

    #[test]
    fn a_destination_the_policy_refuses_is_an_error_of_every_attempt_not_a_panic() {
        let live = LiveSubscription::load(stored(), &SsrfPolicy::new(Vec::new()), None);
        assert!(live.url.is_err());
        let mut broken = stored();
        broken.url = "not a url\0".into();
        broken.headers = "{not json".into();
        broken.events = "bad pattern!".into();
        let live = LiveSubscription::load(broken, &SsrfPolicy::new(Vec::new()), None);
        assert!(live.url.as_ref().is_err_and(|e| e.contains("invalid URL")));
        assert!(live.headers.is_empty());
        assert!(!live.wants("meeting.started"));
    }
}
