//! The command line, run as the real binary against a real server: `send` (fixture, template,
//! `--validate`), `events list|show|export`, `config check`, `token create`, `migrate`, `demo`.

mod common;

use std::process::Output;

use common::*;
use serde_json::Value;

/// Runs `zoomhook <args>` with `env` and a clean zoomhook/Zoom environment.
async fn zoomhook(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_zoomhook"));
    command.args(args).env("ZOOMHOOK_LOG", "warn");
    for (key, _) in std::env::vars() {
        if key.starts_with("ZOOMHOOK_") || key.starts_with("ZOOM_") {
            command.env_remove(key);
        }
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().await.expect("run zoomhook")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn send_validate_reports_a_correct_answer_and_a_wrong_one() {
    let db = TestDb::sqlite();
    let server = TestServer::start(config(&db, &[])).await;
    let url = server.url("/webhooks/zoom");

    let good = zoomhook(
        &["send", "--validate", "--url", &url, "--secret", SECRET],
        &[],
    )
    .await;
    assert!(good.status.success(), "{}{}", stdout(&good), stderr(&good));
    assert!(
        stdout(&good).contains("URL validation passed"),
        "{}",
        stdout(&good)
    );

    // Signed with another secret, the challenge is refused (no HMAC oracle) and send says so.
    let bad = zoomhook(
        &[
            "send",
            "--validate",
            "--url",
            &url,
            "--secret",
            "not-the-secret",
        ],
        &[],
    )
    .await;
    assert!(!bad.status.success());
    assert!(stdout(&bad).contains("FAILED"), "{}", stdout(&bad));
    // Validation attempts are recorded only when answered.
    let events = server.all_events().await;
    assert_eq!(events.len(), 1, "only the answered challenge is logged");
    assert_eq!(events[0]["event"], "endpoint.url_validation");
    server.stop().await;
}

#[tokio::test]
async fn send_a_fixture_and_a_template_then_list_show_and_export_them() {
    let db = TestDb::sqlite();
    let server = TestServer::start(config(&db, &[])).await;
    let url = server.url("/webhooks/zoom");
    let client_env = [
        ("ZOOMHOOK_URL", server.base.as_str()),
        ("ZOOMHOOK_TOKEN", ADMIN),
    ];
    let fixture_path = format!(
        "{}/tests/fixtures/zoom/meeting.created.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let fixture_bytes = std::fs::read(&fixture_path).expect("fixture");

    // The secret comes from Zoom's own variable name.
    let sent = zoomhook(
        &["send", &fixture_path, "--url", &url],
        &[("ZOOM_WEBHOOK_SECRET_TOKEN", SECRET)],
    )
    .await;
    assert!(sent.status.success(), "{}{}", stdout(&sent), stderr(&sent));
    let sent = zoomhook(
        &[
            "send",
            "--event",
            "meeting.started",
            "--url",
            &url,
            "--secret",
            SECRET,
        ],
        &[],
    )
    .await;
    assert!(sent.status.success(), "{}{}", stdout(&sent), stderr(&sent));

    let list = zoomhook(&["events", "list", "--json"], &client_env).await;
    assert!(list.status.success(), "{}", stderr(&list));
    let listed: Value = serde_json::from_str(&stdout(&list)).expect("events list --json is JSON");
    let listed = listed
        .as_array()
        .or_else(|| listed["data"].as_array())
        .expect("an array of events")
        .clone();
    let names: Vec<&str> = listed.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        names,
        ["meeting.started", "meeting.created"],
        "newest first"
    );

    // `events tail --json` prints the stream's frames, one JSON object per line.
    let mut tail = tokio::process::Command::new(env!("CARGO_BIN_EXE_zoomhook"))
        .args(["events", "tail", "--after-seq", "0", "--json"])
        .envs(client_env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn events tail");
    let mut frames =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(tail.stdout.take().unwrap()));
    let first = tokio::time::timeout(std::time::Duration::from_secs(20), frames.next_line())
        .await
        .expect("a frame within 20 s")
        .expect("read")
        .expect("a line");
    let first: Value = serde_json::from_str(&first).expect("a JSON frame");
    assert_eq!(first["type"], "event", "{first}");
    assert_eq!(first["seq"], 1, "{first}");
    assert_eq!(first["event"], "meeting.created", "{first}");
    tail.kill().await.expect("stop tail");

    let table = zoomhook(&["events", "list", "--event", "meeting.c*"], &client_env).await;
    assert!(table.status.success());
    assert!(
        stdout(&table).contains("meeting.created") && !stdout(&table).contains("meeting.started")
    );

    let id = listed[1]["id"].as_str().expect("id");
    let raw = zoomhook(&["events", "show", id, "--raw"], &client_env).await;
    assert!(raw.status.success(), "{}", stderr(&raw));
    assert_eq!(
        raw.stdout, fixture_bytes,
        "show --raw prints the body byte for byte"
    );

    let export = zoomhook(&["events", "export"], &client_env).await;
    assert!(export.status.success(), "{}", stderr(&export));
    let lines: Vec<Value> = stdout(&export)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each export line is JSON"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0]["event"], "meeting.created",
        "export is in log order"
    );
    assert_eq!(
        lines[0]["body"].as_str().map(str::as_bytes),
        Some(&fixture_bytes[..])
    );

    let missing = zoomhook(
        &["events", "show", "evt_01NOTTHERE0000000000000000"],
        &client_env,
    )
    .await;
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("404") || stderr(&missing).to_lowercase().contains("not found"),
        "{}",
        stderr(&missing)
    );
    server.stop().await;
}

