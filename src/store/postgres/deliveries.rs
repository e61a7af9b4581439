//! PostgreSQL side of the delivery contract ([`DeliveryStore`]). Claims use
//! `FOR UPDATE SKIP LOCKED`, so instances sharing the database never claim the same delivery.

use async_trait::async_trait;
use deadpool_postgres::ClientWrapper;
use futures_util::future::{try_join_all, try_join3};
use tokio_postgres::Statement;
use tokio_postgres::types::ToSql;

use super::PgStore;
use super::append::Checkout;
use crate::store::StoreError;
use crate::store::deliveries::*;
use crate::store::entities::ReaderPosition;

fn row_to_subscription(r: &tokio_postgres::Row) -> Result<Subscription, StoreError> {
    Ok(Subscription {
        id: r.try_get(0)?,
        kind: r.try_get(1)?,
        url: r.try_get(2)?,
        events: r.try_get(3)?,
        secret: r.try_get(4)?,
        previous_secret: r.try_get(5)?,
        previous_until: r.try_get(6)?,
        scheme: r.try_get(7)?,
        headers: r.try_get(8)?,
        timeout_ms: r.try_get(9)?,
        max_in_flight: r.try_get(10)?,
        rate_limit: r.try_get(11)?,
        ordering: r.try_get(12)?,
        https_only: r.try_get::<_, i64>(13)? != 0,
        enabled: r.try_get::<_, i64>(14)? != 0,
        disabled_reason: r.try_get(15)?,
        failing_since: r.try_get(16)?,
        email_to: r.try_get(17)?,
        email_subject: r.try_get(18)?,
        email_body: r.try_get(19)?,
        description: r.try_get(20)?,
        created_at: r.try_get(21)?,
        updated_at: r.try_get(22)?,
        revision: r.try_get(23)?,
        body_format: r.try_get(24)?,
    })
}

fn row_to_delivery(r: &tokio_postgres::Row) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        id: r.try_get(0)?,
        subscription_id: r.try_get(1)?,
        event_seq: r.try_get(2)?,
        event_id: r.try_get(3)?,
        event: r.try_get(4)?,
        entity: r.try_get(5)?,
        status: r.try_get(6)?,
        attempts: r.try_get(7)?,
        next_attempt_at: r.try_get(8)?,
        last_status: r.try_get(9)?,
        last_error: r.try_get(10)?,
        created_at: r.try_get(11)?,
        updated_at: r.try_get(12)?,
        schedule_base: r.try_get(13)?,
    })
}

/// Owned parameters of a subscription row, in column order.
struct SubscriptionParams {
    https_only: i64,
    enabled: i64,
}

impl SubscriptionParams {
    fn of(s: &Subscription) -> SubscriptionParams {
        SubscriptionParams {
            https_only: i64::from(s.https_only),
            enabled: i64::from(s.enabled),
        }
    }

    fn refs<'a>(&'a self, s: &'a Subscription) -> [&'a (dyn ToSql + Sync); 24] {
        [
            &s.id,
            &s.kind,
            &s.url,
            &s.events,
            &s.secret,
            &s.previous_secret,
            &s.previous_until,
            &s.scheme,
            &s.headers,
            &s.timeout_ms,
            &s.max_in_flight,
            &s.rate_limit,
            &s.ordering,
            &self.https_only,
            &self.enabled,
            &s.disabled_reason,
            &s.failing_since,
            &s.email_to,
            &s.email_subject,
            &s.email_body,
            &s.description,
            &s.created_at,
            &s.updated_at,
            &s.body_format,
        ]
    }
}

/// Fan-out, claims and outcomes do not wait for their own WAL flush: a server crash can lose only
/// the last of them, and each is repeated or re-derived (at-least-once). Appends to the event log
/// keep `synchronous_commit = on`. (The pump's own connections run the whole session so.)
pub(crate) const RELAXED_COMMIT: &str = "SET LOCAL synchronous_commit = off";

