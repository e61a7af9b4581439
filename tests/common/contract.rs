//! Helpers of the store contract suites: events as the receiver would store them, and a stored
//! subscription.

use bytes::Bytes;
use zoomhook::store::NewEvent;
use zoomhook::zoom::envelope::Envelope;

/// The default dedupe window of the contract cases.
pub const WEEK_MS: i64 = 7 * 24 * 3600 * 1000;

/// `body` as the receiver stores it, received at `received_at`.
pub fn new_event(body: &[u8], request_id: Option<&str>, received_at: i64) -> NewEvent {
    let env = Envelope::parse(body).expect("a valid envelope");
    NewEvent::from_envelope(
        &env,
        "zoom",
        Bytes::copy_from_slice(body),
        request_id.map(Into::into),
        received_at,
    )
}

/// A `meeting.updated` of meeting `meeting`, the `n`th of its kind (distinct `event_ts`).
pub fn meeting_event(meeting: i64, n: i64) -> NewEvent {
    let body = format!(
        r#"{{"event":"meeting.updated","event_ts":{},"payload":{{"account_id":"A","object":{{"id":{meeting},"topic":"v{n}"}}}}}}"#,
        1_700_000_000_000i64 + n
    );
    new_event(body.as_bytes(), None, 1)
}

/// A webhook subscription to every event, created at time 0 and stored.
pub async fn stored_subscription(
    store: &dyn zoomhook::store::EventStore,
) -> zoomhook::store::deliveries::Subscription {
    stored_subscription_ordered(store, "none").await
}

/// [`stored_subscription`] with `ordering` (`none` or `entity`).
pub async fn stored_subscription_ordered(
    store: &dyn zoomhook::store::EventStore,
    ordering: &str,
) -> zoomhook::store::deliveries::Subscription {
    use zoomhook::deliver::{ssrf, subscription};
    let policy = ssrf::SsrfPolicy::new(ssrf::parse_allow_list("127.0.0.0/8").unwrap());
    let input = subscription::SubscriptionInput {
        url: Some("http://127.0.0.1:9/hook".into()),
        events: Some(serde_json::json!("*")),
        ordering: Some(ordering.into()),
        ..Default::default()
    };
    let sub = subscription::create(input, &policy, 0).unwrap();
    store.insert_subscription(&sub).await.unwrap();
    sub
}

/// A claim of up to 10 deliveries of `subscription_id` at `now`, leased for a second.
pub async fn claim_for(
    store: &dyn zoomhook::store::EventStore,
    subscription_id: &str,
    entity_order: bool,
    now: i64,
) -> Vec<zoomhook::store::deliveries::Claimed> {
    store
        .claim(&zoomhook::store::deliveries::ClaimRequest {
            subscription_id,
            entity_order,
            limit: 10,
            max_in_flight: 10,
            rate_limit: None,
            now,
            lease_until: now + 1_000,
        })
        .await
        .unwrap()
}
