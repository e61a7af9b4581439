//! The delivery part of the store contract, against SQLite and PostgreSQL: subscription updates,
//! claims (max in flight, entity order, stale leases), completions, replay, the fan-out
//! compare-and-set.

mod common;

use common::contract::*;
use common::*;
use zoomhook::deliver::fanout;
use zoomhook::store::EventStore;
use zoomhook::store::deliveries::{
    Attempt, ClaimRequest, Claimed, Completion, NewDelivery, Next, ReplayRange, Subscription,
    delivery_id,
};
use zoomhook::store::{ReaderPosition, read_after};

both_backends!(
    subscription_updates_are_compare_and_set,
    claims_never_exceed_max_in_flight,
    rate_limit_holds_across_instances,
    entity_order_claims_the_oldest_open_delivery_of_each_entity,
    a_change_of_ordering_applies_to_the_deliveries_already_queued,
    a_retry_takes_the_ordering_the_subscription_has_now,
    fan_out_queues_nothing_for_a_subscription_deleted_meanwhile,
    a_stale_completion_never_overwrites_the_new_owner,
    replay_requeues_finished_deliveries_and_leaves_ones_being_sent,
    fan_out_enqueue_is_compare_and_set_on_its_cursor,
    dedupe_key_purge_removes_only_expired_keys,
    settle_and_claim_refills_the_slots_its_outcomes_free,
    settle_and_claim_keeps_entity_order_and_the_failure_clock,
    event_heads_are_the_log_in_seq_order_without_bodies,
    queue_stats_count_deliveries_waiting_and_being_sent_and_not_finished_ones,
);

/// A claim of up to 10 deliveries at `now`, leased for a second.
async fn claim(
    store: &dyn EventStore,
    sub: &Subscription,
    entity_order: bool,
    now: i64,
) -> Vec<Claimed> {
    claim_for(store, &sub.id, entity_order, now).await
}

/// The outcome of the first attempt at `claimed`, made under the lease of a claim at `claimed_at`.
fn outcome(
    sub: &Subscription,
    claimed: &Claimed,
    claimed_at: i64,
    next: Next,
    status: i64,
) -> Completion {
    Completion {
        attempt: Attempt {
            delivery_id: claimed.delivery.id.clone(),
            attempt: claimed.delivery.attempts + 1,
            started_at: claimed_at,
            duration_ms: 1,
            status_code: Some(status),
            response_excerpt: None,
            error: None,
        },
        lease_until: claimed_at + 1_000,
        subscription_id: sub.id.clone(),
        next,
        disable: None,
    }
}

