//! The store contract: the same suite against SQLite and PostgreSQL, through the `EventStore` trait.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use zoomhook::core::pattern::EventPattern;
use zoomhook::store::group_commit::EventAppender;
use zoomhook::store::{AppendOutcome, EventQuery, NewEvent};
use zoomhook::zoom::envelope::Envelope;

const WEEK_MS: i64 = 7 * 24 * 3600 * 1000;

fn new_event(body: &[u8], request_id: Option<&str>, received_at: i64) -> NewEvent {
    let env = Envelope::parse(body).unwrap();
    NewEvent::from_envelope(
        &env,
        "zoom",
        Bytes::copy_from_slice(body),
        request_id.map(Into::into),
        received_at,
    )
}

both_backends!(
    append_assigns_consecutive_seqs_and_keeps_bytes,
    dedupe_within_and_across_batches,
    expired_dedupe_keys_no_longer_match_and_are_purged,
    list_filters_and_orders,
    group_commit_shares_transactions_under_concurrency,
    admin_tokens_are_found_by_hash,
    reopening_keeps_everything_and_migrations_are_idempotent,
    subscription_updates_are_compare_and_set,
    claims_never_exceed_max_in_flight,
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

/// A webhook subscription to every event, created at time 0 and stored.
async fn stored_subscription(
    store: &dyn zoomhook::store::EventStore,
) -> zoomhook::store::deliveries::Subscription {
    use zoomhook::deliver::{ssrf, subscription};
    let policy = ssrf::SsrfPolicy::new(ssrf::parse_allow_list("127.0.0.0/8").unwrap());
    let input = subscription::SubscriptionInput {
        url: Some("http://127.0.0.1:9/hook".into()),
        events: Some(serde_json::json!("*")),
        ..Default::default()
    };
    let sub = subscription::create(input, &policy, 0).unwrap();
    store.insert_subscription(&sub).await.unwrap();
    sub
}

async fn subscription_updates_are_compare_and_set(db: TestDb) {
    let store = db.open_store().await;
    let created = stored_subscription(store.as_ref()).await;
    let read = store.get_subscription(&created.id).await.unwrap().unwrap();
    assert_eq!(read, created);

    let mut first = read.clone();
    first.description = "first".into();
    assert!(store.update_subscription(&first).await.unwrap());
    let mut stale = read.clone();
    stale.description = "stale".into();
    assert!(
        !store.update_subscription(&stale).await.unwrap(),
        "a write based on an older revision is refused"
    );
    let now = store.get_subscription(&created.id).await.unwrap().unwrap();
    assert_eq!(now.description, "first");
    assert_eq!(now.revision, read.revision + 1);

    // The failure clock belongs to the workers: a failed attempt starts it without moving the
    // revision, and a PATCH written from a read taken before that leaves it alone.
    let t = zoomhook::core::clock::now_millis() + 1_000;
    let claimed = fail_one_delivery(store.as_ref(), &now, t).await;
    assert_eq!(claimed, 1);
    let mut patch = now.clone();
    patch.description = "after the failure".into();
    assert!(store.update_subscription(&patch).await.unwrap());
    let failing = store.get_subscription(&created.id).await.unwrap().unwrap();
    assert_eq!(failing.description, "after the failure");
    assert_eq!(
        failing.failing_since,
        Some(t),
        "the failure clock survives a PATCH"
    );

    // A worker disabling the subscription does move the revision, so a PATCH read before it
    // cannot re-enable it by writing back what it read.
    assert!(
        store
            .disable_failing(&created.id, "failing", t + 20, t + 10)
            .await
            .unwrap()
    );
    let mut behind = failing.clone();
    behind.description = "behind".into();
    assert!(!store.update_subscription(&behind).await.unwrap());
    let latest = store.get_subscription(&created.id).await.unwrap().unwrap();
    assert!(!latest.enabled);

    // Enabling it again (from the current row) clears the failure clock.
    let mut enable = latest.clone();
    enable.enabled = true;
    enable.failing_since = None;
    assert!(store.update_subscription(&enable).await.unwrap());
    let enabled = store.get_subscription(&created.id).await.unwrap().unwrap();
    assert!(enabled.enabled);
    assert_eq!(enabled.failing_since, None);

    let mut gone = latest.clone();
    gone.id = "sub_missing".into();
    assert!(!store.update_subscription(&gone).await.unwrap());
}

/// Appends one event, fans it out to `sub`, claims it at `now` and records a failed attempt
/// (retry later); returns how many deliveries were claimed.
async fn fail_one_delivery(
    store: &dyn zoomhook::store::EventStore,
    sub: &zoomhook::store::deliveries::Subscription,
    now: i64,
) -> usize {
    use zoomhook::store::deliveries::{Attempt, ClaimRequest, Completion, Next};
    let body = br#"{"event":"meeting.started","event_ts":1700000000000,"payload":{"account_id":"A","object":{"id":1,"uuid":"f1"}}}"#;
    store
        .append_batch(vec![new_event(body, None, 1)], WEEK_MS)
        .await
        .unwrap();
    zoomhook::deliver::fanout::fan_out_batch(store, 100)
        .await
        .unwrap();
    let claimed = store
        .claim(&ClaimRequest {
            subscription_id: &sub.id,
            entity_order: false,
            limit: 10,
            max_in_flight: 10,
            now,
            lease_until: now + 1_000,
        })
        .await
        .unwrap();
    let completions = claimed
        .iter()
        .map(|c| Completion {
            attempt: Attempt {
                delivery_id: c.delivery.id.clone(),
                attempt: 1,
                started_at: now,
                duration_ms: 1,
                status_code: Some(503),
                response_excerpt: None,
                error: Some("HTTP 503".into()),
            },
            lease_until: now + 1_000,
            subscription_id: sub.id.clone(),
            next: Next::Retry(now + 60_000),
            disable: None,
        })
        .collect();
    store.complete(completions, now).await.unwrap();
    claimed.len()
}

async fn claims_never_exceed_max_in_flight(db: TestDb) {
    use zoomhook::deliver::fanout;
    use zoomhook::store::deliveries::ClaimRequest;
    let store = db.open_store().await;
    let sub = stored_subscription(store.as_ref()).await;
    let events: Vec<_> = (0..6)
        .map(|i| {
            let body = format!(
                r#"{{"event":"meeting.started","event_ts":{},"payload":{{"account_id":"A","object":{{"id":{i},"uuid":"u{i}"}}}}}}"#,
                1_700_000_000_000i64 + i
            );
            new_event(body.as_bytes(), None, 1)
        })
        .collect();
    store.append_batch(events, WEEK_MS).await.unwrap();
    fanout::fan_out_batch(store.as_ref(), 100).await.unwrap();

    let claim = |now: i64| ClaimRequest {
        subscription_id: &sub.id,
        entity_order: false,
        limit: 10,
        max_in_flight: 2,
        now,
        lease_until: now + 1_000,
    };
    // Deliveries are due from the moment of the fan-out.
    let t = zoomhook::core::clock::now_millis() + 1_000;
    let first = store.claim(&claim(t)).await.unwrap();
    assert_eq!(first.len(), 2, "no more than max_in_flight at once");
    assert!(
        store.claim(&claim(t + 1)).await.unwrap().is_empty(),
        "another instance asking finds the subscription full"
    );
    // Leases that expired (an instance that died mid-send) no longer count, and their
    // deliveries are due again.
    let after_expiry = store.claim(&claim(t + 1_500)).await.unwrap();
    assert_eq!(after_expiry.len(), 2);
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
