//! The delivery workers: claim due deliveries per subscription (within its max in-flight and rate
//! limit), send them, and record every attempt.
//!
//! One loop, the **pump**, owns every slot and talks to the store; each claimed delivery is sent
//! by a task of its own ([`attempt::send`]): the original body, verbatim, signed for this attempt,
//! with the same `webhook-id` as every other attempt. Each pass of the pump:
//!
//! 1. takes every outcome that has arrived since the last pass (at least one, or a wake-up: new
//!    deliveries, a subscription written, the poll for due retries);
//! 2. records them **and** claims what their subscriptions may start now, in one transaction
//!    ([`DeliveryStore::settle_and_claim`]);
//! 3. starts the claimed deliveries.
//!
//! A slot is freed only by recording its outcome, so with `ordering = "entity"` the next event of
//! an entity is claimable only once the previous one is recorded as done, and `max_in_flight`
//! counts the same deliveries in memory and in the store (where it holds over every instance).
//! Recording and refilling in one transaction is what makes the pump fast: the slots an outcome
//! frees are refilled without a second round trip, and while one transaction runs the next
//! outcomes gather, so under load each transaction carries many (the passes batch themselves).
//! The passes are pipelined: when one ends, the next one's transaction begins before the
//! deliveries just claimed are started, so the store records and claims on its thread while this
//! one signs and sends (one transaction at a time still; measured in `bench/RESULTS.md`).
//!
//! Memory is bounded by the slots, never by the backlog: at most `max_in_flight` deliveries per
//! subscription are held (with their bodies), and outcomes wait in a channel of that many.
//!
//! [`DeliveryStore::settle_and_claim`]: crate::store::deliveries::DeliveryStore::settle_and_claim

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, watch};

use super::attempt;
use super::email::EmailSender;
use super::http::DeliveryClient;
use super::live::{LiveSubscription, Ordering};
use super::ssrf::SsrfPolicy;
use super::upkeep;
use crate::config::DeliveryConfig;
use crate::core::clock::now_millis;
use crate::store::EventStore;
use crate::store::deliveries::{ClaimRequest, Claimed, Completion, Next, Subscription};
use crate::store::group_commit::EventAppender;

pub use super::attempt::{EXCERPT_BYTES, USER_AGENT};

/// Largest number of deliveries claimed for one subscription at a time.
const MAX_CLAIM: i64 = 256;
/// Most outcomes recorded in one transaction.
const MAX_SETTLE: usize = 1024;
/// Extra lease time beyond the subscription's timeout.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// How often the queue depth and age gauges are refreshed (a count over every open delivery, so
/// not on every pass of the pump).
const STATS_EVERY: Duration = Duration::from_secs(10);
/// How often finished deliveries past the retention are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(60);
/// How often subscriptions are re-read (changes by the API or another instance).
const REFRESH: Duration = Duration::from_secs(1);
/// How often an idle pump looks for retries that have become due.
const POLL: Duration = Duration::from_millis(200);
/// How long shutdown waits for the running transaction, and then for the sends in flight.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(15);
/// How soon the pump looks again when a subscription waits only for its rate limit's tokens,
/// which refill with time, not with events.
const TOKEN_POLL: Duration = Duration::from_millis(5);

/// Everything the workers share.
pub struct Deliverer {
    pub store: Arc<dyn EventStore>,
    pub config: DeliveryConfig,
    pub http: DeliveryClient,
    pub policy: Arc<SsrfPolicy>,
    pub email: Option<EmailSender>,
    /// For operational events (a subscription disabled automatically).
    pub appender: Option<EventAppender>,
}

impl Deliverer {
    /// `stored` parsed for sending by this deliverer.
    pub fn load(&self, stored: Subscription) -> LiveSubscription {
        let smtp = self.config.smtp_url.as_ref().map(|u| u.expose());
        LiveSubscription::load(stored, &self.policy, smtp)
    }
}

/// Performs one attempt of `claimed` for the stored subscription `sub` (the API's test
/// delivery); the workers hold their subscriptions parsed and call [`attempt::send`].
pub async fn send(
    deliverer: &Deliverer,
    sub: &Subscription,
    claimed: Claimed,
    lease_until: i64,
) -> Completion {
    let live = deliverer.load(sub.clone());
    attempt::send(deliverer, &live, claimed, lease_until).await
}

