//! When to try a delivery again, and what an answer means.
//!
//! 2xx is success. 410 Gone disables the subscription. Everything else — timeouts, connection
//! and DNS errors, 408, 429, 5xx, redirects (never followed) and other 4xx — is retried on the
//! schedule, with `Retry-After` honoured within bounds, until the last attempt makes the delivery
//! `failed` (dead letter).

use std::time::Duration;

/// Default delays between attempts: the first attempt is immediate, then 5 s, 5 min, 30 min, 2 h,
/// 5 h, 10 h, 10 h (8 attempts over about 28 hours).
pub const DEFAULT_SCHEDULE: &str = "5s,5m,30m,2h,5h,10h,10h";

/// The longest `Retry-After` honoured; a longer one is capped to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(6 * 3600);

/// ±20 % jitter, so retries of many deliveries do not arrive together.
const JITTER: f64 = 0.2;

/// Parses a schedule such as `5s,5m,30m` (the delays between attempts).
pub fn parse_schedule(text: &str) -> Option<Vec<Duration>> {
    let delays: Option<Vec<Duration>> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(crate::config::parse_duration)
        .collect();
    delays.filter(|d| !d.is_empty())
}

/// What an attempt's answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Success,
    /// 410: stop and disable the subscription.
    Gone,
    /// Try again (possibly not before `retry_after`).
    Retry {
        retry_after: Option<Duration>,
    },
}

/// Classifies an HTTP status (with its `Retry-After`, if any).
pub fn classify(status: u16, retry_after: Option<&str>) -> Verdict {
    match status {
        200..=299 => Verdict::Success,
        410 => Verdict::Gone,
        _ => Verdict::Retry {
            retry_after: retry_after.and_then(parse_retry_after),
        },
    }
}

/// `Retry-After` as delta-seconds or an HTTP date, capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = httpdate(value)?;
        let now = crate::core::clock::now_millis();
        Duration::from_millis(u64::try_from(when - now).unwrap_or(0))
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) to epoch ms.
fn httpdate(text: &str) -> Option<i64> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let t = time::PrimitiveDateTime::parse(text, &format).ok()?;
    Some((t.assume_utc().unix_timestamp_nanos() / 1_000_000) as i64)
}

/// When attempt number `attempt + 1` is due after attempt `attempt` (1-based) failed, or `None`
/// when `attempt` was the last. `retry_after` from the answer wins over a shorter schedule delay.
/// `unit` in 0..1 draws the jitter.
pub fn next_attempt(
    schedule: &[Duration],
    attempt: i64,
    retry_after: Option<Duration>,
    now_ms: i64,
    unit: f64,
) -> Option<i64> {
    let index = usize::try_from(attempt - 1).ok()?;
    let delay = *schedule.get(index)?;
    let factor = 1.0 + JITTER * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
    let jittered = Duration::from_secs_f64(delay.as_secs_f64() * factor);
    let delay = retry_after.map_or(jittered, |r| r.max(jittered));
    Some(now_ms + delay.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_is_eight_attempts() {
        let schedule = parse_schedule(DEFAULT_SCHEDULE).unwrap();
        assert_eq!(schedule.len(), 7);
        assert_eq!(next_attempt(&schedule, 1, None, 0, 0.5), Some(5_000));
        assert_eq!(next_attempt(&schedule, 7, None, 0, 0.5), Some(36_000_000));
        assert_eq!(
            next_attempt(&schedule, 8, None, 0, 0.5),
            None,
            "the 8th attempt is the last"
        );
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let schedule = parse_schedule("10s").unwrap();
        assert_eq!(next_attempt(&schedule, 1, None, 0, 0.0), Some(8_000));
        assert_eq!(next_attempt(&schedule, 1, None, 0, 1.0), Some(12_000));
    }

    #[test]
    fn retry_after_extends_but_is_capped() {
        let schedule = parse_schedule("1s").unwrap();
        let ra = parse_retry_after("120");
        assert_eq!(next_attempt(&schedule, 1, ra, 0, 0.5), Some(120_000));
        assert_eq!(parse_retry_after("999999"), Some(MAX_RETRY_AFTER));
        assert!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT").is_some());
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn classifies_answers() {
        assert_eq!(classify(204, None), Verdict::Success);
        assert_eq!(classify(410, None), Verdict::Gone);
        assert_eq!(classify(302, None), Verdict::Retry { retry_after: None });
        assert_eq!(
            classify(429, Some("3")),
            Verdict::Retry {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert!(parse_schedule("").is_none() && parse_schedule("5s,x").is_none());
    }
}
