//! The SQLite store's two files: the event log and the state database beside it. These are about
//! the SQLite layout itself (PostgreSQL has one database), so they run on SQLite only; the
//! behaviour they protect is covered on both backends by the contract suites.

mod common;

use std::path::{Path, PathBuf};

use common::TestDb;
use zoomhook::store::{AppendOutcome, EventQuery, NewEvent, StoreOptions};

const WEEK_MS: i64 = 7 * 24 * 3_600_000;

/// The migrations of the single-file layout (schema version 8).
const OLD_MIGRATIONS: [&str; 8] = [
    "0001_event_log.sql",
    "0002_sync.sql",
    "0003_delivery.sql",
    "0004_subscription_revision.sql",
    "0005_in_flight_index.sql",
    "0006_sync_quarantine.sql",
    "0007_source_state.sql",
    "0008_rate_buckets.sql",
];

fn event(id: &str, meeting: i64, request_id: &str) -> NewEvent {
    let body = format!(
        r#"{{"event":"meeting.started","event_ts":{meeting},"payload":{{"account_id":"acc","object":{{"id":{meeting},"uuid":"u{meeting}=="}}}}}}"#
    );
    let body = bytes::Bytes::from(body);
    let envelope = zoomhook::zoom::envelope::Envelope::parse(&body).expect("envelope");
    let mut event =
        NewEvent::from_envelope(&envelope, "zoom", body, Some(request_id.to_owned()), 1_000);
    event.id = id.to_owned();
    event
}

/// Appends `evt_<n>` (request id `rid-<n>`) for each `n`, and waits until the indexer has them
/// all (the purge indexes everything first).
async fn append_indexed(store: &dyn zoomhook::store::EventStore, ns: std::ops::Range<i64>) {
    let events: Vec<NewEvent> = ns
        .map(|n| event(&format!("evt_{n}"), n, &format!("rid-{n}")))
        .collect();
    store.append_batch(events, WEEK_MS).await.expect("append");
    store
        .purge_expired_dedupe_keys(0, 1)
        .await
        .expect("index all");
}

/// Appends `events` and checks that every one is answered as a duplicate.
async fn assert_duplicates(store: &dyn zoomhook::store::EventStore, events: Vec<NewEvent>) {
    let outcomes = store.append_batch(events, WEEK_MS).await.expect("append");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, AppendOutcome::Duplicate { .. })),
        "{outcomes:?}"
    );
}

fn log_path(db: &TestDb) -> PathBuf {
    db.sqlite_path().expect("a SQLite test database")
}

fn tables(path: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).expect("open");
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .expect("prepare");
    stmt.query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

async fn open(db: &TestDb) -> std::sync::Arc<dyn zoomhook::store::EventStore> {
    zoomhook::store::open(&db.url, &StoreOptions::default())
        .await
        .expect("open store")
}