/// Per-subscription state of the pump.
#[derive(Default)]
struct Slot {
    /// Deliveries claimed by this instance and not yet recorded.
    in_flight: i64,
    /// Token bucket for the rate limit: tokens and when they were last topped up.
    tokens: f64,
    refilled: Option<Instant>,
    /// Whether a claim may find something: false once a claim came back short, until an outcome
    /// of this subscription, a wake-up or the poll says otherwise.
    look: bool,
    /// `zoomhook_deliveries_total` of this subscription by outcome (succeeded, retry, failed),
    /// registered at the first outcome of each: looking a labelled counter up costs an
    /// allocation and a hash per delivery.
    outcomes: [Option<metrics::Counter>; 3],
}

impl Slot {
    fn allowance(&mut self, sub: &Subscription) -> i64 {
        let free = sub.max_in_flight - self.in_flight;
        let Some(rate) = sub.rate_limit else {
            return free.min(MAX_CLAIM);
        };
        let now = Instant::now();
        let elapsed = self
            .refilled
            .map_or(1.0, |t| now.duration_since(t).as_secs_f64());
        self.tokens = (self.tokens + elapsed * rate as f64).min(rate as f64);
        self.refilled = Some(now);
        free.min(self.tokens.floor() as i64).min(MAX_CLAIM)
    }

    fn spend(&mut self, n: usize) {
        self.tokens = (self.tokens - n as f64).max(0.0);
    }
}

/// `zoomhook_deliveries_total` for one subscription and outcome.
fn deliveries_total(subscription: String, outcome: &'static str) -> metrics::Counter {
    metrics::counter!("zoomhook_deliveries_total", "subscription" => subscription, "outcome" => outcome)
}

/// The subscriptions as last read, parsed; and when upkeep last ran.
struct Subscriptions {
    live: Vec<Arc<LiveSubscription>>,
    refreshed: Option<Instant>,
    purged: Option<Instant>,
    counted: Option<Instant>,
}

impl Subscriptions {
    /// Re-reads the subscriptions when `force`d or due, runs the upkeep that goes with it, and
    /// parses only the ones written since the last read. Whether they were re-read; `None` if
    /// they could not be.
    async fn refresh(&mut self, deliverer: &Deliverer, force: bool) -> Option<bool> {
        if !force && self.refreshed.is_some_and(|t| t.elapsed() < REFRESH) {
            return Some(false);
        }
        let mut stored = match deliverer.store.list_subscriptions().await {
            Ok(subs) => subs,
            Err(error) => {
                // Claiming with what may be outdated settings (a rotated secret, a new URL) is
                // worse than waiting: the caller retries the read before the next claim.
                tracing::warn!(%error, "cannot read subscriptions; retrying");
                self.refreshed = None;
                return None;
            }
        };
        self.refreshed = Some(Instant::now());
        upkeep::auto_disable(deliverer, &mut stored).await;
        let mut previous: HashMap<String, Arc<LiveSubscription>> = self
            .live
            .drain(..)
            .map(|l| (l.stored.id.clone(), l))
            .collect();
        self.live = stored
            .into_iter()
            .map(|s| match previous.remove(&s.id) {
                // Same revision, same settings (the failure clock, which changes without a new
                // revision, is only read by upkeep, from the fresh rows).
                Some(l) if l.stored.revision == s.revision && l.stored.enabled == s.enabled => l,
                _ => Arc::new(deliverer.load(s)),
            })
            .collect();
        if self.purged.is_none_or(|t| t.elapsed() >= PURGE_EVERY) {
            self.purged = Some(Instant::now());
            upkeep::purge_finished(deliverer).await;
        }
        if self.counted.is_none_or(|t| t.elapsed() >= STATS_EVERY) {
            self.counted = Some(Instant::now());
            upkeep::record_queue_stats(deliverer).await;
        }
        Some(true)
    }
}