/// The `object.id` of each claimed delivery's event, in claim order.
fn meetings(claimed: &[Claimed]) -> Vec<String> {
    let mut ids: Vec<String> = claimed
        .iter()
        .filter_map(|c| c.delivery.entity.clone())
        .collect();
    ids.sort();
    ids
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
    use zoomhook::store::deliveries::{Attempt, Completion, Next};
    let body = br#"{"event":"meeting.started","event_ts":1700000000000,"payload":{"account_id":"A","object":{"id":1,"uuid":"f1"}}}"#;
    store
        .append_batch(vec![new_event(body, None, 1)], WEEK_MS)
        .await
        .unwrap();
    zoomhook::deliver::fanout::fan_out_batch(store, 100)
        .await
        .unwrap();
    let claimed = claim_for(store, &sub.id, false, now).await;
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
        rate_limit: None,
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

/// Two store handles stand for two instances: the rate limit is one bucket between them, refilled
/// at `rate_limit` per second and never holding more than one second's worth.
async fn rate_limit_holds_across_instances(db: TestDb) {
    let (a, b) = (db.open_store().await, db.open_store().await);
    let sub = stored_subscription(a.as_ref()).await;
    let events = (0..30).map(|n| meeting_event(n, n)).collect();
    a.append_batch(events, WEEK_MS).await.unwrap();
    fanout::fan_out_batch(a.as_ref(), 100).await.unwrap();
    let claim = |now: i64| ClaimRequest {
        subscription_id: &sub.id,
        entity_order: false,
        limit: 100,
        max_in_flight: 100,
        rate_limit: Some(5),
        now,
        lease_until: now + 60_000,
    };
    let t = zoomhook::core::clock::now_millis() + 1_000;
    assert_eq!(a.claim(&claim(t)).await.unwrap().len(), 5, "a full bucket");
    assert!(
        b.claim(&claim(t)).await.unwrap().is_empty(),
        "the other instance finds the bucket empty"
    );
    assert_eq!(
        b.claim(&claim(t + 400)).await.unwrap().len(),
        2,
        "0.4 s refills two tokens"
    );
    assert_eq!(a.claim(&claim(t + 600)).await.unwrap().len(), 1);
    // A long pause refills one second's worth, no more.
    assert_eq!(b.claim(&claim(t + 60_000)).await.unwrap().len(), 5);
    // Deleting the subscription deletes its bucket: nothing of it is left behind.
    assert_eq!(bucket_rows(&db).await, 1);
    assert!(a.delete_subscription(&sub.id).await.unwrap());
    assert_eq!(bucket_rows(&db).await, 0);
}

/// Rows of `rate_buckets`, read directly from the database.
async fn bucket_rows(db: &TestDb) -> i64 {
    const COUNT: &str = "SELECT COUNT(*) FROM rate_buckets";
    if let Some(path) = db.sqlite_path() {
        let state = zoomhook::store::sqlite::state_path(&path);
        let conn = rusqlite::Connection::open(state).unwrap();
        return conn.query_row(COUNT, [], |r| r.get(0)).unwrap();
    }
    let client = db.pg_client().await;
    client.query_one(COUNT, &[]).await.unwrap().get(0)
}

async fn entity_order_claims_the_oldest_open_delivery_of_each_entity(db: TestDb) {
    let store = db.open_store().await;
    let sub = stored_subscription_ordered(store.as_ref(), "entity").await;
    // Meeting 1 has three events, meeting 2 two, interleaved in the log.
    let log = [(1, 0), (2, 1), (1, 2), (2, 3), (1, 4)];
    let events = log.iter().map(|&(m, n)| meeting_event(m, n)).collect();
    store.append_batch(events, WEEK_MS).await.unwrap();
    fanout::fan_out_batch(store.as_ref(), 100).await.unwrap();
    let t = zoomhook::core::clock::now_millis() + 1_000;

    let first = claim(store.as_ref(), &sub, true, t).await;
    assert_eq!(meetings(&first), ["1", "2"], "one per entity");
    assert!(
        first.iter().all(|c| c.delivery.event_seq <= 2),
        "the oldest of each entity: {first:?}"
    );
    assert!(
        claim(store.as_ref(), &sub, true, t + 1).await.is_empty(),
        "nothing of an entity while its earlier delivery is being sent"
    );
    // Meeting 1's first succeeds, meeting 2's first must be retried later: only meeting 1 moves on.
    let done: Vec<Completion> = first
        .iter()
        .map(|c| match c.delivery.entity.as_deref() {
            Some("1") => outcome(&sub, c, t, Next::Succeeded, 200),
            _ => outcome(&sub, c, t, Next::Retry(t + 60_000), 503),
        })
        .collect();
    store.complete(done, t + 2).await.unwrap();
    let next = claim(store.as_ref(), &sub, true, t + 3).await;
    assert_eq!(
        meetings(&next),
        ["1"],
        "meeting 2 waits for its retry: {next:?}"
    );
    assert_eq!(next[0].delivery.event_seq, 3, "meeting 1's second event");
    // Without entity order the same queue gives every due delivery at once.
    let unordered = claim(store.as_ref(), &sub, false, t + 4).await;
    assert_eq!(
        unordered.len(),
        2,
        "meeting 1's third and meeting 2's second: {unordered:?}"
    );
}

/// Deliveries queued while a subscription had no ordering are ordered once it asks for entity
/// order, and free again once it stops: the ordering key of open deliveries follows the
/// subscription, not the moment they were queued.
async fn a_change_of_ordering_applies_to_the_deliveries_already_queued(db: TestDb) {
    let store = db.open_store().await;
    let mut sub = stored_subscription(store.as_ref()).await;
    let events = (0..3).map(|n| meeting_event(1, n)).collect();
    store.append_batch(events, WEEK_MS).await.unwrap();
    fanout::fan_out_batch(store.as_ref(), 100).await.unwrap();
    let t = zoomhook::core::clock::now_millis() + 1_000;

    sub.ordering = "entity".into();
    assert!(store.update_subscription(&sub).await.unwrap());
    sub.revision += 1;
    let first = claim(store.as_ref(), &sub, true, t).await;
    assert_eq!(
        first
            .iter()
            .map(|c| c.delivery.event_seq)
            .collect::<Vec<_>>(),
        [1],
        "queued before the change, ordered after it: {first:?}"
    );
    assert!(claim(store.as_ref(), &sub, true, t + 1).await.is_empty());

    // Updates that leave the ordering as it is keep it.
    sub.description = "renamed".into();
    assert!(store.update_subscription(&sub).await.unwrap());
    sub.revision += 1;
    assert!(claim(store.as_ref(), &sub, true, t + 2).await.is_empty());

    sub.ordering = "none".into();
    assert!(store.update_subscription(&sub).await.unwrap());
    // Asked for in order, the queue has no keys left to order by: both at once.
    let rest = claim(store.as_ref(), &sub, true, t + 3).await;
    assert_eq!(rest.len(), 2, "no ordering: both at once: {rest:?}");
}

/// A retried delivery takes the ordering its subscription has now, not the one it was queued
/// under: deliveries that finished unordered, retried after a switch to entity order, go one at
/// a time, the older first.
async fn a_retry_takes_the_ordering_the_subscription_has_now(db: TestDb) {
    let store = db.open_store().await;
    let mut sub = stored_subscription(store.as_ref()).await;
    let events = (0..2).map(|n| meeting_event(1, n)).collect();
    store.append_batch(events, WEEK_MS).await.unwrap();
    fanout::fan_out_batch(store.as_ref(), 100).await.unwrap();
    let t = zoomhook::core::clock::now_millis() + 1_000;
    let sent = claim(store.as_ref(), &sub, false, t).await;
    assert_eq!(sent.len(), 2);
    let done = sent
        .iter()
        .map(|c| outcome(&sub, c, t, Next::Succeeded, 200))
        .collect();
    store.complete(done, t + 1).await.unwrap();

    sub.ordering = "entity".into();
    assert!(store.update_subscription(&sub).await.unwrap());
    for c in &sent {
        assert!(store.retry_delivery(&c.delivery.id, t + 2).await.unwrap());
    }
    let again = claim(store.as_ref(), &sub, true, t + 3).await;
    assert_eq!(
        again
            .iter()
            .map(|c| c.delivery.event_seq)
            .collect::<Vec<_>>(),
        [1],
        "one at a time, the older first: {again:?}"
    );
}

/// A subscription deleted between fan-out reading it and queueing gets no deliveries.
async fn fan_out_queues_nothing_for_a_subscription_deleted_meanwhile(db: TestDb) {
    let store = db.open_store().await;
    let sub = stored_subscription(store.as_ref()).await;
    store
        .append_batch(vec![meeting_event(1, 0)], WEEK_MS)
        .await
        .unwrap();
    let (from, events) = read_after(
        store.as_ref(),
        zoomhook::store::deliveries::FANOUT_READER,
        10,
    )
    .await
    .unwrap();
    assert!(store.delete_subscription(&sub.id).await.unwrap());
    let to = ReaderPosition {
        seq: events[0].seq,
        applied: from.applied + 1,
    };
    let queued = NewDelivery {
        id: delivery_id(&events[0].id, &sub.id),
        subscription_id: sub.id.clone(),
        event_seq: events[0].seq,
        event_id: events[0].id.clone(),
        event: events[0].event.clone(),
        entity: Some("1".into()),
    };
    assert!(store.enqueue(from, to, vec![queued]).await.unwrap());
    let counts = store.delivery_counts(&sub.id).await.unwrap();
    assert_eq!(
        counts.pending + counts.delivering + counts.succeeded + counts.failed,
        0,
        "no delivery of a deleted subscription: {counts:?}"
    );
}

async fn a_stale_completion_never_overwrites_the_new_owner(db: TestDb) {
    let store = db.open_store().await;
    let sub = stored_subscription(store.as_ref()).await;
    store
        .append_batch(vec![meeting_event(1, 0)], WEEK_MS)
        .await
        .unwrap();
    fanout::fan_out_batch(store.as_ref(), 100).await.unwrap();
    let t = zoomhook::core::clock::now_millis() + 1_000;
    let stale = claim(store.as_ref(), &sub, false, t).await;
    assert_eq!(stale.len(), 1);
    // The first owner's lease runs out (it hung or died); a second claimer takes the delivery.
    let later = t + 1_500;
    let owner = claim(store.as_ref(), &sub, false, later).await;
    assert_eq!(owner.len(), 1, "an expired lease is claimable again");
    let id = owner[0].delivery.id.clone();

    // The first owner finally reports a 410: it must change nothing — not the delivery, not its
    // attempts, not the subscription.
    let mut gone = outcome(&sub, &stale[0], t, Next::Failed, 410);
    gone.disable = Some("410".into());
    store.complete(vec![gone], later + 1).await.unwrap();
    let (delivery, attempts) = store.get_delivery(&id).await.unwrap().unwrap();
    assert_eq!(
        delivery.status, "delivering",
        "still the new owner's: {delivery:?}"
    );
    assert!(
        attempts.is_empty(),
        "the stale attempt took no record: {attempts:?}"
    );
    let unchanged = store.get_subscription(&sub.id).await.unwrap().unwrap();
    assert!(unchanged.enabled && unchanged.failing_since.is_none());
    assert!(
        claim(store.as_ref(), &sub, false, later + 2)
            .await
            .is_empty(),
        "the new owner's lease still holds"
    );

    // The new owner's outcome is recorded in full.
    let ok = outcome(&sub, &owner[0], later, Next::Succeeded, 200);
    store.complete(vec![ok], later + 3).await.unwrap();
    let (delivery, attempts) = store.get_delivery(&id).await.unwrap().unwrap();
    assert_eq!(delivery.status, "succeeded");
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        attempts[0].status_code,
        Some(200),
        "the new owner's attempt: {attempts:?}"
    );
}

