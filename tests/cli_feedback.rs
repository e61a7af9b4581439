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