#[tokio::test]
async fn send_refuses_without_a_secret_and_reports_a_refused_event() {
    let db = TestDb::sqlite();
    let server = TestServer::start(config(&db, &[])).await;
    let url = server.url("/webhooks/zoom");
    let no_secret = zoomhook(&["send", "--event", "meeting.started", "--url", &url], &[]).await;
    assert!(!no_secret.status.success());
    assert!(
        stderr(&no_secret).contains("ZOOM_WEBHOOK_SECRET_TOKEN"),
        "{}",
        stderr(&no_secret)
    );

    let wrong = zoomhook(
        &[
            "send",
            "--event",
            "meeting.started",
            "--url",
            &url,
            "--secret",
            "wrong",
        ],
        &[],
    )
    .await;
    assert!(!wrong.status.success());
    assert!(stderr(&wrong).contains("401"), "{}", stderr(&wrong));
    assert!(server.all_events().await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn config_check_names_the_bad_key_and_its_origin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("zoomhook.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:9999\"\n[sources.zoom]\nsecret = \"s\"\ntimestamp_tolerance = \"soon\"\n").expect("write");
    let file = file.to_string_lossy().into_owned();

    let bad_file = zoomhook(&["config", "check", "--config", &file], &[]).await;
    assert!(!bad_file.status.success());
    let message = stderr(&bad_file);
    assert!(
        message.contains("sources.zoom.timestamp_tolerance"),
        "{message}"
    );
    assert!(
        message.contains("zoomhook.toml"),
        "names the file: {message}"
    );

    let bad_env = zoomhook(&["config", "check"], &[("ZOOMHOOK_MAX_BODY_BYTES", "lots")]).await;
    assert!(!bad_env.status.success());
    assert!(
        stderr(&bad_env).contains("ZOOMHOOK_MAX_BODY_BYTES"),
        "{}",
        stderr(&bad_env)
    );

    std::fs::write(
        dir.path().join("zoomhook.toml"),
        "listen = \"127.0.0.1:9999\"\n[sources.zoom]\nsecret = \"s\"\n",
    )
    .expect("write");
    let good = zoomhook(
        &["config", "check", "--config", &file],
        &[("ZOOMHOOK_ADMIN_TOKEN", "secret-admin")],
    )
    .await;
    assert!(good.status.success(), "{}", stderr(&good));
    let summary = stdout(&good);
    assert!(
        summary.contains("127.0.0.1:9999") && summary.contains("signature"),
        "{summary}"
    );
    assert!(
        !summary.contains("secret-admin"),
        "config check never prints secrets"
    );
}

#[tokio::test]
async fn token_create_makes_a_token_the_server_accepts() {
    let db = TestDb::sqlite();
    let migrated = zoomhook(&["migrate", "--database", &db.url], &[]).await;
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    let created = zoomhook(
        &["token", "create", "--name", "ci", "--database", &db.url],
        &[],
    )
    .await;
    assert!(created.status.success(), "{}", stderr(&created));
    let token = stdout(&created).trim().to_owned();
    assert!(token.len() >= 32, "{token:?}");

    // A server with no configured admin token uses the stored ones.
    let mut raw = zoomhook::config::RawConfig::default();
    raw.set("listen", "127.0.0.1:0", "test");
    raw.set("database_url", db.url.clone(), "test");
    raw.set("sources.zoom.secret", SECRET, "test");
    let server = TestServer::start(zoomhook::config::Config::resolve(&raw).expect("config")).await;
    let with = server
        .http
        .get(server.url("/api/v1/events"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(with.status(), 200);
    let without = server
        .http
        .get(server.url("/api/v1/events"))
        .bearer_auth("zh_wrong")
        .send()
        .await
        .expect("get");
    assert_eq!(without.status(), 401);
    server.stop().await;

    let store = db.open_store().await;
    assert!(
        store
            .find_admin_token(&zoomhook::api::auth::hash_token(&token))
            .await
            .expect("lookup")
            .is_some()
    );
}

#[tokio::test]
async fn demo_feeds_a_signed_meeting_lifecycle_and_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("demo.db").display());
    let demo = zoomhook(
        &[
            "demo",
            "--exit",
            "--listen",
            "127.0.0.1:0",
            "--database",
            &url,
            "--pace",
            "0ms",
            "--meetings",
            "1",
            "--participants",
            "2",
        ],
        &[],
    )
    .await;
    assert!(demo.status.success(), "{}{}", stdout(&demo), stderr(&demo));

    let store = zoomhook::store::open(&url, &zoomhook::store::StoreOptions::default())
        .await
        .expect("open the demo database");
    let events = store
        .list_events(&zoomhook::store::EventQuery {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("list");
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    for expected in [
        "meeting.created",
        "meeting.started",
        "meeting.participant_joined",
        "meeting.participant_left",
        "meeting.ended",
        "recording.completed",
    ] {
        assert!(names.contains(&expected), "demo sent {expected}: {names:?}");
    }
    assert_eq!(
        names
            .iter()
            .filter(|n| **n == "meeting.participant_joined")
            .count(),
        2
    );
}

#[tokio::test]
async fn meetings_and_attendance_report_the_synchronised_state() {
    let db = TestDb::sqlite();
    let server = TestServer::start(config(&db, &[])).await;
    let client_env = [
        ("ZOOMHOOK_URL", server.base.as_str()),
        ("ZOOMHOOK_TOKEN", ADMIN),
    ];
    for name in [
        "meeting.started.json",
        "meeting.participant_joined.json",
        "meeting.ended.json",
        "meeting.participant_left.json",
    ] {
        assert!(server.send(&fixture(name)).await.status().is_success());
    }
    // A guest whose name needs CSV quoting, in the same occurrence.
    let guest = br#"{"event":"meeting.participant_joined","event_ts":1648038810000,"payload":{"account_id":"A","object":{"uuid":"hwkAADUySwyG3GyUkqc0vA==","id":"86431910364","participant":{"user_id":"99","user_name":"Smith, \"Bo\"","join_time":"2022-03-23T12:33:30Z"}}}}"#;
    assert!(server.send(guest).await.status().is_success());

    let mut csv = String::new();
    for _ in 0..300 {
        let out = zoomhook(
            &["attendance", "hwkAADUySwyG3GyUkqc0vA==", "--csv"],
            &client_env,
        )
        .await;
        // Until sync has applied the instance, attendance says it does not know it (exit 1).
        csv = if out.status.success() {
            stdout(&out)
        } else {
            stderr(&out)
        };
        if csv.contains("12:33:39") && csv.contains("Smith") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "name,email,sessions,total_seconds,first_join,last_leave"
    );
    assert!(
        lines.contains(
            &"Jan,jan@example.com,1,13,2022-03-23T12:33:26.000Z,2022-03-23T12:33:39.000Z"
        ),
        "{csv}"
    );
    // The guest never left: counted until the meeting ended (12:33:30 → 12:33:39).
    assert!(
        lines.contains(&"\"Smith, \"\"Bo\"\"\",,1,9,2022-03-23T12:33:30.000Z,"),
        "{csv}"
    );

    let list = zoomhook(&["meetings", "list"], &client_env).await;
    assert!(list.status.success(), "{}", stderr(&list));
    assert!(
        stdout(&list).contains("86431910364") && stdout(&list).contains("Jan's Zoom Meeting"),
        "{}",
        stdout(&list)
    );
    let show = zoomhook(&["meetings", "show", "86431910364"], &client_env).await;
    assert!(show.status.success(), "{}", stderr(&show));
    assert!(
        stdout(&show).contains("hwkAADUySwyG3GyUkqc0vA==") && stdout(&show).contains("ended"),
        "{}",
        stdout(&show)
    );
    // The same reads as JSON: the API's shapes, times in RFC 3339 UTC.
    let show = zoomhook(&["meetings", "show", "86431910364", "--json"], &client_env).await;
    let shown: serde_json::Value = serde_json::from_str(&stdout(&show)).expect("JSON");
    assert_eq!(shown["meeting"]["id"], "86431910364", "{shown}");
    assert_eq!(
        shown["instances"][0]["id"], "hwkAADUySwyG3GyUkqc0vA==",
        "{shown}"
    );
    let people = zoomhook(
        &["attendance", "hwkAADUySwyG3GyUkqc0vA==", "--json"],
        &client_env,
    )
    .await;
    let people: serde_json::Value = serde_json::from_str(&stdout(&people)).expect("JSON");
    let jan = people
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == "Jan"))
        .expect("Jan attended");
    assert_eq!(jan["attendance"]["total_seconds"], 13, "{jan}");
    assert_eq!(
        jan["attendance"]["first_join_time"],
        "2022-03-23T12:33:26.000Z"
    );
    let missing = zoomhook(&["meetings", "show", "1"], &client_env).await;
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("404"), "{}", stderr(&missing));
    server.stop().await;

    let status = zoomhook(&["sync", "status", "--database", &db.url], &[]).await;
    assert!(status.status.success(), "{}", stderr(&status));
    assert!(stdout(&status).contains("lag 0"), "{}", stdout(&status));
    let status = zoomhook(&["sync", "status", "--json", "--database", &db.url], &[]).await;
    assert!(status.status.success(), "{}", stderr(&status));
    let status: serde_json::Value = serde_json::from_str(&stdout(&status)).expect("JSON");
    assert_eq!(status["lag"], 0, "{status}");
    assert!(status["head"].as_i64() > Some(0), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subs_deliveries_and_replay_commands_drive_outbound_delivery() {
    let db = TestDb::sqlite();
    let receiver = common::receiver::Receiver::ok().await;
    let server = TestServer::start(config(
        &db,
        &[
            ("delivery_allow_cidrs", "127.0.0.0/8"),
            ("delivery_retry_schedule", "200ms"),
        ],
    ))
    .await;
    let client_env = [
        ("ZOOMHOOK_URL", server.base.as_str()),
        ("ZOOMHOOK_TOKEN", ADMIN),
    ];
    let url = receiver.url("/hook");
    let add = zoomhook(
        &[
            "subs",
            "add",
            "--url",
            &url,
            "--events",
            "meeting.*",
            "--header",
            "x-team=ops",
            "--ordering",
            "entity",
        ],
        &client_env,
    )
    .await;
    assert!(add.status.success(), "{}", stderr(&add));
    let out = stdout(&add);
    let id = out
        .split_whitespace()
        .nth(1)
        .expect("created <id>")
        .to_owned();
    assert!(id.starts_with("sub_") && out.contains("whsec_"), "{out}");

    let bad = zoomhook(
        &[
            "subs",
            "add",
            "--url",
            "http://169.254.169.254/",
            "--events",
            "*",
        ],
        &client_env,
    )
    .await;
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("link-local"), "{}", stderr(&bad));

    for name in [
        "meeting.started.json",
        "meeting.ended.json",
        "user.created.json",
    ] {
        assert!(server.send(&fixture(name)).await.status().is_success());
    }
    receiver.wait_for("/hook", 2).await;
    let test = zoomhook(&["subs", "test", &id], &client_env).await;
    assert!(test.status.success(), "{}{}", stdout(&test), stderr(&test));
    assert!(stdout(&test).starts_with("OK: 200"), "{}", stdout(&test));

    let mut listed = String::new();
    for _ in 0..300 {
        listed = stdout(&zoomhook(&["subs", "list"], &client_env).await);
        if listed
            .lines()
            .any(|l| l.contains(&id) && l.split_whitespace().nth(4) == Some("2"))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&id) && l.split_whitespace().nth(4) == Some("2")),
        "2 succeeded: {listed}"
    );
    let deliveries = zoomhook(&["deliveries", "list", &id], &client_env).await;
    assert!(deliveries.status.success(), "{}", stderr(&deliveries));
    let first = stdout(&deliveries)
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    let show = zoomhook(&["deliveries", "show", &first], &client_env).await;
    assert!(stdout(&show).contains("attempt(s):"), "{}", stdout(&show));

    let replay = zoomhook(&["replay", &id, "--entity", "86431910364"], &client_env).await;
    assert!(replay.status.success(), "{}", stderr(&replay));
    assert!(
        stdout(&replay).contains("queued 2 deliveries")
            && stdout(&replay).contains("replay finished"),
        "{}",
        stdout(&replay)
    );
    receiver.wait_for("/hook", 5).await;
    assert!(
        receiver
            .received_at("/hook")
            .iter()
            .all(|r| r.header("x-team") == "ops" || r.json()["event"] == "zoomhook.test")
    );

    let disable = zoomhook(&["subs", "disable", &id], &client_env).await;
    assert!(disable.status.success());
    let rm = zoomhook(&["subs", "rm", &id], &client_env).await;
    assert!(rm.status.success(), "{}", stderr(&rm));
    let gone = zoomhook(&["subs", "show", &id], &client_env).await;
    assert!(stderr(&gone).contains("404"));
    server.stop().await;
}

