//! Which events of a batch are new: decided once, for both backends.
//!
//! A backend locks the log, reads the current head `seq` and the live dedupe keys the batch
//! mentions, then asks [`plan_batch`] what to write. Because the lock is taken before the reads
//! (SQLite `BEGIN IMMEDIATE`, PostgreSQL `SELECT … FOR UPDATE` on the head row), no other writer
//! can add a key between the read and the write, so the plan is authoritative.

use std::collections::HashMap;

use super::{AppendOutcome, NewEvent};

/// Where an existing key points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwner {
    pub event_id: String,
    pub seq: i64,
}

/// The decision for a batch.
#[derive(Debug, Default)]
pub struct BatchPlan {
    /// Outcome per input event, in input order.
    pub outcomes: Vec<AppendOutcome>,
    /// Indices (into the batch) of the events to insert, with their assigned `seq`.
    pub inserts: Vec<(usize, i64)>,
    /// Dedupe keys to (re)write: key → owner. Keys of duplicates point at the original, so a
    /// second subscription's later retries are caught by their request id alone.
    pub keys: Vec<(String, KeyOwner)>,
    /// The head `seq` after this batch.
    pub new_head: i64,
}

/// Plans a batch given the current head and the live keys already in the store.
pub fn plan_batch(batch: &[NewEvent], head: i64, mut live: HashMap<String, KeyOwner>) -> BatchPlan {
    let mut plan = BatchPlan {
        new_head: head,
        ..BatchPlan::default()
    };
    for (index, event) in batch.iter().enumerate() {
        let keys = event.dedupe_keys();
        let owner = keys.iter().find_map(|k| live.get(k).cloned());
        let owner = match owner {
            Some(original) => {
                plan.outcomes.push(AppendOutcome::Duplicate {
                    id: original.event_id.clone(),
                    seq: original.seq,
                });
                original
            }
            None => {
                plan.new_head += 1;
                plan.inserts.push((index, plan.new_head));
                plan.outcomes.push(AppendOutcome::Appended {
                    id: event.id.clone(),
                    seq: plan.new_head,
                });
                KeyOwner {
                    event_id: event.id.clone(),
                    seq: plan.new_head,
                }
            }
        };
        for key in keys {
            if !live.contains_key(&key) {
                live.insert(key.clone(), owner.clone());
                plan.keys.push((key, owner.clone()));
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, rid: Option<&str>, sem: &str) -> NewEvent {
        NewEvent {
            id: id.into(),
            source: "zoom".into(),
            event: "meeting.started".into(),
            event_ts: Some(1),
            account_id: None,
            object_id: None,
            object_uuid: None,
            received_at: 0,
            request_id: rid.map(Into::into),
            semantic_key: sem.into(),
            body: bytes::Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn assigns_consecutive_seqs_and_dedupes_within_the_batch() {
        let batch = [
            event("a", Some("r1"), "s1"),
            event("b", Some("r1"), "s2"), // Zoom retry: same request id
            event("c", Some("r2"), "s1"), // other subscription: same semantic key
            event("d", None, "s3"),
        ];
        let plan = plan_batch(&batch, 10, HashMap::new());
        assert_eq!(plan.inserts, vec![(0, 11), (3, 12)]);
        assert_eq!(plan.new_head, 12);
        assert_eq!(
            plan.outcomes[1],
            AppendOutcome::Duplicate {
                id: "a".into(),
                seq: 11
            }
        );
        assert_eq!(
            plan.outcomes[2],
            AppendOutcome::Duplicate {
                id: "a".into(),
                seq: 11
            }
        );
        // r2 now also points at "a": a retry of the second subscription is caught by request id.
        assert!(
            plan.keys
                .iter()
                .any(|(k, o)| k == "rid:r2" && o.event_id == "a")
        );
    }

    #[test]
    fn existing_keys_make_duplicates() {
        let live = HashMap::from([(
            "s1".to_owned(),
            KeyOwner {
                event_id: "old".into(),
                seq: 3,
            },
        )]);
        let plan = plan_batch(&[event("x", None, "s1")], 5, live);
        assert!(plan.inserts.is_empty());
        assert_eq!(plan.new_head, 5);
        assert_eq!(
            plan.outcomes[0],
            AppendOutcome::Duplicate {
                id: "old".into(),
                seq: 3
            }
        );
    }
}
