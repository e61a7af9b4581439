//! The dedupe keys of the log's newest entries, held in memory until the log indexer has written
//! them to the state database.
//!
//! Writing each event's request-id key into an indexed table inside the append would dirty a
//! random page of that index per event, inside the transaction every ack waits for. Instead the
//! committer records the keys of each commit here, and the indexer (`indexer.rs`) writes them to
//! `dedupe_keys` in large batches a few milliseconds later, then forgets them here. A lookup
//! checks this tail first and the state database after, and stays exact because of one ordering
//! rule: the indexer commits keys to the state database **before** it removes them from the
//! tail, so a key is always in at least one of the two places the committer reads (in that order).
//!
//! After a restart the tail is rebuilt from the log entries the indexer had not reached (their
//! request id and semantic key are stored with them), so dedupe is exact across restarts too.
//! Only the aliases written for duplicates (the request id of a second delivery pointing at the
//! original) can be lost by a crash before they are indexed; a retry of that delivery carries the
//! same body, so its semantic key still finds the original.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::key_filter::KeyFilter;
use crate::store::dedupe::KeyOwner;

/// How long after a failed build of the key filter the next one may start.
const FILTER_RETRY: Duration = Duration::from_secs(30);

/// Most keys the tail holds. The indexer normally keeps it to a few thousand; if the state
/// database stops taking writes the tail would grow without bound, so past this the committer
/// refuses appends (503, Zoom retries) until the indexer catches up. ~150 bytes a key: ~30 MB.
pub const MAX_KEYS: usize = 200_000;

/// A key waiting to be indexed.
#[derive(Debug, Clone)]
pub struct TailKey {
    pub key: String,
    pub owner: KeyOwner,
    pub expires_at: i64,
    /// The log head after the commit that recorded it: it is indexed once the indexer has passed
    /// this position.
    pub position: i64,
    /// Order of recording (increasing): what the indexer wrote is forgotten by it, never by
    /// position alone — a batch of duplicates records aliases at a position already indexed,
    /// possibly while the indexer is writing that position.
    record: u64,
}

/// What the indexer read from the tail, to write and then forget.
pub struct Pending {
    pub keys: Vec<TailKey>,
    /// The last record read (0 if none): forgetting stops there.
    pub through_record: u64,
}

#[derive(Default)]
struct Inner {
    /// Every log entry up to here is committed and its keys are in `keys` (or already indexed).
    through: i64,
    /// The newest record of each key.
    keys: HashMap<String, TailKey>,
    /// Keys in the order they were recorded: (record, position, key); records increase and
    /// positions never decrease along it.
    order: VecDeque<(u64, i64, String)>,
    /// The last record number given out.
    records: u64,
    /// Every key the state database may hold (`key_filter.rs`); `None` until the first build
    /// after a start finishes.
    filter: Option<KeyFilter>,
    /// A filter being built: it receives every key recorded meanwhile.
    building: Option<KeyFilter>,
    /// A build is claimed (its thread may not have begun it yet) or running.
    build_claimed: bool,
    /// No build starts before this (after one failed).
    retry_at: Option<Instant>,
}

/// What the tail knows of a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// Held here, live.
    Live(KeyOwner),
    /// Certainly not in the state database either: new (or long expired and purged).
    NotStored,
    /// May be in the state database: look it up there.
    MaybeStored,
}

/// Shared by the committer (records, looks up) and the indexer (reads, forgets).
#[derive(Default)]
pub struct DedupeTail {
    inner: Mutex<Inner>,
}

impl DedupeTail {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the tail and its filter know of `key`: its live owner if held here; else whether the
    /// state database may hold it.
    pub fn lookup(&self, key: &str, now: i64) -> Found {
        let inner = self.lock();
        if let Some(k) = inner.keys.get(key).filter(|k| k.expires_at > now) {
            return Found::Live(k.owner.clone());
        }
        match &inner.filter {
            Some(filter) if !filter.may_contain(key.as_bytes()) => Found::NotStored,
            _ => Found::MaybeStored,
        }
    }

    /// Claims the next build of the filter, unless one is claimed or running. Returns whether it
    /// did.
    pub fn claim_filter_build(&self) -> bool {
        let mut inner = self.lock();
        if inner.build_claimed {
            return false;
        }
        inner.build_claimed = true;
        true
    }

