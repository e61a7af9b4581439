//! The delivery workers: claim due deliveries per subscription (within its max in-flight and rate
//! limit), send them, and record every attempt.
//!
//! - The **dispatcher** loops over enabled subscriptions and claims what each may start now. A
//!   claim is a lease: a delivery being sent is `delivering` until its lease ends, so a crashed
//!   worker's deliveries are taken up again, and another instance never takes them meanwhile.
//! - Each claimed delivery is sent by its own task ([`send`]): the original body, verbatim, signed
//!   for this attempt, with the same `webhook-id` as every other attempt.
//! - Outcomes go to the **completion writer**, which records them in batches (one transaction for
//!   many attempts). A subscription's slot is freed only once its outcome is stored, so with
//!   `ordering = "entity"` the next event of an entity is claimable only after the previous one
//!   is recorded as done.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, watch};

use super::email::EmailSender;
use super::redact::{Scrubber, redacted_url};
use super::retry::{self, Verdict};
use super::signing;
use super::ssrf::SsrfPolicy;
use super::subscription::signing_secrets;
use crate::config::DeliveryConfig;
use crate::core::clock::now_millis;
use crate::store::EventStore;
use crate::store::deliveries::{Attempt, ClaimRequest, Claimed, Completion, Next, Subscription};
use crate::store::group_commit::EventAppender;

/// Bytes of a response body kept with an attempt.
pub const EXCERPT_BYTES: usize = 1024;
/// The `user-agent` of deliveries.
pub const USER_AGENT: &str = concat!("zoomhook/", env!("CARGO_PKG_VERSION"));
/// Largest number of deliveries claimed for one subscription at a time.
const MAX_CLAIM: i64 = 256;
/// Extra lease time beyond the subscription's timeout.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// How often the queue depth and age gauges are refreshed (a count over every open delivery, so
/// not on every pass of the dispatcher).
const STATS_EVERY: Duration = Duration::from_secs(10);

/// How often finished deliveries past the retention are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// How often subscriptions are re-read (changes by the API or another instance).
const REFRESH: Duration = Duration::from_secs(1);

/// Everything the workers share.
pub struct Deliverer {
    pub store: Arc<dyn EventStore>,
    pub config: DeliveryConfig,
    pub http: reqwest::Client,
    pub policy: Arc<SsrfPolicy>,
    pub email: Option<EmailSender>,
    /// For operational events (a subscription disabled automatically).
    pub appender: Option<EventAppender>,
}

/// Per-subscription in-memory state of the dispatcher.
#[derive(Default)]
struct Slot {
    in_flight: Arc<AtomicI64>,
    /// Token bucket for the rate limit: tokens and when they were last topped up.
    tokens: f64,
    refilled: Option<Instant>,
}

impl Slot {
    fn allowance(&mut self, sub: &Subscription) -> i64 {
        let free = sub.max_in_flight - self.in_flight.load(Ordering::Acquire);
        let Some(rate) = sub.rate_limit else {
            return free.min(MAX_CLAIM);
        };
        let now = Instant::now();
        let elapsed = self
            .refilled
            .map_or(1.0, |t| now.duration_since(t).as_secs_f64());
        self.tokens = (self.tokens + elapsed * rate as f64).min(rate as f64);
        self.refilled = Some(now);
        free.min(self.tokens.floor() as i64).min(MAX_CLAIM)
    }

    fn spend(&mut self, n: usize) {
        self.tokens = (self.tokens - n as f64).max(0.0);
    }
}

