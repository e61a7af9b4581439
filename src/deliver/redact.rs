//! Keeping credentials out of what delivery records and shows: attempt errors, response
//! excerpts, logs and operational events.
//!
//! Subscriber URLs are often credentials themselves (`?token=…`, Slack and Teams paths), and an
//! SMTP URL may hold a password. Replacing the configured URL's exact string is not enough: the
//! HTTP client prints its own normalised form (lower-case host, default port dropped,
//! percent-encoding redone), and an endpoint's error page may echo the request URL in pieces. So
//! two independent nets are used:
//!
//! 1. every URL-looking substring (`scheme://…`) is cut down to scheme, host and port, whoever
//!    wrote it and however it is spelled;
//! 2. the sensitive fragments of the subscription's own URLs (the query, each query value, the
//!    user name and password, the path and its token-length segments), its secrets and its custom
//!    header values are removed wherever they appear, in any form.

use std::borrow::Cow;

/// Shorter fragments are not removed on their own: a value such as `1` or `on` would mangle
/// unrelated text, and is no credential anyway.
const MIN_FRAGMENT: usize = 4;

/// What replaces a removed fragment.
const REDACTED: &str = "[redacted]";

/// Where a URL is shown (logs, errors, operational events): scheme, host and port only. Paths and
/// queries of webhook URLs are often credentials themselves (Slack, Teams, `?token=`).
pub fn redacted_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}/…", u.scheme()),
            (Some(host), None) => format!("{}://{host}/…", u.scheme()),
            _ => "(invalid URL)".to_owned(),
        },
        Err(_) => "(invalid URL)".to_owned(),
    }
}

/// Characters that end a URL written inside free text (error messages put URLs in parentheses
/// or quotes).
fn ends_url(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '"' | '\'' | '`' | '<' | '>' | '(' | ')' | '[' | ']' | '{' | '}'
        )
}

fn is_scheme_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')
}

