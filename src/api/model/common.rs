//! Shapes shared by every resource: pages, errors, times and durations.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::core::clock::rfc3339;

/// A page of a list. Pass `next_cursor` back as `cursor` for the next page.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// `null` when there is no next page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page of `data`; `next_cursor` is the cursor of its last item when the page is full
    /// (a full page may be followed by more).
    pub fn of(data: Vec<T>, limit: i64, cursor: impl Fn(&T) -> String) -> Page<T> {
        let next_cursor = (data.len() as i64 >= limit)
            .then(|| data.last().map(cursor))
            .flatten();
        Page { data, next_cursor }
    }

    /// A list that is always complete (no paging).
    pub fn complete(data: Vec<T>) -> Page<T> {
        Page {
            data,
            next_cursor: None,
        }
    }
}

/// Every error answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApiError {
    /// A stable code: `bad_request`, `unauthorized`, `not_found`, `method_not_allowed`,
    /// `conflict`, `payload_too_large`, `uri_too_long`, `unavailable`, `internal`.
    pub error: String,
    /// What went wrong, for a person.
    pub detail: String,
}

/// The seq a `cursor` parameter names: the `next_cursor` of an earlier page of a list ordered
/// by seq (events, deliveries, quarantined entries); `None` when none was given.
pub fn seq_cursor(cursor: Option<&str>) -> Result<Option<i64>, crate::http_error::HttpError> {
    match cursor.filter(|c| !c.is_empty()) {
        None => Ok(None),
        Some(c) => c
            .parse::<i64>()
            .ok()
            .filter(|seq| *seq >= 0)
            .map(Some)
            .ok_or_else(|| {
                crate::http_error::HttpError::bad_request(
                    "`cursor` must be the `next_cursor` of an earlier page",
                )
            }),
    }
}

/// A time in an answer: RFC 3339, UTC.
pub fn time(millis: i64) -> String {
    rfc3339(millis)
}

/// An optional time in an answer; `null` also for an instant RFC 3339 cannot write (a sender's
/// `event_ts` of year 5000000), rather than text that is not a time.
pub fn time_opt(millis: Option<i64>) -> Option<String> {
    millis.and_then(crate::core::clock::rfc3339_checked)
}

/// A duration as the API writes it (see [`crate::config::format_duration`]).
pub use crate::config::format_duration;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_use_the_largest_exact_unit_and_parse_back() {
        for (ms, text) in [
            (0, "0ms"),
            (1500, "1500ms"),
            (10_000, "10s"),
            (90_000, "90s"),
            (120_000, "2m"),
            (7_200_000, "2h"),
            (86_400_000, "24h"),
        ] {
            assert_eq!(format_duration(ms), text);
            let parsed = crate::config::parse_duration(text).map(|d| d.as_millis() as i64);
            assert_eq!(parsed, Some(ms), "{text} parses back");
        }
    }
}