/// Runs the dispatcher and the completion writer until shutdown. `queued` is woken by fan-out,
/// replays and manual retries.
pub async fn run(
    deliverer: Arc<Deliverer>,
    queued: Arc<Notify>,
    mut changed: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (done_tx, done_rx) = mpsc::channel::<(Completion, Arc<AtomicI64>)>(4096);
    let freed = Arc::new(Notify::new());
    let writer = crate::metrics::spawn(write_completions(
        Arc::clone(&deliverer),
        done_rx,
        Arc::clone(&freed),
    ));
    let mut slots: HashMap<String, Slot> = HashMap::new();
    let mut subscriptions: Vec<Subscription> = Vec::new();
    let mut refreshed: Option<Instant> = None;
    let mut purged: Option<Instant> = None;
    let mut counted: Option<Instant> = None;
    while !*shutdown.borrow() {
        let written = changed.has_changed().unwrap_or(false);
        if written || refreshed.is_none_or(|t| t.elapsed() >= REFRESH) {
            changed.borrow_and_update();
            match deliverer.store.list_subscriptions().await {
                Ok(subs) => {
                    subscriptions = subs;
                    refreshed = Some(Instant::now());
                    auto_disable(&deliverer, &mut subscriptions).await;
                    if purged.is_none_or(|t| t.elapsed() >= PURGE_EVERY) {
                        purged = Some(Instant::now());
                        purge_finished(&deliverer).await;
                    }
                    if counted.is_none_or(|t| t.elapsed() >= STATS_EVERY) {
                        counted = Some(Instant::now());
                        record_queue_stats(&deliverer).await;
                    }
                }
                Err(error) => {
                    // Claiming with what may be outdated settings (a rotated secret, a new URL)
                    // is worse than waiting: retry the read before the next claim.
                    tracing::warn!(%error, "cannot read subscriptions; retrying");
                    refreshed = None;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
            }
        }
        let mut claimed_any = false;
        let mut saturated = false;
        for sub in subscriptions.iter().filter(|s| s.enabled) {
            let slot = slots.entry(sub.id.clone()).or_default();
            let allowance = slot.allowance(sub);
            if allowance <= 0 {
                continue;
            }
            let now = now_millis();
            let lease = now + sub.timeout_ms + LEASE_MARGIN.as_millis() as i64;
            let claimed = match deliverer
                .store
                .claim(&ClaimRequest {
                    subscription_id: &sub.id,
                    entity_order: sub.ordering == "entity",
                    limit: allowance,
                    max_in_flight: sub.max_in_flight,
                    rate_limit: sub.rate_limit,
                    now,
                    lease_until: lease,
                })
                .await
            {
                Ok(c) => c,
                Err(error) => {
                    tracing::warn!(%error, subscription = %sub.id, "claim failed");
                    continue;
                }
            };
            if claimed.is_empty() {
                continue;
            }
            claimed_any = true;
            saturated |= claimed.len() as i64 == allowance;
            slot.spend(claimed.len());
            // A subscription written since the last read (a rotated secret, new headers) must
            // not send what was claimed just now with the old settings.
            // If it cannot be read again, the claimed deliveries are left to their lease and
            // claimed afresh once it expires (a deleted subscription took them with it).
            let sub = if changed.has_changed().unwrap_or(false) {
                match deliverer.store.get_subscription(&sub.id).await {
                    Ok(Some(fresh)) => fresh,
                    Ok(None) => continue,
                    Err(error) => {
                        tracing::warn!(%error, subscription = %sub.id, "cannot re-read a changed subscription; its claim waits for the lease");
                        continue;
                    }
                }
            } else {
                sub.clone()
            };
            for delivery in claimed {
                slot.in_flight.fetch_add(1, Ordering::AcqRel);
                let (deliverer, sub, done, in_flight) = (
                    Arc::clone(&deliverer),
                    sub.clone(),
                    done_tx.clone(),
                    Arc::clone(&slot.in_flight),
                );
                crate::metrics::spawn(async move {
                    let completion = send(&deliverer, &sub, delivery, lease).await;
                    // The writer frees the slot once the outcome is stored.
                    let _ = done.send((completion, in_flight)).await;
                });
            }
        }
        if claimed_any && saturated {
            tokio::task::yield_now().await;
            continue;
        }
        // Wait for new deliveries, a freed slot, a subscription write, the next due retry
        // (polled), or shutdown.
        tokio::select! {
            _ = queued.notified() => {}
            // `changed()` marks the write as seen, so force the re-read here.
            Ok(()) = changed.changed() => refreshed = None,
            _ = freed.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(if claimed_any { 5 } else { 200 })) => {}
            _ = shutdown.changed() => {}
        }
    }
    drop(done_tx);
    // Deliveries in flight finish and are recorded; anything cut off keeps its lease and is
    // taken up again after it expires.
    let _ = tokio::time::timeout(Duration::from_secs(15), writer).await;
}

/// Records outcomes in batches, then frees their slots.
async fn write_completions(
    deliverer: Arc<Deliverer>,
    mut rx: mpsc::Receiver<(Completion, Arc<AtomicI64>)>,
    freed: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(512);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let completions: Vec<Completion> = batch.iter().map(|(c, _)| c.clone()).collect();
        let mut backoff = Duration::from_millis(50);
        loop {
            match deliverer
                .store
                .complete(completions.clone(), now_millis())
                .await
            {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%error, batch = completions.len(), "cannot record delivery outcomes; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        for (completion, in_flight) in batch.drain(..) {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            let outcome = match completion.next {
                Next::Succeeded => "succeeded",
                Next::Retry(_) => "retry",
                Next::Failed => "failed",
            };
            metrics::counter!("zoomhook_deliveries_total", "subscription" => completion.subscription_id.clone(), "outcome" => outcome)
                .increment(1);
        }
        freed.notify_one();
    }
}

