//! `zoomhook listen --forward-to URL`: what `stripe listen` is for Stripe. A developer's local app
//! receives the real events of a running zoomhook (production or staging), each POSTed and signed
//! exactly as Zoom signs (`x-zm-signature` with the local secret, the original body byte for
//! byte), with one line per event: the local app's status code and latency.
//!
//! The last forwarded seq is kept in a small state file, written after each forward, so a
//! restart neither skips nor repeats (`--from-seq` overrides it). An event the local app refuses
//! or cannot take is reported and not retried — as with Zoom in front of a dev server, the next
//! event should not wait for a bug to be fixed; `zoomhook replay` or `--from-seq` sends it again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use serde_json::Value;

use super::ClientArgs;
use super::client::AdminClient;
use super::stream_client::{FrameHandler, follow};
use crate::zoom::signature::{REQUEST_ID_HEADER, sign};

/// How long the local app may take to answer one event.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments of `zoomhook listen`.
#[derive(Debug, clap::Args)]
pub struct ListenArgs {
    /// Where to POST each event, e.g. http://localhost:3000/webhooks/zoom.
    #[arg(long)]
    pub forward_to: String,
    /// Only these events (comma-separated patterns, e.g. `meeting.*,recording.completed`).
    #[arg(long)]
    pub events: Option<String>,
    /// The secret token your local app verifies `x-zm-signature` with.
    #[arg(long, env = "ZOOM_WEBHOOK_SECRET_TOKEN", hide_env_values = true)]
    pub secret: String,
    /// File that remembers the last forwarded seq, so a restart resumes after it.
    #[arg(long, default_value = ".zoomhook-listen")]
    pub state_file: PathBuf,
    /// Start after this seq instead of the remembered one (0: the whole log).
    #[arg(long)]
    pub from_seq: Option<i64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Forwards each event to the local app, then remembers it.
struct Forwarder {
    api: AdminClient,
    http: reqwest::Client,
    forward_to: String,
    secret: String,
    state_file: PathBuf,
}

#[async_trait]
impl FrameHandler for Forwarder {
    async fn started(&mut self, after_seq: i64) {
        eprintln!(
            "forwarding events after seq {after_seq} to {} (Ctrl-C to stop)",
            self.forward_to
        );
    }

    async fn event(&mut self, frame: &Value) -> anyhow::Result<()> {
        let (Some(seq), Some(id)) = (frame["seq"].as_i64(), frame["id"].as_str()) else {
            return Ok(());
        };
        let event = frame["event"].as_str().unwrap_or("-");
        // The original bytes, not the frame's re-serialised JSON: the signature is over them.
        let body = self
            .api
            .get(&format!("/api/v1/events/{id}/raw"), &[])
            .await?
            .bytes()
            .await
            .with_context(|| format!("reading the body of event {id}"))?;
        let started = Instant::now();
        let outcome = self.forward(id, &body).await;
        let took = started.elapsed().as_millis();
        match outcome {
            Ok(status) => println!("{seq:>8}  {event:<28}  → {status}  {took} ms"),
            Err(error) => println!("{seq:>8}  {event:<28}  → failed: {error}  {took} ms"),
        }
        save_position(&self.state_file, seq)
    }
}

impl Forwarder {
    /// POSTs `body` signed as Zoom signs; the local app's status code.
    async fn forward(&self, id: &str, body: &[u8]) -> Result<u16, String> {
        let timestamp = crate::core::clock::now_millis() / 1000;
        let timestamp = timestamp.to_string();
        let response = self
            .http
            .post(&self.forward_to)
            .header("content-type", "application/json; charset=utf-8")
            .header("user-agent", "Zoom Marketplace/1.0a (zoomhook listen)")
            .header("x-zm-request-timestamp", &timestamp)
            .header(
                "x-zm-signature",
                sign(self.secret.as_bytes(), &timestamp, body),
            )
            .header(REQUEST_ID_HEADER, id)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        Ok(response.status().as_u16())
    }
}

/// The remembered position, if the state file holds one.
fn load_position(path: &Path) -> anyhow::Result<Option<i64>> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse::<i64>().map(Some).with_context(|| {
            format!(
                "{} does not hold a seq; remove it or pass --from-seq",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the position atomically (a crash leaves the old or the new one, never half).
fn save_position(path: &Path, seq: i64) -> anyhow::Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, format!("{seq}\n"))
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))
}

/// Runs `zoomhook listen`.
pub async fn run(args: ListenArgs) -> anyhow::Result<()> {
    reqwest::Url::parse(&args.forward_to)
        .with_context(|| format!("--forward-to {:?} is not a URL", args.forward_to))?;
    let mut cursor = match args.from_seq {
        Some(seq) => Some(seq),
        None => load_position(&args.state_file)?,
    };
    let mut forwarder = Forwarder {
        api: AdminClient::new(&args.client)?,
        http: reqwest::Client::builder()
            .timeout(FORWARD_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the HTTP client")?,
        forward_to: args.forward_to,
        secret: args.secret,
        state_file: args.state_file,
    };
    follow(
        &args.client,
        args.events.as_deref(),
        &mut cursor,
        &mut forwarder,
    )
    .await
}
