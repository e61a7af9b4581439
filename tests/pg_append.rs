//! The append path under concurrency: several committers — two instances on one PostgreSQL, or
//! two committers on one store — appending at once. Dedupe stays exact across them, `seq` stays
//! gap-free, and a reader that follows the log by "events after seq N" (as sync, fan-out and the
//! stream do) sees every event, in order, never skipping one that commits later
//! (`docs/postgres-log.md` gives the argument these tests check).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::contract::*;
use common::*;
use zoomhook::store::group_commit::EventAppender;
use zoomhook::store::{AppendOutcome, EventQuery, EventStore, NewEvent};

both_backends!(a_reader_following_after_seq_sees_every_commit_of_concurrent_committers);

/// A distinct `meeting.participant_joined` body (its meeting and participant are random, `n`
/// sets its `event_ts`): no two calls share a semantic key.
fn joined(n: i64) -> Vec<u8> {
    let value =
        zoomhook::zoom::templates::template("meeting.participant_joined", 1_700_000_000_000 + n)
            .expect("template");
    zoomhook::zoom::templates::to_bytes(&value)
}

fn id_and_seq(outcome: &AppendOutcome) -> (String, i64) {
    match outcome {
        AppendOutcome::Appended { id, seq } | AppendOutcome::Duplicate { id, seq } => {
            (id.clone(), *seq)
        }
    }
}

/// Every event of the log, oldest first, read page by page as a reader would.
async fn whole_log(store: &dyn EventStore) -> Vec<zoomhook::store::StoredEvent> {
    let mut events = Vec::new();
    loop {
        let page = store
            .list_events(&EventQuery {
                after_seq: events.last().map(|e: &zoomhook::store::StoredEvent| e.seq),
                limit: 500,
                ..EventQuery::default()
            })
            .await
            .expect("list");
        if page.is_empty() {
            return events;
        }
        events.extend(page);
    }
}

/// Two instances take the same events at the same moment — Zoom retrying one request on both
/// (same `x-zm-request-id`, a different body), or two event subscriptions sending one event
/// (same body, different request ids). Each event is stored once, both instances answer with
/// the same id and seq, and the log is gap-free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_appending_the_same_events_at_once_store_each_once() {
    let db = TestDb::postgres().await;
    let instances = [db.open_store().await, db.open_store().await];
    let appenders: Vec<(EventAppender, _)> = instances
        .iter()
        .map(|store| EventAppender::start(Arc::clone(store), WEEK_MS))
        .collect();
    const EVENTS: i64 = 200;
    let mut tasks = Vec::new();
    for n in 0..EVENTS {
        // Templates are random beyond `event_ts`: one body, shared by both sides.
        let shared_body = joined(n * 2);
        for (side, (appender, _)) in appenders.iter().enumerate() {
            let side = side as i64;
            let event = if n % 2 == 0 {
                // A Zoom retry: one request id, bodies that differ (another event_ts).
                new_event(&joined(n * 2 + side), Some(&format!("req-{n}")), n)
            } else {
                // Two subscriptions: one body, two request ids.
                new_event(&shared_body, Some(&format!("req-{n}-{side}")), n)
            };
            let appender = appender.clone();
            tasks.push(tokio::spawn(async move {
                (n, appender.append(event).await.expect("append"))
            }));
        }
    }
    let mut answers: HashMap<i64, Vec<AppendOutcome>> = HashMap::new();
    for task in tasks {
        let (n, outcome) = task.await.expect("task");
        answers.entry(n).or_default().push(outcome);
    }
    for (n, outcomes) in &answers {
        let appended = outcomes
            .iter()
            .filter(|o| matches!(o, AppendOutcome::Appended { .. }))
            .count();
        assert_eq!(appended, 1, "event {n} appended once: {outcomes:?}");
        assert_eq!(
            id_and_seq(&outcomes[0]),
            id_and_seq(&outcomes[1]),
            "both instances name the one stored event {n}"
        );
    }
    let log = whole_log(instances[0].as_ref()).await;
    let seqs: Vec<i64> = log.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=EVENTS).collect::<Vec<_>>(),
        "gap-free, once each"
    );
    assert_eq!(instances[1].head_seq().await.expect("head"), EVENTS);
    for (_, outcomes) in answers {
        let (id, seq) = id_and_seq(&outcomes[0]);
        assert_eq!(log[(seq - 1) as usize].id, id);
    }
    for (appender, committer) in appenders {
        drop(appender);
        committer.await.expect("committer");
    }
}