/// Performs one attempt of `claimed` and says what follows.
pub async fn send(
    deliverer: &Deliverer,
    sub: &Subscription,
    claimed: Claimed,
    lease_until: i64,
) -> Completion {
    let started_at = now_millis();
    let clock = Instant::now();
    let attempt_no = claimed.delivery.attempts + 1;
    let attempt = async {
        match sub.kind.as_str() {
            "email" => match &deliverer.email {
                Some(email) => email.send(sub, &claimed).await.map(|()| (250, None, None)),
                None => Err("no SMTP server configured (set ZOOMHOOK_SMTP_URL)".to_owned()),
            },
            _ => send_webhook(deliverer, sub, &claimed, started_at).await,
        }
    };
    // One bound for the whole attempt (an SMTP server can be slow at every step), well inside
    // the lease.
    let limit = Duration::from_millis(sub.timeout_ms.max(1) as u64);
    let result = tokio::time::timeout(limit, attempt)
        .await
        .unwrap_or_else(|_| Err("timed out".to_owned()));
    let duration_ms = clock.elapsed().as_millis() as i64;
    metrics::histogram!("zoomhook_delivery_attempt_seconds").record(clock.elapsed().as_secs_f64());
    // Errors and excerpts are stored and shown through the API: no credential of the
    // destination (or of the SMTP server) may survive in them, however it is spelled there.
    let scrubber = scrubber(deliverer, sub);
    let (status_code, excerpt, error, verdict) = match result {
        Ok((status, retry_after, excerpt)) => {
            let verdict = if sub.kind == "email" {
                Verdict::Success
            } else {
                retry::classify(status, retry_after.as_deref())
            };
            let error = match &verdict {
                Verdict::Success => None,
                Verdict::Gone => Some("410 Gone: the subscription is disabled".to_owned()),
                Verdict::Retry { .. } if (300..400).contains(&status) => {
                    Some(format!("redirect ({status}) not followed"))
                }
                Verdict::Retry { .. } => Some(format!("HTTP {status}")),
            };
            (
                Some(i64::from(status)),
                excerpt.map(|e| text_safe(&scrubber.scrub(&e))),
                error,
                verdict,
            )
        }
        Err(error) => (
            None,
            None,
            Some(text_safe(&scrubber.scrub(&error))),
            Verdict::Retry { retry_after: None },
        ),
    };
    let now = now_millis();
    let (next, disable) = match verdict {
        Verdict::Success => (Next::Succeeded, None),
        Verdict::Gone => (
            Next::Failed,
            Some("the endpoint answered 410 Gone".to_owned()),
        ),
        Verdict::Retry { retry_after } => {
            let unit: f64 = rand::random();
            match retry::next_attempt(
                &deliverer.config.retry_schedule,
                attempt_no - claimed.delivery.schedule_base,
                retry_after,
                now,
                unit,
            ) {
                Some(at) => (Next::Retry(at), None),
                None => (Next::Failed, None),
            }
        }
    };
    Completion {
        attempt: Attempt {
            delivery_id: claimed.delivery.id.clone(),
            attempt: attempt_no,
            started_at,
            duration_ms,
            status_code,
            response_excerpt: excerpt,
            error,
        },
        subscription_id: sub.id.clone(),
        lease_until,
        next,
        disable,
    }
}

/// What must never appear in the records of `sub`'s attempts: its URL's credentials (query,
/// user info, path), its secrets, its custom header values and, for email, the SMTP URL's.
fn scrubber(deliverer: &Deliverer, sub: &Subscription) -> Scrubber {
    let smtp = match sub.kind.as_str() {
        "email" => deliverer.config.smtp_url.as_ref().map(|u| u.expose()),
        _ => None,
    };
    // Custom header values are where users put credentials (`Authorization: Bearer …`); an
    // endpoint's error page may echo them back.
    let header_values: Vec<String> = serde_json::from_str::<serde_json::Value>(&sub.headers)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .map(|map| {
            map.values()
                .filter_map(|v| v.as_str())
                .flat_map(|v| [v.to_owned(), v.rsplit(' ').next().unwrap_or(v).to_owned()])
                .collect()
        })
        .unwrap_or_default();
    let secrets = std::iter::once(sub.secret.as_str())
        .chain(sub.previous_secret.as_deref())
        .chain(header_values.iter().map(String::as_str));
    Scrubber::new(std::iter::once(sub.url.as_str()).chain(smtp), secrets)
}

