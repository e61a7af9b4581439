//! Subscriptions as the API shows them: the same shape a client writes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::common::{format_duration, time, time_opt};
use crate::store::deliveries::{self, DeliveryCounts};

/// An outbound subscription.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Subscription {
    pub id: String,
    /// `webhook` or `email`.
    pub kind: String,
    /// Where webhooks go; `null` for `email`.
    pub url: Option<String>,
    /// Event patterns, e.g. `["meeting.*", "user.created"]`.
    pub events: Vec<String>,
    /// `standard` (Standard Webhooks) or `zoom` (`x-zm-signature`).
    pub scheme: String,
    /// `raw` (the body as received) or `compact` (`zoom` only).
    pub body_format: String,
    /// Extra headers sent with every delivery.
    pub headers: BTreeMap<String, String>,
    /// How long an attempt may take, e.g. `10s`.
    pub timeout: String,
    /// Requests in flight to the endpoint at once.
    pub max_in_flight: i64,
    /// Deliveries per second; `null` for no limit.
    pub rate_limit: Option<i64>,
    /// `none` or `entity` (events of one entity delivered in log order).
    pub ordering: String,
    pub https_only: bool,
    pub enabled: bool,
    /// Why it was disabled (by a person or by zoomhook), when it is.
    pub disabled_reason: Option<String>,
    /// Since when every delivery has failed, while they do.
    pub failing_since: Option<String>,
    /// The email settings of an `email` subscription; `null` for `webhook`.
    pub email: Option<Email>,
    pub description: String,
    /// Until when the previous secret still signs, during a rotation.
    pub previous_secret_expires_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Its deliveries by status.
    pub delivery_counts: Counts,
    /// The secret zoomhook generated, only in the answer to the create or rotation that made it.
    pub secret: Option<String>,
}

/// An email subscription's settings (`{{payload.object.host_email}}` and the like are filled from
/// the event).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Email {
    /// Recipients, comma-separated.
    pub to: Option<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
}

/// Deliveries of one subscription by status.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Counts {
    pub pending: i64,
    pub delivering: i64,
    pub succeeded: i64,
    pub failed: i64,
}

/// A subscription's signing secrets (`GET /subscriptions/{id}/secret`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Secrets {
    /// `null` for email subscriptions, which are not signed.
    pub secret: Option<String>,
    /// The secret that still signs during a rotation.
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<String>,
}

impl Subscription {
    /// The view of a stored subscription; `secret` only when it should be handed out.
    pub fn from_row(
        sub: deliveries::Subscription,
        counts: DeliveryCounts,
        secret: Option<String>,
    ) -> Subscription {
        let email = sub.kind == "email";
        let headers: BTreeMap<String, String> =
            serde_json::from_str(&sub.headers).unwrap_or_default();
        Subscription {
            url: (!email).then(|| sub.url.clone()),
            events: sub.events.split(',').map(str::to_owned).collect(),
            headers,
            timeout: format_duration(sub.timeout_ms),
            failing_since: time_opt(sub.failing_since),
            email: email.then(|| Email {
                to: sub.email_to.clone(),
                subject: sub.email_subject.clone(),
                body: sub.email_body.clone(),
            }),
            previous_secret_expires_at: active_rotation(&sub).map(time),
            created_at: time(sub.created_at),
            updated_at: time(sub.updated_at),
            delivery_counts: Counts {
                pending: counts.pending,
                delivering: counts.delivering,
                succeeded: counts.succeeded,
                failed: counts.failed,
            },
            secret,
            id: sub.id,
            kind: sub.kind,
            scheme: sub.scheme,
            body_format: sub.body_format,
            max_in_flight: sub.max_in_flight,
            rate_limit: sub.rate_limit,
            ordering: sub.ordering,
            https_only: sub.https_only,
            enabled: sub.enabled,
            disabled_reason: sub.disabled_reason,
            description: sub.description,
        }
    }
}

/// When the previous secret stops signing, if it still signs now.
fn active_rotation(sub: &deliveries::Subscription) -> Option<i64> {
    let now = crate::core::clock::now_millis();
    sub.previous_secret
        .as_ref()
        .and(sub.previous_until)
        .filter(|until| *until > now)
}

impl Secrets {
    /// The secrets of a stored subscription.
    pub fn of(sub: &deliveries::Subscription) -> Secrets {
        let signed = sub.kind != "email";
        let until = active_rotation(sub);
        Secrets {
            secret: signed.then(|| sub.secret.clone()),
            previous_secret: until.and(sub.previous_secret.clone()).filter(|_| signed),
            previous_secret_expires_at: until.filter(|_| signed).map(time),
        }
    }
}
