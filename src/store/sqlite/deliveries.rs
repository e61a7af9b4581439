//! SQLite side of the delivery contract ([`DeliveryStore`]).

use std::collections::HashMap;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::SqliteStore;
use crate::store::StoreError;
use crate::store::deliveries::*;
use crate::store::entities::ReaderPosition;

/// The shared SQL uses PostgreSQL's `$n`; SQLite reads `$n` as a *named* parameter numbered by
/// first appearance, so it is rewritten to `?n`, which SQLite numbers explicitly.
fn q(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

fn row_to_subscription(r: &rusqlite::Row<'_>) -> rusqlite::Result<Subscription> {
    Ok(Subscription {
        id: r.get(0)?,
        kind: r.get(1)?,
        url: r.get(2)?,
        events: r.get(3)?,
        secret: r.get(4)?,
        previous_secret: r.get(5)?,
        previous_until: r.get(6)?,
        scheme: r.get(7)?,
        headers: r.get(8)?,
        timeout_ms: r.get(9)?,
        max_in_flight: r.get(10)?,
        rate_limit: r.get(11)?,
        ordering: r.get(12)?,
        https_only: r.get::<_, i64>(13)? != 0,
        enabled: r.get::<_, i64>(14)? != 0,
        disabled_reason: r.get(15)?,
        failing_since: r.get(16)?,
        email_to: r.get(17)?,
        email_subject: r.get(18)?,
        email_body: r.get(19)?,
        description: r.get(20)?,
        created_at: r.get(21)?,
        updated_at: r.get(22)?,
        revision: r.get(23)?,
        body_format: r.get(24)?,
    })
}

fn row_to_delivery(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        subscription_id: r.get(1)?,
        event_seq: r.get(2)?,
        event_id: r.get(3)?,
        event: r.get(4)?,
        entity: r.get(5)?,
        status: r.get(6)?,
        attempts: r.get(7)?,
        next_attempt_at: r.get(8)?,
        last_status: r.get(9)?,
        last_error: r.get(10)?,
        created_at: r.get(11)?,
        updated_at: r.get(12)?,
        schedule_base: r.get(13)?,
    })
}

fn subscription_params(s: &Subscription) -> [rusqlite::types::Value; 24] {
    use rusqlite::types::Value as V;
    let text = |v: &Option<String>| v.clone().map_or(V::Null, V::Text);
    let int = |v: Option<i64>| v.map_or(V::Null, V::Integer);
    [
        V::Text(s.id.clone()),
        V::Text(s.kind.clone()),
        V::Text(s.url.clone()),
        V::Text(s.events.clone()),
        V::Text(s.secret.clone()),
        text(&s.previous_secret),
        int(s.previous_until),
        V::Text(s.scheme.clone()),
        V::Text(s.headers.clone()),
        V::Integer(s.timeout_ms),
        V::Integer(s.max_in_flight),
        int(s.rate_limit),
        V::Text(s.ordering.clone()),
        V::Integer(i64::from(s.https_only)),
        V::Integer(i64::from(s.enabled)),
        text(&s.disabled_reason),
        int(s.failing_since),
        text(&s.email_to),
        text(&s.email_subject),
        text(&s.email_body),
        V::Text(s.description.clone()),
        V::Integer(s.created_at),
        V::Integer(s.updated_at),
        V::Text(s.body_format.clone()),
    ]
}

/// Candidates for a claim: the due deliveries waiting to be sent (from `deliveries_pending`) and
/// those being sent under a lease that ran out (from `deliveries_in_flight`), oldest due first,
/// and with entity ordering only the oldest open delivery of each entity. Each part is a range
/// of its partial index that the `LIMIT` stops early; neither walks past deliveries being sent
/// (the claim ran at every pass, and walked past up to `max_in_flight` of them, each a lookup of
/// its row). `?1` subscription, `?2` now, `?3` entity ordering (0/1), `?4` limit.
static CLAIM_CANDIDATES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    q(&format!(
        "SELECT id FROM (
            SELECT id, next_attempt_at FROM (
                SELECT d.id, d.next_attempt_at FROM deliveries d
                WHERE d.subscription_id = $1 AND d.status = 'pending' AND d.next_attempt_at <= $2
                  AND {IN_ENTITY_ORDER}
                ORDER BY d.next_attempt_at LIMIT $4)
            UNION ALL
            SELECT id, next_attempt_at FROM (
                SELECT d.id, d.next_attempt_at FROM deliveries d
                WHERE d.subscription_id = $1 AND d.status = 'delivering' AND d.locked_until < $2
                  AND d.next_attempt_at <= $2 AND {IN_ENTITY_ORDER}
                ORDER BY d.next_attempt_at LIMIT $4))
         ORDER BY next_attempt_at LIMIT $4"
    ))
});

