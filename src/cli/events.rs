//! `zoomhook events list|show|tail|export`

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::ClientArgs;
use super::client::{AdminClient, NotFoundHint};
use super::time_filter::{self, TimeFilter};
use crate::api::model::Page;
use crate::api::model::event::Event;
use crate::cli::show_time;

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// List events (newest first by default).
    List {
        #[command(flatten)]
        filter: Filter,
        /// Oldest first instead.
        #[arg(long)]
        oldest_first: bool,
        /// How many to show.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one event with its raw body.
    Show {
        /// Event id (evt_…).
        id: String,
        /// Print only the raw body, byte for byte.
        #[arg(long)]
        raw: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Follow the log over the WebSocket stream: print events as they arrive, and resume by
    /// itself after a disconnect from the last seq received.
    Tail {
        #[command(flatten)]
        filter: Filter,
        /// Start after this seq instead of at the current head.
        #[arg(long)]
        after_seq: Option<i64>,
        /// Unused: tail follows the WebSocket stream and no longer polls. Still accepted so
        /// scripts that pass it keep working.
        #[arg(long, hide = true, value_parser = parse_interval)]
        interval: Option<Duration>,
        /// Print each event as the stream's JSON frame, one per line (NDJSON), instead of a table row.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Export events as NDJSON (one JSON object per line, raw body included).
    Export {
        #[command(flatten)]
        filter: Filter,
        /// Start after this seq.
        #[arg(long, default_value_t = 0)]
        after_seq: i64,
        /// Write to a file instead of stdout.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Filters shared by the listing commands.
#[derive(Debug, Clone, Args)]
pub struct Filter {
    /// Event patterns, comma-separated (`meeting.*,user.created`).
    #[arg(long)]
    pub(super) event: Option<String>,
    /// Received at or after: RFC 3339, epoch ms, a date (2026-11-01: midnight UTC) or a duration ago (30m, 2h, 7d).
    #[arg(long, value_parser = time_filter::parse)]
    pub(super) since: Option<TimeFilter>,
    /// Received before: RFC 3339, epoch ms, a date (2026-11-01: midnight UTC) or a duration ago (30m, 2h, 7d).
    #[arg(long, value_parser = time_filter::parse)]
    pub(super) until: Option<TimeFilter>,
    /// Object id or uuid (meeting id, instance uuid, user id).
    #[arg(long)]
    pub(super) entity: Option<String>,
    /// Source name.
    #[arg(long)]
    pub(super) source: Option<String>,
}

impl Filter {
    fn query(&self) -> Vec<(&'static str, String)> {
        [
            ("event", self.event.clone()),
            ("since", self.since.map(|t| t.to_string())),
            ("until", self.until.map(|t| t.to_string())),
            ("entity", self.entity.clone()),
            ("source", self.source.clone()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    crate::config::parse_duration(text)
        .ok_or_else(|| format!("expected a duration such as 1s or 500ms, got {text:?}"))
}

/// Runs an events command.
pub async fn run(cmd: EventsCommand) -> anyhow::Result<()> {
    match cmd {
        EventsCommand::List {
            filter,
            oldest_first,
            limit,
            json,
            client,
        } => {
            let api = AdminClient::new(&client)?;
            let mut query = filter.query();
            query.push(("limit", limit.to_string()));
            query.push(("order", if oldest_first { "asc" } else { "desc" }.into()));
            let page: Page<Event> = api.get_json("/api/v1/events", &query).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page.data)?);
            } else {
                print_table(&page.data);
            }
            Ok(())
        }
        EventsCommand::Show { id, raw, client } => {
            let api = AdminClient::new(&client)?;
            let path = format!("/api/v1/events/{id}");
            const HINT: &str = "event ids (evt_…) are listed by `zoomhook events list`";
            if raw {
                let response = api
                    .get(&format!("{path}/raw"), &[])
                    .await
                    .hint_if_not_found(HINT)?;
                std::io::stdout().write_all(&response.bytes().await?)?;
            } else {
                let event: Event = api.get_json(&path, &[]).await.hint_if_not_found(HINT)?;
                println!("{}", serde_json::to_string_pretty(&event)?);
            }
            Ok(())
        }
        EventsCommand::Tail {
            filter,
            after_seq,
            interval: _,
            json,
            client,
        } => super::tail::tail(filter, after_seq, json, client).await,
        EventsCommand::Export {
            filter,
            after_seq,
            output,
            client,
        } => export(filter, after_seq, output, client).await,
    }
}

fn print_table(events: &[Event]) {
    println!(
        "{:>8}  {:<27}  {:<28}  {:<24}  {:<14}  ID",
        "SEQ", "RECEIVED", "EVENT", "OBJECT", "SOURCE"
    );
    for e in events {
        let object = e
            .object_id
            .as_deref()
            .or(e.object_uuid.as_deref())
            .unwrap_or("-");
        println!(
            "{:>8}  {:<27}  {:<28}  {:<24}  {:<14}  {}",
            e.seq,
            show_time::local(&e.received_at),
            e.event,
            object,
            e.source,
            e.id
        );
    }
}

async fn export(
    filter: Filter,
    mut cursor: i64,
    output: Option<std::path::PathBuf>,
    client: ClientArgs,
) -> anyhow::Result<()> {
    let api = AdminClient::new(&client)?;
    let mut out: Box<dyn Write> = match &output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut exported = 0u64;
    loop {
        let mut query = filter.query();
        query.push(("after_seq", cursor.to_string()));
        query.push(("limit", "1000".into()));
        query.push(("include_body", "true".into()));
        let page: Page<Event> = api.get_json("/api/v1/events", &query).await?;
        for e in &page.data {
            serde_json::to_writer(&mut out, e)?;
            out.write_all(b"\n")?;
            cursor = e.seq;
            exported += 1;
        }
        eprint!("\rexported {exported} events (up to seq {cursor})");
        if page.next_cursor.is_none() {
            break;
        }
    }
    out.flush()?;
    eprintln!();
    Ok(())
}