/// Text PostgreSQL can store: no NUL characters (a binary response body would otherwise make the
/// outcome unrecordable).
fn text_safe(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// Status, `Retry-After` and a bounded excerpt of the answer; or the error.
type WebhookResult = Result<(u16, Option<String>, Option<String>), String>;

async fn send_webhook(
    deliverer: &Deliverer,
    sub: &Subscription,
    claimed: &Claimed,
    now: i64,
) -> WebhookResult {
    let url = reqwest::Url::parse(&sub.url).map_err(|e| format!("invalid URL: {e}"))?;
    let policy = deliverer
        .policy
        .as_ref()
        .clone()
        .with_https_only(sub.https_only);
    policy.check_url(&url).map_err(|e| e.to_string())?;
    let timestamp = now / 1000;
    let secrets = signing_secrets(sub, now);
    let body = signing::wire_body(&sub.body_format, &claimed.body).map_err(|e| e.to_string())?;
    let mut request = deliverer
        .http
        .post(url)
        .timeout(Duration::from_millis(sub.timeout_ms.max(1) as u64))
        .header("content-type", "application/json")
        .header("user-agent", USER_AGENT);
    for (name, value) in
        signing::headers(&sub.scheme, secrets, &claimed.delivery.id, timestamp, &body)
    {
        request = request.header(name, value);
    }
    if let Ok(serde_json::Value::Object(headers)) =
        serde_json::from_str::<serde_json::Value>(&sub.headers)
    {
        for (name, value) in headers {
            if let Some(value) = value.as_str() {
                request = request.header(name, value);
            }
        }
    }
    let mut response = request
        .body(body.into_owned())
        .send()
        .await
        .map_err(describe)?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut excerpt = Vec::new();
    while excerpt.len() < EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                excerpt.extend_from_slice(&chunk[..chunk.len().min(EXCERPT_BYTES - excerpt.len())])
            }
            _ => break,
        }
    }
    let excerpt = (!excerpt.is_empty()).then(|| String::from_utf8_lossy(&excerpt).into_owned());
    Ok((status, retry_after, excerpt))
}

/// An error with its causes, e.g. "error sending request: connection refused". reqwest's own
/// text names the URL (in its normalised spelling), so that is dropped first.
fn describe(error: reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".to_owned();
    }
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Disables subscriptions that have failed without a success for longer than configured, and
/// records that as an operational event in the log.
async fn auto_disable(deliverer: &Deliverer, subscriptions: &mut [Subscription]) {
    let now = now_millis();
    let limit = deliverer.config.disable_after.as_millis() as i64;
    for sub in subscriptions.iter_mut().filter(|s| s.enabled) {
        let Some(since) = sub.failing_since else {
            continue;
        };
        if now - since < limit {
            continue;
        }
        let reason = format!(
            "disabled automatically: every delivery failed since {} (more than {})",
            crate::core::clock::rfc3339(since),
            humantime::format_duration(deliverer.config.disable_after)
        );
        // One conditional statement: a concurrent re-enable, a success or another instance that
        // disabled it first all make this a no-op, and only the instance that disabled it records
        // the operational event.
        match deliverer
            .store
            .disable_failing(&sub.id, &reason, now, now - limit)
            .await
        {
            Ok(true) => {
                sub.enabled = false;
                sub.disabled_reason = Some(reason.clone());
            }
            Ok(false) => continue,
            Err(error) => {
                tracing::warn!(%error, subscription = %sub.id, "cannot disable failing subscription");
                continue;
            }
        }
        tracing::warn!(subscription = %sub.id, url = %redacted_url(&sub.url), %reason, "subscription disabled");
        if let Some(appender) = &deliverer.appender {
            let body = serde_json::json!({
                "event": "zoomhook.subscription.disabled",
                "event_ts": now,
                "payload": {"object": {"id": sub.id, "url": redacted_url(&sub.url), "reason": reason, "failing_since": since}},
            });
            if let Ok(envelope) =
                crate::zoom::envelope::Envelope::parse(body.to_string().as_bytes())
            {
                let event = crate::store::NewEvent::from_envelope(
                    &envelope,
                    "zoomhook",
                    bytes::Bytes::from(body.to_string()),
                    None,
                    now,
                );
                if let Err(error) = appender.append(event).await {
                    tracing::warn!(%error, "cannot record the operational event");
                }
            }
        }
    }
}

/// Deletes finished deliveries past the retention, a batch at a time so the writer is never held
/// for long.
async fn purge_finished(deliverer: &Deliverer) {
    let before = now_millis() - deliverer.config.retention.as_millis() as i64;
    let mut total = 0;
    loop {
        match deliverer.store.purge_deliveries(before, 1000).await {
            Ok(n) => {
                total += n;
                if n < 1000 {
                    break;
                }
                tokio::task::yield_now().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot purge old deliveries; will retry");
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(
            deleted = total,
            "purged finished deliveries past the retention"
        );
    }
}

async fn record_queue_stats(deliverer: &Deliverer) {
    if let Ok(stats) = deliverer.store.queue_stats().await {
        metrics::gauge!("zoomhook_delivery_queue_depth").set(stats.depth as f64);
        let age = stats
            .oldest_pending
            .map_or(0, |t| (now_millis() - t).max(0));
        metrics::gauge!("zoomhook_delivery_oldest_pending_seconds").set(age as f64 / 1000.0);
    }
}
