//! Storage of subscriptions, the delivery queue and delivery attempts (both backends).
//!
//! The SQL is shared: both backends accept `$n` placeholders (the SQLite backend rewrites them
//! to `?n`, which binds by number) and the same DDL types.
//! Only claiming differs: PostgreSQL adds `FOR UPDATE SKIP LOCKED` so several instances never
//! claim the same delivery; SQLite has a single writer per database.

use async_trait::async_trait;
use serde::Serialize;

use super::StoreError;
use super::entities::ReaderPosition;

/// An outbound subscription: where, what, how signed, and its limits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Subscription {
    pub id: String,
    /// `webhook` or `email`.
    pub kind: String,
    pub url: String,
    /// Comma-separated event patterns (`meeting.*,*.deleted`).
    pub events: String,
    #[serde(skip)]
    pub secret: String,
    #[serde(skip)]
    pub previous_secret: Option<String>,
    /// Until when (epoch ms) the previous secret still signs.
    pub previous_until: Option<i64>,
    /// `standard` or `zoom`.
    pub scheme: String,
    /// `raw` (the stored body, byte for byte) or `compact` (`zoom` scheme only: the body as
    /// `JSON.stringify(JSON.parse(body))` writes it, for consumers that verify over that).
    pub body_format: String,
    /// Custom headers, a JSON object of strings.
    pub headers: String,
    pub timeout_ms: i64,
    pub max_in_flight: i64,
    pub rate_limit: Option<i64>,
    /// `none` or `entity`.
    pub ordering: String,
    pub https_only: bool,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub failing_since: Option<i64>,
    pub email_to: Option<String>,
    pub email_subject: Option<String>,
    pub email_body: Option<String>,
    pub description: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// Bumped by every write of the settings or state (not by the workers' failure clock,
    /// `failing_since`, which updates never overwrite); an update must name the revision it read.
    #[serde(skip)]
    pub revision: i64,
}

/// What one claim asks for.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    pub subscription_id: &'a str,
    pub entity_order: bool,
    /// What this instance may take now (its free slots and rate-limit tokens).
    pub limit: i64,
    /// The subscription's limit on deliveries in flight, counted over every instance.
    pub max_in_flight: i64,
    /// The subscription's rate limit (deliveries per second), shared by every instance.
    pub rate_limit: Option<i64>,
    pub now: i64,
    pub lease_until: i64,
}

/// A shared token bucket of `rate` tokens a second, refilled up to `now` from its stored state
/// (`None`: never used, full). Returns the tokens available now.
pub fn refill_bucket(stored: Option<(f64, i64)>, rate: i64, now: i64) -> f64 {
    let capacity = rate.max(0) as f64;
    match stored {
        None => capacity,
        Some((tokens, at)) => {
            let elapsed = (now - at).max(0) as f64 / 1000.0;
            (tokens + elapsed * capacity).min(capacity)
        }
    }
}

/// Reads a subscription's bucket (`$1` subscription).
pub(crate) const READ_BUCKET: &str =
    "SELECT tokens, refilled_at FROM rate_buckets WHERE subscription_id = $1";
/// Stores a subscription's bucket (`$1` subscription, `$2` tokens, `$3` now).
pub(crate) const WRITE_BUCKET: &str = "INSERT INTO rate_buckets (subscription_id, tokens, refilled_at) VALUES ($1, $2, $3)
     ON CONFLICT (subscription_id) DO UPDATE SET tokens = excluded.tokens, refilled_at = excluded.refilled_at";

/// Deliveries of a subscription being sent under a live lease (`$1` subscription, `$2` now).
pub(crate) const IN_FLIGHT: &str = "SELECT COUNT(*) FROM deliveries
    WHERE subscription_id = $1 AND status = 'delivering' AND locked_until >= $2";