/// Two committers append flat out while a reader follows the log by `after_seq` with small
/// pages, as sync, fan-out and the stream's shared tail do. If a batch could become visible
/// before a batch with lower seqs, the reader would move past the lower seqs and never see them.
async fn a_reader_following_after_seq_sees_every_commit_of_concurrent_committers(db: TestDb) {
    // On PostgreSQL, two instances; SQLite is one process's file, so two committers share it.
    let first = db.open_store().await;
    let second = match db.backend {
        Backend::Postgres => db.open_store().await,
        Backend::Sqlite => Arc::clone(&first),
    };
    const EVENTS: i64 = 600;
    let mut writers = Vec::new();
    for (side, store) in [&first, &second].into_iter().enumerate() {
        let (appender, committer) = EventAppender::start(Arc::clone(store), WEEK_MS);
        for n in 0..EVENTS / 2 {
            let appender = appender.clone();
            let body = joined(n * 2 + side as i64);
            writers.push(tokio::spawn(async move {
                // Staggered, so commits of both committers overlap all through the run.
                tokio::time::sleep(Duration::from_micros((n % 50) as u64 * 200)).await;
                appender.append(new_event(&body, None, n)).await
            }));
        }
        writers.push(tokio::spawn(async move {
            drop(appender);
            committer.await.expect("committer");
            Ok(AppendOutcome::Duplicate {
                id: String::new(),
                seq: 0,
            })
        }));
    }
    let reader = {
        let store = Arc::clone(&first);
        tokio::spawn(async move {
            let mut cursor = 0;
            let deadline = Instant::now() + Duration::from_secs(60);
            while cursor < EVENTS && Instant::now() < deadline {
                let page = store
                    .list_events(&EventQuery {
                        after_seq: Some(cursor),
                        limit: 7,
                        ..EventQuery::default()
                    })
                    .await
                    .expect("list");
                for event in &page {
                    assert_eq!(
                        event.seq,
                        cursor + 1,
                        "the reader at {cursor} was shown {} first: it would skip the seqs between",
                        event.seq
                    );
                    cursor = event.seq;
                }
                if page.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            cursor
        })
    };
    for writer in writers {
        writer.await.expect("writer").expect("append");
    }
    assert_eq!(
        reader.await.expect("reader"),
        EVENTS,
        "the reader saw every event"
    );
    assert_eq!(first.head_seq().await.expect("head"), EVENTS);
}

/// An append cut off inside its transaction (here: the head row is held by another session
/// past the lock timeout) fails as `Unavailable` — a 503 for Zoom, which retries — and the next
/// append starts clean: the committer's connection is not reused inside the aborted transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_cut_off_mid_transaction_leaves_the_next_one_clean() {
    let db = TestDb::postgres().await;
    let store = db.open_store().await;
    let first = new_event(&joined(1), Some("r1"), 1);
    store
        .append_batch(vec![first], WEEK_MS)
        .await
        .expect("first append");
    let blocker = db.pg_client().await;
    blocker
        .batch_execute("BEGIN; SELECT seq FROM log_head FOR UPDATE")
        .await
        .expect("hold the head");
    let cut_off = new_event(&joined(2), Some("r2"), 2);
    let error = store
        .append_batch(vec![cut_off.clone()], WEEK_MS)
        .await
        .expect_err("the head is held past the lock timeout");
    assert!(
        matches!(error, zoomhook::store::StoreError::Unavailable(_)),
        "{error:?}"
    );
    blocker.batch_execute("ROLLBACK").await.expect("release");

    let outcomes = store
        .append_batch(
            vec![cut_off.clone(), new_event(&joined(3), None, 3)],
            WEEK_MS,
        )
        .await
        .expect("the next append commits");
    assert_eq!(
        outcomes
            .iter()
            .map(id_and_seq)
            .map(|(_, s)| s)
            .collect::<Vec<_>>(),
        vec![2, 3],
        "nothing of the cut-off append was kept: its event is new, seqs continue"
    );
    assert_eq!(whole_log(store.as_ref()).await.len(), 3);
}