async fn replay_requeues_finished_deliveries_and_leaves_ones_being_sent(db: TestDb) {
    let store = db.open_store().await;
    let sub = stored_subscription(store.as_ref()).await;
    let log = [(1, 0), (2, 1), (1, 2)];
    let events = log.iter().map(|&(m, n)| meeting_event(m, n)).collect();
    store.append_batch(events, WEEK_MS).await.unwrap();
    fanout::fan_out_batch(store.as_ref(), 100).await.unwrap();
    let t = zoomhook::core::clock::now_millis() + 1_000;
    let claimed = claim(store.as_ref(), &sub, false, t).await;
    assert_eq!(claimed.len(), 3);
    // Seqs 1 and 2 finish (one succeeded, one dead-lettered); seq 3 is still being sent.
    let done = claimed
        .iter()
        .filter(|c| c.delivery.event_seq < 3)
        .map(|c| match c.delivery.event_seq {
            1 => outcome(&sub, c, t, Next::Succeeded, 200),
            _ => outcome(&sub, c, t, Next::Failed, 500),
        })
        .collect();
    store.complete(done, t + 1).await.unwrap();

    let patterns = zoomhook::core::pattern::EventPattern::parse_list("meeting.*").unwrap();
    let everything = ReplayRange::default();
    let queued = store
        .replay(&sub, &patterns, &everything, t + 2)
        .await
        .unwrap();
    assert_eq!(
        queued, 2,
        "the finished ones; the one being sent is left alone"
    );
    let requeued = claim(store.as_ref(), &sub, false, t + 3).await;
    let mut seqs: Vec<i64> = requeued.iter().map(|c| c.delivery.event_seq).collect();
    seqs.sort();
    assert_eq!(seqs, [1, 2]);
    for c in &requeued {
        assert_eq!(
            c.delivery.id,
            delivery_id(&c.delivery.event_id, &sub.id),
            "same webhook-id"
        );
        assert_eq!(
            c.delivery.schedule_base, 1,
            "a fresh schedule after one attempt"
        );
    }
    // A range and an entity narrow it; patterns that match nothing queue nothing.
    let one = ReplayRange {
        entity: Some("2".into()),
        ..Default::default()
    };
    store
        .complete(
            requeued
                .iter()
                .map(|c| outcome(&sub, c, t + 3, Next::Succeeded, 200))
                .collect(),
            t + 4,
        )
        .await
        .unwrap();
    assert_eq!(store.replay(&sub, &patterns, &one, t + 5).await.unwrap(), 1);
    let none = zoomhook::core::pattern::EventPattern::parse_list("user.*").unwrap();
    let range = ReplayRange {
        after_seq: Some(0),
        to_seq: Some(1),
        ..Default::default()
    };
    assert_eq!(store.replay(&sub, &none, &range, t + 6).await.unwrap(), 0);
    assert_eq!(
        store.replay(&sub, &patterns, &range, t + 6).await.unwrap(),
        1
    );
}

