//! Values from outside, made storable and indexable on every backend.
//!
//! Anyone who can type into Zoom controls some of what zoomhook extracts and indexes: a meeting
//! topic, a participant's display name, even (through a compromised or buggy integration) an
//! object id. Zoom signs those events, so verification does not stop them. PostgreSQL cannot hold
//! a NUL in `text` at all, and refuses a B-tree index entry over ~2.7 kB; SQLite holds both. So
//! that one hostile value can never fail a batch (and so never cost another event), and so that
//! both backends store exactly the same thing, every extracted value passes through here first:
//!
//! * [`key`] — for values that are indexed or looked up (ids, uuids, event names, account ids,
//!   hosts, emails, request ids). A value that is short and NUL-free is kept as it is (all real
//!   Zoom values are). Any other value becomes a bounded, NUL-free, readable stand-in
//!   `<first 64 chars>…~sha256:<hex of the whole value>`. Lookups pass the value they are given
//!   through the same function, so they stay exact; the raw body keeps the original byte for byte.
//!   The function is idempotent — a stand-in is kept as it is — so the store can apply it to
//!   everything it writes and looks up although the sync layer already applied it to entity keys,
//!   and a stand-in the API shows can be passed back as a lookup value. The price: a value crafted
//!   in the exact shape of a stand-in shares its key with the value it stands for, which only
//!   someone who already knows that value can do.
//! * [`text`] and [`scrub_json`] — for values only shown, never indexed (a topic, a display name,
//!   a current-state document): NUL becomes U+FFFD, the rest is kept.

use std::borrow::Cow;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Longest value [`key`] keeps as it is, in bytes. Far above any real Zoom id, uuid, email or
/// event name, far below PostgreSQL's B-tree entry limit (2,704 bytes).
pub const MAX_KEY_BYTES: usize = 256;

/// What marks a stand-in produced by [`key`]: `…~sha256:`.
pub const MARKER: &str = "\u{2026}~sha256:";

/// How many characters of the original a stand-in keeps in front, to stay recognisable.
const PREFIX_CHARS: usize = 64;

/// The form of `value` that is stored, indexed and looked up (see the module docs).
pub fn key(value: &str) -> Cow<'_, str> {
    let plain = value.len() <= MAX_KEY_BYTES && !value.contains('\0') && !value.contains(MARKER);
    if plain || is_stand_in(value) {
        return Cow::Borrowed(value);
    }
    let prefix: String = value
        .chars()
        .take(PREFIX_CHARS)
        .map(|c| if c == '\0' { '\u{FFFD}' } else { c })
        .collect();
    let digest = hex::encode(Sha256::digest(value.as_bytes()));
    Cow::Owned(format!("{prefix}{MARKER}{digest}"))
}

/// Whether `value` has the exact shape of a stand-in made by [`key`].
fn is_stand_in(value: &str) -> bool {
    let Some((prefix, digest)) = value.rsplit_once(MARKER) else {
        return false;
    };
    digest.len() == 64
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && prefix.chars().count() <= PREFIX_CHARS
        && !prefix.contains('\0')
}

/// [`key`] of an optional value.
pub fn key_opt(value: Option<&str>) -> Option<String> {
    value.map(|v| key(v).into_owned())
}

/// [`key`] of an owned value, without copying when it is kept as it is.
pub fn key_owned(value: String) -> String {
    match key(&value) {
        Cow::Borrowed(_) => value,
        Cow::Owned(stand_in) => stand_in,
    }
}

/// A value that is shown but never indexed: NUL becomes U+FFFD.
pub fn text(value: &str) -> Cow<'_, str> {
    if value.contains('\0') {
        Cow::Owned(value.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(value)
    }
}

/// Replaces NUL in every string (and object key) of a JSON value, so PostgreSQL's `jsonb` can
/// read its serialisation (it refuses `\u0000`).
pub fn scrub_json(value: &mut Value) {
    match value {
        Value::String(s) => {
            if let Cow::Owned(clean) = text(s) {
                *s = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(scrub_json),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                let entries = std::mem::take(map);
                for (k, mut v) in entries {
                    scrub_json(&mut v);
                    map.insert(text(&k).into_owned(), v);
                }
            } else {
                map.values_mut().for_each(scrub_json);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_values_are_kept_as_they_are() {
        for v in [
            "86431910364",
            "hwkAADUySwyG3GyUkqc0vA==",
            "meeting.started",
            "ünï 🎉",
        ] {
            assert!(matches!(key(v), Cow::Borrowed(_)), "{v}");
        }
    }

    #[test]
    fn nul_long_and_marker_values_become_bounded_distinct_stand_ins() {
        let long = "x".repeat(5_000);
        let longer = "x".repeat(5_001);
        let marker = format!("a{MARKER}b");
        let inputs = [
            "a\0b",
            "a\u{FFFD}b\0",
            long.as_str(),
            longer.as_str(),
            marker.as_str(),
        ];
        let outputs: Vec<String> = inputs.iter().map(|v| key(v).into_owned()).collect();
        for (input, output) in inputs.iter().zip(&outputs) {
            assert!(output.len() <= MAX_KEY_BYTES + 100, "{input:?} → {output}");
            assert!(!output.contains('\0'));
            assert!(output.contains(MARKER));
            // Lookups recompute the same stand-in.
            assert_eq!(key(input), key(input));
            // Idempotent: a stand-in is its own key, so it can be passed back as a lookup value.
            assert_eq!(key(output), output.as_str());
        }
        let distinct: std::collections::HashSet<_> = outputs.iter().collect();
        assert_eq!(distinct.len(), outputs.len());
    }

    #[test]
    fn scrubbing_reaches_nested_strings_and_keys() {
        let mut v = serde_json::json!({"a\u{0}": ["x\u{0}", {"t": "y\u{0}z"}], "n": 1});
        scrub_json(&mut v);
        assert!(!v.to_string().contains("\\u0000"), "{v}");
        assert_eq!(v["a\u{FFFD}"][1]["t"], "y\u{FFFD}z");
    }
}
