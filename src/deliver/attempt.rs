//! One delivery attempt: make it (the HTTP request or the email), then judge what the answer
//! means for the delivery — done, retried when, or given up — as a [`Completion`] for the store.
//!
//! Making and judging are apart so the judgement is a pure function of the answer.

use std::time::{Duration, Instant};

use hyper::header::{self, ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};

use super::live::{BodyFormat, Kind, LiveSubscription};
use super::retry::{self, Verdict};
use super::signing;
use super::subscription::signing_secrets;
use super::worker::Deliverer;
use crate::core::clock::now_millis;
use crate::store::deliveries::{Attempt, Claimed, Completion, Next};

/// Bytes of a response body kept with an attempt.
pub const EXCERPT_BYTES: usize = 1024;
/// The `user-agent` of deliveries.
pub const USER_AGENT: &str = concat!("zoomhook/", env!("CARGO_PKG_VERSION"));
/// The fixed header values of a webhook, checked when this is compiled.
const JSON_VALUE: HeaderValue = HeaderValue::from_static("application/json");
const USER_AGENT_VALUE: HeaderValue = HeaderValue::from_static(USER_AGENT);
/// `accept: */*`, as deliveries have always carried.
const ACCEPT_ANY: HeaderValue = HeaderValue::from_static("*/*");

/// What an attempt got back: status, `Retry-After` and a bounded excerpt of the answer; or the
/// error that kept it from getting an answer.
type Answer = Result<(u16, Option<String>, Option<String>), String>;

/// Performs one attempt of `claimed` for `sub` and says what follows. `lease_until` is the lease
/// the delivery was claimed under (the outcome is recorded only while it still holds).
pub async fn send(
    deliverer: &Deliverer,
    sub: &LiveSubscription,
    mut claimed: Claimed,
    lease_until: i64,
) -> Completion {
    let started_at = now_millis();
    let clock = Instant::now();
    // A webhook hands the stored body to the request as it is (no copy); email renders from it.
    let body = match sub.kind {
        Kind::Webhook => std::mem::take(&mut claimed.body),
        Kind::Email => Vec::new(),
    };
    // One bound for the whole attempt (an SMTP server can be slow at every step), well inside
    // the lease.
    let limit = Duration::from_millis(sub.stored.timeout_ms.max(1) as u64);
    // A bug hit while making the attempt (a panic) is this attempt's failure, recorded and
    // retried like any other, not a lost outcome that would hold the delivery's slot. The
    // attempt is built in place (not bound to a name first), so the future holds it once.
    let answer = match tokio::time::timeout(
        limit,
        crate::core::panics::contain(async {
            match sub.kind {
                // Boxed: an SMTP conversation's future is large, and webhooks, the common case,
                // would carry its size (copied on every move) if it were inline.
                Kind::Email => match &deliverer.email {
                    Some(email) => Box::pin(email.send(&sub.stored, &claimed))
                        .await
                        .map(|()| (250, None, None)),
                    None => Err("no SMTP server configured (set ZOOMHOOK_SMTP_URL)".to_owned()),
                },
                Kind::Webhook => {
                    send_webhook(deliverer, sub, &claimed.delivery.id, body, started_at).await
                }
            }
        }),
    )
    .await
    {
        Ok(Ok(answer)) => answer,
        Ok(Err(panic)) => {
            tracing::error!(delivery = %claimed.delivery.id, %panic, "a delivery attempt panicked");
            Err(format!("internal error in zoomhook while sending: {panic}"))
        }
        Err(_) => Err("timed out".to_owned()),
    };
    let duration_ms = clock.elapsed().as_millis() as i64;
    metrics::histogram!("zoomhook_delivery_attempt_seconds").record(clock.elapsed().as_secs_f64());
    judge(
        deliverer,
        sub,
        &claimed,
        answer,
        Timing {
            started_at,
            duration_ms,
            lease_until,
        },
    )
}

/// When an attempt ran, and under which lease.
struct Timing {
    started_at: i64,
    duration_ms: i64,
    lease_until: i64,
}

/// What an answer means for the delivery: its attempt record and what follows.
fn judge(
    deliverer: &Deliverer,
    sub: &LiveSubscription,
    claimed: &Claimed,
    answer: Answer,
    timing: Timing,
) -> Completion {
    let attempt_no = claimed.delivery.attempts + 1;
    // Errors and excerpts are stored and shown through the API: no credential of the
    // destination (or of the SMTP server) may survive in them, however it is spelled there.
    let (status_code, excerpt, error, verdict) = match answer {
        Ok((status, retry_after, excerpt)) => {
            let verdict = match sub.kind {
                Kind::Email => Verdict::Success,
                Kind::Webhook => retry::classify(status, retry_after.as_deref()),
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
                excerpt.map(|e| text_safe(sub.scrubber.scrub(&e))),
                error,
                verdict,
            )
        }
        Err(error) => (
            None,
            None,
            Some(text_safe(sub.scrubber.scrub(&error))),
            Verdict::Retry { retry_after: None },
        ),
    };
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
                now_millis(),
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
            started_at: timing.started_at,
            duration_ms: timing.duration_ms,
            status_code,
            response_excerpt: excerpt,
            error,
        },
        subscription_id: sub.stored.id.clone(),
        lease_until: timing.lease_until,
        next,
        disable,
    }
}

/// Text PostgreSQL can store: no NUL characters (a binary response body would otherwise make the
/// outcome unrecordable). Text without one is kept as it is.
fn text_safe(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}

/// Signs and posts `stored_body` (in the subscription's body format) as delivery `id`.
async fn send_webhook(
    deliverer: &Deliverer,
    sub: &LiveSubscription,
    id: &str,
    stored_body: Vec<u8>,
    now: i64,
) -> Answer {
    let url = sub.url.clone()?;
    let timestamp = now / 1000;
    let secrets = signing_secrets(&sub.stored, now);
    let body = match sub.body_format {
        BodyFormat::Raw => stored_body,
        BodyFormat::Compact => signing::wire_body(signing::BODY_COMPACT, &stored_body)
            .map_err(|e| e.to_string())?
            .into_owned(),
    };
    // One map, built with typed names: no header name or fixed value is parsed per attempt.
    let signed = signing::headers(sub.scheme_name(), secrets, id, timestamp, &body);
    let mut headers = HeaderMap::with_capacity(3 + signed.len() + sub.headers.len());
    headers.insert(CONTENT_TYPE, JSON_VALUE);
    headers.insert(header::USER_AGENT, USER_AGENT_VALUE);
    for (name, value) in signed {
        let value = HeaderValue::try_from(value)
            .map_err(|e| format!("cannot send the {name} header: {e}"))?;
        headers.append(name, value);
    }
    // Added, not replacing: a custom header named like one above is sent beside it.
    for (name, value) in &sub.headers {
        headers.append(name.clone(), value.clone());
    }
    // A default only: a custom `accept` is sent alone.
    if !headers.contains_key(ACCEPT) {
        headers.insert(ACCEPT, ACCEPT_ANY);
    }
    // The attempt's time limit is the caller's, around this whole call.
    let reply = deliverer
        .http
        .post(url, headers, body, EXCERPT_BYTES)
        .await?;
    Ok((reply.status, reply.retry_after, reply.excerpt))
}