/// Whether the pump should stop: asked to, or its stop sender is gone.
fn stopping(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// Runs the pump until shutdown. `queued` is woken by fan-out, replays and manual retries;
/// `changed` by writes of subscriptions.
pub async fn run(
    deliverer: Arc<Deliverer>,
    queued: Arc<Notify>,
    mut changed: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (done_tx, mut done_rx) = mpsc::channel::<Finished>(MAX_SETTLE);
    let mut pump = Pump {
        deliverer: Arc::clone(&deliverer),
        slots: HashMap::new(),
        subscriptions: Subscriptions {
            live: Vec::new(),
            refreshed: None,
            purged: None,
            counted: None,
        },
        unsettled: Vec::new(),
        settling: Vec::new(),
        done: done_tx,
        backoff: None,
        token_wait: false,
    };
    // The pass whose transaction is running, if any: at most one at a time.
    let mut pass: Option<PassFuture> = None;
    // A stop sender that is gone (its server dropped without stopping) means stop as well:
    // otherwise every `changed()` below would return at once and the loop would spin.
    while !stopping(&shutdown) {
        if pass.is_none() {
            let written = changed.has_changed().unwrap_or(false);
            if written {
                changed.borrow_and_update();
                pump.look_everywhere();
            }
            match pump.subscriptions.refresh(&deliverer, written).await {
                Some(true) => pump.prune_slots(),
                Some(false) => {}
                None => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        changed = shutdown.changed() => if changed.is_err() { break },
                    }
                    continue;
                }
            }
            while pump.unsettled.len() < MAX_SETTLE {
                match done_rx.try_recv() {
                    Ok(finished) => pump.finished(finished),
                    Err(_) => break,
                }
            }
            pass = pump.launch();
        }
        // Wait for the pass's transaction; or, with none running, for an outcome, new
        // deliveries, a subscription write, the next due retry (polled), or shutdown. What
        // arrives while a transaction runs waits for it to end: outcomes in the channel, a
        // wake-up as the `Notify`'s permit (taken now, it would be overwritten by the claim's
        // own verdict on `look`), and a subscription write as unseen, so that `start` re-reads
        // the subscription before sending what the transaction claimed.
        let idle = pass.is_none();
        tokio::select! {
            (wanted, result) = running(&mut pass) => {
                // The claimed deliveries are started, and the next pass's transaction begins
                // (at the top of the loop) before they run: this thread sends while the
                // store records and claims.
                if !pump.finish(wanted, result, &mut changed).await {
                    // The store failed: wait before trying again (the outcomes are kept).
                    let wait = pump.backoff.unwrap_or(Duration::from_millis(50));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        changed = shutdown.changed() => if changed.is_err() { break },
                    }
                }
            }
            Some(finished) = done_rx.recv(), if idle => pump.finished(finished),
            _ = queued.notified(), if idle => pump.look_everywhere(),
            // `changed()` marks the write as seen, so force the re-read here.
            Ok(()) = changed.changed(), if idle => {
                pump.subscriptions.refreshed = None;
                pump.look_everywhere();
            }
            _ = tokio::time::sleep(if pump.token_wait { TOKEN_POLL } else { POLL }), if idle => pump.look_everywhere(),
            changed = shutdown.changed() => if changed.is_err() { break },
        }
    }
    // A transaction still running finishes first (within the shutdown's bound): its outcomes
    // are recorded, and what it claimed is sent (and waited for below) rather than left to its
    // lease. One that does not finish in time leaves both to the leases: sent again later.
    if pass.is_some() {
        match tokio::time::timeout(SHUTDOWN_WAIT, running(&mut pass)).await {
            Ok((wanted, result)) => {
                pump.finish(wanted, result, &mut changed).await;
            }
            Err(_) => {
                tracing::warn!(
                    "the last delivery transaction did not end in time; its deliveries are sent again after their leases"
                );
            }
        }
    }
    pump.drain(done_rx).await;
}

/// What the store claimed in one pass, per wanted subscription.
type Claims = Result<Vec<Vec<Claimed>>, crate::store::StoreError>;

/// The transaction of one pass: it records outcomes and claims, and gives back what was wanted
/// with what the store claimed for it.
type PassFuture = futures_util::future::BoxFuture<'static, (Vec<Wanted>, Claims)>;

/// Waits for the running pass (and clears it); never completes while there is none.
async fn running(pass: &mut Option<PassFuture>) -> (Vec<Wanted>, Claims) {
    let Some(future) = pass.as_mut() else {
        return std::future::pending().await;
    };
    let output = future.await;
    *pass = None;
    output
}

/// The pump's state (see the module documentation).
struct Pump {
    deliverer: Arc<Deliverer>,
    slots: HashMap<String, Slot>,
    subscriptions: Subscriptions,
    /// Outcomes received and not yet recorded (kept across a failed transaction).
    unsettled: Vec<Completion>,
    /// Outcomes being recorded by the running pass.
    settling: Vec<Completion>,
    /// Where sends report their outcomes.
    done: mpsc::Sender<Finished>,
    /// The wait after a failed transaction, doubled by each failure in a row.
    backoff: Option<Duration>,
    /// Whether a subscription with free slots and due deliveries waits only for tokens.
    token_wait: bool,
}

/// How the task sending one delivery ended.
enum Finished {
    /// With an outcome to record.
    Completed(Completion),
    /// Without one (a bug after the attempt): the delivery keeps its lease in the store and is
    /// claimed afresh when it expires; the slot here is freed at once.
    Abandoned { subscription_id: String },
}

