//! The command line says what happened (issue 12): a closed pipe ends a command quietly; time
//! filters take dates and durations; every client command finds the server through
//! `ZOOMHOOK_URL`; database commands refuse a file that is not there; "not found" and invalid
//! values are errors with a hint; shell completions. Each runs the real binary.

mod common;

use std::process::{Output, Stdio};

use common::*;
use futures_util::StreamExt;

/// A `zoomhook` command with a clean zoomhook/Zoom environment plus `env`.
fn command(args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_zoomhook"));
    command.args(args).env("ZOOMHOOK_LOG", "warn");
    for (key, _) in std::env::vars() {
        if key.starts_with("ZOOMHOOK_") || key.starts_with("ZOOM_") || key == "NO_COLOR" {
            command.env_remove(key);
        }
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

/// Runs `zoomhook <args>` to the end.
async fn zoomhook(args: &[&str], env: &[(&str, &str)]) -> Output {
    command(args, env).output().await.expect("run zoomhook")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `ZOOMHOOK_URL` and `ZOOMHOOK_TOKEN` for `server`.
fn client_env(server: &TestServer) -> [(&'static str, &str); 2] {
    [
        ("ZOOMHOOK_URL", server.base.as_str()),
        ("ZOOMHOOK_TOKEN", ADMIN),
    ]
}

/// Sends `count` distinct `meeting.created` events.
async fn send_meetings(server: &TestServer, count: usize) {
    futures_util::stream::iter(0..count)
        .map(|i| async move {
            let body = format!(
                r#"{{"event":"meeting.created","event_ts":{},"payload":{{"account_id":"A","object":{{"id":"{}","topic":"Meeting {i}","host_id":"h","start_time":"2022-03-23T12:00:00Z"}}}}}}"#,
                1_648_000_000_000_i64 + i as i64,
                90_000_000_000_u64 + i as u64
            );
            let response = server.send(body.as_bytes()).await;
            assert!(response.status().is_success(), "{}", response.status());
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_events_list_quietly() {
    let db = TestDb::sqlite();
    let server = TestServer::start(config(&db, &[])).await;
    // Well over a pipe buffer (64 KiB) of rows: the command is still writing when the reader
    // goes, as with `zoomhook events list --limit 1000 | head -1`.
    send_meetings(&server, 1000).await;
    let mut child = command(&["events", "list", "--limit", "1000"], &client_env(&server))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = tokio::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut out, &mut first)
        .await
        .expect("read the header");
    assert!(first.contains("SEQ"), "{first}");
    drop(out);
    let output = child.wait_with_output().await.expect("wait");
    let err = stderr(&output);
    assert!(
        !err.contains("Broken pipe") && !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    // Ended by SIGPIPE, as `cat` would be: the shell reports 141 and says nothing.
    use std::os::unix::process::ExitStatusExt;
    assert!(
        output.status.success() || output.status.signal() == Some(libc::SIGPIPE),
        "{:?} {err}",
        output.status
    );
    server.stop().await;
}

/// Rows of `events list` (without the header).
async fn listed(args: &[&str], server: &TestServer) -> Result<usize, String> {
    let mut all = vec!["events", "list", "--limit", "1000"];
    all.extend_from_slice(args);
    let out = zoomhook(&all, &client_env(server)).await;
    if out.status.success() {
        Ok(stdout(&out).lines().count().saturating_sub(1))
    } else {
        Err(stderr(&out))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_filters_take_rfc3339_epoch_ms_dates_and_durations_ago() {
    let db = TestDb::sqlite();
    let server = TestServer::start(config(&db, &[])).await;
    send_meetings(&server, 3).await;

    // Received just now: inside every "since" that lies in the past, outside every "until".
    for since in [
        "2h",
        "30m",
        "7d",
        "2000-01-01",
        "2000-01-01T00:00:00Z",
        "946684800000",
    ] {
        assert_eq!(
            listed(&["--since", since], &server).await,
            Ok(3),
            "--since {since}"
        );
        assert_eq!(
            listed(&["--until", since], &server).await,
            Ok(0),
            "--until {since}"
        );
    }

    // Meetings filter on their start (2022-03-23T12:00:00Z); sync applies them shortly.
    let mut shown = String::new();
    for _ in 0..200 {
        let out = zoomhook(
            &[
                "meetings",
                "list",
                "--since",
                "2022-03-23",
                "--until",
                "2022-03-24",
            ],
            &client_env(&server),
        )
        .await;
        assert!(out.status.success(), "{}", stderr(&out));
        shown = stdout(&out);
        if shown.lines().count() == 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(shown.lines().count(), 4, "{shown}");
    let later = zoomhook(
        &["meetings", "list", "--since", "2022-03-24"],
        &client_env(&server),
    )
    .await;
    assert!(later.status.success(), "{}", stderr(&later));
    assert_eq!(stdout(&later).lines().count(), 1, "{}", stdout(&later));

    // A value none of the forms reads is a usage error naming the flag and the forms, for every
    // command that has the filters; nothing is sent.
    for args in [
        &["events", "list", "--since", "yesterday"][..],
        &["events", "export", "--until", "2026-13-01"],
        &["events", "tail", "--since", "soon"],
        &["meetings", "list", "--until", "tomorrow"],
        &["replay", "sub_x", "--since", "last week"],
    ] {
        let out = zoomhook(args, &client_env(&server)).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        let flag = args[args.len() - 2];
        assert!(err.contains(flag), "{args:?}: {err}");
        for form in [
            "RFC 3339",
            "epoch milliseconds",
            "2026-11-01",
            "midnight UTC",
            "2h",
        ] {
            assert!(err.contains(form), "{args:?} names {form}: {err}");
        }
    }
    let help = zoomhook(&["events", "list", "--help"], &[]).await;
    assert!(stdout(&help).contains("midnight UTC"), "{}", stdout(&help));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_simulate_find_the_server_through_zoomhook_url() {
    let db = TestDb::sqlite();
    let server = TestServer::start(config(&db, &[])).await;
    let secret = [("ZOOM_WEBHOOK_SECRET_TOKEN", SECRET)];
    let env = [client_env(&server).as_slice(), &secret].concat();

    let sent = zoomhook(&["send", "--event", "meeting.started"], &env).await;
    assert!(sent.status.success(), "{}{}", stdout(&sent), stderr(&sent));
    let validated = zoomhook(&["send", "--validate"], &env).await;
    assert!(
        validated.status.success(),
        "{}{}",
        stdout(&validated),
        stderr(&validated)
    );
    let simulated = zoomhook(
        &[
            "simulate",
            "--requests",
            "5",
            "--connections",
            "1",
            "--quiet",
        ],
        &env,
    )
    .await;
    assert!(
        simulated.status.success(),
        "{}{}",
        stdout(&simulated),
        stderr(&simulated)
    );

    // --url still names any endpoint, over ZOOMHOOK_URL.
    let nowhere = [
        ("ZOOMHOOK_URL", "http://127.0.0.1:1"),
        ("ZOOM_WEBHOOK_SECRET_TOKEN", SECRET),
    ];
    let url = server.url("/webhooks/zoom");
    let explicit = zoomhook(
        &["send", "--event", "meeting.ended", "--url", &url],
        &nowhere,
    )
    .await;
    assert!(
        explicit.status.success(),
        "{}{}",
        stdout(&explicit),
        stderr(&explicit)
    );

    let names: Vec<String> = server
        .all_events()
        .await
        .iter()
        .filter_map(|e| e["event"].as_str().map(str::to_owned))
        .collect();
    assert!(names.iter().any(|n| n == "meeting.started"), "{names:?}");
    assert!(
        names.iter().any(|n| n == "endpoint.url_validation"),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n == "meeting.ended"), "{names:?}");
    // The template, the answered challenge, five simulated events and the one sent with --url.
    assert_eq!(names.len(), 1 + 1 + 5 + 1, "{names:?}");
    server.stop().await;
}

#[tokio::test]
async fn database_commands_refuse_a_missing_file_and_migrate_creates_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.db");
    let url = format!("sqlite://{}", missing.display());
    for args in [
        &["sync", "status", "--database", &url][..],
        &["sync", "rebuild", "--database", &url],
        &["token", "create", "--database", &url],
    ] {
        let out = zoomhook(args, &[]).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stdout(&out));
        let err = stderr(&out);
        assert!(
            err.contains("no database file at") && err.contains("missing.db"),
            "{err}"
        );
        assert!(err.contains("hint:") && err.contains("--database"), "{err}");
        assert!(!missing.exists(), "{args:?} created {}", missing.display());
    }
    // The default, sqlite://zoomhook.db, in another working directory: refused, not created.
    let out = command(&["sync", "status"], &[])
        .current_dir(dir.path())
        .output()
        .await
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(!dir.path().join("zoomhook.db").exists());

    // migrate is the command that prepares a database: it creates the file, and says so.
    let migrated = zoomhook(&["migrate", "--database", &url], &[]).await;
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    assert!(
        stderr(&migrated).contains("creating a new database file"),
        "{}",
        stderr(&migrated)
    );
    assert!(missing.exists());
    let status = zoomhook(&["sync", "status", "--database", &url], &[]).await;
    assert!(status.status.success(), "{}", stderr(&status));
    assert!(stdout(&status).contains("lag 0"), "{}", stdout(&status));
}

/// Runs a client command that must fail: exit status 1, `error:` and a `hint:` on stderr.
async fn refused(args: &[&str], server: &TestServer) -> String {
    let out = zoomhook(args, &client_env(server)).await;
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?}: {}{err}",
        stdout(&out)
    );
    assert!(
        err.starts_with("error: ") && err.contains("\nhint: "),
        "{args:?}: {err}"
    );
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_and_invalid_values_are_errors_with_a_hint() {
    let db = TestDb::sqlite();
    let server = TestServer::start(config(&db, &[("delivery_allow_cidrs", "127.0.0.0/8")])).await;
    for name in ["meeting.started.json", "meeting.participant_joined.json"] {
        assert!(server.send(&fixture(name)).await.status().is_success());
    }
    let (meeting, instance) = ("86431910364", "hwkAADUySwyG3GyUkqc0vA==");
    for _ in 0..200 {
        let out = zoomhook(&["attendance", instance], &client_env(&server)).await;
        if out.status.success() && stdout(&out).contains("1 participant(s)") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // attendance: an unknown uuid, and a meeting id where an instance uuid belongs.
    let err = refused(&["attendance", "nope/x+y=="], &server).await;
    assert!(
        err.contains("no meeting instance") && err.contains("zoomhook meetings show"),
        "{err}"
    );
    let err = refused(&["attendance", meeting], &server).await;
    assert!(err.contains("is a meeting id"), "{err}");
    assert!(
        err.contains(&format!("zoomhook meetings show {meeting}")),
        "{err}"
    );

    // meetings show: an unknown id, and an instance uuid where a meeting id belongs.
    let err = refused(&["meetings", "show", "1"], &server).await;
    assert!(
        err.contains("404") && err.contains("zoomhook meetings list"),
        "{err}"
    );
    let err = refused(&["meetings", "show", instance], &server).await;
    assert!(
        err.contains("instance uuid") && err.contains("zoomhook attendance"),
        "{err}"
    );

    // Unknown ids elsewhere say where the ids are listed.
    let err = refused(&["events", "show", "evt_nope"], &server).await;
    assert!(err.contains("zoomhook events list"), "{err}");
    let err = refused(&["events", "show", "evt_nope", "--raw"], &server).await;
    assert!(err.contains("zoomhook events list"), "{err}");
    for args in [
        &["subs", "show", "sub_nope"][..],
        &["subs", "rm", "sub_nope"],
        &["deliveries", "list", "sub_nope"],
        &["replay", "sub_nope"],
    ] {
        let err = refused(args, &server).await;
        assert!(err.contains("zoomhook subs list"), "{args:?}: {err}");
    }
    let err = refused(&["deliveries", "show", "dlv_nope"], &server).await;
    assert!(err.contains("zoomhook deliveries list"), "{err}");

    // A replay that matches nothing is not a success.
    let add = zoomhook(
        &[
            "subs",
            "add",
            "--url",
            "http://127.0.0.1:9/hook",
            "--events",
            "user.*",
        ],
        &client_env(&server),
    )
    .await;
    assert!(add.status.success(), "{}", stderr(&add));
    let id = stdout(&add)
        .split_whitespace()
        .find(|w| w.starts_with("sub_"))
        .expect("a subscription id")
        .to_owned();
    let err = refused(&["replay", &id, "--entity", meeting], &server).await;
    assert!(err.contains("nothing to replay"), "{err}");

    // Invalid values: usage errors (exit 2) that list the valid ones.
    for (args, valid) in [
        (
            &["meetings", "list", "--status", "bogus"][..],
            &["scheduled", "deleted", "recovered", "permanently_deleted"][..],
        ),
        (
            &["deliveries", "list", &id, "--status", "bogus"],
            &["pending", "delivering", "succeeded", "failed"],
        ),
    ] {
        let out = zoomhook(args, &client_env(&server)).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stdout(&out));
        let err = stderr(&out);
        assert!(err.contains("--status") && err.contains("bogus"), "{err}");
        for value in valid {
            assert!(err.contains(value), "{args:?} lists {value}: {err}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn completions_print_a_script_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = zoomhook(&["completions", shell], &[]).await;
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains("zoomhook"), "{shell}: {script}");
        // It knows the subcommands, from the same definitions the binary parses with.
        assert!(
            script.contains("attendance") && script.contains("replay"),
            "{shell}"
        );
    }
    let out = zoomhook(&["completions", "tcsh"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// Runs `zoomhook demo` (which logs as it serves) on a pseudo-terminal made by util-linux
/// `script`, and returns what the terminal showed; `None` when `script` is not installed.
async fn demo_on_a_terminal(env: &[(&str, &str)]) -> Option<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let line = format!(
        "'{}' demo --exit --listen 127.0.0.1:0 --database 'sqlite://{}' --pace 0ms --meetings 1 --participants 1",
        env!("CARGO_BIN_EXE_zoomhook"),
        dir.path().join("demo.db").display()
    );
    let mut script = tokio::process::Command::new("script");
    script.args(["-qec", &line, "/dev/null"]);
    for (key, _) in std::env::vars() {
        if key.starts_with("ZOOMHOOK_") || key.starts_with("ZOOM_") || key == "NO_COLOR" {
            script.env_remove(key);
        }
    }
    script.env("ZOOMHOOK_LOG", "info").envs(env.iter().copied());
    let out = script.output().await.ok()?;
    assert!(out.status.success(), "{}", stderr(&out));
    Some(stdout(&out))
}

#[tokio::test]
async fn logs_are_coloured_only_on_a_terminal_and_never_with_no_color() {
    let Some(coloured) = demo_on_a_terminal(&[]).await else {
        eprintln!("skipped: util-linux `script` is not installed (it provides the terminal)");
        return;
    };
    assert!(coloured.contains("INFO"), "{coloured}");
    assert!(
        coloured.contains("\x1b["),
        "colour on a terminal: {coloured}"
    );

    let plain = demo_on_a_terminal(&[("NO_COLOR", "1")])
        .await
        .expect("script");
    assert!(plain.contains("INFO"), "{plain}");
    assert!(!plain.contains("\x1b["), "NO_COLOR honoured: {plain:?}");

    // Not a terminal: no colour either.
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("demo.db").display());
    let piped = zoomhook(
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
            "1",
        ],
        &[("ZOOMHOOK_LOG", "info")],
    )
    .await;
    assert!(piped.status.success(), "{}", stderr(&piped));
    assert!(stderr(&piped).contains("INFO") && !stderr(&piped).contains("\x1b["));
}
