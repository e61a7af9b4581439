//! `zoomhook meetings list|show` and `zoomhook attendance` — the synchronised state of a running
//! server, over the admin API.

use clap::builder::PossibleValuesParser;
use clap::{Args, Subcommand};
use serde_json::Value;

use super::ClientArgs;
use super::client::{AdminClient, is_not_found, with_hint};
use super::time_filter::{self, TimeFilter};
use crate::api::model::Page;
use crate::api::model::entity::{Entity, Participant};
use crate::cli::show_time;
use crate::sync::status::MeetingStatus;

#[derive(Debug, Subcommand)]
pub enum MeetingsCommand {
    /// List meetings (by id), with filters.
    List {
        /// Host user id.
        #[arg(long)]
        host: Option<String>,
        /// Only meetings in this state (started: running now; a recurring series is scheduled
        /// again once an occurrence ends).
        #[arg(long, value_parser = PossibleValuesParser::new(MeetingStatus::NAMES))]
        status: Option<String>,
        /// Starting at or after: RFC 3339, epoch ms, a date (2026-11-01: midnight UTC) or a duration ago (30m, 2h, 7d).
        #[arg(long, value_parser = time_filter::parse)]
        since: Option<TimeFilter>,
        /// Starting before: RFC 3339, epoch ms, a date (2026-11-01: midnight UTC) or a duration ago (30m, 2h, 7d).
        #[arg(long, value_parser = time_filter::parse)]
        until: Option<TimeFilter>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one meeting and its occurrences.
    Show {
        /// Meeting id.
        id: String,
        /// Print JSON (`{"meeting", "instances"}`) instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `zoomhook attendance <uuid>`
#[derive(Debug, Args)]
pub struct AttendanceArgs {
    /// Meeting instance uuid (from `zoomhook meetings show`).
    pub uuid: String,
    /// CSV (one row per participant) instead of a table.
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
    /// Print JSON (every participant with sessions and attendance) instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Percent-encodes a path segment (instance uuids contain `/`, `+` and `=`).
pub fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Runs a meetings command.
pub async fn run(cmd: MeetingsCommand) -> anyhow::Result<()> {
    match cmd {
        MeetingsCommand::List {
            host,
            status,
            since,
            until,
            limit,
            json,
            client,
        } => {
            let api = AdminClient::new(&client)?;
            let mut query: Vec<(&str, String)> = [
                ("host", host),
                ("status", status),
                ("since", since.map(|t| t.to_string())),
                ("until", until.map(|t| t.to_string())),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
            query.push(("limit", limit.to_string()));
            let page: Page<Entity> = api.get_json("/api/v1/meetings", &query).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page.data)?);
                return Ok(());
            }
            println!(
                "{:<14}  {:<20}  {:<22}  {:<24}  TOPIC",
                "ID", "STATUS", "HOST", "START"
            );
            for m in &page.data {
                println!(
                    "{:<14}  {:<20}  {:<22}  {:<24}  {}",
                    m.id,
                    m.status.as_deref().unwrap_or("-"),
                    m.host_id.as_deref().unwrap_or("-"),
                    show_time::local_opt(m.start_time.as_deref()),
                    m.name.as_deref().unwrap_or("")
                );
            }
            if page.next_cursor.is_some() {
                eprintln!("(more: raise --limit or narrow the filters)");
            }
            Ok(())
        }
        MeetingsCommand::Show { id, json, client } => {
            let api = AdminClient::new(&client)?;
            let meeting: Entity = match api
                .get_json(&format!("/api/v1/meetings/{}", path_segment(&id)), &[])
                .await
            {
                Ok(meeting) => meeting,
                Err(e) if is_not_found(&e) => return Err(meeting_not_found(&api, &id, e).await),
                Err(e) => return Err(e),
            };
            let instances: Page<Entity> = api
                .get_json(
                    &format!("/api/v1/meetings/{}/instances", path_segment(&id)),
                    &[("limit", "1000".into())],
                )
                .await?;
            if json {
                let both = serde_json::json!({"meeting": meeting, "instances": instances.data});
                println!("{}", serde_json::to_string_pretty(&both)?);
                return Ok(());
            }
            print_meeting(&meeting);
            println!("\n{} occurrence(s):", instances.data.len());
            for i in &instances.data {
                println!(
                    "  {:<28}  {:<8}  {} → {}",
                    i.id,
                    i.status.as_deref().unwrap_or("-"),
                    show_time::local_opt(i.start_time.as_deref()),
                    show_time::local_opt(i.end_time.as_deref())
                );
            }
            Ok(())
        }
    }
}

/// A meeting for people: the envelope, then Zoom's fields.
fn print_meeting(m: &Entity) {
    println!("meeting {}  {}", m.id, m.name.as_deref().unwrap_or(""));
    println!("  status  {}", m.status.as_deref().unwrap_or("-"));
    println!("  host    {}", m.host_id.as_deref().unwrap_or("-"));
    println!(
        "  start   {}",
        show_time::local_opt(m.start_time.as_deref())
    );
    for (field, value) in &m.zoom {
        if !matches!(field.as_str(), "id" | "topic" | "host_id" | "start_time") {
            println!("  {field:<7} {}", text(value));
        }
    }
}

/// Whether the server knows `key` as an entity at `collection` (`/api/v1/meetings`, …).
async fn exists(api: &AdminClient, collection: &str, key: &str) -> bool {
    api.get(&format!("{collection}/{}", path_segment(key)), &[])
        .await
        .is_ok()
}

/// `meetings show` of an unknown id: perhaps an instance uuid was given.
async fn meeting_not_found(api: &AdminClient, id: &str, error: anyhow::Error) -> anyhow::Error {
    if exists(api, "/api/v1/meeting-instances", id).await {
        with_hint(
            anyhow::anyhow!("{id:?} is a meeting instance uuid, not a meeting id"),
            format!(
                "its attendance is `zoomhook attendance '{id}'`; meeting ids are listed by `zoomhook meetings list`"
            ),
        )
    } else {
        with_hint(error, "meeting ids are listed by `zoomhook meetings list`")
    }
}

/// `attendance` found no one: say whether the instance exists at all, or is a meeting id.
async fn check_instance(api: &AdminClient, uuid: &str) -> anyhow::Result<()> {
    if exists(api, "/api/v1/meeting-instances", uuid).await {
        return Ok(());
    }
    if exists(api, "/api/v1/meetings", uuid).await {
        return Err(with_hint(
            anyhow::anyhow!(
                "{uuid:?} is a meeting id; attendance is counted per occurrence (instance uuid)"
            ),
            format!("instances are listed by `zoomhook meetings show {uuid}`"),
        ));
    }
    Err(with_hint(
        anyhow::anyhow!("no meeting instance {uuid:?} (yet)"),
        "instance uuids are listed by `zoomhook meetings show MEETING_ID`; quote them in the shell, they may hold / + =",
    ))
}

/// Quotes a CSV field when it needs it (RFC 4180).
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// Runs `zoomhook attendance`.
pub async fn attendance(args: AttendanceArgs) -> anyhow::Result<()> {
    let api = AdminClient::new(&args.client)?;
    let path = format!(
        "/api/v1/meeting-instances/{}/participants",
        path_segment(&args.uuid)
    );
    let mut people: Vec<Participant> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = vec![("limit", "500".to_owned())];
        if let Some(a) = &after {
            query.push(("cursor", a.clone()));
        }
        let page: Page<Participant> = api.get_json(&path, &query).await?;
        people.extend(page.data);
        match page.next_cursor {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if people.is_empty() {
        check_instance(&api, &args.uuid).await?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&people)?);
        return Ok(());
    }
    let columns = [
        "name",
        "email",
        "sessions",
        "total_seconds",
        "first_join",
        "last_leave",
    ];
    let row = |p: &Participant| {
        let a = &p.attendance;
        [
            p.entity.name.clone().unwrap_or_default(),
            p.entity.email.clone().unwrap_or_default(),
            a.session_count.to_string(),
            a.total_seconds.to_string(),
            a.first_join_time.clone().unwrap_or_default(),
            a.last_leave_time.clone().unwrap_or_default(),
        ]
    };
    if args.csv {
        println!("{}", columns.join(","));
        for p in &people {
            println!(
                "{}",
                row(p)
                    .iter()
                    .map(|f| csv_field(f))
                    .collect::<Vec<_>>()
                    .join(",")
            );
        }
    } else {
        println!(
            "{:<24}  {:<28}  {:>8}  {:>9}  {:<24}  LAST LEAVE",
            "NAME", "EMAIL", "SESSIONS", "MINUTES", "FIRST JOIN"
        );
        for p in &people {
            let r = row(p);
            let minutes = r[3]
                .parse::<f64>()
                .map(|s| format!("{:.1}", s / 60.0))
                .unwrap_or_default();
            let when = |t: &str| show_time::local_opt(Some(t).filter(|t| !t.is_empty()));
            println!(
                "{:<24}  {:<28}  {:>8}  {:>9}  {:<24}  {}",
                r[0],
                r[1],
                r[2],
                minutes,
                when(&r[4]),
                when(&r[5])
            );
        }
        println!("{} participant(s)", people.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_uuids_and_quotes_csv() {
        assert_eq!(path_segment("/ab+c=="), "%2Fab%2Bc%3D%3D");
        assert_eq!(csv_field("Smith, Jan"), "\"Smith, Jan\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
    }
}