/// One claim in one statement: the candidates (`$1` subscription, `$2` now, `$3` entity
/// ordering, `$4` limit; locked with `SKIP LOCKED`), marked as being sent under the lease `$5`,
/// and read back with their events' bodies, in log order.
static CLAIM: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH {},
         marked AS (
            UPDATE deliveries SET status = 'delivering', locked_until = $5, updated_at = $2
            FROM picked WHERE deliveries.id = picked.id RETURNING deliveries.*)
         SELECT {DELIVERY_COLUMNS}, e.event_ts, e.body
         FROM marked d JOIN events e ON e.seq = d.event_seq
         ORDER BY d.event_seq",
        claim_candidates_sql()
    )
});

const TRY_LOCK_SUBSCRIPTION: &str = "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))";

/// The statements of a pump pass, prepared once per connection (cached by the pool's client):
/// after the first pass every statement is one round trip, and several are sent back to back.
struct PassStatements {
    try_lock: Statement,
    in_flight: Statement,
    read_bucket: Statement,
    write_bucket: Statement,
    claim: Statement,
    finish: Statement,
    insert_attempts: Statement,
    disable: Statement,
    succeeded: Statement,
    failed: Statement,
}

impl PassStatements {
    async fn prepare(client: &ClientWrapper) -> Result<PassStatements, tokio_postgres::Error> {
        let (try_lock, in_flight, read_bucket, write_bucket, claim) = futures_util::try_join!(
            client.prepare_cached(TRY_LOCK_SUBSCRIPTION),
            client.prepare_cached(IN_FLIGHT),
            client.prepare_cached(READ_BUCKET),
            client.prepare_cached(WRITE_BUCKET),
            client.prepare_cached(&CLAIM),
        )?;
        let (finish, insert_attempts, disable, succeeded, failed) = futures_util::try_join!(
            client.prepare_cached(FINISH_DELIVERIES),
            client.prepare_cached(INSERT_ATTEMPTS),
            client.prepare_cached(DISABLE_SUBSCRIPTION),
            client.prepare_cached(SUBSCRIPTION_SUCCEEDED),
            client.prepare_cached(SUBSCRIPTION_FAILED),
        )?;
        Ok(PassStatements {
            try_lock,
            in_flight,
            read_bucket,
            write_bucket,
            claim,
            finish,
            insert_attempts,
            disable,
            succeeded,
            failed,
        })
    }
}

/// One claim inside the pass's transaction (see [`DeliveryStore::claim`]).
async fn claim_in(
    client: &ClientWrapper,
    st: &PassStatements,
    request: &ClaimRequest<'_>,
) -> Result<Vec<Claimed>, StoreError> {
    let ClaimRequest {
        subscription_id,
        entity_order,
        now,
        lease_until,
        ..
    } = *request;
    // One claim per subscription at a time across every instance, so the in-flight count cannot
    // be read by two claims that then both fill it. Never waits: if another instance is claiming
    // for this subscription (or hangs doing so), try again on the next pass. Held to the end of
    // the transaction. The count and the bucket are read in the same round trip (pipelined, so
    // the server runs them after the lock is taken; each statement's snapshot then sees every
    // claim the previous holder committed); without the lock they are not used.
    let read_bucket = async {
        match request.rate_limit {
            Some(_) => client
                .query_opt(&st.read_bucket, &[&subscription_id])
                .await
                .map(Some),
            None => Ok(None),
        }
    };
    let (locked, in_flight, stored) = try_join3(
        client.query_one(&st.try_lock, &[&subscription_id]),
        client.query_one(&st.in_flight, &[&subscription_id, &now]),
        read_bucket,
    )
    .await?;
    if !locked.try_get::<_, bool>(0)? {
        return Ok(Vec::new());
    }
    let in_flight: i64 = in_flight.try_get(0)?;
    let mut limit = request.limit.min(request.max_in_flight - in_flight);
    let bucket = match request.rate_limit {
        Some(rate) => {
            let stored = match stored.flatten() {
                Some(r) => Some((r.try_get::<_, f64>(0)?, r.try_get::<_, i64>(1)?)),
                None => None,
            };
            let tokens = refill_bucket(stored, rate, now);
            limit = limit.min(tokens.floor() as i64);
            Some(tokens)
        }
        None => None,
    };
    if limit <= 0 {
        return Ok(Vec::new());
    }
    let order = i64::from(entity_order);
    let rows = client
        .query(
            &st.claim,
            &[&subscription_id, &now, &order, &limit, &lease_until],
        )
        .await?;
    if let Some(tokens) = bucket {
        let left = tokens - rows.len() as f64;
        client
            .execute(&st.write_bucket, &[&subscription_id, &left, &now])
            .await?;
    }
    rows.iter()
        .map(|r| {
            Ok(Claimed {
                delivery: row_to_delivery(r)?,
                event_ts: r.try_get(14)?,
                body: r.try_get(15)?,
            })
        })
        .collect()
}

