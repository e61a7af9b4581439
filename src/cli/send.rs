//! `zoomhook send` — sign and POST one event exactly as Zoom does, or run Zoom's URL-validation
//! handshake against any URL and say whether the answer is right.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;

use super::WebhookTarget;
use crate::core::clock::now_millis;
use crate::zoom::sender::{ZoomHeaders, new_request_id};
use crate::zoom::signature::url_validation_token;
use crate::zoom::templates::{self, TEMPLATE_NAMES};

#[derive(Debug, Args)]
pub struct SendArgs {
    /// A file holding the event body (sent byte for byte).
    #[arg(conflicts_with_all = ["event", "validate"])]
    pub file: Option<PathBuf>,
    /// A built-in event template with fresh ids (see --list-templates).
    #[arg(long, conflicts_with = "validate")]
    pub event: Option<String>,
    /// Run the URL-validation handshake instead of sending an event.
    #[arg(long)]
    pub validate: bool,
    #[command(flatten)]
    pub target: WebhookTarget,
    /// Webhook secret token to sign with.
    #[arg(long, env = "ZOOM_WEBHOOK_SECRET_TOKEN", hide_env_values = true)]
    pub secret: Option<String>,
    /// x-zm-request-id to send (Zoom keeps it across retries); random by default.
    #[arg(long)]
    pub request_id: Option<String>,
    /// Send this many times with the same request id, like Zoom retrying.
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    /// List the built-in templates and exit.
    #[arg(long)]
    pub list_templates: bool,
}

/// Runs `send`.
pub async fn run(args: SendArgs) -> anyhow::Result<()> {
    if args.list_templates {
        for name in TEMPLATE_NAMES {
            println!("{name}");
        }
        return Ok(());
    }
    let Some(secret) = args.secret.as_deref() else {
        bail!("no secret to sign with: pass --secret or set ZOOM_WEBHOOK_SECRET_TOKEN");
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let url = args.target.endpoint();
    if args.validate {
        return validate(&client, &url, secret).await;
    }
    let body = match (&args.file, &args.event) {
        (Some(path), _) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        (None, Some(name)) => match templates::template(name, now_millis()) {
            Some(value) => templates::to_bytes(&value),
            None => bail!(
                "no template named {name:?}; available: {}",
                TEMPLATE_NAMES.join(", ")
            ),
        },
        (None, None) => {
            bail!("give an event FILE or --event NAME (or --validate); see --list-templates")
        }
    };
    let request_id = args.request_id.clone().unwrap_or_else(new_request_id);
    for attempt in 1..=args.repeat.max(1) {
        let headers =
            ZoomHeaders::sign_at(secret, &body, crate::core::clock::now_secs(), &request_id);
        let started = Instant::now();
        let mut request = client.post(&url);
        for (name, value) in headers.pairs() {
            request = request.header(name, value);
        }
        let response = request
            .body(body.clone())
            .send()
            .await
            .with_context(|| format!("POST {url} failed"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        println!(
            "attempt {attempt}: {status} in {:?}  {text}",
            started.elapsed()
        );
        if !status.is_success() {
            bail!("the endpoint refused the event ({status})");
        }
    }
    Ok(())
}

/// Zoom's challenge: POST a signed `endpoint.url_validation` and check the answer.
async fn validate(client: &reqwest::Client, url: &str, secret: &str) -> anyhow::Result<()> {
    let plain_token = templates::random_token(22);
    let body = serde_json::to_vec(&json!({
        "payload": {"plainToken": plain_token},
        "event_ts": now_millis(),
        "event": "endpoint.url_validation",
    }))?;
    let headers = ZoomHeaders::sign(secret, &body);
    let started = Instant::now();
    let mut request = client.post(url);
    for (name, value) in headers.pairs() {
        request = request.header(name, value);
    }
    let response = request
        .body(body)
        .send()
        .await
        .with_context(|| format!("POST {url} failed"))?;
    let elapsed = started.elapsed();
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let expected = url_validation_token(secret.as_bytes(), &plain_token);
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    let mut problems = Vec::new();
    if !(status.as_u16() == 200 || status.as_u16() == 204) {
        problems.push(format!("status is {status}; Zoom expects 200 or 204"));
    }
    if answer.get("plainToken").and_then(|v| v.as_str()) != Some(plain_token.as_str()) {
        problems
            .push("plainToken in the answer is missing or differs from the one sent".to_owned());
    }
    match answer.get("encryptedToken").and_then(|v| v.as_str()) {
        Some(token) if token == expected => {}
        Some(_) => problems.push("encryptedToken is wrong: it must be hex(HMAC-SHA256(secret token, plainToken)) — is the secret the same on both sides?".to_owned()),
        None => problems.push("encryptedToken is missing".to_owned()),
    }
    if elapsed > Duration::from_secs(3) {
        problems.push(format!("answered in {elapsed:?}; Zoom gives up after 3 s"));
    }
    if problems.is_empty() {
        println!(
            "URL validation passed: {url} answered {status} in {elapsed:?} with the right encryptedToken"
        );
        Ok(())
    } else {
        println!("URL validation FAILED for {url} (answer: {status} {text})");
        for p in &problems {
            println!("  - {p}");
        }
        bail!(
            "{} problem(s) with the URL-validation answer",
            problems.len()
        )
    }
}