async fn fan_out_enqueue_is_compare_and_set_on_its_cursor(db: TestDb) {
    use zoomhook::store::deliveries::FANOUT_READER;
    let store = db.open_store().await;
    let sub = stored_subscription(store.as_ref()).await;
    store
        .append_batch(vec![meeting_event(1, 0), meeting_event(2, 1)], WEEK_MS)
        .await
        .unwrap();
    let (from, events) = read_after(store.as_ref(), FANOUT_READER, 100)
        .await
        .unwrap();
    assert_eq!(from, ReaderPosition::default());
    let delivery = |i: usize| NewDelivery {
        id: delivery_id(&events[i].id, &sub.id),
        subscription_id: sub.id.clone(),
        event_seq: events[i].seq,
        event_id: events[i].id.clone(),
        event: events[i].event.clone(),
        entity: events[i].object_id.clone(),
    };
    let first = ReaderPosition {
        seq: events[0].seq,
        applied: 1,
    };
    assert!(store.enqueue(from, first, vec![delivery(0)]).await.unwrap());
    // A second instance that read the same cursor loses, and writes nothing.
    let both = ReaderPosition {
        seq: events[1].seq,
        applied: 2,
    };
    assert!(
        !store
            .enqueue(from, both, vec![delivery(0), delivery(1)])
            .await
            .unwrap()
    );
    assert_eq!(store.reader_position(FANOUT_READER).await.unwrap(), first);
    assert_eq!(store.delivery_counts(&sub.id).await.unwrap().pending, 1);
    // From the current cursor it goes on; a delivery that already exists is not duplicated.
    assert!(
        store
            .enqueue(first, both, vec![delivery(0), delivery(1)])
            .await
            .unwrap()
    );
    assert_eq!(store.reader_position(FANOUT_READER).await.unwrap(), both);
    assert_eq!(store.delivery_counts(&sub.id).await.unwrap().pending, 2);
}

