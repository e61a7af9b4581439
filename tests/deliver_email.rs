//! Email, the second delivery channel, against a real SMTP listener.

mod common;

use std::sync::Arc;

use common::delivery::*;
use common::*;
use serde_json::json;

/// A real SMTP listener: speaks enough SMTP for a client to deliver; the first session refuses
/// the recipient with a transient 451 when `refuse_first`.
async fn smtp_server(refuse_first: bool) -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sessions = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&sessions);
    tokio::spawn(async move {
        let mut session = 0;
        while let Ok((stream, _)) = listener.accept().await {
            session += 1;
            let refuse = refuse_first && session == 1;
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                let mut transcript = String::new();
                write.write_all(b"220 test.local ESMTP\r\n").await.ok();
                let mut in_data = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    transcript.push_str(&line);
                    transcript.push('\n');
                    let reply: &[u8] = if in_data {
                        if line == "." {
                            in_data = false;
                            b"250 2.0.0 queued\r\n"
                        } else {
                            continue;
                        }
                    } else {
                        let upper = line.to_ascii_uppercase();
                        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                            b"250-test.local\r\n250 8BITMIME\r\n"
                        } else if upper.starts_with("RCPT") && refuse {
                            b"451 4.3.0 try again later\r\n"
                        } else if upper.starts_with("DATA") {
                            in_data = true;
                            b"354 go ahead\r\n"
                        } else if upper.starts_with("QUIT") {
                            write.write_all(b"221 bye\r\n").await.ok();
                            break;
                        } else {
                            b"250 OK\r\n"
                        }
                    };
                    if write.write_all(reply).await.is_err() {
                        break;
                    }
                }
                log.lock().unwrap().push(transcript);
            });
        }
    });
    (port, sessions)
}

both_backends!(email_subscription_sends_a_templated_message_and_retries_smtp_failures);

async fn email_subscription_sends_a_templated_message_and_retries_smtp_failures(db: TestDb) {
    let (port, sessions) = smtp_server(true).await;
    let smtp = format!("smtp://127.0.0.1:{port}");
    let server = TestServer::start(delivery_config(
        &db,
        &[("smtp_url", &smtp), ("smtp_from", "zoomhook@example.com")],
    ))
    .await;
    let sub = subscribe(
        &server,
        json!({"kind": "email", "events": "recording.completed",
               "email": {"to": "{{payload.object.host_email}}, ops@example.com",
                         "subject": "Recording ready: {{payload.object.topic}}",
                         "body": "Share it: {{payload.object.share_url}} ({{event_time}})"}}),
    )
    .await;
    let id = sub["id"].as_str().unwrap().to_owned();
    assert!(
        server
            .send(&fixture("recording.completed.json"))
            .await
            .status()
            .is_success()
    );
    let d = first_delivery_when(&server, &id, "succeeded").await;
    let attempts = d["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "the 451 was retried: {d}");
    assert!(
        attempts[0]["error"].as_str().unwrap().contains("SMTP"),
        "{d}"
    );
    let transcripts = sessions.lock().unwrap().clone();
    let delivered = transcripts
        .iter()
        .find(|t| t.contains("Subject:"))
        .expect("a delivered message");
    assert!(
        delivered.contains("RCPT TO:<jchill@example.com>"),
        "{delivered}"
    );
    assert!(
        delivered.contains("RCPT TO:<ops@example.com>"),
        "{delivered}"
    );
    assert!(
        delivered.contains("Subject: Recording ready: My Meeting"),
        "{delivered}"
    );
    assert!(
        delivered.contains("Share it: https://example.com/rec/share/abc (2021-07-14T"),
        "{delivered}"
    );
    let (status, error) = post_json(
        &server,
        "/api/v1/subscriptions",
        json!({"kind": "email", "events": "*"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(error["detail"].as_str().unwrap().contains("email.to"));
    assert!(sub["secret"].is_null(), "an email is not signed: {sub}");
    server.stop().await;

    // Without SMTP, an email subscription is refused when it is made, with what to configure.
    let server = TestServer::start(delivery_config(&db, &[])).await;
    let (status, error) = post_json(
        &server,
        "/api/v1/subscriptions",
        json!({"kind": "email", "events": "*", "email": {"to": "ops@example.com"}}),
    )
    .await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["detail"].as_str().unwrap().contains("smtp_url"),
        "{error}"
    );
    server.stop().await;
}
