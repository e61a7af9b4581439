//! A Bloom filter of the dedupe keys the state database may hold, so the committer looks up in
//! `dedupe_keys` only the keys that may be there.
//!
//! Almost every key an append looks up is new (a request id, a hash of a body not seen before),
//! and `dedupe_keys` is as large as the dedupe window: looking each one up walks the B-tree down
//! to a leaf that is rarely in the cache — a read from the page cache or the disk per key, on the
//! path every ack waits for. A Bloom filter answers "certainly not there" for nearly all of them
//! from memory. It never answers "not there" for a key that is: a key gets into `dedupe_keys`
//! only through the tail (`dedupe_tail.rs`), which adds it here as it records it, or was there
//! when the filter was built. So dedupe stays exact; what the filter's size limits is only how
//! many lookups it saves (a "maybe" costs the lookup it would have cost anyway).
//!
//! A Bloom filter cannot forget, so keys the retention purge deletes stay in it; it is built
//! again from the table when it holds more keys than it was sized for. A build runs beside the
//! appends on its own thread and read connection, and misses nothing: it starts by taking every
//! key the tail holds and from then on receives every key the tail records; every other key of
//! `dedupe_keys` was committed there before the build started (the indexer commits keys before
//! the tail forgets them), so the scan, whose reads all begin after that, sees it. Until the
//! first build after a start finishes, every key is looked up as before.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use rusqlite::Connection;
use rusqlite::types::Value;

use super::StoreError;
use super::dedupe_tail::DedupeTail;

/// Bits per key the filter is sized for: about 2.4 % of new keys still looked up when it holds
/// that many (with [`HASHES`]), far fewer while it holds fewer.
const BITS_PER_KEY: usize = 8;
/// Bit positions per key.
const HASHES: u32 = 4;
/// Fewest keys a filter is sized for: 2 MiB of bits, so a filter built at start (from a small
/// table) is not built again during the first minutes of a flood (0.3 % of new keys looked up
/// at 1.1 million keys): each build costs a scan of the table and, while it runs, the memory of
/// a second filter.
const MIN_KEYS: usize = 2 << 20;
/// Most keys a filter is sized for: 8 MiB of bits (8.4 million keys; the RSS budget is 64 MB).
/// Past it the filter answers "maybe" more often (about 16 % of new keys at twice this many),
/// never wrongly.
const MAX_KEYS: usize = (8 << 20) * 8 / BITS_PER_KEY;
/// Keys read per statement while building: each read is short, so the checkpointer's restart
/// never waits long for the build.
const SCAN_CHUNK: i64 = 20_000;
/// Keys added to the filter under construction per hold of the tail's lock.
const ADD_AT_ONCE: usize = 1_000;

/// The filter: `bits.len() * 64` bits.
pub struct KeyFilter {
    bits: Vec<u64>,
    /// For how many keys it was sized; once it holds more, a new one is built.
    capacity: usize,
    /// Keys added (with repeats).
    added: usize,
    /// Keys it held when it went into use (0 until then).
    built_with: usize,
}

/// The hash of a key: fixed, so the same key sets the same bits in every filter of a process.
fn hash(key: &[u8]) -> u64 {
    let mut hasher =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .build_hasher();
    hasher.write(key);
    hasher.finish()
}

impl KeyFilter {
    /// A filter sized for `keys` keys (within [`MIN_KEYS`] and [`MAX_KEYS`]).
    pub fn with_capacity(keys: usize) -> KeyFilter {
        let capacity = keys.clamp(MIN_KEYS, MAX_KEYS);
        let words = (capacity * BITS_PER_KEY).div_ceil(64);
        KeyFilter {
            bits: vec![0; words],
            capacity,
            added: 0,
            built_with: 0,
        }
    }

    /// The bit positions of a key: double hashing (`h1 + i·h2`), each 64-bit value mapped onto
    /// the bits by multiplying (its high word), which needs no power-of-two size.
    fn positions(&self, key: &[u8]) -> impl Iterator<Item = usize> + use<> {
        let h1 = hash(key);
        let h2 = h1.rotate_left(32) | 1;
        let bits = self.bits.len() as u128 * 64;
        (0..u64::from(HASHES)).map(move |i| {
            let h = h1.wrapping_add(i.wrapping_mul(h2));
            ((u128::from(h) * bits) >> 64) as usize
        })
    }

    /// Adds a key (its bytes: a stored key that is not valid text is still a key).
    pub fn insert(&mut self, key: &[u8]) {
        for bit in self.positions(key) {
            self.bits[bit / 64] |= 1 << (bit % 64);
        }
        self.added += 1;
    }

    /// False only if the key was never added.
    pub fn may_contain(&self, key: &[u8]) -> bool {
        self.positions(key)
            .all(|bit| self.bits[bit / 64] & (1 << (bit % 64)) != 0)
    }

    /// Marks it as gone into use, holding what it holds now.
    pub fn put_in_use(&mut self) {
        self.built_with = self.added;
    }

    /// Whether it should be built again: it holds more keys than it was sized for. At the
    /// largest size a new one is only better if the table has been thinned by the purge since:
    /// it is built again once as many keys as it was sized for have come on top of a table that
    /// fitted, never when the table alone did not fit (each build would be as full as the last).
    pub fn is_full(&self) -> bool {
        if self.capacity < MAX_KEYS {
            self.added > self.capacity
        } else {
            self.built_with < self.capacity && self.added - self.built_with > self.capacity
        }
    }

    /// Keys added (with repeats).
    pub fn added(&self) -> usize {
        self.added
    }