/// `text` with every URL-looking substring (`scheme://…`) reduced to [`redacted_url`].
pub fn redact_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(marker) = rest.find("://") {
        let scheme_start = rest[..marker]
            .char_indices()
            .rev()
            .take_while(|(_, c)| is_scheme_char(*c))
            .last()
            .map_or(marker, |(i, _)| i);
        let after = &rest[marker + 3..];
        let end = marker + 3 + after.find(ends_url).unwrap_or(after.len());
        out.push_str(&rest[..scheme_start]);
        let candidate = &rest[scheme_start..end];
        if scheme_start == marker {
            // No scheme before `://`: not a URL we can parse, but still possibly a credential.
            out.push_str("://…");
        } else {
            match redacted_url(candidate).as_str() {
                "(invalid URL)" => {
                    out.push_str(&rest[scheme_start..marker]);
                    out.push_str("://…");
                }
                shown => out.push_str(shown),
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Removes what must never be recorded about one subscription from text that describes its
/// deliveries.
#[derive(Debug, Clone, Default)]
pub struct Scrubber {
    /// Longest first, so a fragment that contains another is removed whole.
    fragments: Vec<String>,
}

impl Scrubber {
    /// A scrubber for the credentials in `urls` (the destination, an SMTP URL) and `secrets`.
    pub fn new<'a>(
        urls: impl IntoIterator<Item = &'a str>,
        secrets: impl IntoIterator<Item = &'a str>,
    ) -> Scrubber {
        let mut fragments: Vec<String> = urls.into_iter().flat_map(url_fragments).collect();
        fragments.extend(secrets.into_iter().map(str::to_owned));
        fragments.retain(|f| f.len() >= MIN_FRAGMENT);
        fragments.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        fragments.dedup();
        Scrubber { fragments }
    }

    /// `text` without URLs' credentials and without any of the fragments.
    pub fn scrub(&self, text: &str) -> String {
        let mut text = redact_urls_in(text);
        for fragment in &self.fragments {
            if text.contains(fragment.as_str()) {
                text = text.replace(fragment.as_str(), REDACTED);
            }
        }
        text
    }
}

/// The parts of a URL that may be credentials, as written and as decoded.
fn url_fragments(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    // As written: the raw query and user info, whatever a parser would make of them.
    if let Some((_, query)) = url.split_once('?') {
        let query = query.split('#').next().unwrap_or_default();
        out.push(query.to_owned());
        for pair in query.split('&') {
            if let Some((_, value)) = pair.split_once('=') {
                out.push(value.to_owned());
            }
        }
    }
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return out;
    };
    if let Some(query) = parsed.query() {
        out.push(query.to_owned());
    }
    for (_, value) in parsed.query_pairs() {
        out.push(value.into_owned());
    }
    for part in [parsed.username(), parsed.password().unwrap_or_default()] {
        out.push(part.to_owned());
        out.push(decoded(part).into_owned());
    }
    // Paths carry credentials too (Slack `/services/T…/B…/<token>`, Teams): the whole path, and
    // each segment long enough to be a token.
    let path = parsed.path();
    if path.len() > 1 {
        out.push(path.to_owned());
        for segment in path.split('/').filter(|s| s.len() >= MIN_PATH_TOKEN) {
            out.push(segment.to_owned());
            out.push(decoded(segment).into_owned());
        }
    }
    out
}

/// Path segments at least this long are removed on their own (`hooks` or `zoom` are not
/// credentials; `B0002XYZ…` may be).
const MIN_PATH_TOKEN: usize = 8;

fn decoded(text: &str) -> Cow<'_, str> {
    reqwest::Url::parse(&format!("http://h/?v={text}"))
        .ok()
        .and_then(|u| {
            u.query_pairs()
                .next()
                .map(|(_, v)| Cow::Owned(v.into_owned()))
        })
        .unwrap_or(Cow::Borrowed(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_normalised_spelling_of_the_url_loses_its_query() {
        let text = "error sending request for url (http://localhost:8080/hook?token=s3cr3t): connection refused";
        let scrubbed = redact_urls_in(text);
        assert_eq!(
            scrubbed,
            "error sending request for url (http://localhost:8080/…): connection refused"
        );
    }

    #[test]
    fn fragments_of_the_subscription_url_are_removed_wherever_they_appear() {
        let scrubber = Scrubber::new(
            ["http://LocalHost:80/hook?token=s3cr3t%21&x=1"],
            ["whsec_abcdef"],
        );
        let page = "500: GET /hook?token=s3cr3t!&x=1 failed; token s3cr3t%21; key whsec_abcdef";
        let slack = Scrubber::new(
            ["https://hooks.example/services/T0001/B0002/SECRETPATHTOKEN"],
            [],
        );
        let echoed =
            slack.scrub("POST /services/T0001/B0002/SECRETPATHTOKEN: bad; SECRETPATHTOKEN");
        assert!(!echoed.contains("SECRETPATHTOKEN"), "{echoed}");
        let scrubbed = scrubber.scrub(page);
        assert!(!scrubbed.contains("s3cr3t"), "{scrubbed}");
        assert!(!scrubbed.contains("whsec_abcdef"), "{scrubbed}");
        assert!(
            scrubbed.starts_with("500: GET [redacted]?"),
            "the path goes too: {scrubbed}"
        );
    }

    #[test]
    fn smtp_passwords_are_removed() {
        let scrubber = Scrubber::new(["smtp://mailer:p%40ssw0rd@mail.example.com:587"], []);
        let scrubbed = scrubber.scrub("auth failed for mailer with p@ssw0rd and p%40ssw0rd");
        assert!(!scrubbed.contains("ssw0rd"), "{scrubbed}");
        assert!(
            !redact_urls_in("smtp://mailer:p%40ssw0rd@mail.example.com:587").contains("ssw0rd")
        );
    }

    #[test]
    fn text_without_urls_is_left_alone() {
        assert_eq!(
            Scrubber::new(["http://example.com/x?a=1"], []).scrub("HTTP 500"),
            "HTTP 500"
        );
        assert_eq!(redact_urls_in("a :// b"), "a ://… b");
    }
}