async fn dedupe_key_purge_removes_only_expired_keys(db: TestDb) {
    use zoomhook::store::AppendOutcome;
    let store = db.open_store().await;
    let body = |n: i64| meeting_event(1, n);
    // One event whose keys expire at once (a window of 0 ms), one kept for a week.
    let mut short = body(0);
    short.request_id = Some("short".into());
    let mut long = body(1);
    long.request_id = Some("long".into());
    store.append_batch(vec![short], 0).await.unwrap();
    store.append_batch(vec![long], WEEK_MS).await.unwrap();
    let now = zoomhook::core::clock::now_millis() + 1;
    let purged = store.purge_expired_dedupe_keys(now, 1000).await.unwrap();
    assert!(purged >= 1, "the expired keys are purged: {purged}");
    assert_eq!(
        store.purge_expired_dedupe_keys(now, 1000).await.unwrap(),
        0,
        "and only once"
    );
    let mut again = body(1);
    again.request_id = Some("long".into());
    let out = store.append_batch(vec![again], WEEK_MS).await.unwrap();
    assert!(
        matches!(out[0], AppendOutcome::Duplicate { seq: 2, .. }),
        "live keys survive the purge: {out:?}"
    );
}

/// One claim request at `now` for `sub`, leased for a second.
fn request(
    sub: &Subscription,
    entity_order: bool,
    max_in_flight: i64,
    now: i64,
) -> ClaimRequest<'_> {
    ClaimRequest {
        subscription_id: &sub.id,
        entity_order,
        limit: 10,
        max_in_flight,
        rate_limit: None,
        now,
        lease_until: now + 1_000,
    }
}

/// The workers' steady state: recording outcomes and claiming in one transaction. The claim sees
/// the outcomes, so a full subscription gets exactly the slots they free, and the recorded
/// deliveries are not claimed again.
async fn settle_and_claim_refills_the_slots_its_outcomes_free(db: TestDb) {
    let store = db.open_store().await;
    let sub = stored_subscription(store.as_ref()).await;
    let events = (0..5).map(|i| meeting_event(i, i)).collect();
    store.append_batch(events, WEEK_MS).await.unwrap();
    fanout::fan_out_batch(store.as_ref(), 100).await.unwrap();
    let t = zoomhook::core::clock::now_millis() + 1_000;
    let first = store.claim(&request(&sub, false, 2, t)).await.unwrap();
    assert_eq!(first.len(), 2);

    // Full: without outcomes nothing more is claimed.
    let none = store
        .settle_and_claim(Vec::new(), &[request(&sub, false, 2, t + 1)], t + 1)
        .await
        .unwrap();
    assert_eq!(none.len(), 1, "one answer per request");
    assert!(none[0].is_empty(), "max_in_flight holds: {none:?}");

    // One outcome frees one slot in the same transaction.
    let done = vec![outcome(&sub, &first[0], t, Next::Succeeded, 200)];
    let next = store
        .settle_and_claim(done, &[request(&sub, false, 2, t + 2)], t + 2)
        .await
        .unwrap();
    assert_eq!(next[0].len(), 1, "the freed slot is refilled at once");
    let (recorded, attempts) = store
        .get_delivery(&first[0].delivery.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recorded.status, "succeeded");
    assert_eq!(attempts.len(), 1);
    let claimed_ids: Vec<&str> = first
        .iter()
        .chain(&next[0])
        .map(|c| c.delivery.id.as_str())
        .collect();
    let mut unique = claimed_ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        3,
        "no delivery claimed twice: {claimed_ids:?}"
    );
    assert!(
        !next[0][0].body.is_empty(),
        "a claim carries the body it sends"
    );

    // Both outcomes at once free both slots; two requests get one answer each, in order.
    let done = vec![
        outcome(&sub, &first[1], t, Next::Succeeded, 200),
        outcome(&sub, &next[0][0], t + 2, Next::Succeeded, 200),
    ];
    let other = stored_subscription(store.as_ref()).await;
    let last = store
        .settle_and_claim(
            done,
            &[
                request(&sub, false, 2, t + 3),
                request(&other, false, 2, t + 3),
            ],
            t + 3,
        )
        .await
        .unwrap();
    assert_eq!(last.len(), 2);
    assert_eq!(last[0].len(), 2, "the two left");
    assert!(
        last[1].is_empty(),
        "the other subscription was created after these events"
    );
    let counts = store.delivery_counts(&sub.id).await.unwrap();
    assert_eq!((counts.succeeded, counts.delivering), (3, 2));
}

