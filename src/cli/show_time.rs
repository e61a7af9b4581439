//! Times as the CLI shows them to people: in the local time zone, to the second
//! (`2026-11-28 10:30:05 CET`). `--json` output keeps the API's RFC 3339 UTC text.
//!
//! The zone is the system's (`TZ`, else `/etc/localtime`), read by `jiff`, which does so without
//! the libc calls that are unsound in a multi-threaded process.

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// An RFC 3339 time from the API, in local time; text that is not a time is shown as it is.
pub fn local(rfc3339: &str) -> String {
    match rfc3339.parse::<Timestamp>() {
        Ok(t) => in_zone(t, &TimeZone::system()),
        Err(_) => rfc3339.to_owned(),
    }
}

/// An optional time, `-` when there is none.
pub fn local_opt(rfc3339: Option<&str>) -> String {
    rfc3339.map_or_else(|| "-".to_owned(), local)
}

fn in_zone(t: Timestamp, zone: &TimeZone) -> String {
    t.to_zoned(zone.clone())
        .strftime("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_a_utc_time_in_the_given_zone() {
        let t: Timestamp = "2026-11-28T09:30:05.123Z".parse().unwrap();
        let berlin = TimeZone::get("Europe/Berlin").unwrap_or(TimeZone::fixed(jiff::tz::offset(1)));
        let shown = in_zone(t, &berlin);
        assert!(shown.starts_with("2026-11-28 10:30:05"), "{shown}");
    }

    #[test]
    fn leaves_text_that_is_not_a_time_alone() {
        assert_eq!(local("soon"), "soon");
        assert_eq!(local_opt(None), "-");
    }
}
