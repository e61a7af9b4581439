//! Every error the server sends is `{"error": "...", "detail": "..."}` JSON — including the ones
//! no handler writes: query and path parsing, unknown routes, wrong methods, long URIs, bodies
//! over the limit, malformed JSON.

mod common;

use common::*;
use reqwest::Method;

/// One request that must fail, and the status it must fail with.
struct Case {
    what: &'static str,
    method: Method,
    path: String,
    body: Option<Vec<u8>>,
    admin: bool,
    status: u16,
}

fn case(what: &'static str, method: Method, path: &str, status: u16) -> Case {
    Case {
        what,
        method,
        path: path.to_owned(),
        body: None,
        admin: true,
        status,
    }
}

fn cases() -> Vec<Case> {
    let long_query = format!("/api/v1/events?event={}", "a".repeat(10 * 1024));
    let huge_body = format!(
        r#"{{"event": "case.updated", "payload": {{"object": {{"pad": "{}"}}}}}}"#,
        "x".repeat(3 * 1024 * 1024)
    );
    vec![
        case(
            "a query value of the wrong type",
            Method::GET,
            "/api/v1/events?limit=abc",
            400,
        ),
        case(
            "a query value of the wrong type on another resource",
            Method::GET,
            "/api/v1/meetings?limit=abc",
            400,
        ),
        case(
            "a path id that is not UTF-8",
            Method::GET,
            "/api/v1/events/%FF%FE",
            400,
        ),
        case("an unknown route", Method::GET, "/no/such/route", 404),
        case(
            "an unknown API route",
            Method::GET,
            "/api/v1/nothing-here",
            404,
        ),
        case(
            "a method the API route lacks",
            Method::DELETE,
            "/api/v1/events",
            405,
        ),
        case(
            "a method an operational route lacks",
            Method::POST,
            "/healthz",
            405,
        ),
        case(
            "a method the token endpoint lacks",
            Method::GET,
            "/oauth/token",
            405,
        ),
        case("a URI over the limit", Method::GET, &long_query, 414),
        Case {
            body: Some(b"{\"url\": ".to_vec()),
            ..case(
                "a JSON syntax error",
                Method::POST,
                "/api/v1/subscriptions",
                400,
            )
        },
        Case {
            body: Some(br#"{"event": 42, "payload": {}}"#.to_vec()),
            ..case(
                "JSON of the wrong shape",
                Method::POST,
                "/api/v1/events",
                400,
            )
        },
        Case {
            admin: false,
            ..case("a missing admin token", Method::GET, "/api/v1/events", 401)
        },
        // Last: the server closes a connection whose body it refused to read.
        Case {
            body: Some(huge_body.into_bytes()),
            ..case(
                "a published event over the body limit",
                Method::POST,
                "/api/v1/events",
                413,
            )
        },
    ]
}

both_backends!(every_error_answer_is_json_with_error_and_detail);

async fn every_error_answer_is_json_with_error_and_detail(db: TestDb) {
    let server = TestServer::start(config(&db, &[])).await;
    for case in cases() {
        let mut request = server
            .http
            .request(case.method.clone(), server.url(&case.path));
        if case.admin {
            request = request.bearer_auth(ADMIN);
        }
        if let Some(body) = case.body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.expect(case.what);
        let status = response.status().as_u16();
        let allow = response.headers().get("allow").cloned();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, case.status, "{}: {text}", case.what);
        let body: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {text:?}", case.what));
        for field in ["error", "detail"] {
            assert!(
                body[field].as_str().is_some_and(|s| !s.is_empty()),
                "{}: `{field}` must be a non-empty string: {body}",
                case.what
            );
        }
        if status == 405 {
            assert!(allow.is_some(), "{}: a 405 says what is allowed", case.what);
        }
    }
    server.stop().await;
}