/// A SQLite database takes one server: a second `zoomhook serve` on the same file is refused
/// (it would accept again what the first holds and sync and fan out beside it), the first keeps
/// serving, commands that work beside a server still do, and a killed server leaves no stale lock.
#[tokio::test]
async fn a_second_server_on_one_sqlite_file_is_refused_and_a_killed_one_leaves_no_lock() {
    let db = TestDb::sqlite();
    let mut first = binary::Binary::start(&db);
    let http = reqwest::Client::new();
    let body = fixture("meeting.started.json");
    let ts = now_secs().to_string();
    let posted = http
        .post(format!("{}/webhooks/zoom", first.base))
        .header("content-type", "application/json")
        .header("x-zm-request-timestamp", &ts)
        .header("x-zm-signature", zoom_signature(SECRET, &ts, &body))
        .body(body)
        .send()
        .await
        .expect("POST");
    assert_eq!(posted.status(), 200);

    let serve = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database",
        db.url.as_str(),
    ];
    let env = [
        ("ZOOM_WEBHOOK_SECRET_TOKEN", SECRET),
        ("ZOOMHOOK_ADMIN_TOKEN", ADMIN),
    ];
    let second = tokio::time::timeout(std::time::Duration::from_secs(60), zoomhook(&serve, &env))
        .await
        .expect("the second server gives up at once rather than serving");
    assert!(!second.status.success(), "{}", stderr(&second));
    let message = stderr(&second);
    assert!(
        message.contains(&format!(
            "another zoomhook process (pid {})",
            first.child.id()
        )),
        "{message}"
    );
    assert!(message.contains("one server at a time"), "{message}");

    let health = http
        .get(format!("{}/healthz", first.base))
        .send()
        .await
        .expect("GET /healthz");
    assert_eq!(health.status(), 200, "the first server still serves");
    let token = zoomhook(&["token", "create", "--database", &db.url], &[]).await;
    assert!(token.status.success(), "{}", stderr(&token));

    first.kill();
    let again = binary::Binary::start(&db);
    let events: Value = http
        .get(format!("{}/api/v1/events", again.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("GET events")
        .json()
        .await
        .expect("JSON");
    let listed = events["data"].as_array().map_or(0, Vec::len);
    assert_eq!(listed, 1, "{events}");
}
