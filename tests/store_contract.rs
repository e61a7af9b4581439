//! The store contract: the same suite against SQLite and PostgreSQL, through the `EventStore` trait.

mod common;

use std::sync::Arc;

use common::contract::*;
use common::*;
use zoomhook::core::pattern::EventPattern;
use zoomhook::store::group_commit::EventAppender;
use zoomhook::store::{AppendOutcome, EventQuery, NewEvent};

both_backends!(
    append_assigns_consecutive_seqs_and_keeps_bytes,
    dedupe_within_and_across_batches,
    expired_dedupe_keys_no_longer_match_and_are_purged,
    list_filters_and_orders,
    group_commit_shares_transactions_under_concurrency,
    admin_tokens_are_found_by_hash,
    reopening_keeps_everything_and_migrations_are_idempotent,
    a_database_migrated_by_a_newer_build_is_refused,
);

async fn append_assigns_consecutive_seqs_and_keeps_bytes(db: TestDb) {
    let store = db.open_store().await;
    assert_eq!(store.head_seq().await.unwrap(), 0);
    let batch: Vec<NewEvent> = fixtures()
        .iter()
        .filter(|(n, _)| !n.starts_with("endpoint"))
        .map(|(_, b)| new_event(b, None, 1))
        .collect();
    let n = batch.len() as i64;
    let outcomes = store.append_batch(batch.clone(), WEEK_MS).await.unwrap();
    let seqs: Vec<i64> = outcomes
        .iter()
        .map(|o| match o {
            AppendOutcome::Appended { seq, .. } => *seq,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
    assert_eq!(store.head_seq().await.unwrap(), n);
    for (event, seq) in batch.iter().zip(seqs) {
        let stored = store.get_event(&event.id).await.unwrap().unwrap();
        assert_eq!(stored.seq, seq);
        assert_eq!(stored.body, event.body.to_vec());
        assert_eq!(stored.object_id, event.object_id);
        assert_eq!(stored.event_ts, event.event_ts);
    }
    assert!(store.get_event("evt_nope").await.unwrap().is_none());
}

async fn dedupe_within_and_across_batches(db: TestDb) {
    let store = db.open_store().await;
    let started = fixture("meeting.started.json");
    let a = new_event(&started, Some("r1"), 1);
    let same_rid = new_event(&fixture("meeting.ended.json"), Some("r1"), 1);
    let same_body = new_event(&started, Some("r2"), 1);
    let out = store
        .append_batch(vec![a.clone(), same_rid, same_body], WEEK_MS)
        .await
        .unwrap();
    assert_eq!(
        out[0],
        AppendOutcome::Appended {
            id: a.id.clone(),
            seq: 1
        }
    );
    assert_eq!(
        out[1],
        AppendOutcome::Duplicate {
            id: a.id.clone(),
            seq: 1
        }
    );
    assert_eq!(
        out[2],
        AppendOutcome::Duplicate {
            id: a.id.clone(),
            seq: 1
        }
    );
    // Across batches, by either key; a new event still gets the next seq (no gap for duplicates).
    let out = store
        .append_batch(
            vec![
                new_event(&started, None, 2),
                new_event(&fixture("meeting.ended.json"), Some("r2"), 2),
                new_event(&fixture("user.created.json"), None, 2),
            ],
            WEEK_MS,
        )
        .await
        .unwrap();
    assert!(matches!(out[0], AppendOutcome::Duplicate { seq: 1, .. }));
    assert!(
        matches!(out[1], AppendOutcome::Duplicate { seq: 1, .. }),
        "r2 was recorded for the duplicate and points at the original"
    );
    assert!(matches!(out[2], AppendOutcome::Appended { seq: 2, .. }));
    assert_eq!(store.head_seq().await.unwrap(), 2);
}

async fn expired_dedupe_keys_no_longer_match_and_are_purged(db: TestDb) {
    let store = db.open_store().await;
    let body = fixture("meeting.started.json");
    // A window of 0 ms: the key is already expired when the next batch looks.
    store
        .append_batch(vec![new_event(&body, Some("r1"), 1)], 0)
        .await
        .unwrap();
    let out = store
        .append_batch(vec![new_event(&body, Some("r1"), 2)], WEEK_MS)
        .await
        .unwrap();
    assert!(
        matches!(out[0], AppendOutcome::Appended { seq: 2, .. }),
        "expired keys do not dedupe: {out:?}"
    );
    // The re-written keys are live again.
    let out = store
        .append_batch(vec![new_event(&body, Some("r1"), 3)], WEEK_MS)
        .await
        .unwrap();
    assert!(matches!(out[0], AppendOutcome::Duplicate { seq: 2, .. }));
    let far_future = zoomhook::core::clock::now_millis() + 2 * WEEK_MS;
    // In bounded batches: two keys, purged one statement at a time.
    for expected in [1, 1, 0] {
        assert_eq!(
            store
                .purge_expired_dedupe_keys(far_future, 1)
                .await
                .unwrap(),
            expected
        );
    }
    let out = store
        .append_batch(vec![new_event(&body, Some("r1"), 4)], WEEK_MS)
        .await
        .unwrap();
    assert!(matches!(out[0], AppendOutcome::Appended { seq: 3, .. }));
}

async fn list_filters_and_orders(db: TestDb) {
    let store = db.open_store().await;
    let names = [
        "meeting.created.json",
        "meeting.started.json",
        "meeting.participant_joined.json",
        "user.created.json",
        "recording.completed.json",
    ];
    let batch: Vec<NewEvent> = names
        .iter()
        .enumerate()
        .map(|(i, n)| new_event(&fixture(n), None, 1000 * (i as i64 + 1)))
        .collect();
    store.append_batch(batch, WEEK_MS).await.unwrap();
    let list = |q: EventQuery| {
        let store = Arc::clone(&store);
        async move {
            store
                .list_events(&q)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.event)
                .collect::<Vec<_>>()
        }
    };
    let all = EventQuery {
        limit: 100,
        ..EventQuery::default()
    };
    assert_eq!(list(all.clone()).await.len(), 5);
    assert_eq!(
        list(EventQuery {
            patterns: EventPattern::parse_list("meeting.participant_*").unwrap(),
            ..all.clone()
        })
        .await,
        ["meeting.participant_joined"]
    );
    assert_eq!(
        list(EventQuery {
            since: Some(2000),
            until: Some(4000),
            ..all.clone()
        })
        .await,
        ["meeting.started", "meeting.participant_joined"]
    );
    assert_eq!(
        list(EventQuery {
            entity: Some("4444AAAiAAAAAiAiAiiAii==".into()),
            ..all.clone()
        })
        .await,
        ["meeting.created", "recording.completed"]
    );
    assert_eq!(
        list(EventQuery {
            after_seq: Some(3),
            ..all.clone()
        })
        .await,
        ["user.created", "recording.completed"]
    );
    assert_eq!(
        list(EventQuery {
            descending: true,
            before_seq: Some(3),
            ..all.clone()
        })
        .await,
        ["meeting.started", "meeting.created"]
    );
    assert_eq!(
        list(EventQuery {
            limit: 2,
            ..all.clone()
        })
        .await
        .len(),
        2
    );
    assert!(
        list(EventQuery {
            source: Some("other".into()),
            ..all.clone()
        })
        .await
        .is_empty()
    );
}

async fn group_commit_shares_transactions_under_concurrency(db: TestDb) {
    let store = db.open_store().await;
    let (appender, committer) = EventAppender::start(Arc::clone(&store), WEEK_MS);
    let mut tasks = Vec::new();
    for n in 0..300 {
        let appender = appender.clone();
        tasks.push(tokio::spawn(async move {
            let value = zoomhook::zoom::templates::template(
                "meeting.participant_joined",
                1_700_000_000_000 + n,
            )
            .unwrap();
            let body = zoomhook::zoom::templates::to_bytes(&value);
            appender.append(new_event(&body, None, n)).await.unwrap()
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            AppendOutcome::Appended { seq, .. } => seqs.push(seq),
            other => panic!("{other:?}"),
        }
    }
    seqs.sort();
    assert_eq!(seqs, (1..=300).collect::<Vec<_>>());
    drop(appender);
    committer.await.unwrap();
}

async fn admin_tokens_are_found_by_hash(db: TestDb) {
    let store = db.open_store().await;
    assert_eq!(store.count_admin_tokens().await.unwrap(), 0);
    let token = zoomhook::api::auth::create_token(store.as_ref(), "ci")
        .await
        .unwrap();
    assert_eq!(store.count_admin_tokens().await.unwrap(), 1);
    let hash = zoomhook::api::auth::hash_token(&token);
    assert!(store.find_admin_token(&hash).await.unwrap().is_some());
    assert!(
        store
            .find_admin_token(&zoomhook::api::auth::hash_token("guess"))
            .await
            .unwrap()
            .is_none()
    );
}

async fn reopening_keeps_everything_and_migrations_are_idempotent(db: TestDb) {
    {
        let store = db.open_store().await;
        store
            .append_batch(
                vec![new_event(&fixture("meeting.started.json"), Some("r1"), 1)],
                WEEK_MS,
            )
            .await
            .unwrap();
    }
    let store = db.open_store().await;
    assert_eq!(store.head_seq().await.unwrap(), 1);
    let out = store
        .append_batch(
            vec![new_event(&fixture("meeting.started.json"), Some("r1"), 1)],
            WEEK_MS,
        )
        .await
        .unwrap();
    assert!(
        matches!(out[0], AppendOutcome::Duplicate { .. }),
        "dedupe keys survive a restart"
    );
    store.ping().await.unwrap();
}

/// Records a migration no build has in the database file `path` (SQLite).
fn record_future_migration(path: &std::path::Path, present: bool) {
    let conn = rusqlite::Connection::open(path).expect("open the file");
    let sql = if present {
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, 'from_a_newer_build', 0)"
    } else {
        "DELETE FROM schema_migrations WHERE version = 9999"
    };
    conn.execute(sql, []).expect("schema_migrations");
}

/// What opening `db` says now: the error's text, which must be the newer-schema refusal.
async fn refusal(db: &TestDb) -> String {
    let error = zoomhook::store::open(&db.url, &Default::default())
        .await
        .err()
        .expect("a database a newer build migrated is refused");
    let text = error.to_string();
    assert!(
        text.contains("schema version 9999") && text.contains("newer zoomhook"),
        "{text}"
    );
    text
}

async fn a_database_migrated_by_a_newer_build_is_refused(db: TestDb) {
    drop(db.open_store().await);
    match db.sqlite_path() {
        Some(log) => {
            // Each of the two files is checked against its own migrations, and named.
            record_future_migration(&log, true);
            assert!(refusal(&db).await.contains("SQLite log file"));
            record_future_migration(&log, false);
            let state = zoomhook::store::sqlite::state_path(&log);
            record_future_migration(&state, true);
            assert!(refusal(&db).await.contains("SQLite state database"));
            record_future_migration(&state, false);
            // A log file from the builds that ran migration 10 on the log (it moved to the state
            // database since) is not from a newer build.
            rusqlite::Connection::open(&log)
                .and_then(|c| {
                    c.execute(
                        "INSERT OR IGNORE INTO schema_migrations (version, name, applied_at) VALUES (10, 'subscription_body_format', 0)",
                        [],
                    )
                })
                .expect("record migration 10 in the log");
        }
        None => {
            let client = db.pg_client().await;
            client
                .batch_execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, 'from_a_newer_build', 0)",
                )
                .await
                .expect("insert");
            assert!(refusal(&db).await.contains("PostgreSQL database"));
            client
                .batch_execute("DELETE FROM schema_migrations WHERE version = 9999")
                .await
                .expect("delete");
        }
    }
    // Without the newer migration, the same database opens as before.
    let store = db.open_store().await;
    store.ping().await.expect("ping");
}

#[tokio::test]
async fn rejects_unknown_database_urls_clearly() {
    let err = zoomhook::store::open("mysql://x", &Default::default())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("sqlite://"), "{err}");
    let err = zoomhook::store::open(
        "postgres://nobody:secretpw@127.0.0.1:1/none",
        &Default::default(),
    )
    .await
    .err()
    .unwrap();
    assert!(
        !err.to_string().contains("secretpw"),
        "passwords are not echoed: {err}"
    );
}
