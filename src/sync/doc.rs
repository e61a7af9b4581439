//! The convergent document behind every synchronised entity.
//!
//! An entity (a meeting, a participant, a recording …) is stored as an [`EntityDoc`]: a map of
//! leaf fields, each remembering the version `(event_ts, seq)` of the event that wrote it, a set of
//! participant marks (joins and leaves), and an optional tombstone. [`EntityDoc::merge`] is
//! commutative, associative and idempotent, so the document — and everything projected from it —
//! is the same whatever order events arrive in and however often they are repeated:
//!
//! - a field takes the value of the write with the highest `(event_ts, seq)`; an older event that
//!   arrives late never overwrites newer data;
//! - marks are a set: a `left` that arrives before its `joined` is kept, and is paired with it
//!   when the join arrives (pairing is done by the projection, from the whole set);
//! - the tombstone (`permanently_deleted`, `recording.deleted`, `user.deleted`) is sticky: once set,
//!   no later or earlier event can take it away; the earliest tombstone version is kept.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The version of a write: the event's `event_ts` (epoch ms), then its log `seq` as tie-breaker.
pub type Version = (i64, i64);

/// What kind of participant mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MarkKind {
    Join,
    Leave,
}

/// One join or leave of a participant: when (epoch ms), which, and the leave reason if any.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Mark {
    pub at: i64,
    pub kind: MarkKind,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// A field value with the version that wrote it. Stored compactly as `[value, event_ts, seq]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    pub value: Value,
    pub event_ts: i64,
    pub seq: i64,
}

impl Serialize for Versioned {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (&self.value, self.event_ts, self.seq).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Versioned {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (value, event_ts, seq) = <(Value, i64, i64)>::deserialize(deserializer)?;
        Ok(Versioned {
            value,
            event_ts,
            seq,
        })
    }
}

impl Versioned {
    fn version(&self) -> Version {
        (self.event_ts, self.seq)
    }
}

/// The stored document of one entity (also the shape of a patch built from one event).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EntityDoc {
    /// Leaf fields by dotted path (`topic`, `settings.join_before_host`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, Versioned>,
    /// Participant joins and leaves.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub marks: BTreeSet<Mark>,
    /// Set by a permanent deletion; never cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tombstone: Option<Version>,
}

impl EntityDoc {
    /// Folds `other` into `self`; returns whether anything changed.
    pub fn merge(&mut self, other: EntityDoc) -> bool {
        let mut changed = false;
        for (path, incoming) in other.fields {
            match self.fields.get_mut(&path) {
                Some(current) if current.version() >= incoming.version() => {}
                Some(current) => {
                    *current = incoming;
                    changed = true;
                }
                None => {
                    self.fields.insert(path, incoming);
                    changed = true;
                }
            }
        }
        for mark in other.marks {
            changed |= self.marks.insert(mark);
        }
        if let Some(t) = other.tombstone
            && self.tombstone.is_none_or(|current| t < current)
        {
            self.tombstone = Some(t);
            changed = true;
        }
        changed
    }

    /// Sets `path` to `value` at `version` (in a patch, where each path is written once).
    pub fn set(&mut self, path: impl Into<String>, value: Value, version: Version) {
        self.fields.insert(
            path.into(),
            Versioned {
                value,
                event_ts: version.0,
                seq: version.1,
            },
        );
    }

    /// Writes every leaf of a JSON object under `prefix`, skipping the top-level keys in `skip`.
    /// Nested objects are flattened to dotted paths so a partial `*.updated` object changes only
    /// the leaves it carries; arrays and scalars are leaves.
    pub fn set_object(&mut self, object: &Value, skip: &[&str], version: Version) {
        if let Some(map) = object.as_object() {
            for (key, value) in map {
                if !skip.contains(&key.as_str()) {
                    self.set_leaves(key, value, version);
                }
            }
        }
    }

    fn set_leaves(&mut self, path: &str, value: &Value, version: Version) {
        match value.as_object() {
            Some(map) if !map.is_empty() => {
                for (key, child) in map {
                    self.set_leaves(&format!("{path}.{key}"), child, version);
                }
            }
            _ => self.set(path, value.clone(), version),
        }
    }

    /// The current value of a field.
    pub fn get(&self, path: &str) -> Option<&Value> {
        self.fields.get(path).map(|f| &f.value)
    }

    /// The current value of a field as text (numbers are rendered, empty strings are `None`).
    pub fn text(&self, path: &str) -> Option<String> {
        match self.get(path)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// The highest `seq` that wrote anything into this document.
    pub fn last_seq(&self) -> i64 {
        let fields = self.fields.values().map(|f| f.seq).max().unwrap_or(0);
        fields.max(self.tombstone.map_or(0, |t| t.1))
    }

    /// The leaf fields rebuilt into a nested JSON object (current values only).
    pub fn to_object(&self) -> serde_json::Map<String, Value> {
        let mut root = serde_json::Map::new();
        for (path, field) in &self.fields {
            insert_path(&mut root, path, field.value.clone());
        }
        root
    }
}

fn insert_path(root: &mut serde_json::Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            root.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let child = root
                .entry(head.to_owned())
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
            if !child.is_object() {
                *child = Value::Object(serde_json::Map::new());
            }
            if let Value::Object(map) = child {
                insert_path(map, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(path: &str, value: Value, version: Version) -> EntityDoc {
        let mut d = EntityDoc::default();
        d.set(path, value, version);
        d
    }

    #[test]
    fn newer_write_wins_in_either_order() {
        let old = doc("topic", json!("Old"), (10, 1));
        let new = doc("topic", json!("New"), (20, 2));
        let mut a = old.clone();
        a.merge(new.clone());
        let mut b = new.clone();
        assert!(!b.merge(old.clone()), "an older write changes nothing");
        assert_eq!(a, b);
        assert_eq!(a.get("topic"), Some(&json!("New")));
    }

    #[test]
    fn partial_nested_update_touches_only_its_leaves() {
        let mut created = EntityDoc::default();
        created.set_object(
            &json!({"id": 1, "settings": {"join_before_host": false, "use_pmi": false}}),
            &["id"],
            (10, 1),
        );
        let mut updated = EntityDoc::default();
        updated.set_object(
            &json!({"id": 1, "settings": {"join_before_host": true}}),
            &["id"],
            (20, 2),
        );
        created.merge(updated);
        assert_eq!(
            Value::Object(created.to_object()),
            json!({"settings": {"join_before_host": true, "use_pmi": false}})
        );
    }

    #[test]
    fn tombstone_is_sticky_and_keeps_the_earliest_version() {
        let mut a = EntityDoc {
            tombstone: Some((30, 5)),
            ..Default::default()
        };
        let b = EntityDoc {
            tombstone: Some((20, 9)),
            ..Default::default()
        };
        a.merge(b);
        a.merge(EntityDoc::default());
        assert_eq!(a.tombstone, Some((20, 9)));
    }

    #[test]
    fn document_round_trips_through_json() {
        let mut d = doc("topic", json!("T"), (1, 2));
        d.marks.insert(Mark {
            at: 5,
            kind: MarkKind::Leave,
            reason: "left".into(),
        });
        let text = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<EntityDoc>(&text).unwrap(), d);
    }
}
