//! `zoomhook subs …` and `zoomhook deliveries …` (`replay` is in `replay.rs`) — outbound subscriptions of a
//! running server, over the admin API.

use anyhow::{Context, bail};
use clap::builder::PossibleValuesParser;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::ClientArgs;
use super::client::{AdminClient, NotFoundHint};
use super::meetings::path_segment;
use super::show_time;
use crate::api::model::Page;
use crate::api::model::delivery::Delivery;
use crate::api::model::subscription::Subscription;

#[derive(Debug, Subcommand)]
pub enum SubsCommand {
    /// Create a subscription; prints its id and secret (shown only now).
    Add(Box<AddArgs>),
    /// List subscriptions with their delivery counts.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one subscription.
    Show {
        id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a subscription with its deliveries.
    Rm {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Send one signed test event to the subscription now and show the answer.
    Test {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Enable a subscription (its queued deliveries go out).
    Enable {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Disable a subscription (events keep queueing).
    Disable {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make a new secret (or take the one given); the old one keeps signing for --overlap (beside
    /// the new one with the standard scheme, instead of it with the zoom scheme).
    RotateSecret {
        id: String,
        #[arg(long, default_value = "24h")]
        overlap: String,
        #[command(flatten)]
        secret: SecretArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Destination URL (webhook subscriptions).
    #[arg(long)]
    pub url: Option<String>,
    /// Event patterns, comma-separated: `meeting.*,*.deleted` or `*`.
    #[arg(long)]
    pub events: String,
    /// standard (Standard Webhooks) or zoom (x-zm-signature, for existing Zoom consumers).
    #[arg(long)]
    pub scheme: Option<String>,
    #[command(flatten)]
    pub secret: SecretArgs,
    /// zoom scheme: send (and sign) the body as JSON.stringify(JSON.parse(body)) writes it, for
    /// consumers that verify over that form (@zoom/rivet, Zoom's sample code).
    #[arg(long)]
    pub compact_body: bool,
    /// Custom header, NAME=VALUE (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    /// Request timeout, e.g. 10s.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Requests in flight at once, over every instance sharing the database.
    #[arg(long)]
    pub max_in_flight: Option<i64>,
    /// Deliveries per second (per instance).
    #[arg(long)]
    pub rate_limit: Option<i64>,
    /// none, or entity (events of one meeting/user in log order).
    #[arg(long)]
    pub ordering: Option<String>,
    #[arg(long)]
    pub https_only: bool,
    #[arg(long)]
    pub description: Option<String>,
    /// Make an email subscription to these recipients (a template: `{{payload.object.host_email}}`).
    #[arg(long)]
    pub email_to: Option<String>,
    #[arg(long)]
    pub email_subject: Option<String>,
    #[arg(long)]
    pub email_body: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// A secret of the user's own instead of a generated one.
#[derive(Debug, Args)]
pub struct SecretArgs {
    /// Use this secret: your consumer's Zoom secret token (zoom scheme) or an existing whsec_…
    /// secret (standard). Prefer --secret-file: a command line lands in shell history.
    #[arg(long, value_name = "TOKEN", conflicts_with = "secret_file")]
    pub secret: Option<String>,
    /// Read the secret from this file (one line; the trailing newline is ignored).
    #[arg(long, value_name = "PATH")]
    pub secret_file: Option<std::path::PathBuf>,
}

impl SecretArgs {
    /// The secret given, if any.
    fn read(&self) -> anyhow::Result<Option<String>> {
        match (&self.secret, &self.secret_file) {
            (Some(secret), _) => Ok(Some(secret.clone())),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("--secret-file {}: cannot read it as text", path.display())
                })?;
                // Editors and `echo` end the file with a newline that is not part of the token.
                Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()))
            }
            (None, None) => Ok(None),
        }
    }
}

impl AddArgs {
    fn body(&self) -> anyhow::Result<Value> {
        let mut body = Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                body.insert(k.to_owned(), v);
            }
        };
        put("url", self.url.clone().map(Value::from));
        put("events", Some(Value::from(self.events.clone())));
        put("scheme", self.scheme.clone().map(Value::from));
        put("secret", self.secret.read()?.map(Value::from));
        put(
            "body_format",
            self.compact_body.then_some(Value::from("compact")),
        );
        put("timeout", self.timeout.clone().map(Value::from));
        put("max_in_flight", self.max_in_flight.map(Value::from));
        put("rate_limit", self.rate_limit.map(Value::from));
        put("ordering", self.ordering.clone().map(Value::from));
        put("https_only", self.https_only.then_some(Value::from(true)));
        put("description", self.description.clone().map(Value::from));
        if self.email_to.is_some() {
            put("kind", Some(Value::from("email")));
            put(
                "email",
                Some(
                    json!({"to": self.email_to, "subject": self.email_subject, "body": self.email_body}),
                ),
            );
        }
        if !self.headers.is_empty() {
            let mut headers = Map::new();
            for h in &self.headers {
                let Some((name, value)) = h.split_once('=') else {
                    bail!("--header {h:?}: expected NAME=VALUE");
                };
                headers.insert(name.trim().to_owned(), Value::from(value.trim()));
            }
            body.insert("headers".into(), Value::Object(headers));
        }
        Ok(Value::Object(body))
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

const SUBSCRIPTION_HINT: &str = "subscription ids (sub_…) are listed by `zoomhook subs list`";

/// Runs a subs command.
pub async fn run(cmd: SubsCommand) -> anyhow::Result<()> {
    subs(cmd).await.hint_if_not_found(SUBSCRIPTION_HINT)
}

async fn subs(cmd: SubsCommand) -> anyhow::Result<()> {
    match cmd {
        SubsCommand::Add(args) => {
            let api = AdminClient::new(&args.client)?;
            let sub = api
                .send_json(Method::POST, "/api/v1/subscriptions", Some(&args.body()?))
                .await?;
            println!("created {}", text(&sub["id"]));
            if sub["secret"].is_string() {
                println!(
                    "secret  {}   (shown only now; verify signatures with it)",
                    text(&sub["secret"])
                );
            } else if sub["kind"] != "email" {
                println!("secret  the one you gave (signs as it is; not shown)");
            }
        }
        SubsCommand::List { json, client } => {
            let api = AdminClient::new(&client)?;
            let page: Page<Subscription> = api.get_json("/api/v1/subscriptions", &[]).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page.data)?);
                return Ok(());
            }
            println!(
                "{:<30}  {:<8}  {:<9}  {:>8}  {:>9}  {:>6}  {:<24}  URL",
                "ID", "ENABLED", "SCHEME", "PENDING", "SUCCEEDED", "FAILED", "EVENTS"
            );
            for s in &page.data {
                let d = &s.delivery_counts;
                println!(
                    "{:<30}  {:<8}  {:<9}  {:>8}  {:>9}  {:>6}  {:<24}  {}",
                    s.id,
                    s.enabled,
                    s.scheme,
                    d.pending,
                    d.succeeded,
                    d.failed,
                    s.events.join(","),
                    destination(s)
                );
            }
        }
        SubsCommand::Show { id, json, client } => {
            let api = AdminClient::new(&client)?;
            let sub: Subscription = api.get_json(&subscription_path(&id), &[]).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&sub)?);
            } else {
                print_subscription(&sub);
            }
        }
        SubsCommand::Rm { id, client } => {
            let api = AdminClient::new(&client)?;
            api.send_json(Method::DELETE, &subscription_path(&id), None)
                .await?;
            println!("deleted {id}");
        }
        SubsCommand::Test { id, client } => {
            let api = AdminClient::new(&client)?;
            let r = api
                .send_json(
                    Method::POST,
                    &format!("{}/test", subscription_path(&id)),
                    None,
                )
                .await?;
            if r["ok"] == true {
                println!(
                    "OK: {} in {} ms",
                    text(&r["status_code"]),
                    text(&r["duration_ms"])
                );
            } else {
                bail!(
                    "test delivery failed: {} ({} ms) {}",
                    text(&r["error"]),
                    text(&r["duration_ms"]),
                    text(&r["response_excerpt"])
                );
            }
        }
        SubsCommand::Enable { id, client } => {
            patch(&client, &id, json!({"enabled": true}), "enabled").await?
        }
        SubsCommand::Disable { id, client } => {
            patch(&client, &id, json!({"enabled": false}), "disabled").await?
        }
        SubsCommand::RotateSecret {
            id,
            overlap,
            secret,
            client,
        } => {
            let api = AdminClient::new(&client)?;
            let mut body = json!({"rotate_secret": true, "rotation_overlap": overlap});
            if let Some(secret) = secret.read()? {
                body["secret"] = Value::from(secret);
            }
            let sub = api
                .send_json(Method::PATCH, &subscription_path(&id), Some(&body))
                .await?;
            let sub: Subscription =
                serde_json::from_value(sub).context("the server's answer is not a subscription")?;
            println!("{}", rotation_summary(&sub));
        }
    }
    Ok(())
}

