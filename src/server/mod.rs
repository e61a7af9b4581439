//! Assembling and running the server: `run(config, listener, shutdown)` is the one entry point,
//! used by `zoomhook serve`, `zoomhook demo` and the integration tests (which pass a listener
//! bound to an ephemeral port).
//!
//! `listen.rs` is the accept loop (connection cap, graceful stop); `connection.rs` is the
//! per-connection watchdog (header and idle timeouts, eviction at the cap).

mod connection;
mod listen;
pub mod memory;
pub mod summary;

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::config::Config;
use crate::core::clock::now_millis;
use crate::deliver::ssrf::SsrfPolicy;
use crate::ingest::body::BodyBudget;
use crate::store::group_commit::EventAppender;
use crate::store::{self, EventStore, StoreOptions};
use crate::{api, cluster, deliver, ingest, metrics, source, sync};

/// Everything a request handler needs. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The shared part of [`AppState`].
pub struct Shared {
    pub config: Arc<Config>,
    pub store: Arc<dyn EventStore>,
    /// The only way events enter the log: through group commit.
    pub appender: EventAppender,
    /// This server's own metrics (`/metrics`), separate from any other server in the process.
    pub metrics: metrics::ServerMetrics,
    /// Bumped after each append so the log readers (sync, fan-out) pick new events up at once.
    pub log_advanced: watch::Sender<u64>,
    /// Woken when deliveries become due (fan-out, replay, manual retry).
    pub deliveries_queued: Arc<Notify>,
    /// Bumped after every subscription write, so this instance's dispatcher signs and filters
    /// with the new settings at once (other instances re-read within a second).
    pub subscriptions_changed: watch::Sender<u64>,
    /// What outbound destinations may be (checked when a subscription is saved, and again on
    /// every connection).
    pub ssrf: Arc<SsrfPolicy>,
    /// Body bytes all webhook requests together may hold (`max_body_bytes_in_flight`).
    pub body_budget: BodyBudget,
    /// Turns true when the server begins to stop: long-lived work that outlives a request (stream
    /// sessions) watches it, because graceful shutdown only waits for requests.
    pub stopping: watch::Receiver<bool>,
    /// The single-reader roles (sync, fan-out, WebSocket sources) this instance leads.
    pub leadership: Arc<crate::cluster::Leadership>,
    /// The live status of this instance's WebSocket sources.
    pub sources: Arc<crate::source::board::Board>,
    /// The recent end of the log, shared by every stream session.
    pub stream_tail: Arc<crate::stream::tail::Tail>,
    /// Refused webhooks, logged one by one up to a rate (a flood of forgeries is counted, not
    /// written out line by line).
    pub rejections: ingest::rejections::RejectionLog,
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Store options derived from the configuration.
pub fn store_options(config: &Config) -> StoreOptions {
    StoreOptions {
        busy_timeout_ms: config.sqlite_busy_timeout.as_millis() as u64,
        wal_limit_bytes: config.sqlite_wal_limit,
        dedupe_window_ms: config.dedupe_window.as_millis() as i64,
        ..StoreOptions::default()
    }
}

/// Builds the complete router for a state.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(ingest::router())
        .merge(api::router(state.clone()))
        // The last net for errors no handler wrote (a wrong method's 405): JSON like the rest.
        .layer(axum::middleware::map_response(
            api::errors::ensure_json_errors,
        ))
        .with_state(state)
}

/// Runs the server on `listener` until `shutdown` resolves, then stops accepting, lets in-flight
/// requests finish (up to `shutdown_timeout`) and commits everything they queued. On SQLite, the
/// process holds the database's instance lock meanwhile (a second server on it is refused).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Held until the server has stopped: a second server on the same SQLite file is refused.
    let _instance = lock_sqlite_database(&config.database_url)?;
    run_with_state(config, listener, shutdown, None).await
}

/// The process's lock on a SQLite database (see `store::sqlite::instance_lock`); none for
/// PostgreSQL, which coordinates instances itself.
fn lock_sqlite_database(
    url: &str,
) -> anyhow::Result<Option<store::sqlite::instance_lock::InstanceLock>> {
    match url.strip_prefix("sqlite://") {
        // An empty path is refused by `store::open`, with its own message.
        Some(path) if !path.is_empty() => Ok(Some(
            store::sqlite::instance_lock::InstanceLock::acquire(std::path::Path::new(path))?,
        )),
        _ => Ok(None),
    }
}

/// [`run`], handing the server's state to `started` once it is built (for an application that
/// embeds zoomhook and wants to watch or drive it, and for fault-injection tests). Everything the
/// server does records into its own metrics (see `crate::metrics`).
pub async fn run_with_state(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    started: Option<tokio::sync::oneshot::Sender<AppState>>,
) -> anyhow::Result<()> {
    let metrics = metrics::ServerMetrics::new();
    metrics
        .scope(serve(config, listener, shutdown, started, metrics.clone()))
        .await
}

