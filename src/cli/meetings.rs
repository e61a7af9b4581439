//! `zoomhook meetings list|show` and `zoomhook attendance` — the synchronised state of a running
//! server, over the admin API.

use clap::builder::PossibleValuesParser;
use clap::{Args, Subcommand};
use serde_json::Value;

use super::ClientArgs;
use super::client::{AdminClient, is_not_found, with_hint};
use super::time_filter::{self, TimeFilter};
use crate::api::entities::EntityPage;
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
    #[arg(long)]
    pub csv: bool,
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
            let page: EntityPage = api.get_json("/api/v1/meetings", &query).await?;
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
                    text(&m["id"]),
                    text(&m["status"]),
                    text(&m["host_id"]),
                    text(&m["start_time"]),
                    text(&m["topic"])
                );
            }
            if page.next_cursor.is_some() {
                eprintln!("(more: raise --limit or narrow the filters)");
            }
            Ok(())
        }
        MeetingsCommand::Show { id, client } => {
            let api = AdminClient::new(&client)?;
            let meeting: Value = match api
                .get_json(&format!("/api/v1/meetings/{}", path_segment(&id)), &[])
                .await
            {
                Ok(meeting) => meeting,
                Err(e) if is_not_found(&e) => return Err(meeting_not_found(&api, &id, e).await),
                Err(e) => return Err(e),
            };
            println!("{}", serde_json::to_string_pretty(&meeting)?);
            let instances: EntityPage = api
                .get_json(
                    &format!("/api/v1/meetings/{}/instances", path_segment(&id)),
                    &[("limit", "1000".into())],
                )
                .await?;
            println!("\n{} occurrence(s):", instances.data.len());
            for i in &instances.data {
                println!(
                    "  {:<28}  {:<8}  {} → {}",
                    text(&i["uuid"]),
                    text(&i["status"]),
                    text(&i["start_time"]),
                    text(&i["end_time"])
                );
            }
            Ok(())
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
    let mut people = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = vec![("limit", "1000".to_owned())];
        if let Some(a) = &after {
            query.push(("after", a.clone()));
        }
        let page: EntityPage = api.get_json(&path, &query).await?;
        people.extend(page.data);
        match page.next_cursor {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if people.is_empty() {
        check_instance(&api, &args.uuid).await?;
    }
    let columns = [
        "name",
        "email",
        "sessions",
        "total_seconds",
        "first_join",
        "last_leave",
    ];
    let row = |p: &Value| {
        let a = &p["attendance"];
        [
            text(&p["user_name"]),
            text(&p["email"]),
            text(&a["sessions"]),
            text(&a["total_seconds"]),
            text(&a["first_join"]),
            text(&a["last_leave"]),
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
            "{:<24}  {:<28}  {:>8}  {:>9}  {:<22}  LAST LEAVE",
            "NAME", "EMAIL", "SESSIONS", "MINUTES", "FIRST JOIN"
        );
        for p in &people {
            let r = row(p);
            let minutes = r[3]
                .parse::<f64>()
                .map(|s| format!("{:.1}", s / 60.0))
                .unwrap_or_default();
            println!(
                "{:<24}  {:<28}  {:>8}  {:>9}  {:<22}  {}",
                r[0], r[1], r[2], minutes, r[4], r[5]
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