/// Where a subscription's deliveries go.
fn destination(s: &Subscription) -> String {
    match (&s.url, &s.email) {
        (Some(url), _) => url.clone(),
        (None, Some(email)) => format!("mailto:{}", email.to.as_deref().unwrap_or("")),
        (None, None) => "-".to_owned(),
    }
}

/// A subscription for people: one fact per line, times local.
fn print_subscription(s: &Subscription) {
    let state = match (&s.enabled, &s.disabled_reason) {
        (true, _) => "enabled".to_owned(),
        (false, Some(reason)) => format!("disabled: {reason}"),
        (false, None) => "disabled".to_owned(),
    };
    let d = &s.delivery_counts;
    let mut lines = vec![
        ("id", s.id.clone()),
        ("kind", s.kind.clone()),
        ("to", destination(s)),
        ("events", s.events.join(", ")),
        ("state", state),
        ("scheme", format!("{} ({} body)", s.scheme, s.body_format)),
        ("timeout", s.timeout.clone()),
        ("in flight", s.max_in_flight.to_string()),
        (
            "rate limit",
            s.rate_limit.map_or("none".to_owned(), |n| format!("{n}/s")),
        ),
        ("ordering", s.ordering.clone()),
        ("https only", s.https_only.to_string()),
        (
            "deliveries",
            format!(
                "{} pending, {} delivering, {} succeeded, {} failed",
                d.pending, d.delivering, d.succeeded, d.failed
            ),
        ),
        ("created", show_time::local(&s.created_at)),
        ("updated", show_time::local(&s.updated_at)),
    ];
    if let Some(since) = &s.failing_since {
        lines.push(("failing since", show_time::local(since)));
    }
    if let Some(until) = &s.previous_secret_expires_at {
        lines.push(("old secret until", show_time::local(until)));
    }
    for (name, value) in &s.headers {
        lines.push(("header", format!("{name}: {value}")));
    }
    if !s.description.is_empty() {
        lines.push(("description", s.description.clone()));
    }
    for (label, value) in lines {
        println!("{label:<17} {value}");
    }
}