/// [`REKEY_OPEN_DELIVERIES`] as one statement per open status, each a range of the partial
/// index that holds that status (`status IN (…)` would walk every delivery the subscription
/// has, finished ones included). `?1` subscription id, `?2` its ordering now.
const REKEY_OPEN: [&str; 2] = [
    "UPDATE deliveries SET order_key = CASE WHEN CAST(?2 AS TEXT) = 'entity' THEN entity END
     WHERE subscription_id = ?1 AND status = 'pending'",
    "UPDATE deliveries SET order_key = CASE WHEN CAST(?2 AS TEXT) = 'entity' THEN entity END
     WHERE subscription_id = ?1 AND status = 'delivering'",
];

/// The open deliveries and the oldest one's creation, counted through the two partial indexes
/// that hold them (a scan of `deliveries` would read every finished delivery kept as well).
const OPEN_DELIVERY_STATS: &str = "SELECT COALESCE(SUM(n), 0), MIN(oldest) FROM (
        SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM deliveries INDEXED BY deliveries_pending
        WHERE status = 'pending'
        UNION ALL
        SELECT COUNT(*), MIN(created_at) FROM deliveries INDEXED BY deliveries_in_flight
        WHERE status = 'delivering')";

/// A [`ClaimRequest`] the blocking pool can own.
struct OwnedClaim {
    subscription_id: String,
    entity_order: bool,
    limit: i64,
    max_in_flight: i64,
    rate_limit: Option<i64>,
    now: i64,
    lease_until: i64,
}

impl OwnedClaim {
    fn of(r: &ClaimRequest<'_>) -> OwnedClaim {
        OwnedClaim {
            subscription_id: r.subscription_id.to_owned(),
            entity_order: r.entity_order,
            limit: r.limit,
            max_in_flight: r.max_in_flight,
            rate_limit: r.rate_limit,
            now: r.now,
            lease_until: r.lease_until,
        }
    }
}

