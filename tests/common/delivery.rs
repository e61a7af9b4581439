//! Helpers of the delivery tests: a configuration with fast retries and loopback allowed, admin
//! API calls, waiting for background work, and an independent Standard Webhooks verifier.

use std::time::Duration;

use base64::Engine;
use serde_json::Value;

use super::{ADMIN, TestDb, TestServer, config};

/// Fast retries and loopback allowed, as the tests need.
pub fn delivery_config(db: &TestDb, extra: &[(&str, &str)]) -> zoomhook::config::Config {
    let mut settings = vec![
        ("delivery_retry_schedule", "200ms,200ms,200ms"),
        ("delivery_allow_cidrs", "127.0.0.0/8"),
    ];
    settings.extend_from_slice(extra);
    config(db, &settings)
}

pub async fn post_json(server: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let r = server
        .http
        .post(server.url(path))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .expect("POST");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub async fn patch_json(server: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let r = server
        .http
        .patch(server.url(path))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .expect("PATCH");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub async fn subscribe(server: &TestServer, body: Value) -> Value {
    let (status, sub) = post_json(server, "/api/v1/subscriptions", body).await;
    assert_eq!(status, 201, "{sub}");
    sub
}

pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    for _ in 0..600 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Waits until the first delivery of subscription `id` reaches `status`; returns it with its attempts.
pub async fn first_delivery_when(server: &TestServer, id: &str, status: &str) -> Value {
    eventually(&format!("a {status} delivery"), || async {
        let page = server
            .api(&format!("/api/v1/subscriptions/{id}/deliveries"))
            .await;
        let d = page["data"][0]["id"].as_str()?.to_owned();
        let d = server.api(&format!("/api/v1/deliveries/{d}")).await;
        (d["status"] == status).then_some(d)
    })
    .await
}

/// Standard Webhooks verification written from the specification, independently of the product.
pub fn verify_standard(secret: &str, id: &str, ts: &str, body: &[u8], header: &str) -> bool {
    use hmac::{Hmac, KeyInit, Mac};
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("secret is base64");
    let mut mac = <Hmac<sha2::Sha256>>::new_from_slice(&key).expect("key");
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    header.split(' ').any(|sig| sig == format!("v1,{expected}"))
}