/// The columns of `subscriptions`, in [`Subscription`] field order.
pub const SUBSCRIPTION_COLUMNS: &str = "id, kind, url, events, secret, previous_secret, previous_until, scheme, headers, timeout_ms, max_in_flight, rate_limit, ordering, https_only, enabled, disabled_reason, failing_since, email_to, email_subject, email_body, description, created_at, updated_at, revision, body_format";

/// One delivery: an event for a subscription.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    /// `msg_<ULID>`: the `webhook-id`, the same on every attempt and replay.
    pub id: String,
    pub subscription_id: String,
    pub event_seq: i64,
    pub event_id: String,
    pub event: String,
    pub entity: Option<String>,
    /// `pending`, `delivering`, `succeeded` or `failed`.
    pub status: String,
    pub attempts: i64,
    /// Attempts made before the current retry schedule began (a manual retry or replay starts a
    /// fresh schedule without renumbering attempts).
    pub schedule_base: i64,
    pub next_attempt_at: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The columns of `deliveries` read into [`Delivery`] (prefixed with `d.`).
pub const DELIVERY_COLUMNS: &str = "d.id, d.subscription_id, d.event_seq, d.event_id, d.event, d.entity, d.status, d.attempts, d.next_attempt_at, d.last_status, d.last_error, d.created_at, d.updated_at, d.schedule_base";

/// A delivery to create (fan-out).
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: String,
    pub subscription_id: String,
    pub event_seq: i64,
    pub event_id: String,
    pub event: String,
    pub entity: Option<String>,
}

/// A claimed delivery with the event body to send.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery: Delivery,
    pub event_ts: Option<i64>,
    pub body: Vec<u8>,
}

/// What fan-out needs of a log entry: no body (it is read once, by the claim that sends it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHead {
    pub seq: i64,
    pub id: String,
    pub event: String,
    /// The ordering key of its deliveries: the object id, else the object uuid.
    pub entity: Option<String>,
    pub received_at: i64,
}

/// The columns of `events` read into [`EventHead`], in field order.
pub(crate) const EVENT_HEAD_COLUMNS: &str =
    "seq, id, event, COALESCE(object_id, object_uuid), received_at";

/// One recorded attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    pub delivery_id: String,
    pub attempt: i64,
    pub started_at: i64,
    pub duration_ms: i64,
    pub status_code: Option<i64>,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Succeeded,
    /// Try again at (epoch ms).
    Retry(i64),
    /// Dead letter: no more automatic attempts.
    Failed,
}

/// The outcome of one attempt, written with [`DeliveryStore::complete`].
#[derive(Debug, Clone)]
pub struct Completion {
    pub attempt: Attempt,
    /// The lease the attempt was made under: the outcome is recorded only while the delivery is
    /// still held with it, so a late outcome never overwrites a delivery re-claimed meanwhile.
    pub lease_until: i64,
    pub subscription_id: String,
    pub next: Next,
    /// Disable the subscription with this reason (410 Gone).
    pub disable: Option<String>,
}

/// The subscriptions' failure clocks (`failing_since`) touched by a batch of outcomes: one or two
/// statements per subscription instead of one per outcome, leaving each clock exactly as running
/// [`SUBSCRIPTION_SUCCEEDED`] / [`SUBSCRIPTION_FAILED`] per outcome, in order, would (a success
/// stops the clock; a failure starts it unless it runs). So after the batch the clock is stopped if
/// the last outcome succeeded; else it runs since now if any outcome of the batch succeeded, and
/// otherwise it keeps running since when it started (or starts now).
#[derive(Debug, Default)]
pub(crate) struct FailureClocks {
    /// Per subscription, in first-seen order: (id, any success, last outcome succeeded).
    subscriptions: Vec<(String, bool, bool)>,
}

/// One statement on a subscription's failure clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClockStep {
    /// [`SUBSCRIPTION_SUCCEEDED`].
    Stop,
    /// [`SUBSCRIPTION_FAILED`].
    Start,
}

