//! What PostgreSQL plans for the delivery queue's hot statements (SQLite's own check is in
//! `sqlite::deliveries`). The claim, the queue gauges and the re-key must each read only the
//! open deliveries, through the partial indexes that hold them: a plan that read every delivery
//! kept until purged costs ~75 ms a claim with 200k kept, against ~1 ms (docs/deploy.md).
//!
//! The database holds finished deliveries and a few open ones, analysed, and sequential scans
//! are disabled for the session: on tables this small a scan would be the cheapest plan, and the
//! point is whether an index can serve each part at all, and which.

use tokio_postgres::{Client, NoTls};

use super::PgStore;
use crate::store::StoreOptions;
use crate::store::deliveries::{QUEUE_STATS, REKEY_OPEN_DELIVERIES, claim_candidates_sql};

fn server() -> String {
    std::env::var("ZOOMHOOK_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("PostgreSQL must be reachable for the PostgreSQL tests (see .ci/run)");
    tokio::spawn(connection);
    client
}

/// The plan of `sql` with `params`, one line per node.
async fn plan(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> String {
    let rows = client
        .query(&format!("EXPLAIN {sql}"), params)
        .await
        .unwrap_or_else(|e| panic!("EXPLAIN {sql}: {e}"));
    rows.iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A delivery row: `n` its seq, `status` its state.
const INSERT: &str = "INSERT INTO deliveries (id, subscription_id, event_seq, event_id, event, entity, order_key,
        status, attempts, next_attempt_at, locked_until, created_at, updated_at)
    SELECT 'msg_' || n, 'sub_1', n, 'evt_' || n, 'meeting.started', 'm' || (n % 50), 'm' || (n % 50),
        $1, 1, n, CASE WHEN $1 = 'delivering' THEN n END, n, n
    FROM generate_series($2::bigint, $3::bigint) AS n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claim_the_queue_stats_and_the_rekey_read_only_open_deliveries() {
    let name = format!(
        "zoomhook_plans_{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    );
    let admin = connect(&format!("{}/postgres", server())).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create the test database");
    let url = format!("{}/{name}", server());
    let store = PgStore::open(&url, &StoreOptions::default())
        .await
        .expect("open and migrate");
    let client = connect(&url).await;
    for (status, from, to) in [
        ("succeeded", 1_i64, 5_000_i64),
        ("pending", 5_001, 5_100),
        ("delivering", 5_101, 5_120),
    ] {
        client
            .execute(INSERT, &[&status, &from, &to])
            .await
            .expect("deliveries");
    }
    client
        .batch_execute("ANALYZE deliveries; SET enable_seqscan = off")
        .await
        .expect("analyse");

    let claim = plan(
        &client,
        &format!("WITH {} SELECT id FROM picked", claim_candidates_sql()),
        &[&"sub_1", &10_000_i64, &1_i64, &64_i64],
    )
    .await;
    let stats = plan(&client, QUEUE_STATS, &[]).await;
    let rekey = plan(&client, REKEY_OPEN_DELIVERIES, &[&"sub_1", &"entity"]).await;
    drop(store);
    drop(client);
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .expect("drop the test database");

    for (what, plan) in [
        ("claim", &claim),
        ("queue stats", &stats),
        ("re-key", &rekey),
    ] {
        for index in ["deliveries_pending", "deliveries_in_flight"] {
            assert!(plan.contains(index), "{what} does not use {index}:\n{plan}");
        }
        assert!(
            !plan.contains("Seq Scan on deliveries"),
            "{what} scans the whole table:\n{plan}"
        );
    }
    assert!(
        claim.contains("deliveries_order"),
        "the claim's entity check does not use deliveries_order:\n{claim}"
    );
}
