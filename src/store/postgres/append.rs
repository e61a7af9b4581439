//! The PostgreSQL append path: one group-commit batch, one transaction, two round trips.
//!
//! Every statement of a commit is prepared once per connection (`prepare_cached`) and the
//! statements are **pipelined**: tokio-postgres sends a request as soon as its future is first
//! polled, so futures joined together travel to the server back to back and their answers come
//! back in one trip. A commit is therefore:
//!
//! 1. `BEGIN` (with this transaction's durability and timeouts), lock the `log_head` row, look up
//!    every dedupe key of the batch (`key = ANY($1)`) — one round trip;
//! 2. [`plan_batch`] decides on the client which events are new and which `seq` each gets;
//! 3. insert every new event (`INSERT … SELECT * FROM UNNEST(…)`), advance the head and notify,
//!    insert the keys the lookup did not find and take over the expired ones it found (one
//!    `UNNEST` statement each), `COMMIT` — one round trip, which ends
//!    when the WAL holding the commit is flushed (`synchronous_commit = on`).
//!
//! Why the head row is still locked, and why for exactly this long, is in `docs/postgres-log.md`:
//! the lock is what keeps `seq` gap-free and in commit order, so readers that ask for "events
//! after seq N" can never skip one that commits later, and what makes the dedupe plan exact
//! across instances. Everything that does not need it — making values storable, computing the
//! dedupe keys, preparing statements — happens before `BEGIN`.
//!
//! A connection whose transaction did not end cleanly (an error, a deadline, a dropped future) is
//! closed, never handed back to the pool: the next commit must not start inside someone else's
//! half-finished transaction.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use futures_util::future::try_join3;
use tokio_postgres::Statement;
use tokio_postgres::types::ToSql;

use super::super::dedupe::{KeyOwner, plan_batch};
use super::super::{AppendOutcome, NewEvent, StoreError};
use crate::core::clock::now_millis;

/// Opens the append's transaction. `SET LOCAL` makes the durability the ack relies on hold
/// whatever the database or role defaults say (`synchronous_commit = off` would ack before the
/// WAL flush), and bounds the waits: a lock held elsewhere (a stuck instance, a hand-run
/// transaction) turns into a 503 Zoom retries, not into acks that hang past Zoom's 3 s timeout.
/// `force_custom_plan`: the statements are prepared once per connection, and after five runs
/// PostgreSQL may switch a prepared statement to a generic plan made without knowing the
/// values — for the key lookup, once chosen while `dedupe_keys` was small, a sequential scan
/// kept for the connection's life (measured: the commit time doubled with every 3,200 events).
/// Planning these few statements per commit costs far less. One simple-query message,
/// pipelined with the lock and the lookup.
const BEGIN: &str = "BEGIN; SET LOCAL synchronous_commit = on; \
    SET LOCAL lock_timeout = '5s'; SET LOCAL statement_timeout = '10s'; \
    SET LOCAL plan_cache_mode = force_custom_plan";

/// Sent first in the writes' round trip. The writes take their rows from `UNNEST` of their
/// arrays, so their one possible plan does not depend on the values: planning them anew for
/// every commit, as `force_custom_plan` (needed by the key lookup above) would, cost ~5 % of the
/// append backend's CPU in a flood.
const WRITES_USE_GENERIC_PLANS: &str = "SET LOCAL plan_cache_mode = force_generic_plan";

/// The head row: the one lock every append of every instance takes, held until commit.
const LOCK_HEAD: &str = "SELECT seq FROM log_head FOR UPDATE";

/// Every dedupe key the batch mentions, in one statement. Runs after `LOCK_HEAD` in the same
/// transaction, so (read committed: a fresh snapshot per statement) it sees every key the
/// previous holder of the lock committed. Expired keys are told apart on the client, so the
/// only way to answer is the primary key (an `expires_at > $2` condition would invite the
/// `expires_at` index, whose range covers every live key of the window).
const LOOKUP_KEYS: &str =
    "SELECT key, event_id, seq, expires_at FROM dedupe_keys WHERE key = ANY($1)";

const INSERT_EVENTS: &str = "INSERT INTO events (seq, id, source, event, event_ts, account_id, object_id, object_uuid, received_at, request_id, dedupe_key, body)
    SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::text[], $9::bigint[], $10::text[], $11::text[], $12::bytea[])";

/// Moves the head; the notification is delivered at commit, so other instances' stream
/// sessions, sync and fan-out wake only once the events are visible.
const ADVANCE_HEAD: &str =
    "WITH head AS (UPDATE log_head SET seq = $1) SELECT pg_notify('zoomhook_log', '')";