/// Records outcomes inside the pass's transaction (see [`DeliveryStore::complete`]): one
/// statement finishes every delivery still held under its lease, one records their attempts,
/// whatever the size of the batch. Begins that transaction: `BEGIN` goes first, in the same
/// round trip as the outcomes' update.
async fn begin_and_complete(
    client: &ClientWrapper,
    st: &PassStatements,
    completions: &[Completion],
    now: i64,
) -> Result<(), StoreError> {
    let begin = client.batch_execute("BEGIN");
    if completions.is_empty() {
        begin.await?;
        return Ok(());
    }
    let n = completions.len();
    let (mut ids, mut statuses, mut attempts, mut next_at) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut codes, mut errors, mut leases) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for c in completions {
        let (status, at) = match c.next {
            Next::Succeeded => ("succeeded", now),
            Next::Retry(at) => ("pending", at),
            Next::Failed => ("failed", now),
        };
        ids.push(c.attempt.delivery_id.as_str());
        statuses.push(status);
        attempts.push(c.attempt.attempt);
        next_at.push(at);
        codes.push(c.attempt.status_code);
        errors.push(c.attempt.error.as_deref());
        leases.push(c.lease_until);
    }
    // Only deliveries still held under the lease the attempt was made with: one re-claimed after
    // its lease ran out belongs to the newer attempt, which owns the outcome and its attempt
    // number, so a stale outcome records nothing at all.
    let params: [&(dyn ToSql + Sync); 8] = [
        &ids, &statuses, &attempts, &next_at, &codes, &errors, &leases, &now,
    ];
    let finish = client.query(&st.finish, &params);
    let ((), finished) = futures_util::future::try_join(begin, finish).await?;
    let mut held = std::collections::HashSet::with_capacity(finished.len());
    for r in &finished {
        held.insert((r.try_get::<_, String>(0)?, r.try_get::<_, i64>(1)?));
    }
    let recorded: Vec<&Completion> = completions
        .iter()
        .filter(|c| held.contains(&(c.attempt.delivery_id.clone(), c.lease_until)))
        .collect();
    if recorded.is_empty() {
        return Ok(());
    }
    let a: Vec<&Attempt> = recorded.iter().map(|c| &c.attempt).collect();
    let ids: Vec<&str> = a.iter().map(|a| a.delivery_id.as_str()).collect();
    let numbers: Vec<i64> = a.iter().map(|a| a.attempt).collect();
    let started: Vec<i64> = a.iter().map(|a| a.started_at).collect();
    let durations: Vec<i64> = a.iter().map(|a| a.duration_ms).collect();
    let codes: Vec<Option<i64>> = a.iter().map(|a| a.status_code).collect();
    let excerpts: Vec<Option<&str>> = a.iter().map(|a| a.response_excerpt.as_deref()).collect();
    let errors: Vec<Option<&str>> = a.iter().map(|a| a.error.as_deref()).collect();
    // The attempts and the subscriptions' failure clocks, sent together (pipelined: one round
    // trip, run by the server in this order).
    let mut clocks = FailureClocks::default();
    for c in &recorded {
        clocks.record(&c.subscription_id, c.next == Next::Succeeded);
    }
    let steps = clocks.steps();
    let mut writes: Vec<(&Statement, Vec<&(dyn ToSql + Sync)>)> = vec![(
        &st.insert_attempts,
        vec![
            &ids, &numbers, &started, &durations, &codes, &excerpts, &errors,
        ],
    )];
    for c in &recorded {
        if let Some(reason) = &c.disable {
            writes.push((&st.disable, vec![&c.subscription_id, reason, &now]));
        }
    }
    for (sub, step) in &steps {
        match step {
            ClockStep::Stop => writes.push((&st.succeeded, vec![sub])),
            ClockStep::Start => writes.push((&st.failed, vec![sub, &now])),
        }
    }
    try_join_all(
        writes
            .iter()
            .map(|(statement, params)| client.execute(*statement, params)),
    )
    .await?;
    Ok(())
}