/// A log file written before the state database existed (every table in one file, schema
/// version 8) is taken over as it is: its subscription, deliveries, dedupe keys and events are
/// all there afterwards, and the log file keeps only the log.
#[tokio::test]
async fn a_single_file_database_from_before_is_split_without_losing_anything() {
    let db = TestDb::sqlite();
    let path = log_path(&db);
    {
        let conn = rusqlite::Connection::open(&path).expect("create");
        conn.execute_batch(
            "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL);",
        )
        .expect("migrations table");
        for (version, file) in OLD_MIGRATIONS.iter().enumerate() {
            let sql = std::fs::read_to_string(Path::new("migrations/sqlite").join(file))
                .expect("read migration");
            conn.execute_batch(&sql).expect("old migration");
            conn.execute(
                "INSERT INTO schema_migrations VALUES (?1, ?2, 0)",
                rusqlite::params![version as i64 + 1, file],
            )
            .expect("record");
        }
        conn.execute_batch(
            "INSERT INTO events (seq, id, source, event, event_ts, account_id, object_id, object_uuid, received_at, request_id, dedupe_key, body)
               VALUES (1, 'evt_old', 'zoom', 'meeting.started', 1, 'acc', '42', 'u42==', 1000, 'rid-old', 'sem:old', x'7b7d');
             INSERT INTO dedupe_keys VALUES ('rid:rid-old', 'evt_old', 1, 9000000000000);
             INSERT INTO subscriptions (id, kind, url, events, secret, previous_secret, previous_until, scheme, headers, timeout_ms, max_in_flight, rate_limit, ordering, https_only, enabled, disabled_reason, failing_since, email_to, email_subject, email_body, description, created_at, updated_at, revision)
               VALUES ('sub_old', 'webhook', 'https://example.com/hook', 'meeting.*', 'whsec_c2VjcmV0', NULL, NULL, 'standard', '{}', 5000, 10, NULL, 'none', 1, 1, NULL, NULL, NULL, NULL, NULL, 'kept', 1, 1, 3);
             INSERT INTO deliveries (id, subscription_id, event_seq, event_id, event, entity, status, attempts, schedule_base, next_attempt_at, locked_until, last_status, last_error, created_at, updated_at)
               VALUES ('msg_old', 'sub_old', 1, 'evt_old', 'meeting.started', '42', 'failed', 3, 0, 0, NULL, 500, 'boom', 1, 1);
             INSERT INTO events (seq, id, source, event, event_ts, account_id, object_id, object_uuid, received_at, request_id, dedupe_key, body)
               VALUES (2, 'evt_old2', 'zoom', 'meeting.ended', 2, 'acc', '42', 'u42==', 1001, 'rid-old2', 'sem:old2', x'7b7d');
             INSERT INTO subscriptions (id, kind, url, events, secret, previous_secret, previous_until, scheme, headers, timeout_ms, max_in_flight, rate_limit, ordering, https_only, enabled, disabled_reason, failing_since, email_to, email_subject, email_body, description, created_at, updated_at, revision)
               VALUES ('sub_ordered', 'webhook', 'https://example.com/hook', 'meeting.*', 'whsec_c2VjcmV0', NULL, NULL, 'standard', '{}', 5000, 10, NULL, 'entity', 1, 1, NULL, NULL, NULL, NULL, NULL, 'in order', 1, 1, 1);
             INSERT INTO deliveries (id, subscription_id, event_seq, event_id, event, entity, status, attempts, schedule_base, next_attempt_at, locked_until, last_status, last_error, created_at, updated_at)
               VALUES ('msg_o1', 'sub_ordered', 1, 'evt_old', 'meeting.started', '42', 'pending', 0, 0, 0, NULL, NULL, NULL, 1, 1),
                      ('msg_o2', 'sub_ordered', 2, 'evt_old2', 'meeting.ended', '42', 'pending', 0, 0, 0, NULL, NULL, NULL, 1, 1);",
        )
        .expect("old rows");
    }

    let store = open(&db).await;
    let sub = store
        .get_subscription("sub_old")
        .await
        .expect("read")
        .expect("the subscription moved over");
    assert_eq!(sub.description, "kept");
    let (delivery, _) = store
        .get_delivery("msg_old")
        .await
        .expect("read")
        .expect("the delivery moved over");
    assert_eq!(delivery.last_error.as_deref(), Some("boom"));
    // The queue of an entity-ordered subscription keeps its order: one delivery of entity 42 at
    // a time, the older first.
    let now = zoomhook::core::clock::now_millis();
    let claimed = common::contract::claim_for(store.as_ref(), "sub_ordered", true, now).await;
    assert_eq!(
        claimed
            .iter()
            .map(|c| c.delivery.id.as_str())
            .collect::<Vec<_>>(),
        ["msg_o1"],
        "in order after the move"
    );
    let by_entity = store
        .list_events(&EventQuery {
            entity: Some("42".into()),
            limit: 10,
            ..EventQuery::default()
        })
        .await
        .expect("query");
    assert_eq!(by_entity.len(), 2, "the old entries are indexed");
    // The old dedupe key still answers Zoom's retry of the old event.
    let outcome = store
        .append_batch(vec![event("evt_new", 7, "rid-old")], WEEK_MS)
        .await
        .expect("append");
    assert_eq!(
        outcome,
        [AppendOutcome::Duplicate {
            id: "evt_old".into(),
            seq: 1
        }]
    );
    drop(store);

    let log_tables = tables(&path);
    assert!(
        log_tables
            .iter()
            .all(|t| ["events", "admin_tokens", "schema_migrations"].contains(&t.as_str())),
        "the log keeps only the log: {log_tables:?}"
    );
    let state_tables = tables(&zoomhook::store::sqlite::state_path(&path));
    for table in [
        "subscriptions",
        "deliveries",
        "dedupe_keys",
        "event_index",
        "sync_entities",
    ] {
        assert!(
            state_tables.iter().any(|t| t == table),
            "{table} in {state_tables:?}"
        );
    }
    // Opening again changes nothing and adopts nothing twice.
    let store = open(&db).await;
    assert_eq!(store.list_subscriptions().await.expect("list").len(), 2);
}