/// Keys the lookup did not find. No row can have appeared since: only a holder of the head lock
/// adds keys. A plain insert, because an `ON CONFLICT` insert probes the key's index once more
/// before inserting (measured: ~25 % of the keys' cost, bench/RESULTS.md 2026-12-07). Should a
/// key exist after all, the unique index refuses it and the whole batch rolls back — never a
/// second owner for a key.
const INSERT_KEYS: &str = "INSERT INTO dedupe_keys (key, event_id, seq, expires_at)
    SELECT k, e, s, $4 FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS t(k, e, s)";

/// Keys the lookup found expired are taken over; a live one cannot exist (the plan was made
/// under the lock from the live keys), so `WHERE` never skips a key the plan counted on. A key
/// the retention purge deleted meanwhile is inserted.
const TAKE_OVER_KEYS: &str = "INSERT INTO dedupe_keys (key, event_id, seq, expires_at)
    SELECT k, e, s, $4 FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS t(k, e, s)
    ON CONFLICT (key) DO UPDATE SET event_id = excluded.event_id, seq = excluded.seq, expires_at = excluded.expires_at
    WHERE dedupe_keys.expires_at <= $5";

/// Longest a whole append may take on the client's side. The server's own timeouts (above) end
/// a wait on a lock or a slow statement sooner; this catches what they cannot see — a server
/// that vanished without closing the socket — so the committer answers 503 instead of hanging.
const APPEND_DEADLINE: Duration = Duration::from_secs(20);

/// Appends `batch` in one transaction on a connection of the committer's `pool`.
pub(super) async fn append_batch(
    pool: &Pool,
    batch: Vec<NewEvent>,
    dedupe_window_ms: i64,
) -> Result<Vec<AppendOutcome>, StoreError> {
    // Everything that does not need the database is done before the transaction starts.
    let batch: Vec<NewEvent> = batch.into_iter().map(NewEvent::into_storable).collect();
    let keys: Vec<String> = batch.iter().flat_map(NewEvent::dedupe_keys).collect();
    let mut checkout = Checkout(Some(pool.get().await?));
    let outcome = tokio::time::timeout(
        APPEND_DEADLINE,
        commit(checkout.client()?, &batch, &keys, dedupe_window_ms),
    )
    .await
    .unwrap_or_else(|_| {
        Err(StoreError::Unavailable(format!(
            "postgres: the append did not finish within {APPEND_DEADLINE:?}"
        )))
    })?;
    checkout.release();
    Ok(outcome)
}

/// The statements of one commit, prepared once per connection.
struct Statements {
    lock_head: Statement,
    lookup_keys: Statement,
    insert_events: Statement,
    advance_head: Statement,
    insert_keys: Statement,
    take_over_keys: Statement,
}

impl Statements {
    /// Cached after the first commit on a connection; the first prepares are pipelined too.
    async fn prepare(client: &Object) -> Result<Statements, tokio_postgres::Error> {
        let (lock_head, lookup_keys, insert_events) = try_join3(
            client.prepare_cached(LOCK_HEAD),
            client.prepare_cached(LOOKUP_KEYS),
            client.prepare_cached(INSERT_EVENTS),
        )
        .await?;
        let (advance_head, insert_keys, take_over_keys) = try_join3(
            client.prepare_cached(ADVANCE_HEAD),
            client.prepare_cached(INSERT_KEYS),
            client.prepare_cached(TAKE_OVER_KEYS),
        )
        .await?;
        Ok(Statements {
            lock_head,
            lookup_keys,
            insert_events,
            advance_head,
            insert_keys,
            take_over_keys,
        })
    }
}