/// Fan-out's new deliveries (arrays in column order, `$7` now); a subscription deleted
/// meanwhile gets none, and one already queued for the event is kept.
const ENQUEUE_DELIVERIES: &str = "INSERT INTO deliveries (id, subscription_id, event_seq, event_id, event, entity, order_key, status, attempts, next_attempt_at, created_at, updated_at)
     SELECT i, s, q, ei, ev, en, CASE WHEN sub.ordering = 'entity' THEN en END, 'pending', 0, $7, $7, $7
     FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[]) AS t(i, s, q, ei, ev, en)
     JOIN subscriptions sub ON sub.id = t.s
     ON CONFLICT (subscription_id, event_seq) DO NOTHING";

const NOTIFY_DELIVERIES: &str = "SELECT pg_notify('zoomhook_deliveries', '')";

/// [`FINISH_DELIVERY`] for many outcomes at once (arrays in the order of its parameters, `$8`
/// now); returns the id and lease of each delivery finished.
const FINISH_DELIVERIES: &str = "UPDATE deliveries d
    SET status = o.status, attempts = o.attempt, next_attempt_at = o.next_at, locked_until = NULL,
        last_status = o.code, last_error = o.error, updated_at = $8
    FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[], $7::bigint[])
         AS o(id, status, attempt, next_at, code, error, lease)
    WHERE d.id = o.id AND d.status = 'delivering' AND d.locked_until = o.lease
    RETURNING d.id, o.lease";

/// [`INSERT_ATTEMPT`] for many attempts at once (arrays in the order of its parameters).
const INSERT_ATTEMPTS: &str = "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, response_excerpt, error)
    SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[], $7::text[])
    ON CONFLICT (delivery_id, attempt) DO NOTHING";

