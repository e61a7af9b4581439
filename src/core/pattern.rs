//! Event-name patterns (`meeting.*`, `*.deleted`, `*`, exact names): the one place they are
//! parsed and matched. The event log's query filter and, later, subscription filters use it.

use std::fmt;

/// One event-name pattern. `*` matches any run of characters (including dots); everything else
/// matches literally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPattern {
    raw: String,
}

/// A pattern that cannot be used (empty, or containing characters event names never have).
#[derive(Debug, thiserror::Error)]
#[error("invalid event pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pattern: String,
    reason: &'static str,
}

impl EventPattern {
    /// Parses one pattern such as `meeting.*`.
    pub fn parse(raw: &str) -> Result<EventPattern, PatternError> {
        let raw = raw.trim();
        let error = |reason| PatternError {
            pattern: raw.to_owned(),
            reason,
        };
        if raw.is_empty() {
            return Err(error("empty pattern"));
        }
        if raw.len() > 200 {
            return Err(error("longer than 200 characters"));
        }
        if !raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*' | ':'))
        {
            return Err(error(
                "only letters, digits, '.', '_', '-', ':' and '*' are allowed",
            ));
        }
        Ok(EventPattern {
            raw: raw.to_owned(),
        })
    }

    /// Parses a comma-separated list (`meeting.*,user.created`).
    pub fn parse_list(list: &str) -> Result<Vec<EventPattern>, PatternError> {
        list.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(EventPattern::parse)
            .collect()
    }

    /// Whether `event` matches this pattern.
    pub fn matches(&self, event: &str) -> bool {
        glob_match(self.raw.as_bytes(), event.as_bytes())
    }

    /// The pattern as an SQL `LIKE` operand with `\` as the escape character, or `None` when the
    /// pattern has no wildcard (then plain equality is both exact and index-friendly).
    pub fn to_sql_like(&self) -> Option<String> {
        if !self.raw.contains('*') {
            return None;
        }
        let mut like = String::with_capacity(self.raw.len() + 4);
        for c in self.raw.chars() {
            match c {
                '*' => like.push('%'),
                '%' | '_' | '\\' => {
                    like.push('\\');
                    like.push(c);
                }
                c => like.push(c),
            }
        }
        Some(like)
    }

    /// The pattern text as given.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl fmt::Display for EventPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Iterative glob matching with single-star backtracking: linear in practice, no recursion, so a
/// hostile pattern cannot blow the stack.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(p: &str, e: &str) -> bool {
        EventPattern::parse(p).unwrap().matches(e)
    }

    #[test]
    fn globs_match_like_subscriptions_expect() {
        assert!(matches("meeting.*", "meeting.participant_joined"));
        assert!(!matches("meeting.*", "webinar.started"));
        assert!(matches("*.deleted", "meeting.deleted"));
        assert!(!matches("*.deleted", "meeting.permanently_deleted"));
        assert!(matches("*deleted", "meeting.permanently_deleted"));
        assert!(matches("*", "anything.at_all"));
        assert!(matches("meeting.started", "meeting.started"));
        assert!(!matches("meeting.started", "meeting.started2"));
        assert!(matches("m*.*ed", "meeting.ended"));
    }

    #[test]
    fn sql_like_escapes_wildcards_of_sql() {
        let p = EventPattern::parse("meeting.participant_*").unwrap();
        assert_eq!(p.to_sql_like().as_deref(), Some("meeting.participant\\_%"));
        assert_eq!(
            EventPattern::parse("user.created").unwrap().to_sql_like(),
            None
        );
    }

    #[test]
    fn rejects_empty_and_strange_patterns() {
        assert!(EventPattern::parse(" ").is_err());
        assert!(EventPattern::parse("meeting.%").is_err());
        assert!(EventPattern::parse("a b").is_err());
        assert_eq!(
            EventPattern::parse_list("meeting.*, user.created")
                .unwrap()
                .len(),
            2
        );
    }
}