    /// Its size in bytes.
    pub fn bytes(&self) -> usize {
        self.bits.len() * 8
    }
}

/// Builds a filter of `dedupe_keys` (and of what the tail records meanwhile) on a thread of its
/// own, then puts it in the tail's hands. Does nothing if a build is already running.
/// `known_keys`: how many keys the last filter held (0 if none), a floor for its size.
pub fn spawn_build(
    tail: &Arc<DedupeTail>,
    open_reader: impl FnOnce() -> Result<Connection, StoreError> + Send + 'static,
    known_keys: usize,
) {
    if !tail.claim_filter_build() {
        return;
    }
    let building = Arc::clone(tail);
    let recorder = crate::metrics::current();
    let started = std::thread::Builder::new()
        .name("sqlite-keyfilter".into())
        .spawn(move || {
            let result = open_reader().and_then(|conn| build(&conn, &building, known_keys));
            match result {
                Ok(keys) => {
                    building.finish_filter();
                    crate::metrics::on_thread(recorder.as_ref(), || {
                        metrics::gauge!("zoomhook_dedupe_filter_bytes")
                            .set(building.filter_bytes() as f64);
                    });
                    tracing::debug!(keys, "dedupe key filter built");
                }
                Err(error) => {
                    // Lookups go on without a filter; a commit starts another build later.
                    building.abandon_filter();
                    tracing::warn!(%error, "building the dedupe key filter failed; keys are looked up in the database meanwhile");
                }
            }
        });
    if let Err(error) = started {
        tail.abandon_filter();
        tracing::warn!(%error, "cannot start building the dedupe key filter");
    }
}

/// Sizes a filter for the table (counted on its smaller `expires_at` index), registers it with
/// the tail, and adds every key of `dedupe_keys` to it, in key order and in chunks (each its own
/// short read). Returns how many keys it read.
fn build(conn: &Connection, tail: &DedupeTail, known_keys: usize) -> Result<usize, StoreError> {
    let stored: i64 = conn.query_row("SELECT COUNT(*) FROM dedupe_keys", [], |r| r.get(0))?;
    let stored = usize::try_from(stored).unwrap_or(0).max(known_keys);
    tail.begin_filter(KeyFilter::with_capacity(stored.saturating_mul(2)));
    let mut stmt =
        conn.prepare_cached("SELECT key FROM dedupe_keys WHERE key > ?1 ORDER BY key LIMIT ?2")?;
    // Keys compare as SQLite orders them (text before blobs), so paging by the last one read
    // visits each once whatever its type.
    let mut after = Value::Text(String::new());
    let mut total = 0;
    loop {
        let keys = stmt
            .query_map(rusqlite::params![after, SCAN_CHUNK], |r| {
                r.get::<_, Value>(0)
            })?
            .collect::<Result<Vec<Value>, _>>()?;
        total += keys.len();
        // The tail's lock is held per slice, not per chunk: the committer waits on it.
        for slice in keys.chunks(ADD_AT_ONCE) {
            tail.add_to_filter(slice.iter().filter_map(|key| match key {
                Value::Text(text) => Some(text.as_bytes()),
                Value::Blob(bytes) => Some(bytes.as_slice()),
                _ => None,
            }));
        }
        match keys.into_iter().last() {
            Some(last) => after = last,
            None => return Ok(total),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_added_is_always_found() {
        let mut filter = KeyFilter::with_capacity(1000);
        let keys: Vec<String> = (0..200_000).map(|i| format!("rid:{i:x}-\u{0}é")).collect();
        for key in &keys {
            filter.insert(key.as_bytes());
        }
        assert!(keys.iter().all(|k| filter.may_contain(k.as_bytes())));
    }

    #[test]
    fn keys_never_added_are_mostly_answered_without_a_lookup() {
        let mut filter = KeyFilter::with_capacity(100_000);
        for i in 0..100_000 {
            filter.insert(format!("rid:{i}").as_bytes());
        }
        let maybe = (0..100_000)
            .filter(|i| filter.may_contain(format!("sem:{i}").as_bytes()))
            .count();
        // Sized for the minimum (2M keys) and holding 100k: well under 1 % answer "maybe".
        assert!(maybe < 1_000, "{maybe} of 100000 new keys answered maybe");
        assert!(!filter.is_full());
    }

    #[test]
    fn a_filter_past_its_size_asks_to_be_built_again() {
        let mut filter = KeyFilter::with_capacity(0);
        assert_eq!(filter.bytes(), MIN_KEYS * BITS_PER_KEY / 8);
        for i in 0..=MIN_KEYS {
            filter.insert(i.to_string().as_bytes());
        }
        assert!(filter.is_full());
    }

    #[test]
    fn at_the_largest_size_a_table_that_did_not_fit_is_not_scanned_again_and_again() {
        // Fields set directly: a filter of the largest size would take 8 MiB and millions of keys.
        let at_max = |built_with: usize, added: usize| KeyFilter {
            bits: Vec::new(),
            capacity: MAX_KEYS,
            added,
            built_with,
        };
        // The table alone filled it: a new build would be as full; never again.
        assert!(!at_max(2 * MAX_KEYS + 1, 2 * MAX_KEYS + 1).is_full());
        assert!(!at_max(MAX_KEYS + 1, 10 * MAX_KEYS).is_full());
        // The table fitted: built again once as many keys came on top.
        assert!(!at_max(MAX_KEYS / 2, MAX_KEYS / 2 + MAX_KEYS).is_full());
        assert!(at_max(MAX_KEYS / 2, MAX_KEYS / 2 + MAX_KEYS + 1).is_full());
    }
}