/// One claim the pump asks for: which subscription, how many, under which lease.
struct Wanted {
    sub: Arc<LiveSubscription>,
    limit: i64,
    lease_until: i64,
}

impl Pump {
    /// Takes in how a send ended.
    fn finished(&mut self, finished: Finished) {
        match finished {
            Finished::Completed(completion) => self.unsettled.push(completion),
            Finished::Abandoned { subscription_id } => {
                if let Some(slot) = self.slots.get_mut(&subscription_id) {
                    slot.in_flight -= 1;
                    slot.look = true;
                }
            }
        }
    }

    /// Forgets the slots of subscriptions that are gone and have nothing in flight.
    fn prune_slots(&mut self) {
        let live: std::collections::HashSet<&str> = self
            .subscriptions
            .live
            .iter()
            .map(|s| s.stored.id.as_str())
            .collect();
        self.slots
            .retain(|id, slot| slot.in_flight > 0 || live.contains(id.as_str()));
    }

    /// Lets every subscription claim again (new deliveries, or retries may have become due).
    fn look_everywhere(&mut self) {
        for slot in self.slots.values_mut() {
            slot.look = true;
        }
    }

    /// What each enabled subscription may claim now, given the outcomes about to be recorded.
    fn wanted(&mut self, now: i64) -> Vec<Wanted> {
        for c in &self.unsettled {
            if let Some(slot) = self.slots.get_mut(&c.subscription_id) {
                slot.look = true;
            }
        }
        // Outcomes about to be recorded free their slots in the same transaction.
        let mut settling: HashMap<&str, i64> = HashMap::new();
        for c in &self.unsettled {
            *settling.entry(c.subscription_id.as_str()).or_default() += 1;
        }
        let mut wanted = Vec::new();
        self.token_wait = false;
        for sub in self.subscriptions.live.iter().filter(|s| s.stored.enabled) {
            let settling = settling.get(sub.stored.id.as_str()).copied().unwrap_or(0);
            let slot = self.slots.entry(sub.stored.id.clone()).or_insert(Slot {
                look: true,
                ..Slot::default()
            });
            if !slot.look {
                continue;
            }
            slot.in_flight -= settling;
            let limit = slot.allowance(&sub.stored);
            let free = slot.in_flight < sub.stored.max_in_flight;
            slot.in_flight += settling;
            self.token_wait |= limit <= 0 && free && sub.stored.rate_limit.is_some();
            if limit > 0 {
                wanted.push(Wanted {
                    sub: Arc::clone(sub),
                    limit,
                    lease_until: now + sub.stored.timeout_ms + LEASE_MARGIN.as_millis() as i64,
                });
            }
        }
        wanted
    }

    /// Begins a pass: the transaction that records the unsettled outcomes and claims what may
    /// start now. `None` when there is nothing to record or claim.
    fn launch(&mut self) -> Option<PassFuture> {
        let now = now_millis();
        let wanted = self.wanted(now);
        if self.unsettled.is_empty() && wanted.is_empty() {
            return None;
        }
        self.settling = std::mem::take(&mut self.unsettled);
        let completions = self.settling.clone();
        let store = Arc::clone(&self.deliverer.store);
        Some(Box::pin(async move {
            let requests: Vec<ClaimRequest<'_>> = wanted
                .iter()
                .map(|w| ClaimRequest {
                    subscription_id: &w.sub.stored.id,
                    entity_order: w.sub.ordering == Ordering::Entity,
                    limit: w.limit,
                    max_in_flight: w.sub.stored.max_in_flight,
                    rate_limit: w.sub.stored.rate_limit,
                    now,
                    lease_until: w.lease_until,
                })
                .collect();
            let result = store.settle_and_claim(completions, &requests, now).await;
            drop(requests);
            (wanted, result)
        }))
    }

    /// Ends a pass: frees the slots of the outcomes it recorded and starts what it claimed; or,
    /// if the store failed, keeps the outcomes for the next pass. Whether the store succeeded.
    async fn finish(
        &mut self,
        wanted: Vec<Wanted>,
        result: Claims,
        changed: &mut watch::Receiver<u64>,
    ) -> bool {
        let claimed = match result {
            Ok(claimed) => claimed,
            Err(error) => {
                let mut kept = std::mem::take(&mut self.settling);
                tracing::warn!(%error, outcomes = kept.len(), "cannot record delivery outcomes and claim; retrying");
                kept.append(&mut self.unsettled);
                self.unsettled = kept;
                let next = self.backoff.map_or(Duration::from_millis(50), |b| b * 2);
                self.backoff = Some(next.min(Duration::from_secs(5)));
                return false;
            }
        };
        self.backoff = None;
        self.settled();
        for (w, claimed) in wanted.into_iter().zip(claimed) {
            self.start(w, claimed, changed).await;
        }
        true
    }