/// Keys the indexer had not written when the process stopped are read back from the log at the
/// next start: a retry is still a duplicate, whatever state the index was left in.
#[tokio::test]
async fn dedupe_is_exact_across_a_restart_before_the_index_caught_up() {
    let db = TestDb::sqlite();
    let store = open(&db).await;
    let first: Vec<NewEvent> = (0..20)
        .map(|n| event(&format!("evt_{n}"), n, &format!("rid-{n}")))
        .collect();
    store.append_batch(first, WEEK_MS).await.expect("append");
    drop(store);
    // As if the indexer had never run: the state database knows nothing of the log.
    let state = rusqlite::Connection::open(zoomhook::store::sqlite::state_path(&log_path(&db)))
        .expect("state");
    state
        .execute_batch(
            "DELETE FROM dedupe_keys; DELETE FROM event_index; UPDATE log_index SET seq = 0;",
        )
        .expect("reset the index");
    drop(state);

    let store = open(&db).await;
    let retries: Vec<NewEvent> = (0..20)
        .map(|n| event(&format!("evt_retry_{n}"), 100 + n, &format!("rid-{n}")))
        .collect();
    let outcomes = store.append_batch(retries, WEEK_MS).await.expect("append");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, AppendOutcome::Duplicate { .. })),
        "{outcomes:?}"
    );
    assert_eq!(store.head_seq().await.expect("head"), 20);
    // And the index catches up by itself: queries by entity find the old entries.
    let found = store
        .list_events(&EventQuery {
            entity: Some("u3==".into()),
            limit: 10,
            ..EventQuery::default()
        })
        .await
        .expect("query");
    assert_eq!(found.len(), 1);
}

/// After a start the committer rules new keys out with a filter built from `dedupe_keys` beside
/// the appends: keys only the table holds (indexed before the restart) still make duplicates,
/// both before and after the filter is in use, and new keys are still appended.
#[tokio::test]
async fn dedupe_is_exact_with_the_key_filter_built_from_the_table() {
    use zoomhook::store::EventStore;
    let db = TestDb::sqlite();
    let path = log_path(&db);
    let path = path.to_str().expect("utf-8 path");
    let store = zoomhook::store::sqlite::SqliteStore::open(path, &StoreOptions::default())
        .await
        .expect("open");
    // Every key into the table, none left in memory.
    append_indexed(&store, 0..50).await;
    drop(store);

    let store = zoomhook::store::sqlite::SqliteStore::open(path, &StoreOptions::default())
        .await
        .expect("open again");
    // Whether or not the filter is ready yet: retries are duplicates.
    let retry = |from: i64, to: i64| -> Vec<NewEvent> {
        (from..to)
            .map(|n| event(&format!("evt_retry_{n}"), 1_000 + n, &format!("rid-{n}")))
            .collect()
    };
    assert_duplicates(&store, retry(0, 10)).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while store.dedupe_filter_bytes() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the key filter was never built"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_duplicates(&store, retry(10, 50)).await;
    let new: Vec<NewEvent> = (50..60)
        .map(|n| event(&format!("evt_{n}"), n, &format!("rid-{n}")))
        .collect();
    let outcomes = store.append_batch(new, WEEK_MS).await.expect("append");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, AppendOutcome::Appended { .. })),
        "{outcomes:?}"
    );
    // And a retry of those, now only in the committer's memory and the filter.
    assert_duplicates(&store, retry(50, 60)).await;
    assert_eq!(store.head_seq().await.expect("head"), 60);
}

/// Backups restored in the wrong order (a log older than its state database): what the index
/// holds past the end of the log is dropped at start, so the entries that take those `seq`s
/// again are found by what they are, not by what the lost ones were.
#[tokio::test]
async fn a_state_database_newer_than_its_log_is_trimmed_to_the_log() {
    let db = TestDb::sqlite();
    let store = open(&db).await;
    append_indexed(store.as_ref(), 1..6).await;
    drop(store);
    let log = rusqlite::Connection::open(log_path(&db)).expect("log");
    log.execute("DELETE FROM events WHERE seq > 3", [])
        .expect("an older log");
    drop(log);

    let store = open(&db).await;
    let replacement = event("evt_other", 77, "rid-77");
    store
        .append_batch(vec![replacement], WEEK_MS)
        .await
        .expect("append");
    let by = |entity: &str| EventQuery {
        entity: Some(entity.into()),
        limit: 10,
        ..EventQuery::default()
    };
    let stale = store.list_events(&by("4")).await.expect("query");
    assert!(
        stale.is_empty(),
        "{:?}",
        stale
            .iter()
            .map(|e| (e.seq, e.object_id.clone()))
            .collect::<Vec<_>>()
    );
    let found = store.list_events(&by("77")).await.expect("query");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].seq, 4);
    // The lost entry's request id no longer answers as a duplicate of a missing event.
    let retry = store
        .append_batch(vec![event("evt_retry", 5, "rid-5")], WEEK_MS)
        .await
        .expect("append");
    assert!(
        matches!(retry[0], AppendOutcome::Appended { seq: 5, .. }),
        "{retry:?}"
    );
}
