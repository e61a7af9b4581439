//! One warning per refused webhook — source, reason, client address — rate-limited.
//!
//! An operator needs to see a misconfigured secret or a proxy that rewrites bodies the moment it
//! happens, so each rejection is logged. But rejections are what an attacker controls: a flood of
//! forged requests must not turn into a flood of log lines (disk, log shipping costs, and the
//! real lines drowned). A token bucket lets [`BURST`] lines through at once and [`PER_SECOND`]
//! after that; what it holds back is counted and reported with the next line that gets through
//! (and every rejection is counted in the periodic summary and `/metrics` regardless).
//!
//! What is logged is chosen so that no secret and no body ever reaches the log: the reason is a
//! fixed label plus the rejection's own message (which names headers and limits, never values),
//! and the only request-controlled text — a source name from the URL path — is bounded and
//! printed escaped, so it cannot forge log lines.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Lines let through at once after a quiet period.
pub const BURST: f64 = 10.0;
/// Lines let through per second during a flood.
pub const PER_SECOND: f64 = 1.0;
/// Longest source name written to the log (longer ones are cut).
const MAX_SOURCE_CHARS: usize = 64;

/// The rate-limited rejection log of one server.
#[derive(Debug)]
pub struct RejectionLog {
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    /// Rejections not logged since the last line that was.
    held_back: u64,
}

/// One refused request, as it is logged.
#[derive(Debug, Clone, Copy)]
pub struct Rejected<'a> {
    /// The source named in the path (`zoom` for `/webhooks/zoom`).
    pub source: &'a str,
    /// A fixed label: `bad_signature`, `stale_timestamp`, `not_json`, `too_large` …
    pub reason: &'static str,
    /// The HTTP status answered.
    pub status: u16,
    /// The rejection's message (never a header value, secret or body).
    pub detail: &'a str,
    pub client: SocketAddr,
}

impl Default for RejectionLog {
    fn default() -> Self {
        RejectionLog {
            bucket: Mutex::new(Bucket {
                tokens: BURST,
                refilled: Instant::now(),
                held_back: 0,
            }),
        }
    }
}

impl RejectionLog {
    /// Logs `rejected` as a warning if the rate allows; otherwise counts it.
    pub fn record(&self, rejected: Rejected<'_>) {
        if let Some(held_back) = self.admit(Instant::now()) {
            let source: String = rejected.source.chars().take(MAX_SOURCE_CHARS).collect();
            tracing::warn!(
                source = %source.escape_debug(),
                reason = rejected.reason,
                status = rejected.status,
                client = %rejected.client,
                not_logged_before = held_back,
                "rejected webhook: {}",
                rejected.detail
            );
        }
    }

    /// Takes a token if there is one: `Some(lines held back since the last one logged)`.
    fn admit(&self, now: Instant) -> Option<u64> {
        // A poisoned lock only means another request panicked while logging; the counters are
        // still usable.
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * PER_SECOND).min(BURST);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Some(std::mem::take(&mut bucket.held_back))
        } else {
            bucket.held_back += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_flood_is_held_to_the_burst_then_the_rate() {
        let log = RejectionLog::default();
        let start = Instant::now();
        let admitted = (0..1000).filter(|_| log.admit(start).is_some()).count();
        assert_eq!(admitted, BURST as usize);
        // One second later one more line gets through, reporting what was held back.
        let later = start + Duration::from_secs(1);
        assert_eq!(log.admit(later), Some(1000 - BURST as u64));
        assert_eq!(log.admit(later), None);
    }

    #[test]
    fn a_quiet_period_refills_the_burst_but_no_more() {
        let log = RejectionLog::default();
        let start = Instant::now();
        while log.admit(start).is_some() {}
        let much_later = start + Duration::from_secs(3600);
        let admitted = (0..100).filter(|_| log.admit(much_later).is_some()).count();
        assert_eq!(admitted, BURST as usize);
    }
}