async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    started: Option<tokio::sync::oneshot::Sender<AppState>>,
    server_metrics: metrics::ServerMetrics,
) -> anyhow::Result<()> {
    memory::return_large_buffers_to_the_os();
    let store = store::open(&config.database_url, &store_options(&config))
        .await
        .with_context(|| {
            format!(
                "opening the store {}",
                store::postgres::redact_url(&config.database_url)
            )
        })?;
    if let Some(token) = api::auth::bootstrap_token(store.as_ref(), &config).await? {
        announce_first_token(&token, config.log_format);
    }
    let dedupe_window_ms = config.dedupe_window.as_millis() as i64;
    let (appender, committer) = EventAppender::start(Arc::clone(&store), dedupe_window_ms);
    let purger = metrics::spawn(purge_dedupe_keys(Arc::clone(&store), config.dedupe_window));
    let shutdown_timeout = config.shutdown_timeout;
    let local = listener
        .local_addr()
        .context("reading the listener address")?;
    warn_about_unverifiable_sources(&config);
    let ssrf = Arc::new(SsrfPolicy::new(config.delivery.allow_cidrs.clone()));
    let body_budget = BodyBudget::new(config.limits.max_body_bytes_in_flight);
    let limits = config.limits.clone();
    let instance_id = config.instance_id.clone();
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let log_advanced = watch::channel(0).0;
    let stream_tail = crate::stream::tail::Tail::start(
        Arc::clone(&store),
        log_advanced.subscribe(),
        stop_rx.clone(),
    );
    let state = AppState(Arc::new(Shared {
        config: Arc::new(config),
        store,
        appender,
        metrics: server_metrics,
        log_advanced,
        deliveries_queued: Arc::new(Notify::new()),
        subscriptions_changed: watch::channel(0).0,
        ssrf,
        body_budget,
        stopping: stop_rx.clone(),
        leadership: crate::cluster::Leadership::new(instance_id),
        sources: Arc::new(crate::source::board::Board::default()),
        stream_tail,
        rejections: ingest::rejections::RejectionLog::default(),
    }));
    let app = router(state.clone());
    tracing::info!(listen = %local, "zoomhook is listening; webhooks at /webhooks/zoom");

    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    // Appends and queued deliveries of other instances on the same database wake this one.
    let follower = metrics::spawn({
        let store = Arc::clone(&state.store);
        let (log, queued) = (
            state.log_advanced.clone(),
            Arc::clone(&state.deliveries_queued),
        );
        let stop = stop_rx.clone();
        async move { store.follow_other_instances(log, queued, stop).await }
    });
    let syncer = cluster::lead(
        Arc::clone(&state.store),
        Arc::clone(&state.leadership),
        "sync",
        stop_rx.clone(),
        {
            let state = state.clone();
            move |stop| {
                sync::run(
                    Arc::clone(&state.store),
                    Some(state.appender.clone()),
                    state.log_advanced.subscribe(),
                    stop,
                )
            }
        },
    );
    let mut delivery = start_delivery(&state, &stop_rx)?;
    delivery.extend(source::start(&state, &stop_rx));
    let upkeep = metrics::spawn(metrics_upkeep(state.metrics.clone()));
    let summaries = metrics::spawn(summary::log_summaries(state.metrics.clone()));
    if let Some(started) = started {
        let _ = started.send(state.clone());
    }
    let mut server = metrics::spawn({
        let stop = stop_rx.clone();
        async move { listen::serve(listener, app, &limits, stop).await }
    });
    tokio::select! {
        result = &mut server => result.context("server task")?.context("serving HTTP")?,
        _ = async {
            let _ = stop_rx.wait_for(|stopped| *stopped).await;
            tokio::time::sleep(shutdown_timeout).await;
        } => {
            tracing::warn!(?shutdown_timeout, "in-flight requests did not finish in time; stopping anyway");
            // Ends every connection task, and with them their handles on the commit queue.
            server.abort();
        }
    }
    // Dropping the last handles closes the commit queue; the committer commits what is queued
    // and ends. In-flight requests that were cut off above never got a 2xx, so nothing is lost.
    drop(state);
    purger.abort();
    follower.abort();
    upkeep.abort();
    summaries.abort();
    if tokio::time::timeout(Duration::from_secs(30), committer)
        .await
        .is_err()
    {
        tracing::warn!("the committer did not finish within 30s");
    }
    // The reader stops after its current batch; an unfinished batch is simply applied at the
    // next start (its cursor did not move).
    for task in delivery {
        if tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .is_err()
        {
            tracing::warn!("a delivery task did not stop within 30s");
        }
    }
    if tokio::time::timeout(Duration::from_secs(30), syncer)
        .await
        .is_err()
    {
        tracing::warn!("the sync reader did not stop within 30s");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Starts the fan-out reader and the delivery workers (unless `delivery_enabled = false`).
fn start_delivery(
    state: &AppState,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let config = &state.config.delivery;
    if !config.enabled {
        return Ok(Vec::new());
    }
    let email = match &config.smtp_url {
        Some(url) => Some(
            deliver::email::EmailSender::new(url.expose(), &config.smtp_from)
                .map_err(|e| anyhow::anyhow!("smtp_url: {e}"))?,
        ),
        None => None,
    };
    let http = deliver::http::DeliveryClient::new(
        deliver::ssrf::GuardedResolver::new(Arc::clone(&state.ssrf)),
        deliver::http::CONNECT_TIMEOUT,
    )
    .context("building the delivery HTTP client")?;
    let deliverer = Arc::new(deliver::worker::Deliverer {
        store: Arc::clone(&state.store),
        config: config.clone(),
        http,
        policy: Arc::clone(&state.ssrf),
        email,
        appender: Some(state.appender.clone()),
    });
    Ok(vec![
        cluster::lead(
            Arc::clone(&state.store),
            Arc::clone(&state.leadership),
            "fanout",
            stop.clone(),
            {
                let state = state.clone();
                move |stop| {
                    deliver::fanout::run(
                        Arc::clone(&state.store),
                        state.log_advanced.subscribe(),
                        Arc::clone(&state.deliveries_queued),
                        stop,
                    )
                }
            },
        ),
        // On a thread of its own: the pump, its attempts and their HTTP connections wake each
        // other several times per delivery, which across the shared runtime's threads cost more
        // than the deliveries' own work (bench/RESULTS.md).
        // A pump that panics is started afresh (its deliveries in flight keep their leases and
        // are claimed again when those expire), so a bug costs a restart, not all delivery.
        crate::core::own_thread::spawn(
            "zoomhook-deliver",
            metrics::carry(crate::core::panics::restart_on_panic(
                "deliver",
                stop.clone(),
                {
                    let (state, stop) = (state.clone(), stop.clone());
                    move || {
                        deliver::worker::run(
                            Arc::clone(&deliverer),
                            Arc::clone(&state.deliveries_queued),
                            state.subscriptions_changed.subscribe(),
                            stop.clone(),
                        )
                    }
                },
            )),
        )
        .0,
    ])
}

/// Hands out the token made at the first start, the one time it can be seen. It is written to
/// stderr deliberately, outside the log filter, so that no `ZOOMHOOK_LOG` level hides it; in the
/// JSON log format as one JSON line, so a collector's parse of one object per line still holds.
/// (Setting `admin_token` or running `zoomhook token create` first means no token is ever shown.)
fn announce_first_token(token: &str, format: crate::config::LogFormat) {
    const WHAT: &str =
        "created the first admin token (shown only this once; only its hash is stored)";
    match format {
        crate::config::LogFormat::Json => eprintln!(
            "{}",
            serde_json::json!({
                "timestamp": crate::core::clock::rfc3339(crate::core::clock::now_millis()),
                "level": "WARN",
                "target": "zoomhook::server",
                "message": WHAT,
                "admin_token": token,
            })
        ),
        crate::config::LogFormat::Text => eprintln!(
            "\nzoomhook: {WHAT}:\n\n    {token}\n\n\
             Use it as `Authorization: Bearer <token>` or `export ZOOMHOOK_TOKEN={token}`.\n"
        ),
    }
}

fn warn_about_unverifiable_sources(config: &Config) {
    for source in config
        .sources
        .values()
        .filter(|s| !s.is_websocket() && !s.has_any_check())
    {
        tracing::warn!(
            source = %source.name,
            "source has no webhook secret: every request to it will be refused with 401. Set ZOOM_WEBHOOK_SECRET_TOKEN (default source) or sources.{}.secret",
            source.name
        );
    }
}

/// Drops expired dedupe keys periodically, so the table stays the size of the window. A batch
/// at a time with a pause between, so a large expiry (a burst a week ago) never holds the writer
/// long in front of the appends.
async fn purge_dedupe_keys(store: Arc<dyn EventStore>, window: Duration) {
    const PURGE_BATCH: i64 = 5_000;
    let period = (window / 10).clamp(Duration::from_secs(10), Duration::from_secs(3600));
    let mut ticker = tokio::time::interval(period);
    loop {
        ticker.tick().await;
        let now = now_millis();
        let mut total = 0;
        loop {
            match store.purge_expired_dedupe_keys(now, PURGE_BATCH).await {
                Ok(n) => {
                    total += n;
                    if (n as i64) < PURGE_BATCH {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => {
                    tracing::warn!(%error, "could not purge expired dedupe keys");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::debug!(purged = total, "expired dedupe keys purged");
        }
    }
}

/// Folds histogram samples into their buckets between scrapes, so memory stays bounded when
/// nobody scrapes `/metrics`.
async fn metrics_upkeep(metrics: metrics::ServerMetrics) {
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    loop {
        ticker.tick().await;
        metrics.run_upkeep();
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