impl FailureClocks {
    /// Notes an outcome recorded for `subscription_id`.
    pub(crate) fn record(&mut self, subscription_id: &str, succeeded: bool) {
        match self
            .subscriptions
            .iter_mut()
            .find(|(id, _, _)| id == subscription_id)
        {
            Some(entry) => {
                entry.1 |= succeeded;
                entry.2 = succeeded;
            }
            None => self
                .subscriptions
                .push((subscription_id.to_owned(), succeeded, succeeded)),
        }
    }

    /// The statements to run, in order.
    pub(crate) fn steps(&self) -> Vec<(&str, ClockStep)> {
        let mut steps = Vec::with_capacity(self.subscriptions.len());
        for (id, any_success, last_succeeded) in &self.subscriptions {
            if *any_success {
                steps.push((id.as_str(), ClockStep::Stop));
            }
            if !*last_succeeded {
                steps.push((id.as_str(), ClockStep::Start));
            }
        }
        steps
    }
}

/// Which events a replay re-queues (all given bounds apply).
#[derive(Debug, Clone, Default)]
pub struct ReplayRange {
    pub after_seq: Option<i64>,
    pub to_seq: Option<i64>,
    /// Received at or after (epoch ms).
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Only events of this entity (object id or uuid).
    pub entity: Option<String>,
}

/// Counts of a subscription's deliveries by status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryCounts {
    pub pending: i64,
    pub delivering: i64,
    pub succeeded: i64,
    pub failed: i64,
}

/// Queue depth and age, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub depth: i64,
    /// `created_at` of the oldest delivery still pending (epoch ms).
    pub oldest_pending: Option<i64>,
}

/// The id of the delivery of `event_id` to `subscription_id`: `msg_` + both ULIDs. Deterministic,
/// so fan-out and replay name the same delivery alike, and the `webhook-id` never changes.
pub fn delivery_id(event_id: &str, subscription_id: &str) -> String {
    let tail = |id: &str| id.split_once('_').map_or(id, |(_, t)| t).to_owned();
    format!("msg_{}{}", tail(event_id), tail(subscription_id))
}

/// How many ids one [`DeliveryStore::deliveries_by_id`] takes (one query, bounded parameters).
pub const MAX_DELIVERIES_BY_ID: usize = 100;

/// The deliveries of `$1` (subscription) among the ids `$2 … $n+1`.
/// The deliveries of one event, over every subscription: one index probe per subscription
/// (`deliveries_subscription_event`), never a scan of the queue.
pub(crate) const DELIVERIES_FOR_EVENT: &str = "SELECT d.id, d.subscription_id, d.event_seq, d.event_id, d.event, d.entity, d.status, d.attempts, d.next_attempt_at, d.last_status, d.last_error, d.created_at, d.updated_at, d.schedule_base FROM subscriptions s JOIN deliveries d ON d.subscription_id = s.id AND d.event_seq = $1 ORDER BY d.created_at, d.id";

pub(crate) fn deliveries_by_id_sql(count: usize) -> String {
    let placeholders: Vec<String> = (0..count).map(|i| format!("${}", i + 2)).collect();
    format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.subscription_id = $1 AND d.id IN ({})",
        placeholders.join(", ")
    )
}

/// The name of the fan-out reader's cursor.
pub const FANOUT_READER: &str = "fanout";