impl PgStore {
    /// One try of [`DeliveryStore::update_subscription`].
    async fn update_subscription_once(&self, sub: &Subscription) -> Result<bool, StoreError> {
        let p = SubscriptionParams::of(sub);
        let mut params = p.refs(sub).to_vec();
        params.push(&sub.revision);
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // Fan-out decides each new delivery's ordering key from the subscription in its own
        // transaction, holding its cursor's row lock: taking that lock first means no fan-out
        // commits keys of the old ordering after the open deliveries are re-keyed here.
        super::entities::lock_reader(&tx, FANOUT_READER, None).await?;
        let before: Option<String> = tx
            .query_opt(SUBSCRIPTION_ORDERING, &[&sub.id])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        if tx.execute(UPDATE_SUBSCRIPTION, &params).await? == 0 {
            return Ok(false);
        }
        if before.as_deref() != Some(sub.ordering.as_str()) {
            tx.execute(REKEY_OPEN_DELIVERIES, &[&sub.id, &sub.ordering])
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

impl PgStore {
    /// Records `completions` and then makes each of `claims`, in one transaction on a connection
    /// of the pump's own pool. Round trips: `BEGIN` with the outcomes' update, the attempts with
    /// the failure clocks, per claim its lock with the in-flight count and one statement that
    /// claims and reads the bodies, and `COMMIT`. Any error (or a pass dropped halfway) closes the
    /// connection, which rolls the transaction back: nothing is written.
    async fn pump_pass(
        &self,
        completions: &[Completion],
        claims: &[ClaimRequest<'_>],
        now: i64,
    ) -> Result<Vec<Vec<Claimed>>, StoreError> {
        let mut checkout = Checkout(Some(self.pump.get().await?));
        let client = checkout.client()?;
        let statements = PassStatements::prepare(client).await?;
        begin_and_complete(client, &statements, completions, now).await?;
        let mut claimed = Vec::with_capacity(claims.len());
        for request in claims {
            claimed.push(claim_in(client, &statements, request).await?);
        }
        client.batch_execute("COMMIT").await?;
        checkout.release();
        Ok(claimed)
    }
}

/// Runs a transaction that re-keys open deliveries, again if PostgreSQL ended it as a deadlock
/// (up to three times). Re-keying locks delivery rows that the pump's outcomes lock too, in
/// another order; the transaction that lost rolled back whole, so making it again is safe.
async fn retry_on_deadlock<T, F, Fut>(mut transaction: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut tries = 0;
    loop {
        match transaction().await {
            Err(StoreError::Unavailable(text)) if text.contains("SQLSTATE 40P01") && tries < 3 => {
                tries += 1;
                tracing::debug!(%text, "a re-keying transaction ended as a deadlock; retrying");
            }
            other => return other,
        }
    }
}

impl PgStore {
    /// Re-keys the open deliveries of subscription `id` if its ordering is no longer `seen`,
    /// under the fan-out cursor's lock (as an update of the subscription does).
    async fn rekey_if_ordering_changed(&self, id: &str, seen: &str) -> Result<(), StoreError> {
        retry_on_deadlock(|| self.rekey_once(id, seen)).await
    }

    async fn rekey_once(&self, id: &str, seen: &str) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        super::entities::lock_reader(&tx, FANOUT_READER, None).await?;
        let now: Option<String> = tx
            .query_opt(SUBSCRIPTION_ORDERING, &[&id])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        if let Some(ordering) = now.filter(|o| o != seen) {
            tx.execute(REKEY_OPEN_DELIVERIES, &[&id, &ordering]).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl DeliveryStore for PgStore {
    async fn insert_subscription(&self, sub: &Subscription) -> Result<(), StoreError> {
        let p = SubscriptionParams::of(sub);
        let client = self.pool.get().await?;
        client.execute(INSERT_SUBSCRIPTION, &p.refs(sub)).await?;
        Ok(())
    }

    async fn update_subscription(&self, sub: &Subscription) -> Result<bool, StoreError> {
        retry_on_deadlock(|| self.update_subscription_once(sub)).await
    }

    async fn get_subscription(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = $1"),
                &[&id],
            )
            .await?;
        row.as_ref().map(row_to_subscription).transpose()
    }

    async fn list_subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions ORDER BY id"),
                &[],
            )
            .await?;
        rows.iter().map(row_to_subscription).collect()
    }

    async fn delete_subscription(&self, id: &str) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // After any fan-out in progress has committed (its cursor's lock), so none queues for
        // this subscription once it is gone.
        super::entities::lock_reader(&tx, FANOUT_READER, None).await?;
        tx.execute(
            "DELETE FROM delivery_attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE subscription_id = $1)",
            &[&id],
        )
        .await?;
        tx.execute("DELETE FROM deliveries WHERE subscription_id = $1", &[&id])
            .await?;
        tx.execute(
            "DELETE FROM rate_buckets WHERE subscription_id = $1",
            &[&id],
        )
        .await?;
        let deleted = tx
            .execute("DELETE FROM subscriptions WHERE id = $1", &[&id])
            .await?;
        tx.commit().await?;
        Ok(deleted > 0)
    }

    async fn enqueue(
        &self,
        from: ReaderPosition,
        to: ReaderPosition,
        deliveries: Vec<NewDelivery>,
    ) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        if super::entities::lock_reader(&tx, FANOUT_READER, Some(RELAXED_COMMIT)).await? != from {
            return Ok(false);
        }
        let now = crate::core::clock::now_millis();
        let mut ids = Vec::with_capacity(deliveries.len());
        let mut subs = Vec::with_capacity(deliveries.len());
        let mut seqs = Vec::with_capacity(deliveries.len());
        let mut event_ids = Vec::with_capacity(deliveries.len());
        let mut events = Vec::with_capacity(deliveries.len());
        let mut entities = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            ids.push(d.id);
            subs.push(d.subscription_id);
            seqs.push(d.event_seq);
            event_ids.push(d.event_id);
            events.push(d.event);
            entities.push(d.entity);
        }
        let (insert, move_cursor, notify) = futures_util::try_join!(
            tx.prepare_cached(ENQUEUE_DELIVERIES),
            tx.prepare_cached(super::entities::MOVE_CURSOR),
            tx.prepare_cached(NOTIFY_DELIVERIES),
        )?;
        // Back to back, in one round trip, run in this order. The notification wakes the
        // delivery workers of every instance at commit.
        let new: [&(dyn ToSql + Sync); 7] =
            [&ids, &subs, &seqs, &event_ids, &events, &entities, &now];
        let cursor: [&(dyn ToSql + Sync); 3] = [&FANOUT_READER, &to.seq, &to.applied];
        futures_util::try_join!(
            tx.execute(&insert, &new),
            tx.execute(&move_cursor, &cursor),
            tx.execute(&notify, &[]),
        )?;
        tx.commit().await?;
        Ok(true)
    }

    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Vec<Claimed>, StoreError> {
        let mut claimed = self
            .pump_pass(&[], std::slice::from_ref(request), request.now)
            .await?;
        Ok(claimed.pop().unwrap_or_default())
    }