/// Hostile values through the multi-row statements: a NUL in a request id, a key far longer
/// than an index row may be, odd Unicode. The batch commits whole, and each value still finds
/// its event as a duplicate key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_keys_in_one_batch_commit_and_still_dedupe() {
    let db = TestDb::postgres().await;
    let store = db.open_store().await;
    let keys = [
        "nul\0inside".to_owned(),
        "x".repeat(100_000),
        "\u{202e}\u{fe0f}🙂\u{0301}".to_owned(),
    ];
    let batch: Vec<NewEvent> = keys
        .iter()
        .enumerate()
        .map(|(n, key)| new_event(&joined(n as i64), Some(key), 1))
        .collect();
    let outcomes = store.append_batch(batch, WEEK_MS).await.expect("append");
    assert_eq!(
        outcomes.iter().map(|o| id_and_seq(o).1).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let retries: Vec<NewEvent> = keys
        .iter()
        .enumerate()
        .map(|(n, key)| new_event(&joined(100 + n as i64), Some(key), 2))
        .collect();
    let again = store.append_batch(retries, WEEK_MS).await.expect("retries");
    for (first, retry) in outcomes.iter().zip(&again) {
        assert!(
            matches!(retry, AppendOutcome::Duplicate { .. }),
            "{retry:?}"
        );
        assert_eq!(id_and_seq(first), id_and_seq(retry));
    }
    assert_eq!(store.head_seq().await.expect("head"), 3);
}

/// The keys the append indexes compare byte by byte (migration 14), whatever the database's
/// default collation: under a locale's collation every index comparison on the append's path
/// goes through `strcoll`. Checked on the indexes themselves, which are what the comparisons
/// use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keys_the_append_indexes_compare_bytewise() {
    let db = TestDb::postgres().await;
    let _store = db.open_store().await;
    let client = db.pg_client().await;
    let rows = client
        .query(
            "SELECT i.indexrelid::regclass::text, coll.collname
               FROM pg_index i
               CROSS JOIN LATERAL unnest(i.indcollation::oid[]) AS c(oid)
               JOIN pg_collation coll ON coll.oid = c.oid
              WHERE i.indrelid IN ('events'::regclass, 'dedupe_keys'::regclass)
              ORDER BY 1",
            &[],
        )
        .await
        .expect("index collations");
    let collations: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    for index in [
        "dedupe_keys_pkey",
        "events_event",
        "events_id_key",
        "events_object_id",
        "events_object_uuid",
    ] {
        let of_index: Vec<&str> = collations
            .iter()
            .filter(|(name, _)| name == index)
            .map(|(_, coll)| coll.as_str())
            .collect();
        assert_eq!(of_index, ["C"], "{index}: {collations:?}");
    }
}

/// A column whose type no longer matches what this build reads (a hand-edited schema, a partial
/// restore) is an error the caller can answer, never a panic of the task reading it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_of_an_unexpected_type_is_an_error_not_a_panic() {
    let db = TestDb::postgres().await;
    let store = db.open_store().await;
    let event = new_event(&joined(1), Some("r1"), 1);
    store
        .append_batch(vec![event.clone()], WEEK_MS)
        .await
        .expect("append");
    db.pg_client()
        .await
        .batch_execute("ALTER TABLE events ALTER COLUMN event_ts TYPE TEXT")
        .await
        .expect("change the column's type");
    let error = store
        .get_event(&event.id)
        .await
        .expect_err("event_ts is read as a number");
    assert!(
        error.to_string().contains("error deserializing column"),
        "{error}"
    );
}

/// The retention purge never waits on an append: keys an append is taking over (locked by its
/// transaction, which holds the head lock too) are left for a later purge. Waiting on them
/// deadlocked with appends taking over several expired keys, and PostgreSQL then failed one of
/// the two — the append's whole batch, when it was the victim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_skips_keys_an_append_holds() {
    let db = TestDb::postgres().await;
    let store = db.open_store().await;
    // A window of 0 ms: both keys of the event are expired at once.
    store
        .append_batch(vec![new_event(&joined(1), Some("r1"), 1)], 0)
        .await
        .expect("append");
    let far_future = zoomhook::core::clock::now_millis() + 2 * WEEK_MS;
    let holder = db.pg_client().await;
    holder
        .batch_execute("BEGIN; SELECT key FROM dedupe_keys WHERE key LIKE 'rid:%' FOR UPDATE")
        .await
        .expect("hold the request id's key, as a take-over does");
    let purged = tokio::time::timeout(
        Duration::from_secs(5),
        store.purge_expired_dedupe_keys(far_future, 10),
    )
    .await
    .expect("the purge does not wait for the key's holder")
    .expect("purge");
    assert_eq!(
        purged, 1,
        "the semantic key is purged, the held one is left"
    );
    holder.batch_execute("ROLLBACK").await.expect("release");
    let purged = store
        .purge_expired_dedupe_keys(far_future, 10)
        .await
        .expect("purge");
    assert_eq!(purged, 1, "the key left before is purged once free");
}
