//! `zoomhook demo` — the server plus a signed, realistic meeting lifecycle fed into itself, so a
//! newcomer sees events arrive, duplicates absorbed, and the API answer, in one command.

use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::ServerArgs;
use crate::config::{DEFAULT_SOURCE, Secret};
use crate::core::clock::now_millis;
use crate::server;
use crate::zoom::sender::{ZoomHeaders, new_request_id};
use crate::zoom::templates::{self, Meeting, Participant};

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Meetings to simulate.
    #[arg(long, default_value_t = 2)]
    pub meetings: usize,
    /// Participants per meeting.
    #[arg(long, default_value_t = 3)]
    pub participants: usize,
    /// Pause between events.
    #[arg(long, default_value = "300ms", value_parser = |s: &str| crate::config::parse_duration(s).ok_or("expected a duration like 300ms"))]
    pub pace: Duration,
    /// Stop after feeding the events instead of serving on.
    #[arg(long)]
    pub exit: bool,
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let mut config = args.server.load()?;
    let uses_default_db = args.server.database.is_none()
        && args.server.config.is_none()
        && std::env::var("ZOOMHOOK_DATABASE_URL").is_err()
        && std::env::var("ZOOMHOOK_DATABASE_URL_FILE").is_err();
    if uses_default_db {
        config.database_url = "sqlite://zoomhook-demo.db".into();
    }
    let source = config
        .sources
        .get_mut(DEFAULT_SOURCE)
        .context("the default source is always configured")?;
    if source.secrets.is_empty() {
        source
            .secrets
            .push(Secret::new(templates::random_token(24)));
    }
    let secret = source.secrets[0].expose().to_owned();
    let admin_token = match &config.admin_token {
        Some(token) => token.expose().to_owned(),
        None => {
            let token = format!("zh_demo_{}", templates::random_token(24));
            config.admin_token = Some(Secret::new(token.clone()));
            token
        }
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (use --listen 127.0.0.1:0 for any free port)",
                config.listen
            )
        })?;
    let base = format!("http://{}", listener.local_addr()?);
    // Printed: a PostgreSQL URL's password stays out of the terminal (and any captured output).
    let database = crate::store::postgres::redact_url(&config.database_url);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let exit_after_feed = args.exit;
    let server = tokio::spawn(server::run(config, listener, async move {
        tokio::select! {
            _ = server::shutdown_signal() => {},
            _ = stop_rx => {},
        }
    }));

    println!("zoomhook demo — {base} (store: {database})\n");
    let meetings = feed(&base, &secret, &args).await?;
    show_attendance(&base, &admin_token, &meetings).await;
    println!("\nTry it yourself:");
    println!(
        "  export ZOOMHOOK_URL={base} ZOOMHOOK_TOKEN={admin_token} ZOOM_WEBHOOK_SECRET_TOKEN={secret}"
    );
    println!("  zoomhook events list");
    println!("  zoomhook meetings list");
    if let Some(m) = meetings.first() {
        println!("  zoomhook attendance '{}' --csv", m.uuid);
    }
    println!("  zoomhook send --url {base}/webhooks/zoom --event meeting.started");
    println!("  curl -H \"Authorization: Bearer $ZOOMHOOK_TOKEN\" {base}/api/v1/events");
    if exit_after_feed {
        let _ = stop_tx.send(());
    } else {
        println!("\nServing until Ctrl-C.");
    }
    server.await.context("server task")??;
    Ok(())
}

async fn feed(base: &str, secret: &str, args: &DemoArgs) -> anyhow::Result<Vec<Meeting>> {
    let client = reqwest::Client::new();
    let url = format!("{base}/webhooks/zoom");
    let mut meetings = Vec::new();
    for n in 0..args.meetings {
        let meeting = Meeting::random(now_millis() + n as i64 * 60_000);
        let people: Vec<Participant> = (0..args.participants).map(Participant::random).collect();
        println!("meeting {} “{}”", meeting.id, meeting.topic);
        for (i, event) in templates::lifecycle(&meeting, &people).iter().enumerate() {
            let body = templates::to_bytes(event);
            let name = event["event"].as_str().unwrap_or("?").to_owned();
            // Like Zoom, retry the recording event once with the same request id: it must be
            // answered 2xx and stored once.
            let sends = if name == "recording.completed" { 2 } else { 1 };
            let request_id = new_request_id();
            for attempt in 0..sends {
                let headers = ZoomHeaders::sign_at(
                    secret,
                    &body,
                    crate::core::clock::now_secs(),
                    &request_id,
                );
                let mut request = client.post(&url);
                for (k, v) in headers.pairs() {
                    request = request.header(k, v);
                }
                let response = request
                    .body(body.clone())
                    .send()
                    .await
                    .context("posting to the demo server")?;
                let status = response.status();
                let answer: serde_json::Value = response.json().await.unwrap_or_default();
                let retry = if attempt > 0 { " (Zoom retry)" } else { "" };
                println!(
                    "  {:>2}. {:<28} → {} {} seq {}{retry}",
                    i + 1,
                    name,
                    status.as_u16(),
                    answer["status"].as_str().unwrap_or("?"),
                    answer["seq"]
                );
            }
            tokio::time::sleep(args.pace).await;
        }
        meetings.push(meeting);
    }
    Ok(meetings)
}

/// Prints the attendance sync derived from the events just sent (waiting briefly for sync).
async fn show_attendance(base: &str, token: &str, meetings: &[Meeting]) {
    let client = reqwest::Client::new();
    for meeting in meetings {
        let path = format!(
            "{base}/api/v1/meeting-instances/{}/participants",
            super::meetings::path_segment(&meeting.uuid)
        );
        let mut page = serde_json::Value::Null;
        for _ in 0..50 {
            let answer = client.get(&path).bearer_auth(token).send().await;
            if let Ok(response) = answer
                && let Ok(value) = response.json::<serde_json::Value>().await
                && value["data"].as_array().is_some_and(|d| !d.is_empty())
            {
                page = value;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "\nattendance of “{}” (synchronised from the events):",
            meeting.topic
        );
        for p in page["data"].as_array().into_iter().flatten() {
            println!(
                "  {:<24} {} session(s), {} s",
                p["name"].as_str().unwrap_or("?"),
                p["attendance"]["session_count"],
                p["attendance"]["total_seconds"]
            );
        }
    }
}