/// One claim inside a write transaction (see [`DeliveryStore::claim`]). The caller holds the
/// write lock, which serialises claims, so the in-flight count read here stays true.
fn claim_in(tx: &rusqlite::Transaction<'_>, r: &OwnedClaim) -> Result<Vec<Claimed>, StoreError> {
    let (now, sub) = (r.now, r.subscription_id.as_str());
    let in_flight: i64 = tx
        .prepare_cached(&q(IN_FLIGHT))?
        .query_row(params![sub, now], |row| row.get(0))?;
    let mut limit = r.limit.min(r.max_in_flight - in_flight);
    let bucket = match r.rate_limit {
        Some(rate) => {
            let stored = tx
                .prepare_cached(&q(READ_BUCKET))?
                .query_row([sub], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            let tokens = refill_bucket(stored, rate, now);
            limit = limit.min(tokens.floor() as i64);
            Some(tokens)
        }
        None => None,
    };
    if limit <= 0 {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = {
        let mut stmt = tx.prepare_cached(&CLAIM_CANDIDATES)?;
        let rows = stmt.query_map(params![sub, now, i64::from(r.entity_order), limit], |row| {
            row.get(0)
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let mut claimed = Vec::with_capacity(ids.len());
    {
        // Marks the delivery, then reads it back; the body is then read once, by seq, from the
        // log. Not one `UPDATE … RETURNING`: SQLite codes RETURNING as a trigger, and a
        // statement with a trigger keeps a statement journal — a copy of every page the update
        // changes, 5.8 per delivery measured (`bench/RESULTS.md`). A single-row UPDATE keeps none.
        let mut mark = tx.prepare_cached(
            "UPDATE deliveries SET status = 'delivering', locked_until = ?2, updated_at = ?3 WHERE id = ?1",
        )?;
        let mut read = tx.prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.id = ?1"
        ))?;
        let mut body = tx.prepare_cached("SELECT event_ts, body FROM events WHERE seq = ?1")?;
        for id in &ids {
            mark.execute(params![id, r.lease_until, now])?;
            let delivery = read.query_row([id], row_to_delivery)?;
            let (event_ts, body) =
                body.query_row([delivery.event_seq], |row| Ok((row.get(0)?, row.get(1)?)))?;
            claimed.push(Claimed {
                delivery,
                event_ts,
                body,
            });
        }
    }
    if let Some(tokens) = bucket {
        let left = tokens - claimed.len() as f64;
        tx.prepare_cached(&q(WRITE_BUCKET))?
            .execute(params![sub, left, now])?;
    }
    Ok(claimed)
}

/// Records outcomes inside a write transaction (see [`DeliveryStore::complete`]).
fn complete_in(
    tx: &rusqlite::Transaction<'_>,
    completions: &[Completion],
    now: i64,
) -> Result<(), StoreError> {
    if completions.is_empty() {
        return Ok(());
    }
    let mut attempt = tx.prepare_cached(&q(INSERT_ATTEMPT))?;
    let mut finish = tx.prepare_cached(&q(FINISH_DELIVERY))?;
    let mut disable = tx.prepare_cached(&q(DISABLE_SUBSCRIPTION))?;
    let mut clocks = FailureClocks::default();
    for c in completions {
        let a = &c.attempt;
        let (status, next_at) = match c.next {
            Next::Succeeded => ("succeeded", now),
            Next::Retry(at) => ("pending", at),
            Next::Failed => ("failed", now),
        };
        let held = finish.execute(params![
            a.delivery_id,
            status,
            a.attempt,
            next_at,
            a.status_code,
            a.error,
            now,
            c.lease_until
        ])?;
        if held == 0 {
            // Re-claimed after the lease ran out: the newer attempt owns the outcome and its
            // attempt number, so this one records nothing at all.
            continue;
        }
        attempt.execute(params![
            a.delivery_id,
            a.attempt,
            a.started_at,
            a.duration_ms,
            a.status_code,
            a.response_excerpt,
            a.error
        ])?;
        clocks.record(&c.subscription_id, c.next == Next::Succeeded);
        if let Some(reason) = &c.disable {
            disable.execute(params![c.subscription_id, reason, now])?;
        }
    }
    let mut stop = tx.prepare_cached(&q(SUBSCRIPTION_SUCCEEDED))?;
    let mut start = tx.prepare_cached(&q(SUBSCRIPTION_FAILED))?;
    for (sub, step) in clocks.steps() {
        match step {
            ClockStep::Stop => stop.execute([sub])?,
            ClockStep::Start => start.execute(params![sub, now])?,
        };
    }
    Ok(())
}

#[async_trait]
impl DeliveryStore for SqliteStore {
    async fn insert_subscription(&self, sub: &Subscription) -> Result<(), StoreError> {
        let values = subscription_params(sub);
        self.with_writer(move |conn| {
            conn.execute(&q(INSERT_SUBSCRIPTION), rusqlite::params_from_iter(values))?;
            Ok(())
        })
        .await
    }

    async fn update_subscription(&self, sub: &Subscription) -> Result<bool, StoreError> {
        let mut values = subscription_params(sub).to_vec();
        values.push(rusqlite::types::Value::Integer(sub.revision));
        let (id, ordering) = (sub.id.clone(), sub.ordering.clone());
        self.with_writer(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let before: Option<String> = tx
                .query_row(&q(SUBSCRIPTION_ORDERING), [&id], |r| r.get(0))
                .optional()?;
            if tx.execute(&q(UPDATE_SUBSCRIPTION), rusqlite::params_from_iter(values))? == 0 {
                return Ok(false);
            }
            if before.as_deref() != Some(ordering.as_str()) {
                for rekey in REKEY_OPEN {
                    tx.execute(rekey, params![id, ordering])?;
                }
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn get_subscription(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        let id = id.to_owned();
        self.with_reader(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = ?1"),
                    [id],
                    row_to_subscription,
                )
                .optional()?)
        })
        .await
    }

    async fn list_subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions ORDER BY id"
            ))?;
            let rows = stmt.query_map([], row_to_subscription)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn delete_subscription(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.with_writer(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "DELETE FROM delivery_attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE subscription_id = ?1)",
                [&id],
            )?;
            tx.execute("DELETE FROM deliveries WHERE subscription_id = ?1", [&id])?;
            tx.execute("DELETE FROM rate_buckets WHERE subscription_id = ?1", [&id])?;
            let deleted = tx.execute("DELETE FROM subscriptions WHERE id = ?1", [&id])?;
            tx.commit()?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn enqueue(
        &self,
        from: ReaderPosition,
        to: ReaderPosition,
        deliveries: Vec<NewDelivery>,
    ) -> Result<bool, StoreError> {
        self.with_relaxed_writer(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if super::entities::position(&tx, FANOUT_READER)? != from {
                return Ok(false);
            }
            let now = crate::core::clock::now_millis();
            {
                let mut ordering = tx.prepare_cached(&q(SUBSCRIPTION_ORDERING))?;
                let mut insert = tx.prepare_cached(&q(INSERT_DELIVERY))?;
                // Each subscription's ordering, looked up once a batch: `None` for one deleted
                // since the fan-out read it (its deliveries are not added).
                let mut by_entity: HashMap<&str, Option<bool>> = HashMap::new();
                for d in &deliveries {
                    let entity_ordered = match by_entity.get(d.subscription_id.as_str()) {
                        Some(known) => *known,
                        None => {
                            let found = ordering
                                .query_row([&d.subscription_id], |r| r.get::<_, String>(0))
                                .optional()?
                                .map(|o| o == "entity");
                            by_entity.insert(&d.subscription_id, found);
                            found
                        }
                    };
                    let Some(entity_ordered) = entity_ordered else {
                        continue;
                    };
                    let order_key = if entity_ordered {
                        d.entity.as_deref()
                    } else {
                        None
                    };
                    insert.execute(params![
                        d.id,
                        d.subscription_id,
                        d.event_seq,
                        d.event_id,
                        d.event,
                        d.entity,
                        order_key,
                        now
                    ])?;
                }
            }
            tx.execute(
                "INSERT INTO sync_cursors (name, seq, applied) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, applied = excluded.applied",
                params![FANOUT_READER, to.seq, to.applied],
            )?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Vec<Claimed>, StoreError> {
        let order = OwnedClaim::of(request);
        self.with_relaxed_writer(move |conn| {
            // The write lock (IMMEDIATE) serialises claims, so the in-flight count stays true.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let claimed = claim_in(&tx, &order)?;
            tx.commit()?;
            Ok(claimed)
        })
        .await
    }

    async fn complete(&self, completions: Vec<Completion>, now: i64) -> Result<(), StoreError> {
        self.with_relaxed_writer(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            complete_in(&tx, &completions, now)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn settle_and_claim(
        &self,
        completions: Vec<Completion>,
        claims: &[ClaimRequest<'_>],
        now: i64,
    ) -> Result<Vec<Vec<Claimed>>, StoreError> {
        let orders: Vec<OwnedClaim> = claims.iter().map(OwnedClaim::of).collect();
        self.with_relaxed_writer(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            complete_in(&tx, &completions, now)?;
            let claimed = orders
                .iter()
                .map(|order| claim_in(&tx, order))
                .collect::<Result<Vec<_>, _>>()?;
            tx.commit()?;
            Ok(claimed)
        })
        .await
    }

    async fn event_heads_after(
        &self,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<EventHead>, StoreError> {
        self.with_reader(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {EVENT_HEAD_COLUMNS} FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![after_seq, limit], |r| {
                Ok(EventHead {
                    seq: r.get(0)?,
                    id: r.get(1)?,
                    event: r.get(2)?,
                    entity: r.get(3)?,
                    received_at: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn list_deliveries(
        &self,
        subscription_id: &str,
        status: Option<&str>,
        before_seq: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        let (subscription_id, status) = (subscription_id.to_owned(), status.map(str::to_owned));
        self.with_reader(move |conn| {
            let mut stmt = conn.prepare_cached(&q(&list_deliveries_sql()))?;
            let rows = stmt.query_map(
                params![
                    subscription_id,
                    status,
                    before_seq.unwrap_or(i64::MAX),
                    limit
                ],
                row_to_delivery,
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn get_delivery(&self, id: &str) -> Result<Option<(Delivery, Vec<Attempt>)>, StoreError> {
        let id = id.to_owned();
        self.with_reader(move |conn| {
            let Some(delivery) = conn
                .query_row(
                    &format!("SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.id = ?1"),
                    [&id],
                    row_to_delivery,
                )
                .optional()?
            else {
                return Ok(None);
            };
            let mut stmt = conn.prepare_cached(&q(LIST_ATTEMPTS))?;
            let attempts = stmt
                .query_map([&id], |r| {
                    Ok(Attempt {
                        delivery_id: r.get(0)?,
                        attempt: r.get(1)?,
                        started_at: r.get(2)?,
                        duration_ms: r.get(3)?,
                        status_code: r.get(4)?,
                        response_excerpt: r.get(5)?,
                        error: r.get(6)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some((delivery, attempts)))
        })
        .await
    }

    async fn retry_delivery(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.with_writer(move |conn| Ok(conn.execute(&q(RETRY_DELIVERY), params![id, now])? > 0))
            .await
    }

    async fn replay_ids(
        &self,
        sub: &Subscription,
        patterns: &[crate::core::pattern::EventPattern],
        range: &ReplayRange,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let (id, patterns, range) = (sub.id.clone(), patterns.to_vec(), range.clone());
        self.with_writer(move |conn| {
            // On the writer: the ordering read here is the one the insert runs under.
            let ordering: Option<String> = conn
                .query_row(&q(SUBSCRIPTION_ORDERING), [&id], |r| r.get(0))
                .optional()?;
            let Some(ordering) = ordering else {
                return Ok(Vec::new());
            };
            let (sql, params) = replay_sql(&id, &ordering, now, &patterns, &range);
            let mut stmt = conn.prepare(&q(&sql))?;
            let ids = stmt.query_map(super::sql_values(params), |r| r.get::<_, String>(0))?;
            Ok(ids.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn deliveries_by_id(
        &self,
        subscription_id: &str,
        ids: &[String],
    ) -> Result<Vec<Delivery>, StoreError> {
        let ids: Vec<String> = ids.iter().take(MAX_DELIVERIES_BY_ID).cloned().collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let subscription_id = subscription_id.to_owned();
        self.with_reader(move |conn| {
            let mut stmt = conn.prepare_cached(&q(&deliveries_by_id_sql(ids.len())))?;
            let values = std::iter::once(subscription_id).chain(ids);
            let rows = stmt.query_map(rusqlite::params_from_iter(values), row_to_delivery)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn deliveries_for_event(&self, event_seq: i64) -> Result<Vec<Delivery>, StoreError> {
        self.with_reader(move |conn| {
            let mut stmt = conn.prepare_cached(&q(DELIVERIES_FOR_EVENT))?;
            let rows = stmt.query_map([event_seq], row_to_delivery)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn delivery_counts(&self, subscription_id: &str) -> Result<DeliveryCounts, StoreError> {
        let id = subscription_id.to_owned();
        self.with_reader(move |conn| {
            let mut stmt = conn.prepare_cached(&q(DELIVERY_COUNTS))?;
            let mut counts = DeliveryCounts::default();
            let rows =
                stmt.query_map([&id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (status, n) = row?;
                match status.as_str() {
                    "pending" => counts.pending = n,
                    "delivering" => counts.delivering = n,
                    "succeeded" => counts.succeeded = n,
                    _ => counts.failed += n,
                }
            }
            Ok(counts)
        })
        .await
    }

    async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        self.with_reader(|conn| {
            Ok(conn.query_row(OPEN_DELIVERY_STATS, [], |r| {
                Ok(QueueStats {
                    depth: r.get(0)?,
                    oldest_pending: r.get(1)?,
                })
            })?)
        })
        .await
    }

    async fn disable_failing(
        &self,
        id: &str,
        reason: &str,
        now: i64,
        failing_before: i64,
    ) -> Result<bool, StoreError> {
        let (id, reason) = (id.to_owned(), reason.to_owned());
        self.with_writer(move |conn| {
            Ok(conn.execute(
                &q(DISABLE_FAILING),
                params![id, reason, now, failing_before],
            )? > 0)
        })
        .await
    }

    async fn purge_deliveries(&self, before: i64, limit: i64) -> Result<u64, StoreError> {
        self.with_relaxed_writer(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // The ids first, so attempts and deliveries are deleted for exactly the same set.
            let ids: Vec<String> = {
                let mut stmt = tx.prepare_cached(&q(PURGE_CANDIDATES))?;
                let rows = stmt.query_map(params![before, limit], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            {
                let mut attempts =
                    tx.prepare_cached("DELETE FROM delivery_attempts WHERE delivery_id = ?1")?;
                let mut deliveries = tx.prepare_cached("DELETE FROM deliveries WHERE id = ?1")?;
                for id in &ids {
                    attempts.execute([id])?;
                    deliveries.execute([id])?;
                }
            }
            tx.commit()?;
            Ok(ids.len() as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::sqlite::open;

    /// What SQLite plans for `sql` with `values`: the detail column of `EXPLAIN QUERY PLAN`, one
    /// line per step.
    fn plan(conn: &rusqlite::Connection, sql: &str, values: impl rusqlite::Params) -> String {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("plan");
        let rows = stmt
            .query_map(values, |r| r.get::<_, String>(3))
            .expect("rows");
        rows.collect::<Result<Vec<_>, _>>()
            .expect("rows")
            .join("\n")
    }

    /// The claim and the queue gauges read only the open deliveries, through their partial
    /// indexes: a plan that scanned `deliveries` would read every delivery kept until purged,
    /// and one that took an index of every open delivery would walk past those being sent.
    #[test]
    fn the_claim_and_the_queue_stats_read_only_open_deliveries() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log_path = dir.path().join("z.db");
        let _log = open::open_log_writer(&log_path, Duration::from_secs(1), 1 << 26).expect("log");
        let state = open::open_state_writer(
            &open::state_path(&log_path),
            &log_path,
            Duration::from_secs(1),
            1 << 26,
        )
        .expect("state");
        let claim = plan(&state, &CLAIM_CANDIDATES, params!["sub_1", 0, 1, 10]);
        assert!(
            claim.contains(
                "USING INDEX deliveries_pending (subscription_id=? AND next_attempt_at<?)"
            ),
            "{claim}"
        );
        assert!(
            claim.contains(
                "USING INDEX deliveries_in_flight (subscription_id=? AND locked_until<?)"
            ),
            "{claim}"
        );
        assert!(
            claim.contains("USING INDEX deliveries_order"),
            "the entity check: {claim}"
        );
        let stats = plan(&state, OPEN_DELIVERY_STATS, []);
        for (rekey, index) in REKEY_OPEN
            .iter()
            .zip(["deliveries_pending", "deliveries_in_flight"])
        {
            let rekey = plan(&state, rekey, params!["sub_1", "entity"]);
            assert!(
                rekey.contains(&format!("USING INDEX {index} (subscription_id=?)")),
                "{rekey}"
            );
        }
        assert!(stats.contains("deliveries_pending"), "{stats}");
        assert!(stats.contains("deliveries_in_flight"), "{stats}");
        for line in claim.lines().chain(stats.lines()) {
            assert!(
                !(line.contains("SCAN d") || line.contains("SCAN deliveries"))
                    || line.contains("INDEX"),
                "a scan of the whole table: {line}"
            );
        }
    }
}