/// What a rotation means for the consumer, which depends on how many signatures the scheme's
/// header can carry.
fn rotation_summary(sub: &Subscription) -> String {
    let until = show_time::local_opt(sub.previous_secret_expires_at.as_deref());
    let secret = sub
        .secret
        .clone()
        .unwrap_or_else(|| "(the one you gave)".to_owned());
    if sub.scheme == "zoom" {
        format!(
            "new secret {secret}   (x-zm-signature holds one signature: the previous secret keeps \
             signing until {until}, then this one does; give it to your consumer by then)"
        )
    } else {
        format!("new secret {secret}   (both secrets sign each delivery until {until})")
    }
}

async fn patch(client: &ClientArgs, id: &str, body: Value, what: &str) -> anyhow::Result<()> {
    let api = AdminClient::new(client)?;
    api.send_json(Method::PATCH, &subscription_path(id), Some(&body))
        .await?;
    println!("{what} {id}");
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// A subscription's deliveries, newest first.
    List {
        subscription: String,
        /// Only deliveries in this state.
        #[arg(long, value_parser = PossibleValuesParser::new(["pending", "delivering", "succeeded", "failed"]))]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One delivery with every attempt.
    Show {
        id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Send a delivery again now (a dead letter too), with a fresh retry schedule.
    Retry {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Runs a deliveries command.
pub async fn deliveries(cmd: DeliveriesCommand) -> anyhow::Result<()> {
    let hint = match &cmd {
        DeliveriesCommand::List { .. } => SUBSCRIPTION_HINT,
        DeliveriesCommand::Show { .. } | DeliveriesCommand::Retry { .. } => {
            "delivery ids are listed by `zoomhook deliveries list SUBSCRIPTION`"
        }
    };
    deliveries_of(cmd).await.hint_if_not_found(hint)
}

async fn deliveries_of(cmd: DeliveriesCommand) -> anyhow::Result<()> {
    match cmd {
        DeliveriesCommand::List {
            subscription,
            status,
            limit,
            json,
            client,
        } => {
            let api = AdminClient::new(&client)?;
            let mut query = vec![("limit", limit.to_string())];
            if let Some(s) = status {
                query.push(("status", s));
            }
            let path = format!("{}/deliveries", subscription_path(&subscription));
            let page: Page<Delivery> = api.get_json(&path, &query).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page.data)?);
                return Ok(());
            }
            println!(
                "{:<58}  {:>8}  {:<28}  {:<10}  {:>8}  LAST",
                "ID", "SEQ", "EVENT", "STATUS", "ATTEMPTS"
            );
            for d in &page.data {
                println!(
                    "{:<58}  {:>8}  {:<28}  {:<10}  {:>8}  {}",
                    d.id,
                    d.event_seq,
                    d.event,
                    d.status,
                    d.attempt_count,
                    last_outcome(d.last_status_code, d.last_error.as_deref())
                );
            }
        }
        DeliveriesCommand::Show { id, json, client } => {
            let api = AdminClient::new(&client)?;
            let d: Delivery = api.get_json(&delivery_path(&id), &[]).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                print_delivery(&d);
            }
        }
        DeliveriesCommand::Retry { id, client } => {
            let api = AdminClient::new(&client)?;
            api.send_json(Method::POST, &format!("{}/retry", delivery_path(&id)), None)
                .await?;
            println!("queued {id} for delivery now");
        }
    }
    Ok(())
}