/// The delivery part of the storage contract.
#[async_trait]
pub trait DeliveryStore: Send + Sync + 'static {
    async fn insert_subscription(&self, sub: &Subscription) -> Result<(), StoreError>;
    /// Writes every field of a subscription if its row is still at `sub.revision` (and bumps
    /// it); `false` if the row is gone or was written since it was read — re-read and re-apply.
    async fn update_subscription(&self, sub: &Subscription) -> Result<bool, StoreError>;
    async fn get_subscription(&self, id: &str) -> Result<Option<Subscription>, StoreError>;
    async fn list_subscriptions(&self) -> Result<Vec<Subscription>, StoreError>;
    /// Deletes a subscription with its deliveries and attempts; `false` if there was none.
    async fn delete_subscription(&self, id: &str) -> Result<bool, StoreError>;

    /// Fan-out: creates `deliveries` (ignoring ones that exist) and moves the fan-out cursor from
    /// `from` to `to`, in one transaction; `false` and nothing written if the cursor moved.
    async fn enqueue(
        &self,
        from: ReaderPosition,
        to: ReaderPosition,
        deliveries: Vec<NewDelivery>,
    ) -> Result<bool, StoreError>;

    /// Claims up to `request.limit` due deliveries of one subscription (pending and due, or
    /// delivering with an expired lease), marks them `delivering` until `lease_until`, and returns
    /// them with their event bodies. Never lets the subscription's deliveries in flight — across
    /// every instance sharing the store — exceed `max_in_flight`. With `entity_order`, a delivery
    /// is only due when no earlier delivery of the same entity is pending or delivering, and at
    /// most one per entity is claimed.
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Vec<Claimed>, StoreError>;

    /// Records attempts and their consequences in one transaction.
    async fn complete(&self, completions: Vec<Completion>, now: i64) -> Result<(), StoreError>;

    /// [`DeliveryStore::complete`] and then [`DeliveryStore::claim`] for each of `claims`, in
    /// **one** transaction: the workers' steady state, where the slots an outcome frees are
    /// refilled at once. The claims see the outcomes (a finished delivery no longer counts as
    /// in flight, and the next delivery of its entity becomes due). Returns the claimed
    /// deliveries per request, in request order. On error nothing is written.
    async fn settle_and_claim(
        &self,
        completions: Vec<Completion>,
        claims: &[ClaimRequest<'_>],
        now: i64,
    ) -> Result<Vec<Vec<Claimed>>, StoreError>;

    /// Up to `limit` log entries after `after_seq`, in seq order, without their bodies (what
    /// fan-out reads). Sees the log as [`crate::store::EventStore::list_events`] does.
    async fn event_heads_after(
        &self,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<EventHead>, StoreError>;

    /// A subscription's deliveries, newest event first, optionally by status; `before_seq` pages.
    async fn list_deliveries(
        &self,
        subscription_id: &str,
        status: Option<&str>,
        before_seq: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Delivery>, StoreError>;
    async fn get_delivery(&self, id: &str) -> Result<Option<(Delivery, Vec<Attempt>)>, StoreError>;
    /// Makes a delivery due now with a fresh retry schedule; `false` if there is none or it is
    /// being sent right now.
    async fn retry_delivery(&self, id: &str, now: i64) -> Result<bool, StoreError>;
    /// Re-queues the events of `range` matching the subscription's patterns (deliveries being sent
    /// right now are left alone); returns how many deliveries were queued.
    async fn replay(
        &self,
        sub: &Subscription,
        patterns: &[crate::core::pattern::EventPattern],
        range: &ReplayRange,
        now: i64,
    ) -> Result<u64, StoreError> {
        Ok(self.replay_ids(sub, patterns, range, now).await?.len() as u64)
    }
    /// [`DeliveryStore::replay`], returning the ids of the deliveries it queued, so whoever asked
    /// for the replay can follow exactly those (not the subscription's running totals).
    async fn replay_ids(
        &self,
        sub: &Subscription,
        patterns: &[crate::core::pattern::EventPattern],
        range: &ReplayRange,
        now: i64,
    ) -> Result<Vec<String>, StoreError>;
    /// The deliveries of a subscription among `ids` (at most [`MAX_DELIVERIES_BY_ID`]), in no
    /// particular order; ids that are not the subscription's are left out.
    async fn deliveries_by_id(
        &self,
        subscription_id: &str,
        ids: &[String],
    ) -> Result<Vec<Delivery>, StoreError>;
    /// Every delivery of the event at `event_seq`, whatever its subscription.
    async fn deliveries_for_event(&self, event_seq: i64) -> Result<Vec<Delivery>, StoreError>;
    async fn delivery_counts(&self, subscription_id: &str) -> Result<DeliveryCounts, StoreError>;
    async fn queue_stats(&self) -> Result<QueueStats, StoreError>;
    /// Deletes up to `limit` finished (succeeded or failed) deliveries last updated before
    /// `before`, with their attempts; returns how many.
    async fn purge_deliveries(&self, before: i64, limit: i64) -> Result<u64, StoreError>;
    /// Disables a subscription that is still enabled and has been failing since `failing_before`
    /// or earlier; `false` if it no longer qualifies (re-enabled, succeeded, or another instance
    /// disabled it first).
    async fn disable_failing(
        &self,
        id: &str,
        reason: &str,
        now: i64,
        failing_before: i64,
    ) -> Result<bool, StoreError>;
}

// ---- SQL shared by both backends ($n placeholders in ascending first appearance) ----

pub(crate) const INSERT_SUBSCRIPTION: &str = "INSERT INTO subscriptions (id, kind, url, events, secret, previous_secret, previous_until, scheme, headers, timeout_ms, max_in_flight, rate_limit, ordering, https_only, enabled, disabled_reason, failing_since, email_to, email_subject, email_body, description, created_at, updated_at, body_format)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)";

pub(crate) const UPDATE_SUBSCRIPTION: &str = "UPDATE subscriptions SET kind = $2, url = $3, events = $4, secret = $5, previous_secret = $6, previous_until = $7, scheme = $8, headers = $9, timeout_ms = $10, max_in_flight = $11, rate_limit = $12, ordering = $13, https_only = $14, enabled = $15, disabled_reason = $16, failing_since = CASE WHEN enabled = 0 AND $15 <> enabled THEN CAST($17 AS BIGINT) ELSE failing_since END, email_to = $18, email_subject = $19, email_body = $20, description = $21, created_at = $22, updated_at = $23, body_format = $24,
    revision = revision + 1
    WHERE id = $1 AND revision = $25";

/// A new pending delivery, `$7` its ordering key: decided in the fan-out's transaction from the
/// subscription as it is now ([`SUBSCRIPTION_ORDERING`]); a subscription deleted since the
/// fan-out read it gets none. (SQLite.)
///
/// One row of `VALUES`, not an `INSERT … SELECT` from `subscriptions` that would look the
/// ordering up itself: SQLite counts a statement with a `SELECT` as one that may write many rows
/// and, as a conflict on `id` may abort it, keeps a statement journal for it — a copy of every
/// page the insert changes (2.5 per delivery measured, `bench/RESULTS.md`).
pub(crate) const INSERT_DELIVERY: &str = "INSERT INTO deliveries (id, subscription_id, event_seq, event_id, event, entity, order_key, status, attempts, next_attempt_at, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, $8, $8)
    ON CONFLICT (subscription_id, event_seq) DO NOTHING";

/// Sets or clears the ordering key of a subscription's open deliveries after its ordering
/// changed: `$1` subscription id, `$2` its ordering now. (PostgreSQL; SQLite runs it per status.)
/// The open deliveries are found per status, each a range of the partial index that holds it
/// (`status IN (…)` would walk every delivery the subscription has, finished ones included).
pub(crate) const REKEY_OPEN_DELIVERIES: &str =
    "UPDATE deliveries SET order_key = CASE WHEN CAST($2 AS TEXT) = 'entity' THEN entity END
    WHERE id IN (
        SELECT id FROM deliveries WHERE subscription_id = $1 AND status = 'pending'
        UNION ALL
        SELECT id FROM deliveries WHERE subscription_id = $1 AND status = 'delivering')";

/// Gives open deliveries of entity-ordered subscriptions that have none their ordering key (as
/// state migration 11 does; for deliveries copied in from a database that predates it).
pub(crate) const BACKFILL_ORDER_KEYS: &str = "UPDATE deliveries SET order_key = entity
    WHERE order_key IS NULL AND status IN ('pending', 'delivering')
      AND subscription_id IN (SELECT id FROM subscriptions WHERE ordering = 'entity')";

/// The ordering a subscription has now (`$1` id).
pub(crate) const SUBSCRIPTION_ORDERING: &str = "SELECT ordering FROM subscriptions WHERE id = $1";

pub(crate) const INSERT_ATTEMPT: &str = "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, response_excerpt, error)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (delivery_id, attempt) DO NOTHING";

pub(crate) const FINISH_DELIVERY: &str = "UPDATE deliveries SET status = $2, attempts = $3, next_attempt_at = $4, locked_until = NULL, last_status = $5, last_error = $6, updated_at = $7
    WHERE id = $1 AND status = 'delivering' AND locked_until = $8";

pub(crate) const SUBSCRIPTION_SUCCEEDED: &str =
    "UPDATE subscriptions SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL";

pub(crate) const SUBSCRIPTION_FAILED: &str =
    "UPDATE subscriptions SET failing_since = $2 WHERE id = $1 AND failing_since IS NULL";

pub(crate) const DISABLE_SUBSCRIPTION: &str = "UPDATE subscriptions SET enabled = 0, disabled_reason = $2, updated_at = $3, revision = revision + 1 WHERE id = $1";

pub(crate) const RETRY_DELIVERY: &str = "UPDATE deliveries SET status = 'pending', schedule_base = attempts, next_attempt_at = $2, locked_until = NULL, updated_at = $2,
      order_key = CASE WHEN (SELECT s.ordering FROM subscriptions s WHERE s.id = deliveries.subscription_id) = 'entity' THEN entity END
    WHERE id = $1 AND status <> 'delivering'";

pub(crate) const DELIVERY_COUNTS: &str =
    "SELECT status, COUNT(*) FROM deliveries WHERE subscription_id = $1 GROUP BY status";

/// Finished deliveries older than `$1`, at most `$2` of them.
const FINISHED_BEFORE: &str = "SELECT id FROM deliveries WHERE status IN ('succeeded', 'failed') AND updated_at < $1 ORDER BY updated_at LIMIT $2";

/// The finished deliveries a purge takes (`$1` before, `$2` limit).
pub(crate) const PURGE_CANDIDATES: &str = FINISHED_BEFORE;

pub(crate) const DISABLE_FAILING: &str =
    "UPDATE subscriptions SET enabled = 0, disabled_reason = $2, updated_at = $3, revision = revision + 1
    WHERE id = $1 AND enabled = 1 AND failing_since IS NOT NULL AND failing_since <= $4";

/// The open deliveries and the oldest one's creation (PostgreSQL; SQLite has its own), counted
/// per status so each count reads the partial index that holds that status
/// (`deliveries_pending`, `deliveries_in_flight`), not every delivery kept until purged.
pub(crate) const QUEUE_STATS: &str = "SELECT
        (SELECT COUNT(*) FROM deliveries WHERE status = 'pending')
          + (SELECT COUNT(*) FROM deliveries WHERE status = 'delivering'),
        LEAST((SELECT MIN(created_at) FROM deliveries WHERE status = 'pending'),
              (SELECT MIN(created_at) FROM deliveries WHERE status = 'delivering'))";

/// A subscription's deliveries: `$1` subscription, `$2` status or NULL, `$3` before seq, `$4` limit.
pub(crate) fn list_deliveries_sql() -> String {
    format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d
         WHERE d.subscription_id = $1 AND (CAST($2 AS TEXT) IS NULL OR d.status = $2) AND d.event_seq < $3
         ORDER BY d.event_seq DESC LIMIT $4"
    )
}

/// A delivery's attempts, oldest first: `$1` delivery id.
pub(crate) const LIST_ATTEMPTS: &str =
    "SELECT delivery_id, attempt, started_at, duration_ms, status_code, response_excerpt, error
    FROM delivery_attempts WHERE delivery_id = $1 ORDER BY attempt";

/// Whether the delivery `d` may be sent now under entity ordering (`$3`, 0/1): without it, or
/// when no older delivery of its entity is still open. Served by `deliveries_order`.
pub(crate) const IN_ENTITY_ORDER: &str =
    "(CAST($3 AS BIGINT) = 0 OR d.order_key IS NULL OR NOT EXISTS (
                SELECT 1 FROM deliveries e
                WHERE e.subscription_id = d.subscription_id AND e.order_key = d.order_key
                  AND e.event_seq < d.event_seq AND e.status IN ('pending', 'delivering')))";

