//! Every verification mode of a source, and Zoom's URL-validation handshake, over real HTTP.

mod common;

use base64::Engine;
use common::*;
use serde_json::{Value, json};

fn hmac_hex(key: &str, text: &str) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha256>>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(text.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn url_validation_answers_hmac_of_plain_token_only_when_signed() {
    let db = TestDb::sqlite();
    let server = TestServer::start(config(&db, &[])).await;
    let body = fixture("endpoint.url_validation.json");

    let r = server.send(&body).await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["plainToken"], "qgg8vlvZRS6UYooatFL8Aw");
    assert_eq!(
        answer["encryptedToken"],
        hmac_hex(SECRET, "qgg8vlvZRS6UYooatFL8Aw")
    );

    // Unsigned challenge: no answer (it would be an HMAC oracle).
    let r = server
        .http
        .post(server.url("/webhooks/zoom"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let text = r.text().await.unwrap();
    assert!(!text.contains("encryptedToken"), "{text}");

    // Signed with another secret: no answer either.
    let r = server
        .post_signed("/webhooks/zoom", "attacker-secret", &body, None)
        .await;
    assert_eq!(r.status(), 401);
    assert!(!r.text().await.unwrap().contains("encryptedToken"));

    // Only the verified challenge was recorded.
    let events = server.all_events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"], "endpoint.url_validation");
    server.stop().await;
}

#[tokio::test]
async fn rotation_accepts_both_secrets_and_answers_with_the_one_that_signed() {
    let db = TestDb::sqlite();
    let server = TestServer::start(config(
        &db,
        &[("sources.zoom.previous_secret", "old-secret")],
    ))
    .await;
    let started = fixture("meeting.started.json");
    assert_eq!(
        server
            .post_signed("/webhooks/zoom", SECRET, &started, None)
            .await
            .status(),
        200
    );
    assert_eq!(
        server
            .post_signed(
                "/webhooks/zoom",
                "old-secret",
                &fixture("meeting.ended.json"),
                None
            )
            .await
            .status(),
        200
    );
    assert_eq!(
        server
            .post_signed(
                "/webhooks/zoom",
                "third",
                &fixture("meeting.created.json"),
                None
            )
            .await
            .status(),
        401
    );
    let answer: Value = server
        .post_signed(
            "/webhooks/zoom",
            "old-secret",
            &fixture("endpoint.url_validation.json"),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["encryptedToken"],
        hmac_hex("old-secret", "qgg8vlvZRS6UYooatFL8Aw")
    );
    server.stop().await;
}

#[tokio::test]
async fn named_sources_have_their_own_secrets_and_are_recorded() {
    let db = TestDb::sqlite();
    let server = TestServer::start(config(&db, &[("sources.sales.secret", "sales-secret")])).await;
    let body = fixture("user.created.json");
    assert_eq!(
        server
            .post_signed("/webhooks/zoom/sales", SECRET, &body, None)
            .await
            .status(),
        401
    );
    assert_eq!(
        server
            .post_signed("/webhooks/zoom/sales", "sales-secret", &body, None)
            .await
            .status(),
        200
    );
    let events = server.all_events().await;
    assert_eq!(events[0]["source"], "sales");
    assert_eq!(
        server.api("/api/v1/events?source=sales").await["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    server.stop().await;
}

#[tokio::test]
async fn timestamp_tolerance_is_configurable_per_source() {
    let db = TestDb::sqlite();
    let server =
        TestServer::start(config(&db, &[("sources.zoom.timestamp_tolerance", "10s")])).await;
    let body = fixture("meeting.started.json");
    let ts = (now_secs() - 30).to_string();
    let r = server
        .http
        .post(server.url("/webhooks/zoom"))
        .header("x-zm-request-timestamp", &ts)
        .header("x-zm-signature", zoom_signature(SECRET, &ts, &body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("tolerance 10s"));
    server.stop().await;
}

#[tokio::test]
async fn basic_auth_is_required_in_addition_to_the_signature() {
    let db = TestDb::sqlite();
    let server = TestServer::start(config(
        &db,
        &[
            ("sources.zoom.basic_username", "zoom"),
            ("sources.zoom.basic_password", "pa55"),
        ],
    ))
    .await;
    let body = fixture("meeting.started.json");
    let ts = now_secs().to_string();
    let send = |auth: Option<String>| {
        let mut req = server
            .http
            .post(server.url("/webhooks/zoom"))
            .header("x-zm-request-timestamp", &ts)
            .header("x-zm-signature", zoom_signature(SECRET, &ts, &body));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.body(body.clone()).send()
    };
    let good = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("zoom:pa55")
    );
    let bad = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("zoom:nope")
    );
    assert_eq!(send(None).await.unwrap().status(), 401);
    assert_eq!(send(Some(bad)).await.unwrap().status(), 401);
    assert_eq!(send(Some(good)).await.unwrap().status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn token_authentication_hosts_the_token_endpoint_zoom_calls() {
    let db = TestDb::sqlite();
    let server = TestServer::start(config(
        &db,
        &[
            ("sources.zoom.token_client_id", "zoom-client"),
            ("sources.zoom.token_client_secret", "zoom-client-secret"),
        ],
    ))
    .await;
    // Zoom's call: POST token_url?grant_type=client_credentials with Basic client credentials, empty form body.
    let token_url = server.url("/oauth/token?grant_type=client_credentials");
    let r = server
        .http
        .post(&token_url)
        .basic_auth("zoom-client", Some("wrong"))
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = server
        .http
        .post(server.url("/oauth/token?grant_type=password"))
        .basic_auth("zoom-client", Some("zoom-client-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = server
        .http
        .post(&token_url)
        .basic_auth("zoom-client", Some("zoom-client-secret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let grant: Value = r.json().await.unwrap();
    assert_eq!(grant["token_type"], "bearer");
    assert!(
        grant["expires_in"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
            >= 3599
    );
    let token = grant["access_token"].as_str().unwrap();

    let body = fixture("meeting.started.json");
    let ts = now_secs().to_string();
    let send = |auth: String| {
        server
            .http
            .post(server.url("/webhooks/zoom"))
            .header("x-zm-request-timestamp", &ts)
            .header("x-zm-signature", zoom_signature(SECRET, &ts, &body))
            .header("authorization", auth)
            .body(body.clone())
            .send()
    };
    assert_eq!(
        send("Bearer forged.token".into()).await.unwrap().status(),
        401
    );
    assert_eq!(send(format!("Bearer {token}")).await.unwrap().status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn custom_header_and_legacy_verification_token() {
    let db = TestDb::sqlite();
    let server = TestServer::start(config(
        &db,
        &[
            ("sources.zoom.custom_header_name", "x-my-custom-key"),
            ("sources.zoom.custom_header_value", "my-custom-value"),
        ],
    ))
    .await;
    let body = fixture("meeting.started.json");
    let ts = now_secs().to_string();
    let signed = || {
        server
            .http
            .post(server.url("/webhooks/zoom"))
            .header("x-zm-request-timestamp", &ts)
            .header("x-zm-signature", zoom_signature(SECRET, &ts, &body))
            .body(body.clone())
    };
    assert_eq!(signed().send().await.unwrap().status(), 401);
    assert_eq!(
        signed()
            .header("x-my-custom-key", "wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        signed()
            .header("x-my-custom-key", "my-custom-value")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    server.stop().await;

    // An old app with only the (deprecated) verification token and no secret.
    let db = TestDb::sqlite();
    let mut legacy = config(&db, &[("sources.legacy.verification_token", "vt-123")]);
    legacy.sources.get_mut("zoom").unwrap().secrets.clear();
    let server = TestServer::start(legacy).await;
    let post = |path: &str, auth: &str| {
        server
            .http
            .post(server.url(path))
            .header("authorization", auth)
            .body(body.clone())
            .send()
    };
    assert_eq!(
        post("/webhooks/zoom/legacy", "vt-wrong")
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        post("/webhooks/zoom/legacy", "vt-123")
            .await
            .unwrap()
            .status(),
        200
    );
    // A source with no verification at all refuses everything, with advice.
    let r = post("/webhooks/zoom", "anything").await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("ZOOM_WEBHOOK_SECRET_TOKEN")
    );
    server.stop().await;
}

#[tokio::test]
async fn ip_allow_list_refuses_other_networks_before_reading() {
    let db = TestDb::sqlite();
    let server = TestServer::start(config(
        &db,
        &[
            ("sources.zoom.allow_ips", "10.0.0.0/8"),
            ("sources.open.secret", SECRET),
            ("sources.open.allow_ips", "127.0.0.1/32"),
        ],
    ))
    .await;
    let body = fixture("meeting.started.json");
    assert_eq!(
        server
            .post_signed("/webhooks/zoom", SECRET, &body, None)
            .await
            .status(),
        403
    );
    assert_eq!(
        server
            .post_signed("/webhooks/zoom/open", SECRET, &body, None)
            .await
            .status(),
        200
    );
    assert_eq!(server.all_events().await.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn slow_bodies_time_out_and_are_not_stored() {
    let db = TestDb::sqlite();
    let server = TestServer::start(config(&db, &[("read_timeout", "1s")])).await;
    let body = fixture("meeting.started.json");
    let ts = now_secs().to_string();
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>(1);
    let first = bytes::Bytes::copy_from_slice(&body[..10]);
    tx.send(Ok(http_body::Frame::data(first))).await.unwrap();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let r = server
        .http
        .post(server.url("/webhooks/zoom"))
        .header("content-length", body.len().to_string())
        .header("x-zm-request-timestamp", &ts)
        .header("x-zm-signature", zoom_signature(SECRET, &ts, &body))
        .body(reqwest::Body::wrap(http_body_util::StreamBody::new(stream)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 408);
    drop(tx);
    assert!(server.all_events().await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn admin_api_requires_a_token_and_health_endpoints_do_not() {
    let db = TestDb::sqlite();
    let server = TestServer::start(config(&db, &[])).await;
    let r = server
        .http
        .get(server.url("/api/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = server
        .http
        .get(server.url("/api/v1/events"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A token created through the store (as `zoomhook token create` does) works; only its hash is kept.
    let store = db.open_store().await;
    let token = zoomhook::api::auth::create_token(store.as_ref(), "test")
        .await
        .unwrap();
    let r = server
        .http
        .get(server.url("/api/v1/events"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        store.find_admin_token(&token).await.unwrap(),
        None,
        "the plain token is not stored"
    );

    assert_eq!(
        server
            .http
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready: Value = server
        .http
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    assert!(ready["instance"].is_string(), "{ready}");
    assert_eq!(
        ready["leading"],
        json!(["fanout", "sync"]),
        "a lone instance leads it all"
    );
    server.send(&fixture("meeting.started.json")).await;
    let metrics = server.metrics_page().await;
    for name in [
        "zoomhook_webhook_requests_total",
        "zoomhook_webhook_ack_seconds_bucket",
        "zoomhook_commit_batch_size_bucket",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    assert!(metrics.contains("event=\"meeting.started\""));
    server.stop().await;
}

#[tokio::test]
async fn first_start_without_a_configured_token_creates_one() {
    let db = TestDb::sqlite();
    let mut cfg = config(&db, &[]);
    cfg.admin_token = None;
    let server = TestServer::start(cfg).await;
    server.stop().await;
    let store = db.open_store().await;
    assert_eq!(store.count_admin_tokens().await.unwrap(), 1);
}
