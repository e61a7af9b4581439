//! The `--since` / `--until` values of the CLI: RFC 3339, epoch milliseconds, a plain date
//! (midnight UTC) or a duration meaning "that long ago". They are parsed here, once, into epoch
//! milliseconds — the form every server version accepts — so a typo is a usage error naming the
//! flag before any request is made, and "2h" means two hours before the command ran, not before
//! the server got round to it.

use std::fmt;

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use crate::core::clock::now_millis;

/// The accepted forms, for `--help` texts and error messages.
pub const FORMS: &str = "RFC 3339 (2026-11-01T09:30:00Z), epoch milliseconds (1793491200000), \
    a date (2026-11-01, meaning midnight UTC) or a duration ago (30m, 2h, 7d)";

/// A point in time given on the command line, in epoch milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeFilter(pub i64);

impl fmt::Display for TimeFilter {
    /// Epoch milliseconds: what the API's `since`/`until` accept.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// clap value parser for `--since`/`--until`; clap prefixes the flag's name to the error.
pub fn parse(text: &str) -> Result<TimeFilter, String> {
    parse_at(text, now_millis())
        .map(TimeFilter)
        .ok_or_else(|| format!("expected {FORMS}"))
}

/// Parses `text` with "ago" counted back from `now` (epoch milliseconds).
fn parse_at(text: &str, now: i64) -> Option<i64> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok();
    }
    if let Ok(date) = time::Date::parse(text, format_description!("[year]-[month]-[day]")) {
        return Some(date.midnight().assume_utc().unix_timestamp() * 1000);
    }
    // Durations need a unit: a bare number is epoch milliseconds above.
    let ago = humantime::parse_duration(text).ok()?;
    now.checked_sub(i64::try_from(ago.as_millis()).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_793_491_200_000; // 2026-11-01T00:00:00Z

    #[test]
    fn accepts_rfc3339_epoch_ms_dates_and_durations_ago() {
        assert_eq!(parse_at("2026-11-01T00:00:00Z", 0), Some(NOW));
        assert_eq!(parse_at("2026-11-01T01:00:00+01:00", 0), Some(NOW));
        assert_eq!(parse_at("1793491200000", 0), Some(NOW));
        assert_eq!(parse_at("2026-11-01", 0), Some(NOW));
        assert_eq!(parse_at("2h", NOW), Some(NOW - 2 * 3_600_000));
        assert_eq!(parse_at("30m", NOW), Some(NOW - 30 * 60_000));
        assert_eq!(parse_at("7d", NOW), Some(NOW - 7 * 86_400_000));
        assert_eq!(parse_at("1h30m", NOW), Some(NOW - 90 * 60_000));
    }

    #[test]
    fn refuses_what_it_cannot_read_and_says_what_it_accepts() {
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026/11/01",
            "-5",
            "2 fortnights",
        ] {
            assert_eq!(parse_at(bad, NOW), None, "{bad:?}");
        }
        let message = parse("soon").unwrap_err();
        assert!(
            message.contains("2026-11-01") && message.contains("2h"),
            "{message}"
        );
    }
}
