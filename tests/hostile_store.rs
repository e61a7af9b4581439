//! The store contract under arbitrary values: whatever string lands in a field zoomhook extracts
//! or syncs (NUL, thousands of characters, any Unicode), both backends store it beside a valid
//! neighbour in the same batch, find it again by that value, and dedupe it exactly.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use zoomhook::store::{
    AppendOutcome, EntityQuery, EventQuery, EventStore, NewEvent, ReaderPosition,
};
use zoomhook::sync::project::EntityRow;

use common::{Backend, TestDb};

const WEEK_MS: i64 = 7 * 24 * 3600 * 1000;

/// Short strings with NULs and odd Unicode, and long ones past every index limit.
fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,12}",
        "[a-z]{0,4}\u{0}[a-z\u{0}]{0,4}",
        proptest::collection::vec(any::<char>(), 2_000..4_000).prop_map(String::from_iter),
        Just(String::new()),
    ]
}

fn event_with(fields: &[String; 6], n: i64) -> NewEvent {
    NewEvent {
        id: format!("evt_{}", ulid::Ulid::generate()),
        source: fields[0].clone(),
        event: fields[1].clone(),
        event_ts: Some(n),
        account_id: Some(fields[2].clone()),
        object_id: Some(fields[3].clone()),
        object_uuid: Some(fields[4].clone()),
        received_at: n,
        // Prefixed by the case number: values repeat between cases, and each case checks its own
        // dedupe.
        request_id: Some(format!("{n}:{}", fields[5])),
        semantic_key: format!("sem:{n}:{}", fields[3]),
        body: Bytes::from(format!("{{\"n\":{n}}}")),
    }
}

fn neighbour(n: i64) -> NewEvent {
    let plain = ["zoom", "meeting.started", "acc", "1", "u==", ""].map(String::from);
    let mut event = event_with(&plain, n);
    event.request_id = Some(format!("rid-{n}"));
    event.semantic_key = format!("sem:neighbour:{n}");
    event
}

/// One case: the hostile event and a valid one share a batch; both commit; the hostile one is
/// found by id and by its object id and uuid, and a second delivery of it is a duplicate.
async fn appends_and_finds(store: &dyn EventStore, fields: [String; 6], n: i64) {
    let hostile = event_with(&fields, n);
    let outcomes = store
        .append_batch(vec![hostile.clone(), neighbour(n)], WEEK_MS)
        .await
        .expect("a batch with a hostile value commits");
    let AppendOutcome::Appended { seq, .. } = outcomes[0] else {
        panic!("hostile event not appended: {outcomes:?}");
    };
    assert!(
        matches!(outcomes[1], AppendOutcome::Appended { .. }),
        "{outcomes:?}"
    );
    let stored = store
        .get_event(&hostile.id)
        .await
        .expect("get")
        .expect("found by id");
    assert_eq!(stored.body, hostile.body.to_vec());
    for value in [&fields[3], &fields[4]] {
        let found = store
            .list_events(&EventQuery {
                entity: Some(value.clone()),
                limit: 1000,
                ..Default::default()
            })
            .await
            .expect("lookup by a hostile value");
        assert!(
            found.iter().any(|e| e.seq == seq),
            "found by its object id / uuid"
        );
    }
    let mut again = hostile.clone();
    again.id = format!("evt_{}", ulid::Ulid::generate());
    let outcome = store
        .append_batch(vec![again], WEEK_MS)
        .await
        .expect("re-delivery");
    assert!(
        matches!(&outcome[0], AppendOutcome::Duplicate { seq: s, .. } if *s == seq),
        "{outcome:?}"
    );
}

/// One case of the entity contract: a row whose every text column is hostile is written in one
/// batch with a valid one, and found by key, by parent and by host.
async fn syncs_and_finds(store: &dyn EventStore, fields: [String; 6]) {
    let row = |key: &str, parent: &str, host: &str| EntityRow {
        kind: "participant".into(),
        key: key.to_owned(),
        parent: Some(parent.to_owned()),
        status: Some(fields[2].clone()),
        host_id: Some(host.to_owned()),
        email: Some(fields[5].clone()),
        label: Some(fields[1].clone()),
        start_at: Some(1),
        end_at: None,
        updated_seq: 1,
        doc: serde_json::to_string(&serde_json::json!({"name": fields[1]})).expect("json"),
        state: serde_json::to_string(&serde_json::json!({"name": fields[1]})).expect("json"),
    };
    let key = format!("{}|{}", fields[0], ulid::Ulid::generate());
    let from = store.reader_position("hostile").await.expect("position");
    let to = ReaderPosition {
        seq: from.seq + 1,
        applied: from.applied + 1,
    };
    let rows = vec![
        row(&key, &fields[3], &fields[4]),
        row("plain|1", "plain", "host"),
    ];
    assert!(
        store
            .commit_reader_batch("hostile", from, to, rows)
            .await
            .expect("a batch with hostile values commits")
    );
    let found = store
        .get_entity("participant", &key)
        .await
        .expect("get")
        .expect("found by key");
    assert_eq!(found.updated_seq, 1);
    let query = |parent: Option<String>, host_id: Option<String>| EntityQuery {
        kind: "participant".into(),
        parent,
        host_id,
        limit: 1000,
        ..Default::default()
    };
    let by_parent = store
        .list_entities(&query(Some(fields[3].clone()), None))
        .await
        .expect("by parent");
    assert!(
        by_parent.iter().any(|r| r.key == found.key),
        "found by its parent"
    );
    let by_host = store
        .list_entities(&query(None, Some(fields[4].clone())))
        .await
        .expect("by host");
    assert!(
        by_host.iter().any(|r| r.key == found.key),
        "found by its host"
    );
}

fn run_property(backend: Backend, cases: u32) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let db = rt.block_on(TestDb::new(backend));
    let store: Arc<dyn EventStore> = rt.block_on(db.open_store());
    let n = std::sync::atomic::AtomicI64::new(1_000);
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(fields in proptest::array::uniform6(hostile_string()))| {
        let n = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rt.block_on(appends_and_finds(store.as_ref(), fields.clone(), n));
        rt.block_on(syncs_and_finds(store.as_ref(), fields));
    });
    drop(store);
    drop(db);
}

#[test]
fn arbitrary_strings_in_every_extracted_field_sqlite() {
    run_property(Backend::Sqlite, 64);
}

#[test]
fn arbitrary_strings_in_every_extracted_field_postgres() {
    run_property(Backend::Postgres, 64);
}