/// Candidates for a claim on PostgreSQL, locked, as the common table expressions `waiting`,
/// `expired` and `picked` (the ids): due deliveries waiting to be sent (from `deliveries_pending`)
/// and those being sent under a lease that ran out (from `deliveries_in_flight`), oldest due
/// first, and with entity ordering only the oldest open delivery of each entity. Each part is a
/// range of its partial index that the `LIMIT` stops early; neither walks past deliveries being
/// sent. PostgreSQL refuses `FOR UPDATE` on a `UNION`, so each part runs to its end and locks its
/// own rows: up to `$4` each, and `picked` may leave some locked (usually pending ones, as an
/// expired delivery keeps the older due time it was claimed at) until the pass commits. Other
/// claims of the subscription wait for the pass's advisory lock anyway; only a retry, replay,
/// re-key or delete of those rows waits for it. `$1` subscription, `$2` now, `$3` entity
/// ordering (0/1), `$4` limit.
/// (SQLite's is `sqlite::deliveries`'s own.)
pub(crate) fn claim_candidates_sql() -> String {
    format!(
        "waiting AS (
            SELECT d.id, d.next_attempt_at FROM deliveries d
            WHERE d.subscription_id = $1 AND d.status = 'pending' AND d.next_attempt_at <= $2
              AND {IN_ENTITY_ORDER}
            ORDER BY d.next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED),
         expired AS (
            SELECT d.id, d.next_attempt_at FROM deliveries d
            WHERE d.subscription_id = $1 AND d.status = 'delivering' AND d.locked_until < $2
              AND d.next_attempt_at <= $2 AND {IN_ENTITY_ORDER}
            ORDER BY d.next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED),
         picked AS (
            SELECT id FROM (SELECT * FROM waiting UNION ALL SELECT * FROM expired) due
            ORDER BY next_attempt_at LIMIT $4)"
    )
}