    /// Frees the slots of the outcomes just recorded.
    fn settled(&mut self) {
        for completion in self.settling.drain(..) {
            let (index, outcome) = match completion.next {
                Next::Succeeded => (0, "succeeded"),
                Next::Retry(_) => (1, "retry"),
                Next::Failed => (2, "failed"),
            };
            let subscription = completion.subscription_id;
            match self.slots.get_mut(&subscription) {
                Some(slot) => {
                    slot.in_flight -= 1;
                    slot.outcomes[index]
                        .get_or_insert_with(|| deliveries_total(subscription, outcome))
                        .increment(1);
                }
                None => deliveries_total(subscription, outcome).increment(1),
            }
        }
    }

    /// Starts the deliveries claimed for `w`, each in a task of its own.
    async fn start(
        &mut self,
        w: Wanted,
        claimed: Vec<Claimed>,
        changed: &mut watch::Receiver<u64>,
    ) {
        let Some(slot) = self.slots.get_mut(&w.sub.stored.id) else {
            return;
        };
        // A short claim means nothing more is due for now.
        slot.look = claimed.len() as i64 >= w.limit;
        if claimed.is_empty() {
            return;
        }
        slot.spend(claimed.len());
        // A subscription written since the last read (a rotated secret, new headers) must not
        // send what was claimed just now with the old settings. If it cannot be read again, the
        // claimed deliveries are left to their lease and claimed afresh once it expires (a
        // deleted subscription took them with it).
        let sub = if changed.has_changed().unwrap_or(false) {
            match self
                .deliverer
                .store
                .get_subscription(&w.sub.stored.id)
                .await
            {
                Ok(Some(fresh)) => Arc::new(self.deliverer.load(fresh)),
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(%error, subscription = %w.sub.stored.id, "cannot re-read a changed subscription; its claim waits for the lease");
                    return;
                }
            }
        } else {
            w.sub
        };
        let Some(slot) = self.slots.get_mut(&sub.stored.id) else {
            return;
        };
        slot.in_flight += claimed.len() as i64;
        for delivery in claimed {
            let (deliverer, sub, done) = (
                Arc::clone(&self.deliverer),
                Arc::clone(&sub),
                self.done.clone(),
            );
            let lease_until = w.lease_until;
            crate::metrics::spawn(async move {
                // The pump frees the slot once the outcome is stored, or at once if the task
                // has none to give. (The send is built in place: bound to a name first, the
                // task's future would hold it twice.)
                let finished = match crate::core::panics::contain(attempt::send(
                    &deliverer,
                    &sub,
                    delivery,
                    lease_until,
                ))
                .await
                {
                    Ok(completion) => Finished::Completed(completion),
                    Err(panic) => {
                        tracing::error!(subscription = %sub.stored.id, %panic, "judging a delivery attempt panicked; the delivery is retried when its lease expires");
                        Finished::Abandoned {
                            subscription_id: sub.stored.id.clone(),
                        }
                    }
                };
                let _ = done.send(finished).await;
            });
        }
    }

    /// At shutdown: records the outcomes of the deliveries still being sent (for up to 15 s);
    /// anything cut off keeps its lease and is taken up again after it expires.
    async fn drain(mut self, mut done_rx: mpsc::Receiver<Finished>) {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
        let mut in_flight: i64 = self.slots.values().map(|s| s.in_flight).sum();
        in_flight -= self.unsettled.len() as i64;
        while in_flight > 0 {
            match tokio::time::timeout_at(deadline, done_rx.recv()).await {
                Ok(Some(finished)) => {
                    self.finished(finished);
                    in_flight -= 1;
                }
                _ => break,
            }
        }
        let mut backoff = Duration::from_millis(50);
        while !self.unsettled.is_empty() && tokio::time::Instant::now() < deadline {
            self.settling = std::mem::take(&mut self.unsettled);
            match self
                .deliverer
                .store
                .complete(self.settling.clone(), now_millis())
                .await
            {
                Ok(()) => self.settled(),
                Err(error) => {
                    self.unsettled = std::mem::take(&mut self.settling);
                    tracing::warn!(%error, "cannot record delivery outcomes at shutdown; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