    /// Starts the claimed build with `filter` (empty): the keys held here go in now, those
    /// recorded from now on as they are recorded; the filter in use, if any, is dropped, so
    /// that two are never in memory at once (keys are looked up until the new one is ready).
    pub fn begin_filter(&self, mut filter: KeyFilter) {
        let mut inner = self.lock();
        for key in inner.keys.keys() {
            filter.insert(key.as_bytes());
        }
        inner.building = Some(filter);
        inner.filter = None;
    }

    /// Adds keys read from the state database to the filter being built.
    pub fn add_to_filter<'a>(&self, keys: impl IntoIterator<Item = &'a [u8]>) {
        if let Some(filter) = self.lock().building.as_mut() {
            for key in keys {
                filter.insert(key);
            }
        }
    }

    /// Puts the filter being built in use.
    pub fn finish_filter(&self) {
        let mut inner = self.lock();
        if let Some(mut filter) = inner.building.take() {
            filter.put_in_use();
            inner.filter = Some(filter);
            inner.retry_at = None;
        }
        inner.build_claimed = false;
    }

    /// Drops the filter being built (its scan failed); the next build waits [`FILTER_RETRY`].
    pub fn abandon_filter(&self) {
        let mut inner = self.lock();
        inner.building = None;
        inner.build_claimed = false;
        inner.retry_at = Some(Instant::now() + FILTER_RETRY);
    }

    /// If a filter should be built now (none yet, or the one in use is full, and no build is
    /// claimed), how many keys the last one held (a floor for the new one's size).
    pub fn filter_wanted(&self) -> Option<usize> {
        let inner = self.lock();
        if inner.build_claimed || inner.retry_at.is_some_and(|at| Instant::now() < at) {
            return None;
        }
        match &inner.filter {
            None => Some(0),
            Some(filter) if filter.is_full() => Some(filter.added()),
            Some(_) => None,
        }
    }

    /// The size of the filter in use (bytes; 0 while there is none).
    pub fn filter_bytes(&self) -> usize {
        self.lock().filter.as_ref().map_or(0, KeyFilter::bytes)
    }

    /// Records the keys a commit wrote and that the log is committed through `head`.
    pub fn record(
        &self,
        keys: impl IntoIterator<Item = (String, KeyOwner)>,
        expires_at: i64,
        head: i64,
    ) {
        let mut inner = self.lock();
        for (key, owner) in keys {
            // Into the filters first: a key must be in them before the indexer can store it.
            if let Some(filter) = inner.filter.as_mut() {
                filter.insert(key.as_bytes());
            }
            if let Some(filter) = inner.building.as_mut() {
                filter.insert(key.as_bytes());
            }
            inner.records += 1;
            let record = inner.records;
            inner.order.push_back((record, head, key.clone()));
            let entry = TailKey {
                key: key.clone(),
                owner,
                expires_at,
                position: head,
                record,
            };
            inner.keys.insert(key, entry);
        }
        inner.through = inner.through.max(head);
    }

    /// Up to where the log is committed with its keys recorded here: the indexer never indexes
    /// past it, or it would forget keys the committer has not recorded yet.
    pub fn through(&self) -> i64 {
        self.lock().through
    }

    /// How many keys wait to be indexed.
    pub fn len(&self) -> usize {
        self.lock().keys.len()
    }

    /// Whether no key waits.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys recorded at positions up to `position`, oldest first (for the indexer to write).
    pub fn up_to(&self, position: i64) -> Pending {
        let inner = self.lock();
        let mut pending = Pending {
            keys: Vec::new(),
            through_record: 0,
        };
        for (record, p, key) in inner.order.iter().take_while(|(_, p, _)| *p <= position) {
            pending.through_record = *record;
            // Only the newest record of a key is written (an older one was superseded).
            if let Some(k) = inner.keys.get(key).filter(|k| k.record == *record) {
                debug_assert_eq!(k.position, *p);
                pending.keys.push(k.clone());
            }
        }
        pending
    }

    /// Forgets the records up to `through_record`, once the indexer has committed them.
    pub fn forget_through(&self, through_record: u64) {
        let mut inner = self.lock();
        while inner
            .order
            .front()
            .is_some_and(|(r, _, _)| *r <= through_record)
        {
            let Some((record, _, key)) = inner.order.pop_front() else {
                break;
            };
            // A key recorded again later stays for its newer record.
            if inner.keys.get(&key).is_some_and(|k| k.record == record) {
                inner.keys.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl DedupeTail {
        /// The live owner of `key`, if the tail holds it.
        fn find(&self, key: &str, now: i64) -> Option<KeyOwner> {
            match self.lookup(key, now) {
                Found::Live(owner) => Some(owner),
                Found::NotStored | Found::MaybeStored => None,
            }
        }
    }

    fn owner(seq: i64) -> KeyOwner {
        KeyOwner {
            event_id: format!("evt_{seq}"),
            seq,
        }
    }

    #[test]
    fn keys_stay_findable_until_forgotten_by_position() {
        let tail = DedupeTail::default();
        tail.record([("rid:a".to_owned(), owner(1))], 100, 1);
        tail.record([("rid:b".to_owned(), owner(2))], 100, 2);
        assert_eq!(tail.through(), 2);
        assert_eq!(tail.find("rid:a", 50), Some(owner(1)));
        assert_eq!(tail.find("rid:a", 100), None, "expired");
        let pending = tail.up_to(1);
        let first: Vec<&str> = pending.keys.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(first, ["rid:a"]);
        tail.forget_through(pending.through_record);
        assert_eq!(tail.find("rid:a", 50), None);
        assert_eq!(tail.find("rid:b", 50), Some(owner(2)));
        assert_eq!(tail.len(), 1);
    }

    #[test]
    fn a_key_recorded_again_is_kept_for_its_newer_position() {
        let tail = DedupeTail::default();
        tail.record([("sem:x".to_owned(), owner(1))], 10, 1);
        tail.record([("sem:x".to_owned(), owner(5))], 100, 5);
        let old = tail.up_to(1);
        assert_eq!(old.keys.len(), 0, "the old record is superseded");
        tail.forget_through(old.through_record);
        assert_eq!(tail.find("sem:x", 50), Some(owner(5)));
        tail.forget_through(tail.up_to(5).through_record);
        assert!(tail.is_empty());
    }

    #[test]
    fn without_a_filter_every_key_not_held_may_be_stored() {
        let tail = DedupeTail::default();
        assert_eq!(tail.lookup("rid:new", 0), Found::MaybeStored);
        assert_eq!(tail.filter_wanted(), Some(0));
    }

    #[test]
    fn a_filter_build_misses_no_key_recorded_before_during_or_after_it() {
        let tail = DedupeTail::default();
        // Recorded before the build and already indexed and forgotten: in the table.
        tail.record([("rid:indexed".to_owned(), owner(1))], 100, 1);
        tail.forget_through(tail.up_to(1).through_record);
        // Recorded before the build, and still held (not indexed yet).
        tail.record([("rid:held".to_owned(), owner(2))], 100, 2);
        assert!(tail.claim_filter_build());
        assert!(!tail.claim_filter_build(), "one build at a time");
        assert_eq!(tail.filter_wanted(), None, "a build is claimed");
        tail.begin_filter(KeyFilter::with_capacity(10));
        // Recorded while the scan runs.
        tail.record([("rid:during".to_owned(), owner(3))], 100, 3);
        // Before the build finishes nothing is ruled out.
        assert_eq!(tail.lookup("rid:never", 200), Found::MaybeStored);
        // The scan reads the table, which holds the indexed key.
        tail.add_to_filter(["rid:indexed".as_bytes()]);
        tail.finish_filter();
        tail.record([("rid:after".to_owned(), owner(4))], 100, 4);
        tail.forget_through(tail.up_to(4).through_record);
        for key in ["rid:held", "rid:indexed", "rid:during", "rid:after"] {
            assert_eq!(tail.lookup(key, 200), Found::MaybeStored, "{key}");
        }
        assert_eq!(tail.lookup("rid:never", 200), Found::NotStored);
        assert_eq!(tail.filter_wanted(), None);
        assert!(tail.filter_bytes() > 0);
    }

    #[test]
    fn a_failed_build_is_not_retried_at_once() {
        let tail = DedupeTail::default();
        assert!(tail.claim_filter_build());
        tail.begin_filter(KeyFilter::with_capacity(10));
        tail.abandon_filter();
        assert_eq!(tail.filter_wanted(), None);
        assert_eq!(tail.lookup("rid:x", 0), Found::MaybeStored);
    }

    #[test]
    fn aliases_recorded_while_the_indexer_writes_are_not_forgotten() {
        let tail = DedupeTail::default();
        tail.record([("sem:x".to_owned(), owner(3))], 100, 3);
        let pending = tail.up_to(3);
        // A batch of duplicates commits meanwhile: an alias at the same position.
        tail.record([("rid:second".to_owned(), owner(3))], 100, 3);
        tail.forget_through(pending.through_record);
        assert_eq!(tail.find("rid:second", 50), Some(owner(3)));
        assert_eq!(tail.up_to(3).keys.len(), 1);
    }
}