/// The SQL of a replay: re-queues matching events. `$1` subscription id, `$2` now, `$3` the
/// subscription's ordering as the caller read it (the ordering keys are given by it, not by a
/// subquery whose snapshot the caller cannot know), then the range bounds and patterns numbered
/// from `$4`.
pub(crate) fn replay_sql(
    subscription_id: &str,
    ordering: &str,
    now: i64,
    patterns: &[crate::core::pattern::EventPattern],
    range: &ReplayRange,
) -> (String, Vec<super::query::Param>) {
    use super::query::Param;
    let mut params: Vec<Param> = vec![
        Param::Text(subscription_id.to_owned()),
        Param::Int(now),
        Param::Text(ordering.to_owned()),
    ];
    let mut filters = Vec::new();
    let next = |p: Param, params: &mut Vec<Param>| {
        params.push(p);
        format!("${}", params.len())
    };
    if let Some(v) = range.after_seq {
        filters.push(format!("e.seq > {}", next(Param::Int(v), &mut params)));
    }
    if let Some(v) = range.to_seq {
        filters.push(format!("e.seq <= {}", next(Param::Int(v), &mut params)));
    }
    if let Some(v) = range.since {
        filters.push(format!(
            "e.received_at >= {}",
            next(Param::Int(v), &mut params)
        ));
    }
    if let Some(v) = range.until {
        filters.push(format!(
            "e.received_at < {}",
            next(Param::Int(v), &mut params)
        ));
    }
    if let Some(v) = &range.entity {
        let p = next(Param::Text(v.clone()), &mut params);
        filters.push(format!("(e.object_id = {p} OR e.object_uuid = {p})"));
    }
    // Only what the subscription subscribes to (no pattern matches nothing), never Zoom's
    // URL-validation challenges — as fan-out does.
    let ors: Vec<String> = patterns
        .iter()
        .map(|p| match p.to_sql_like() {
            Some(like) => format!(
                "e.event LIKE {} ESCAPE '\\'",
                next(Param::Text(like), &mut params)
            ),
            None => format!(
                "e.event = {}",
                next(Param::Text(p.as_str().to_owned()), &mut params)
            ),
        })
        .collect();
    filters.push(if ors.is_empty() {
        "1 = 0".to_owned()
    } else {
        format!("({})", ors.join(" OR "))
    });
    filters.push(format!(
        "e.event <> '{}'",
        crate::zoom::envelope::URL_VALIDATION_EVENT
    ));
    let filter = format!(" AND {}", filters.join(" AND "));
    let sql = format!(
        "INSERT INTO deliveries (id, subscription_id, event_seq, event_id, event, entity, order_key, status, attempts, next_attempt_at, created_at, updated_at)
         SELECT 'msg_' || substr(e.id, 5) || substr(CAST($1 AS TEXT), 5), CAST($1 AS TEXT), e.seq, e.id, e.event,
                COALESCE(e.object_id, e.object_uuid),
                CASE WHEN CAST($3 AS TEXT) = 'entity' THEN COALESCE(e.object_id, e.object_uuid) END,
                'pending', 0, CAST($2 AS BIGINT), CAST($2 AS BIGINT), CAST($2 AS BIGINT)
         FROM events e WHERE 1 = 1{filter}
         ON CONFLICT (subscription_id, event_seq) DO UPDATE
           SET status = 'pending', schedule_base = deliveries.attempts, next_attempt_at = excluded.next_attempt_at, locked_until = NULL, updated_at = excluded.updated_at,
               order_key = excluded.order_key
           WHERE deliveries.status <> 'delivering'
         RETURNING id"
    );
    (sql, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The failure clock as the per-outcome statements leave it: `None` stopped, `Some(t)` since t.
    fn per_outcome(mut clock: Option<i64>, outcomes: &[bool], now: i64) -> Option<i64> {
        for &succeeded in outcomes {
            if succeeded {
                clock = None;
            } else if clock.is_none() {
                clock = Some(now);
            }
        }
        clock
    }

    fn batched(mut clock: Option<i64>, outcomes: &[bool], now: i64) -> Option<i64> {
        let mut clocks = FailureClocks::default();
        for &succeeded in outcomes {
            clocks.record("sub_1", succeeded);
        }
        for (_, step) in clocks.steps() {
            match step {
                ClockStep::Stop => clock = None,
                ClockStep::Start => clock = clock.or(Some(now)),
            }
        }
        clock
    }

    #[test]
    fn batched_failure_clock_updates_equal_one_statement_per_outcome() {
        for len in 0..=6u32 {
            for bits in 0..(1u32 << len) {
                let outcomes: Vec<bool> = (0..len).map(|i| bits & (1 << i) != 0).collect();
                for start in [None, Some(5)] {
                    assert_eq!(
                        batched(start, &outcomes, 100),
                        per_outcome(start, &outcomes, 100),
                        "outcomes {outcomes:?} from {start:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn failure_clocks_keep_subscriptions_apart() {
        let mut clocks = FailureClocks::default();
        clocks.record("sub_a", false);
        clocks.record("sub_b", true);
        clocks.record("sub_a", false);
        assert_eq!(
            clocks.steps(),
            vec![("sub_a", ClockStep::Start), ("sub_b", ClockStep::Stop)]
        );
    }
}
