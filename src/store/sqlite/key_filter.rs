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

use super::StoreError;
use super::dedupe_tail::DedupeTail;

/// Bits per key the filter is sized for: about 1 % of new keys still looked up (with [`HASHES`]).
const BITS_PER_KEY: usize = 10;
/// Bit positions per key.
const HASHES: u32 = 5;
/// Fewest keys a filter is sized for: 1.25 MiB of bits.
const MIN_KEYS: usize = 1 << 20;
/// Most keys a filter is sized for: 16 MiB of bits. Past it the filter answers "maybe" more
/// often (about 8 % of new keys at twice this many), never wrongly.
const MAX_KEYS: usize = (16 << 20) * 8 / BITS_PER_KEY;
/// Keys read per statement while building: each read is short, so the checkpointer's restart
/// never waits long for the build.
const SCAN_CHUNK: i64 = 20_000;

/// The filter: `bits.len() * 64` bits.
pub struct KeyFilter {
    bits: Vec<u64>,
    /// For how many keys it was sized; once it holds more, a new one is built.
    capacity: usize,
    /// Keys added (with repeats).
    added: usize,
}

/// The hash of a key: fixed, so the same key sets the same bits in every filter of a process.
fn hash(key: &str) -> u64 {
    let mut hasher =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .build_hasher();
    hasher.write(key.as_bytes());
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
        }
    }

    /// The bit positions of a key: double hashing (`h1 + i·h2`), each 64-bit value mapped onto
    /// the bits by multiplying (its high word), which needs no power-of-two size.
    fn positions(&self, key: &str) -> impl Iterator<Item = usize> + use<> {
        let h1 = hash(key);
        let h2 = h1.rotate_left(32) | 1;
        let bits = self.bits.len() as u128 * 64;
        (0..u64::from(HASHES)).map(move |i| {
            let h = h1.wrapping_add(i.wrapping_mul(h2));
            ((u128::from(h) * bits) >> 64) as usize
        })
    }

    /// Adds a key.
    pub fn insert(&mut self, key: &str) {
        for bit in self.positions(key) {
            self.bits[bit / 64] |= 1 << (bit % 64);
        }
        self.added += 1;
    }

    /// False only if the key was never added.
    pub fn may_contain(&self, key: &str) -> bool {
        self.positions(key)
            .all(|bit| self.bits[bit / 64] & (1 << (bit % 64)) != 0)
    }

    /// Whether it should be built again: it holds more keys than it was sized for — twice as
    /// many at the largest size, where only a table the purge has thinned since the last build
    /// gives a better one.
    pub fn is_full(&self) -> bool {
        let limit = if self.capacity < MAX_KEYS {
            self.capacity
        } else {
            self.capacity.saturating_mul(2)
        };
        self.added > limit
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
pub fn spawn_build(
    tail: &Arc<DedupeTail>,
    open_reader: impl FnOnce() -> Result<Connection, StoreError> + Send + 'static,
    stored_keys: usize,
) {
    if !tail.begin_filter(KeyFilter::with_capacity(stored_keys.saturating_mul(2))) {
        return;
    }
    let building = Arc::clone(tail);
    let recorder = crate::metrics::current();
    let started = std::thread::Builder::new()
        .name("sqlite-keyfilter".into())
        .spawn(move || {
            let result = open_reader().and_then(|conn| scan(&conn, &building));
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
                    // Lookups go on without a filter (or with the old one); the next commit
                    // that finds it missing or full starts another build.
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

/// Adds every key of `dedupe_keys` to the tail's filter under construction, in key order and in
/// chunks (each its own short read). Returns how many keys it read.
fn scan(conn: &Connection, tail: &DedupeTail) -> Result<usize, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT key FROM dedupe_keys WHERE key > ?1 ORDER BY key LIMIT ?2")?;
    let mut after = String::new();
    let mut total = 0;
    loop {
        let keys = stmt
            .query_map(rusqlite::params![after, SCAN_CHUNK], |r| {
                r.get::<_, String>(0)
            })?
            .collect::<Result<Vec<String>, _>>()?;
        total += keys.len();
        tail.add_to_filter(keys.iter().map(String::as_str));
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
            filter.insert(key);
        }
        assert!(keys.iter().all(|k| filter.may_contain(k)));
    }

    #[test]
    fn keys_never_added_are_mostly_answered_without_a_lookup() {
        let mut filter = KeyFilter::with_capacity(100_000);
        for i in 0..100_000 {
            filter.insert(&format!("rid:{i}"));
        }
        let maybe = (0..100_000)
            .filter(|i| filter.may_contain(&format!("sem:{i}")))
            .count();
        // Sized for 1M keys and holding 100k: well under 1 % answer "maybe".
        assert!(maybe < 1_000, "{maybe} of 100000 new keys answered maybe");
        assert!(!filter.is_full());
    }

    #[test]
    fn a_filter_past_its_size_asks_to_be_built_again() {
        let mut filter = KeyFilter::with_capacity(0);
        assert_eq!(filter.bytes(), MIN_KEYS * BITS_PER_KEY / 8);
        for i in 0..=MIN_KEYS {
            filter.insert(&i.to_string());
        }
        assert!(filter.is_full());
    }
}