/// With entity ordering, the next delivery of an entity is claimable in the very transaction that
/// records the previous one; and batching the outcomes leaves the failure clock as recording them
/// one by one would: a success after a failure stops it, a failure after a success restarts it.
async fn settle_and_claim_keeps_entity_order_and_the_failure_clock(db: TestDb) {
    let store = db.open_store().await;
    let sub = stored_subscription_ordered(store.as_ref(), "entity").await;
    // Meeting 7 three times, meeting 8 once.
    let events = vec![
        meeting_event(7, 0),
        meeting_event(7, 1),
        meeting_event(8, 2),
        meeting_event(7, 3),
    ];
    store.append_batch(events, WEEK_MS).await.unwrap();
    fanout::fan_out_batch(store.as_ref(), 100).await.unwrap();
    let t = zoomhook::core::clock::now_millis() + 1_000;
    let first = store.claim(&request(&sub, true, 10, t)).await.unwrap();
    assert_eq!(meetings(&first), vec!["7", "8"], "one per entity");
    let seven = first
        .iter()
        .find(|c| c.delivery.entity.as_deref() == Some("7"))
        .unwrap();
    let eight = first
        .iter()
        .find(|c| c.delivery.entity.as_deref() == Some("8"))
        .unwrap();

    // Meeting 8 fails (retry later), then meeting 7 succeeds, in one batch: the clock stops.
    let done = vec![
        outcome(&sub, eight, t, Next::Retry(t + 60_000), 500),
        outcome(&sub, seven, t, Next::Succeeded, 200),
    ];
    let next = store
        .settle_and_claim(done, &[request(&sub, true, 10, t + 1)], t + 1)
        .await
        .unwrap();
    assert_eq!(meetings(&next[0]), vec!["7"], "7's next event, at once");
    assert!(next[0][0].delivery.event_seq > seven.delivery.event_seq);
    let clock = store
        .get_subscription(&sub.id)
        .await
        .unwrap()
        .unwrap()
        .failing_since;
    assert_eq!(clock, None, "the last outcome succeeded: {clock:?}");

    // Success then failure: the clock runs, from this batch.
    let eight_again = store
        .claim(&request(&sub, true, 10, t + 61_000))
        .await
        .unwrap();
    let eight_again: Vec<_> = eight_again
        .into_iter()
        .filter(|c| c.delivery.entity.as_deref() == Some("8"))
        .collect();
    assert_eq!(eight_again.len(), 1, "8 is due again after its retry time");
    let done = vec![
        outcome(&sub, &next[0][0], t + 1, Next::Succeeded, 200),
        Completion {
            lease_until: t + 61_000 + 1_000,
            ..outcome(
                &sub,
                &eight_again[0],
                t + 61_000,
                Next::Retry(t + 999_999),
                503,
            )
        },
    ];
    store.settle_and_claim(done, &[], t + 61_001).await.unwrap();
    let clock = store
        .get_subscription(&sub.id)
        .await
        .unwrap()
        .unwrap()
        .failing_since;
    assert_eq!(
        clock,
        Some(t + 61_001),
        "failing since the failure of this batch"
    );
}

