//! Wall-clock helpers. Times in the store are Unix epoch milliseconds (`i64`), like Zoom's `event_ts`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix epoch milliseconds.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Whether a turn that may come at most once per `every_ms` is due at `now` (epoch ms), given
/// `last`, when the previous turn was taken; takes it if so. Of callers racing for one turn,
/// exactly one gets it.
pub fn take_turn(last: &AtomicI64, now: i64, every_ms: i64) -> bool {
    let previous = last.load(Ordering::Relaxed);
    now - previous >= every_ms
        && last
            .compare_exchange(previous, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// Now, in Unix epoch seconds (the unit of `x-zm-request-timestamp`).
pub fn now_secs() -> i64 {
    now_millis() / 1000
}

/// Formats epoch milliseconds as RFC 3339 in UTC with exactly three fraction digits
/// (`2026-11-28T09:30:00.000Z`): one width for every time, so times also sort as text. `None`
/// for an instant outside the years 0000–9999, which RFC 3339 cannot write (a sender's
/// `event_ts` can be anything).
pub fn rfc3339_checked(millis: i64) -> Option<String> {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    let nanos = i128::from(millis) * 1_000_000;
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()?;
    if !(0..=9999).contains(&t.year()) {
        return None;
    }
    t.format(FORMAT).ok()
}

/// [`rfc3339_checked`] for times this server made (always in range); an impossible one is
/// written as its number rather than lost.
pub fn rfc3339(millis: i64) -> String {
    rfc3339_checked(millis).unwrap_or_else(|| millis.to_string())
}

/// Parses a time given as RFC 3339 or as epoch milliseconds; returns epoch milliseconds.
pub fn parse_time(text: &str) -> Option<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_through_parse_time() {
        let ms = 1_648_038_806_658;
        assert_eq!(rfc3339(ms), "2022-03-23T12:33:26.658Z");
        assert_eq!(parse_time(&rfc3339(ms)), Some(ms));
        assert_eq!(parse_time("1648038806658"), Some(ms));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn every_time_has_three_fraction_digits_and_impossible_ones_none() {
        assert_eq!(rfc3339(1_648_038_806_000), "2022-03-23T12:33:26.000Z");
        assert_eq!(rfc3339(1_648_038_806_650), "2022-03-23T12:33:26.650Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_checked(99_999_999_999_999_999), None);
        assert_eq!(rfc3339_checked(i64::MIN), None);
        assert_eq!(
            rfc3339_checked(253_402_300_799_999).as_deref(),
            Some("9999-12-31T23:59:59.999Z")
        );
        assert_eq!(rfc3339_checked(253_402_300_800_000), None);
    }
}
