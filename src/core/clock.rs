//! Wall-clock helpers. Times in the store are Unix epoch milliseconds (`i64`), like Zoom's `event_ts`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix epoch milliseconds.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Now, in Unix epoch seconds (the unit of `x-zm-request-timestamp`).
pub fn now_secs() -> i64 {
    now_millis() / 1000
}

/// Formats epoch milliseconds as RFC 3339 (UTC), for humans and API responses.
pub fn rfc3339(millis: i64) -> String {
    let nanos = i128::from(millis) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| millis.to_string())
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
}