/// Fan-out reads the log without bodies: every entry after the cursor, in seq order, with the
/// entity its deliveries are ordered by (the object id, else the uuid).
async fn event_heads_are_the_log_in_seq_order_without_bodies(db: TestDb) {
    let store = db.open_store().await;
    let uuid_only = new_event(
        br#"{"event":"recording.completed","event_ts":1700000000999,"payload":{"account_id":"A","object":{"uuid":"u-1=="}}}"#,
        None,
        7,
    );
    let no_object = new_event(
        br#"{"event":"app.ping","event_ts":1700000001000,"payload":{}}"#,
        None,
        8,
    );
    store
        .append_batch(vec![meeting_event(5, 0), uuid_only, no_object], WEEK_MS)
        .await
        .unwrap();
    let all = store.event_heads_after(0, 10).await.unwrap();
    let log = store
        .list_events(&zoomhook::store::EventQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    for (head, event) in all.iter().zip(&log) {
        assert_eq!(
            (head.seq, &head.id, &head.event, head.received_at),
            (event.seq, &event.id, &event.event, event.received_at)
        );
    }
    let entities: Vec<Option<&str>> = all.iter().map(|h| h.entity.as_deref()).collect();
    assert_eq!(entities, vec![Some("5"), Some("u-1=="), None]);
    let after_first = store.event_heads_after(all[0].seq, 1).await.unwrap();
    assert_eq!(
        after_first,
        vec![all[1].clone()],
        "after a seq, at most the limit"
    );
    assert!(
        store
            .event_heads_after(all[2].seq, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// PostgreSQL only (SQLite has one writer, so a replay and an update never overlap): a replay
/// that runs while a change of ordering is being committed ends with its deliveries keyed by the
/// new ordering, although the change re-keyed the open deliveries before the replay's were there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_overlapping_a_change_of_ordering_ends_keyed_by_the_new_ordering() {
    use zoomhook::store::deliveries::FANOUT_READER;
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.open_store().await;
    let sub = stored_subscription(store.as_ref()).await;
    let events = (0..4).map(|n| meeting_event(n % 2 + 1, n)).collect();
    store.append_batch(events, WEEK_MS).await.unwrap();

    // The change of ordering, as `update_subscription` makes it, held open before its commit.
    let mut update = db.pg_client().await;
    let tx = update.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO sync_cursors (name, seq, applied) VALUES ($1, 0, 0) ON CONFLICT (name) DO NOTHING",
        &[&FANOUT_READER],
    )
    .await
    .unwrap();
    tx.query_one(
        "SELECT seq FROM sync_cursors WHERE name = $1 FOR UPDATE",
        &[&FANOUT_READER],
    )
    .await
    .unwrap();
    tx.execute(
        "UPDATE subscriptions SET ordering = 'entity' WHERE id = $1",
        &[&sub.id],
    )
    .await
    .unwrap();
    tx.execute(
        "UPDATE deliveries SET order_key = entity WHERE subscription_id = $1 AND status IN ('pending', 'delivering')",
        &[&sub.id],
    )
    .await
    .unwrap();

    // The replay reads the ordering the change has not committed yet.
    let replay = tokio::spawn({
        let (store, sub) = (store.clone(), sub.clone());
        async move {
            let patterns = zoomhook::core::pattern::EventPattern::parse_list("*").unwrap();
            store
                .replay(&sub, &patterns, &ReplayRange::default(), 1)
                .await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    tx.commit().await.unwrap();
    let queued = tokio::time::timeout(std::time::Duration::from_secs(10), replay)
        .await
        .expect("the replay finishes once the change has committed")
        .unwrap()
        .unwrap();
    assert_eq!(queued, 4);

    let keys = update
        .query(
            "SELECT entity, order_key FROM deliveries WHERE subscription_id = $1",
            &[&sub.id],
        )
        .await
        .unwrap();
    assert_eq!(keys.len(), 4);
    for row in keys {
        let (entity, key): (Option<String>, Option<String>) = (row.get(0), row.get(1));
        assert!(entity.is_some());
        assert_eq!(
            key, entity,
            "every replayed delivery is keyed by its entity"
        );
    }
}

/// PostgreSQL only (a pass runs on the pump's own connection, in a transaction begun and ended by
/// hand): a pass the server refuses halfway — here an outcome whose error text holds a NUL,
/// which PostgreSQL text cannot store — writes nothing, neither the outcome before it in the
/// batch nor a claim; and the next pass, on a fresh connection, records and claims as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_refused_halfway_writes_nothing_and_the_next_one_works() {
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.open_store().await;
    let sub = stored_subscription(store.as_ref()).await;
    let events = (0..4).map(|i| meeting_event(i, i)).collect();
    store.append_batch(events, WEEK_MS).await.unwrap();
    fanout::fan_out_batch(store.as_ref(), 100).await.unwrap();
    let t = zoomhook::core::clock::now_millis() + 1_000;
    let first = store.claim(&request(&sub, false, 2, t)).await.unwrap();
    assert_eq!(first.len(), 2);

    let good = outcome(&sub, &first[0], t, Next::Succeeded, 200);
    let mut bad = outcome(&sub, &first[1], t, Next::Retry(t + 60_000), 500);
    bad.attempt.error = Some("refused\0".into());
    let refused = store
        .settle_and_claim(
            vec![good.clone(), bad],
            &[request(&sub, false, 4, t + 1)],
            t + 1,
        )
        .await;
    assert!(refused.is_err(), "the server refuses a NUL in text");
    let counts = store.delivery_counts(&sub.id).await.unwrap();
    assert_eq!(
        (counts.succeeded, counts.delivering, counts.pending),
        (0, 2, 2),
        "nothing recorded and nothing claimed"
    );
    let (held, attempts) = store
        .get_delivery(&first[0].delivery.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.status, "delivering");
    assert!(attempts.is_empty(), "no attempt recorded: {attempts:?}");

    // The outcome alone is recorded and its slot and the two pending refilled; then a pass with
    // nothing to do runs on the same connection.
    for (round, expected) in [(0, 2), (1, 0)] {
        let now = t + 2 + round;
        let done = if round == 0 {
            vec![good.clone()]
        } else {
            Vec::new()
        };
        let next = store
            .settle_and_claim(done, &[request(&sub, false, 4, now)], now)
            .await
            .unwrap();
        assert_eq!(next[0].len(), expected, "round {round}: {next:?}");
    }
    let counts = store.delivery_counts(&sub.id).await.unwrap();
    assert_eq!(
        (counts.succeeded, counts.delivering, counts.pending),
        (1, 3, 0)
    );
}

/// The queue gauges: deliveries waiting and being sent count, finished ones do not, and the
/// oldest open one is found whichever status it has.
async fn queue_stats_count_deliveries_waiting_and_being_sent_and_not_finished_ones(db: TestDb) {
    let store = db.open_store().await;
    let sub = stored_subscription(store.as_ref()).await;
    let empty = store.queue_stats().await.unwrap();
    assert_eq!((empty.depth, empty.oldest_pending), (0, None));
    // One delivery queued first; two more a little later (a fan-out stamps its batch with one
    // time, so they are two batches).
    store
        .append_batch(vec![meeting_event(1, 0)], WEEK_MS)
        .await
        .unwrap();
    fanout::fan_out_batch(store.as_ref(), 100).await.unwrap();
    let first = store.queue_stats().await.unwrap();
    assert_eq!(first.depth, 1);
    let oldest = first.oldest_pending.expect("an oldest open delivery");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    store
        .append_batch((2..=3).map(|n| meeting_event(n, 0)).collect(), WEEK_MS)
        .await
        .unwrap();
    fanout::fan_out_batch(store.as_ref(), 100).await.unwrap();
    let queued = store.queue_stats().await.unwrap();
    assert_eq!((queued.depth, queued.oldest_pending), (3, Some(oldest)));

    // The oldest is being sent (max in flight 1), the other two wait: all three open, and the
    // oldest is still the one being sent.
    let t = zoomhook::core::clock::now_millis() + 1_000;
    let sending = store.claim(&request(&sub, false, 1, t)).await.unwrap();
    assert_eq!(sending.len(), 1);
    assert_eq!(sending[0].delivery.created_at, oldest);
    let open = store.queue_stats().await.unwrap();
    assert_eq!((open.depth, open.oldest_pending), (3, Some(oldest)));

    // It succeeds: the two later ones are left, and the oldest open one is now theirs.
    let done = vec![outcome(&sub, &sending[0], t, Next::Succeeded, 200)];
    store.complete(done, t + 1).await.unwrap();
    let left = store.queue_stats().await.unwrap();
    assert_eq!(left.depth, 2);
    assert!(
        left.oldest_pending.is_some_and(|at| at > oldest),
        "{left:?}"
    );

    // One of them fails for good: finished, no longer counted.
    let sending = store.claim(&request(&sub, false, 1, t + 2)).await.unwrap();
    assert_eq!(sending.len(), 1);
    let done = vec![outcome(&sub, &sending[0], t + 2, Next::Failed, 400)];
    store.complete(done, t + 3).await.unwrap();
    assert_eq!(store.queue_stats().await.unwrap().depth, 1);
}