    async fn complete(&self, completions: Vec<Completion>, now: i64) -> Result<(), StoreError> {
        self.pump_pass(&completions, &[], now).await?;
        Ok(())
    }

    async fn settle_and_claim(
        &self,
        completions: Vec<Completion>,
        claims: &[ClaimRequest<'_>],
        now: i64,
    ) -> Result<Vec<Vec<Claimed>>, StoreError> {
        self.pump_pass(&completions, claims, now).await
    }

    async fn event_heads_after(
        &self,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<EventHead>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {EVENT_HEAD_COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2"
                ),
                &[&after_seq, &limit],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(EventHead {
                    seq: r.try_get(0)?,
                    id: r.try_get(1)?,
                    event: r.try_get(2)?,
                    entity: r.try_get(3)?,
                    received_at: r.try_get(4)?,
                })
            })
            .collect()
    }

    async fn list_deliveries(
        &self,
        subscription_id: &str,
        status: Option<&str>,
        before_seq: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        let client = self.pool.get().await?;
        let before = before_seq.unwrap_or(i64::MAX);
        let rows = client
            .query(
                &list_deliveries_sql(),
                &[&subscription_id, &status, &before, &limit],
            )
            .await?;
        rows.iter().map(row_to_delivery).collect()
    }

    async fn get_delivery(&self, id: &str) -> Result<Option<(Delivery, Vec<Attempt>)>, StoreError> {
        let client = self.pool.get().await?;
        let Some(row) = client
            .query_opt(
                &format!("SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.id = $1"),
                &[&id],
            )
            .await?
        else {
            return Ok(None);
        };
        let attempts = client
            .query(LIST_ATTEMPTS, &[&id])
            .await?
            .iter()
            .map(|r| {
                Ok(Attempt {
                    delivery_id: r.try_get(0)?,
                    attempt: r.try_get(1)?,
                    started_at: r.try_get(2)?,
                    duration_ms: r.try_get(3)?,
                    status_code: r.try_get(4)?,
                    response_excerpt: r.try_get(5)?,
                    error: r.try_get(6)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Some((row_to_delivery(&row)?, attempts)))
    }

    async fn retry_delivery(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // The ordering key is read from the subscription. Under the fan-out cursor's lock, which
        // an update of the subscription takes first too, that update either commits before (and
        // its ordering is read here) or waits for this retry (and re-keys what it made pending).
        // (Not the subscription's row: the pump's outcomes lock deliveries, then that row.)
        super::entities::lock_reader(&tx, FANOUT_READER, None).await?;
        let retried = tx.execute(RETRY_DELIVERY, &[&id, &now]).await? > 0;
        tx.commit().await?;
        Ok(retried)
    }

    async fn replay_ids(
        &self,
        sub: &Subscription,
        patterns: &[crate::core::pattern::EventPattern],
        range: &ReplayRange,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let client = self.pool.get().await?;
        let Some(ordering) = client
            .query_opt(SUBSCRIPTION_ORDERING, &[&sub.id])
            .await?
            .map(|r| r.try_get::<_, String>(0))
            .transpose()?
        else {
            return Ok(Vec::new());
        };
        let (sql, params) = replay_sql(&sub.id, &ordering, now, patterns, range);
        let values = super::boxed(params);
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| &**v as _).collect();
        let rows = client.query(&sql, &refs).await?;
        let ids = rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<Vec<String>, _>>()?;
        drop(client);
        // The replay is not under the fan-out cursor's lock (held for a whole replay, it would
        // stall fan-out), so a change of ordering may have re-keyed the open deliveries while
        // these were not yet visible to it. Now that they are, look again under that lock: an
        // update in progress commits first, and one that comes after sees these rows.
        self.rekey_if_ordering_changed(&sub.id, &ordering).await?;
        Ok(ids)
    }

    async fn deliveries_by_id(
        &self,
        subscription_id: &str,
        ids: &[String],
    ) -> Result<Vec<Delivery>, StoreError> {
        let ids = &ids[..ids.len().min(MAX_DELIVERIES_BY_ID)];
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut refs: Vec<&(dyn ToSql + Sync)> = vec![&subscription_id];
        refs.extend(ids.iter().map(|id| id as &(dyn ToSql + Sync)));
        let client = self.pool.get().await?;
        let rows = client
            .query(&deliveries_by_id_sql(ids.len()), &refs)
            .await?;
        rows.iter().map(row_to_delivery).collect()
    }

    async fn deliveries_for_event(&self, event_seq: i64) -> Result<Vec<Delivery>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client.query(DELIVERIES_FOR_EVENT, &[&event_seq]).await?;
        rows.iter().map(row_to_delivery).collect()
    }

    async fn delivery_counts(&self, subscription_id: &str) -> Result<DeliveryCounts, StoreError> {
        let client = self.pool.get().await?;
        let mut counts = DeliveryCounts::default();
        for row in client.query(DELIVERY_COUNTS, &[&subscription_id]).await? {
            let (status, n): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
            match status.as_str() {
                "pending" => counts.pending = n,
                "delivering" => counts.delivering = n,
                "succeeded" => counts.succeeded = n,
                _ => counts.failed += n,
            }
        }
        Ok(counts)
    }

    async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        let client = self.pool.get().await?;
        let row = client.query_one(QUEUE_STATS, &[]).await?;
        Ok(QueueStats {
            depth: row.try_get(0)?,
            oldest_pending: row.try_get(1)?,
        })
    }

    async fn disable_failing(
        &self,
        id: &str,
        reason: &str,
        now: i64,
        failing_before: i64,
    ) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .execute(DISABLE_FAILING, &[&id, &reason, &now, &failing_before])
            .await?
            > 0)
    }

    async fn purge_deliveries(&self, before: i64, limit: i64) -> Result<u64, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(RELAXED_COMMIT).await?;
        // One statement, so attempts and deliveries are deleted for exactly the same set.
        let row = tx
            .query_one(
                &format!(
                    "WITH gone AS (DELETE FROM deliveries WHERE id IN ({PURGE_CANDIDATES} FOR UPDATE SKIP LOCKED) RETURNING id),
                          attempts AS (DELETE FROM delivery_attempts WHERE delivery_id IN (SELECT id FROM gone))
                     SELECT COUNT(*) FROM gone"
                ),
                &[&before, &limit],
            )
            .await?;
        tx.commit().await?;
        Ok(u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0))
    }
}