/// A status code and an error, whichever there are.
fn last_outcome(status: Option<i64>, error: Option<&str>) -> String {
    match (status, error) {
        (None, e) => e.unwrap_or("").to_owned(),
        (Some(s), None) => s.to_string(),
        (Some(s), Some(e)) => format!("{s} {e}"),
    }
}

/// A delivery and its attempts for people.
fn print_delivery(d: &Delivery) {
    println!("delivery {}  ({})", d.id, d.status);
    println!(
        "  event        {} #{} ({})",
        d.event, d.event_seq, d.event_id
    );
    println!("  subscription {}", d.subscription_id);
    println!("  created      {}", show_time::local(&d.created_at));
    if let Some(next) = &d.next_attempt_at {
        println!("  next attempt {}", show_time::local(next));
    }
    let attempts = d.attempts.as_deref().unwrap_or_default();
    println!("  {} attempt(s):", attempts.len());
    for a in attempts {
        println!(
            "    #{:<3} {}  {:>6} ms  {}",
            a.number,
            show_time::local(&a.started_at),
            a.duration_ms,
            last_outcome(a.status_code, a.error.as_deref())
        );
        if let Some(excerpt) = a.response_excerpt.as_deref().filter(|e| !e.is_empty()) {
            println!("         {}", excerpt.replace('\n', " "));
        }
    }
}

/// The API path of one subscription.
fn subscription_path(id: &str) -> String {
    format!("/api/v1/subscriptions/{}", path_segment(id))
}

/// The API path of one delivery.
fn delivery_path(id: &str) -> String {
    format!("/api/v1/deliveries/{}", path_segment(id))
}