/// The transaction itself. Any error leaves the transaction open or aborted on the server:
/// the caller's [`Checkout`] then closes the connection, which rolls it back.
async fn commit(
    client: &Object,
    batch: &[NewEvent],
    keys: &[String],
    dedupe_window_ms: i64,
) -> Result<Vec<AppendOutcome>, StoreError> {
    let statements = Statements::prepare(client).await?;
    let now = now_millis();
    // Round trip 1. The futures are polled in argument order, so BEGIN reaches the server first.
    let (_, head, live) = try_join3(
        client.batch_execute(BEGIN),
        client.query_one(&statements.lock_head, &[]),
        client.query(&statements.lookup_keys, &[&keys]),
    )
    .await?;
    let mut live_keys = HashMap::with_capacity(live.len());
    let mut expired_keys = HashSet::new();
    for row in &live {
        let key: String = row.try_get(0)?;
        let expires_at: i64 = row.try_get(3)?;
        if expires_at > now {
            let owner = KeyOwner {
                event_id: row.try_get(1)?,
                seq: row.try_get(2)?,
            };
            live_keys.insert(key, owner);
        } else {
            expired_keys.insert(key);
        }
    }
    let plan = plan_batch(batch, head.try_get(0)?, live_keys);

    let mut columns = EventColumns::default();
    for &(index, seq) in &plan.inserts {
        columns.push(seq, &batch[index]);
    }
    let (taken_over, new_keys): (Vec<_>, Vec<_>) = plan
        .keys
        .iter()
        .partition(|(key, _)| expired_keys.contains(key));
    let new_keys = KeyColumns::of(&new_keys);
    let taken_over = KeyColumns::of(&taken_over);
    let expires_at = now.saturating_add(dedupe_window_ms);

    // Round trip 2: the writes and the commit, back to back. If a write fails the transaction is
    // aborted and the server answers the COMMIT with a rollback, so every answer is checked —
    // an error of any of them means nothing was committed.
    let inserts = async {
        if !plan.inserts.is_empty() {
            client
                .execute(&statements.insert_events, &columns.params())
                .await?;
        }
        Ok::<_, tokio_postgres::Error>(())
    };
    let advance = async {
        if !plan.inserts.is_empty() {
            client
                .execute(&statements.advance_head, &[&plan.new_head])
                .await?;
        }
        Ok::<_, tokio_postgres::Error>(())
    };
    let insert_keys = async {
        if !new_keys.key.is_empty() {
            client
                .execute(
                    &statements.insert_keys,
                    &[&new_keys.key, &new_keys.owner, &new_keys.seq, &expires_at],
                )
                .await?;
        }
        Ok::<_, tokio_postgres::Error>(())
    };
    let take_over_keys = async {
        if !taken_over.key.is_empty() {
            client
                .execute(
                    &statements.take_over_keys,
                    &[
                        &taken_over.key,
                        &taken_over.owner,
                        &taken_over.seq,
                        &expires_at,
                        &now,
                    ],
                )
                .await?;
        }
        Ok::<_, tokio_postgres::Error>(())
    };
    futures_util::future::try_join(
        client.batch_execute(WRITES_USE_GENERIC_PLANS),
        futures_util::future::try_join5(
            inserts,
            advance,
            insert_keys,
            take_over_keys,
            client.batch_execute("COMMIT"),
        ),
    )
    .await?;
    Ok(plan.outcomes)
}

/// Column-wise copies of dedupe keys and their owners, for one `UNNEST` statement.
struct KeyColumns<'a> {
    key: Vec<&'a str>,
    owner: Vec<&'a str>,
    seq: Vec<i64>,
}

impl<'a> KeyColumns<'a> {
    fn of(keys: &[&'a (String, KeyOwner)]) -> KeyColumns<'a> {
        KeyColumns {
            key: keys.iter().map(|(k, _)| k.as_str()).collect(),
            owner: keys.iter().map(|(_, o)| o.event_id.as_str()).collect(),
            seq: keys.iter().map(|(_, o)| o.seq).collect(),
        }
    }
}

/// A connection of the committer (or of the delivery pump) that goes back to the pool only after
/// a clean end of its transaction; dropped any other way (an error, the deadline, a cancelled
/// append) it is closed, which makes the server roll back whatever it had begun.
pub(super) struct Checkout(pub(super) Option<Object>);

impl Checkout {
    pub(super) fn client(&self) -> Result<&Object, StoreError> {
        self.0
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("postgres: the connection was released".into()))
    }

    /// The transaction ended cleanly: the connection may serve the next commit.
    pub(super) fn release(&mut self) {
        self.0.take();
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(object) = self.0.take() {
            // Taken out of the pool and dropped: the socket closes.
            drop(Object::take(object));
        }
    }
}

/// Column-wise copies of the events to insert, for one `UNNEST` insert per batch.
#[derive(Default)]
struct EventColumns<'a> {
    seq: Vec<i64>,
    id: Vec<&'a str>,
    source: Vec<&'a str>,
    event: Vec<&'a str>,
    event_ts: Vec<Option<i64>>,
    account_id: Vec<Option<&'a str>>,
    object_id: Vec<Option<&'a str>>,
    object_uuid: Vec<Option<&'a str>>,
    received_at: Vec<i64>,
    request_id: Vec<Option<&'a str>>,
    dedupe_key: Vec<&'a str>,
    body: Vec<&'a [u8]>,
}

impl<'a> EventColumns<'a> {
    fn push(&mut self, seq: i64, e: &'a NewEvent) {
        self.seq.push(seq);
        self.id.push(&e.id);
        self.source.push(&e.source);
        self.event.push(&e.event);
        self.event_ts.push(e.event_ts);
        self.account_id.push(e.account_id.as_deref());
        self.object_id.push(e.object_id.as_deref());
        self.object_uuid.push(e.object_uuid.as_deref());
        self.received_at.push(e.received_at);
        self.request_id.push(e.request_id.as_deref());
        self.dedupe_key.push(&e.semantic_key);
        self.body.push(&e.body[..]);
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 12] {
        [
            &self.seq,
            &self.id,
            &self.source,
            &self.event,
            &self.event_ts,
            &self.account_id,
            &self.object_id,
            &self.object_uuid,
            &self.received_at,
            &self.request_id,
            &self.dedupe_key,
            &self.body,
        ]
    }
}
