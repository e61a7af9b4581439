//! The OpenAPI document (`/api/openapi.json`) is complete, valid, and true: every admin route
//! that SPEC.md, docs/api.md or the router names is in it; `openapi-spec-validator` accepts it;
//! and `schemathesis`, fuzzing a live server that holds real events, entities, subscriptions and
//! deliveries, finds no server error and no answer the document does not describe.
//!
//! The Python tools come from PyPI at pinned versions (see `support/python.rs`). The fuzzing is
//! bounded (a fixed number of examples per operation and a wall-clock limit) and reproducible (a
//! fixed seed); `ZOOMHOOK_FUZZ_SEED` and `ZOOMHOOK_FUZZ_EXAMPLES` change them for a longer hunt.

mod common;
#[path = "support/python.rs"]
mod python;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::binary::Binary;
use common::receiver::Receiver;
use common::{ADMIN, SECRET, TestDb};
use serde_json::{Value, json};

/// The admin API as SPEC.md states it: `/work/shared/SPEC.md`, section "Admin API" (lines
/// 86–103). Copied, not read, because SPEC.md lives outside the repository.
const SPEC_ADMIN_API: &[(&str, &[&str])] = &[
    ("/api/v1/events", &["get", "post"]),
    ("/api/v1/events/{id}", &["get"]),
    ("/api/v1/meetings", &["get"]),
    ("/api/v1/meetings/{id}", &["get"]),
    ("/api/v1/meetings/{id}/instances", &["get"]),
    ("/api/v1/meeting-instances/{uuid}/participants", &["get"]),
    ("/api/v1/recordings", &["get"]),
    ("/api/v1/users", &["get"]),
    ("/api/v1/webinars", &["get"]),
    ("/api/v1/subscriptions", &["get", "post"]),
    ("/api/v1/subscriptions/{id}", &["get", "patch", "delete"]),
    ("/api/v1/subscriptions/{id}/deliveries", &["get"]),
    ("/api/v1/deliveries/{id}", &["get"]),
    ("/api/v1/deliveries/{id}/retry", &["post"]),
    ("/api/v1/subscriptions/{id}/replay", &["post"]),
    ("/api/v1/subscriptions/{id}/test", &["post"]),
    ("/api/v1/stream", &["get"]),
    ("/api/v1/sources", &["get"]),
];

/// The admin API as docs/api.md states it. A test below checks that every `/api/v1/…` path the
/// file mentions is in this list, so the list cannot fall behind the file.
const DOCS_ADMIN_API: &[(&str, &[&str])] = &[
    ("/api/v1/events", &["get", "post"]),
    ("/api/v1/events/{id}", &["get"]),
    ("/api/v1/events/{id}/raw", &["get"]),
    ("/api/v1/subscriptions", &["get", "post"]),
    ("/api/v1/subscriptions/{id}", &["get", "patch", "delete"]),
    ("/api/v1/subscriptions/{id}/secret", &["get"]),
    ("/api/v1/subscriptions/{id}/deliveries", &["get"]),
    ("/api/v1/subscriptions/{id}/replay", &["post"]),
    ("/api/v1/subscriptions/{id}/test", &["post"]),
    ("/api/v1/deliveries/{id}", &["get"]),
    ("/api/v1/deliveries/{id}/retry", &["post"]),
    ("/api/v1/meetings", &["get"]),
    ("/api/v1/meetings/{id}", &["get"]),
    ("/api/v1/meetings/{id}/instances", &["get"]),
    ("/api/v1/meeting-instances/{uuid}", &["get"]),
    ("/api/v1/meeting-instances/{uuid}/participants", &["get"]),
    ("/api/v1/recordings", &["get"]),
    ("/api/v1/recordings/{uuid}", &["get"]),
    ("/api/v1/users", &["get"]),
    ("/api/v1/users/{id}", &["get"]),
    ("/api/v1/webinars", &["get"]),
    ("/api/v1/webinars/{id}", &["get"]),
    ("/api/v1/webinars/{id}/registrants", &["get"]),
    ("/api/v1/sources", &["get"]),
    ("/api/v1/sync", &["get"]),
    ("/api/v1/sync/quarantine", &["get"]),
    ("/api/v1/stats", &["get"]),
    ("/api/v1/stream", &["get"]),
];

/// Paths docs/api.md names that this build does not serve yet. They are exempt from the document
/// only while the server answers them with its unknown-route 404: once one is served, the test
/// fails until it leaves this list, so it cannot be served undocumented.
const NOT_YET_SERVED: &[&str] = &[];

/// Routes registered outside `routes!` that are not part of the admin API's document.
const UNDOCUMENTED_BY_DESIGN: &[&str] = &["/api/openapi.json", "/api/docs"];

/// `/a/{id}/b` → `/a/{}/b`: parameter names may differ between texts (`{id}`, `{uuid}`).
fn normalise(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if !in_param => out.push(c),
            _ => {}
        }
    }
    out
}

/// `(normalised path, method)` of every operation in the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("the document has paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            let item = item.as_object().expect("a path item is an object");
            item.keys()
                .map(|method| (normalise(path), method.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn get(base: &str, path: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(ADMIN)
}

async fn served_document(base: &str) -> Value {
    let response = get(base, "/api/openapi.json")
        .send()
        .await
        .expect("GET /api/openapi.json");
    assert_eq!(response.status(), 200, "GET /api/openapi.json");
    response.json().await.expect("the document is JSON")
}

/// Every `.route("/api/…"` string in the product's source: routes registered beside the
/// documented ones, which nothing else would make appear in the document.
fn routes_in_source() -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read source file");
            for (at, _) in text.match_indices(".route(") {
                let rest = text[at + ".route(".len()..].trim_start();
                let Some(literal) = rest.strip_prefix('"') else {
                    continue;
                };
                let route = literal.split('"').next().unwrap_or_default();
                if route.starts_with("/api/") {
                    found.push((path.display().to_string(), route.to_owned()));
                }
            }
        }
    }
    found
}

/// Every `/api/v1/…` path docs/api.md mentions.
fn paths_in_docs() -> BTreeSet<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/api.md"))
        .expect("read docs/api.md");
    text.match_indices("/api/v1/")
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "/{}_-".contains(*c))
                .collect::<String>()
        })
        .map(|p| p.trim_end_matches('/').to_owned())
        .filter(|p| p != "/api/v1")
        .collect()
}

#[test]
fn docs_list_names_every_path_docs_api_md_mentions() {
    let listed: BTreeSet<String> = DOCS_ADMIN_API.iter().map(|(p, _)| normalise(p)).collect();
    let missing: Vec<String> = paths_in_docs()
        .into_iter()
        .filter(|p| !listed.contains(&normalise(p)))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/api.md names {missing:?}, which DOCS_ADMIN_API in this file does not list: add them"
    );
}

#[tokio::test]
async fn document_names_every_admin_route() {
    let db = TestDb::sqlite();
    let server = Binary::start(&db);
    let doc = served_document(&server.base).await;
    let have = operations(&doc);

    let mut missing = Vec::new();
    for (source, list) in [("SPEC.md", SPEC_ADMIN_API), ("docs/api.md", DOCS_ADMIN_API)] {
        for (path, methods) in list {
            if NOT_YET_SERVED.contains(path) {
                continue;
            }
            for method in *methods {
                if !have.contains(&(normalise(path), (*method).to_owned())) {
                    missing.push(format!(
                        "{} {path} (named by {source})",
                        method.to_uppercase()
                    ));
                }
            }
        }
    }
    let documented_paths: BTreeSet<String> = have.iter().map(|(p, _)| p.clone()).collect();
    for (file, route) in routes_in_source() {
        if !UNDOCUMENTED_BY_DESIGN.contains(&route.as_str())
            && !documented_paths.contains(&normalise(&route))
        {
            missing.push(format!(
                "{route} (registered with .route in {file}; register it with routes! instead)"
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "/api/openapi.json lacks:\n  {}",
        missing.join("\n  ")
    );

    for path in NOT_YET_SERVED {
        let response = get(&server.base, path).send().await.expect("GET");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or_default();
        let unknown_route = status == 404
            && body["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("no route for"));
        assert!(
            unknown_route,
            "{path} is served now ({status}): remove it from NOT_YET_SERVED so the document must name it"
        );
    }
}

#[test]
fn operation_ids_are_unique() {
    let doc = serde_json::to_value(zoomhook::api::document().openapi()).expect("document");
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let id = op["operationId"].as_str().unwrap_or_default().to_owned();
            let here = format!("{} {path}", method.to_uppercase());
            if let Some(other) = seen.insert(id.clone(), here.clone()) {
                panic!("operationId {id:?} is used by both {other} and {here}");
            }
        }
    }
}

#[tokio::test]
async fn document_is_valid_openapi() {
    let db = TestDb::sqlite();
    let server = Binary::start(&db);
    let doc = served_document(&server.base).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).expect("json")).expect("write");
    let output = tokio::task::spawn_blocking(move || {
        python::openapi_spec_validator()
            .args(["--validation-errors", "all"])
            .arg(&file)
            .output()
            .expect("run openapi-spec-validator")
    })
    .await
    .expect("openapi-spec-validator");
    assert!(
        output.status.success(),
        "openapi-spec-validator refuses /api/openapi.json:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn docs_page_is_html_naming_every_path() {
    let db = TestDb::sqlite();
    let server = Binary::start(&db);
    let doc = served_document(&server.base).await;
    let response = reqwest::get(format!("{}/api/docs", server.base))
        .await
        .expect("GET");
    assert_eq!(response.status(), 200, "GET /api/docs");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.expect("page");
    for path in doc["paths"].as_object().expect("paths").keys() {
        assert!(
            page.contains(path.as_str()),
            "/api/docs does not name {path}"
        );
    }
}

// ---- fuzzing ----

/// Test cases per operation and phase, unless `ZOOMHOOK_FUZZ_EXAMPLES` says otherwise.
const EXAMPLES: &str = "25";
/// The seed, unless `ZOOMHOOK_FUZZ_SEED` says otherwise: a failure reproduces run after run.
const SEED: &str = "1";
/// Longest a schemathesis run may take before the test fails (it takes ~15 s on SQLite).
const FUZZ_LIMIT: Duration = Duration::from_secs(120);

/// The checks run on every answer: no 5xx, a documented status, the documented content type,
/// a body that matches the documented schema.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";

async fn api(http: &reqwest::Client, base: &str, method: &str, path: &str, body: Value) -> Value {
    let request = match method {
        "POST" => http.post(format!("{base}{path}")).json(&body),
        _ => http.get(format!("{base}{path}")),
    };
    let response = request.bearer_auth(ADMIN).send().await.expect("API call");
    let status = response.status();
    let value: Value = response.json().await.unwrap_or_default();
    assert!(status.is_success(), "{method} {path}: {status} {value}");
    value
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .expect("a page")
        .iter()
        .filter_map(|item| item["id"].as_str().map(str::to_owned))
        .collect()
}

/// Real ids of every kind the API's paths take, after seeding.
struct Seeded {
    dictionaries: BTreeMap<&'static str, Vec<String>>,
}

/// A server worth fuzzing: subscriptions to a sink that accepts and to one that fails, every
/// Zoom fixture ingested as Zoom would sign it, a published event, and the deliveries they made.
async fn seed(http: &reqwest::Client, base: &str, sink: &Receiver) -> Seeded {
    let subscribe = |url: String, events: Value, description: &str| json!({"url": url, "events": events, "description": description});
    let ok = api(
        http,
        base,
        "POST",
        "/api/v1/subscriptions",
        subscribe(sink.url("/ok"), json!(["*"]), "accepts"),
    )
    .await;
    let failing = api(
        http,
        base,
        "POST",
        "/api/v1/subscriptions",
        subscribe(sink.url("/fail"), json!(["meeting.*"]), "fails"),
    )
    .await;
    // Only DELETE gets this one, so the others keep theirs for the whole run.
    let doomed = api(
        http,
        base,
        "POST",
        "/api/v1/subscriptions",
        subscribe(
            sink.url("/doomed"),
            json!(["user.*"]),
            "deleted by the fuzzer",
        ),
    )
    .await;

    for (name, body) in common::fixtures() {
        let ts = common::now_secs().to_string();
        let response = http
            .post(format!("{base}/webhooks/zoom"))
            .header("content-type", "application/json")
            .header("x-zm-request-timestamp", &ts)
            .header("x-zm-signature", common::zoom_signature(SECRET, &ts, &body))
            .header("x-zm-request-id", uuid::Uuid::new_v4().to_string())
            .body(body)
            .send()
            .await
            .expect("POST a fixture");
        assert!(
            response.status().is_success(),
            "{name}: {}",
            response.status()
        );
    }
    api(
        http,
        base,
        "POST",
        "/api/v1/events",
        json!({"event": "case.updated", "payload": {"object": {"id": "case-1"}}}),
    )
    .await;

    // Wait for both outcomes, so delivery answers with attempts of each kind are fuzzed.
    let (ok_id, failing_id) = (
        ok["id"].as_str().expect("id").to_owned(),
        failing["id"].as_str().expect("id").to_owned(),
    );
    let mut settled = false;
    for _ in 0..300 {
        let subs = api(http, base, "GET", "/api/v1/subscriptions", Value::Null).await;
        let count = |id: &str, status: &str| {
            subs["data"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["id"] == id)
                .and_then(|s| s["delivery_counts"][status].as_i64())
                .unwrap_or(0)
        };
        if count(&ok_id, "succeeded") > 0 && count(&failing_id, "failed") > 0 {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(settled, "deliveries succeeded and failed within 30 s");

    let mut dictionaries = BTreeMap::new();
    let events = api(http, base, "GET", "/api/v1/events?limit=1000", Value::Null).await;
    dictionaries.insert("event", ids(&events));
    dictionaries.insert("subscription", vec![ok_id.clone(), failing_id.clone()]);
    dictionaries.insert(
        "doomed",
        vec![doomed["id"].as_str().expect("id").to_owned()],
    );
    let mut deliveries = Vec::new();
    for sub in [&ok_id, &failing_id] {
        let page = api(
            http,
            base,
            "GET",
            &format!("/api/v1/subscriptions/{sub}/deliveries"),
            Value::Null,
        )
        .await;
        deliveries.extend(ids(&page));
    }
    dictionaries.insert("delivery", deliveries);
    let meetings = ids(&api(http, base, "GET", "/api/v1/meetings", Value::Null).await);
    let mut instances = Vec::new();
    for meeting in &meetings {
        let path = format!("/api/v1/meetings/{meeting}/instances");
        instances.extend(ids(&api(http, base, "GET", &path, Value::Null).await));
    }
    dictionaries.insert("meeting", meetings);
    dictionaries.insert("instance", instances);
    for (kind, path) in [
        ("recording", "/api/v1/recordings"),
        ("user", "/api/v1/users"),
        ("webinar", "/api/v1/webinars"),
    ] {
        dictionaries.insert(kind, ids(&api(http, base, "GET", path, Value::Null).await));
    }
    for (kind, values) in &dictionaries {
        assert!(!values.is_empty(), "seeding made no {kind}");
    }
    Seeded { dictionaries }
}

/// schemathesis.toml: path parameters take a real id most of the time (so answers with bodies
/// are checked against their schemas), a generated one otherwise (so refusals are checked too).
fn schemathesis_config(seeded: &Seeded) -> String {
    let mut toml = String::new();
    for (name, values) in &seeded.dictionaries {
        let values = serde_json::to_string(values).expect("json");
        toml.push_str(&format!("[dictionaries.{name}]\nvalues = {values}\n\n"));
    }
    let bindings: &[(&str, &str, &str, &str)] = &[
        // (selector key, selector, path parameter, dictionary)
        (
            "include-path-regex",
            r"^/api/v1/events/\{id\}",
            "id",
            "event",
        ),
        (
            "include-path-regex",
            r"^/api/v1/subscriptions/\{id\}",
            "id",
            "subscription",
        ),
        (
            "include-name",
            "DELETE /api/v1/subscriptions/{id}",
            "id",
            "doomed",
        ),
        (
            "include-path-regex",
            r"^/api/v1/deliveries/\{id\}",
            "id",
            "delivery",
        ),
        (
            "include-path-regex",
            r"^/api/v1/meetings/\{id\}",
            "id",
            "meeting",
        ),
        (
            "include-path-regex",
            r"^/api/v1/meeting-instances/\{uuid\}",
            "uuid",
            "instance",
        ),
        (
            "include-path-regex",
            r"^/api/v1/recordings/\{uuid\}",
            "uuid",
            "recording",
        ),
        ("include-path-regex", r"^/api/v1/users/\{id\}", "id", "user"),
        (
            "include-path-regex",
            r"^/api/v1/webinars/\{id\}",
            "id",
            "webinar",
        ),
    ];
    for (key, selector, parameter, dictionary) in bindings {
        toml.push_str(&format!("[[operations]]\n{key} = '{selector}'\n"));
        if dictionary == &"subscription" {
            toml.push_str("exclude-method = 'DELETE'\n");
        }
        toml.push_str(&format!(
            "parameters = {{ \"path.{parameter}\" = {{ dictionary = \"{dictionary}\", probability = 0.7 }} }}\n\n"
        ));
    }
    toml
}

async fn schemathesis_finds_nothing(db: TestDb) {
    // Installed first: the first run downloads from PyPI, and nothing waits on it yet.
    let python = tokio::task::spawn_blocking(python::python)
        .await
        .expect("install the Python tools");
    assert!(python.exists());

    let sink = Receiver::start(Arc::new(|path, _| {
        let status = if path == "/fail" { 500 } else { 200 };
        (status, vec![], Duration::ZERO)
    }))
    .await;
    let server = Binary::start_with(
        &db,
        &[
            ("ZOOMHOOK_DELIVERY_ALLOW_CIDRS", "127.0.0.0/8"),
            ("ZOOMHOOK_DELIVERY_RETRY_SCHEDULE", "100ms"),
        ],
    );
    let http = reqwest::Client::new();
    let seeded = seed(&http, &server.base, &sink).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(&config, schemathesis_config(&seeded)).expect("write schemathesis.toml");
    let seed = std::env::var("ZOOMHOOK_FUZZ_SEED").unwrap_or_else(|_| SEED.into());
    let examples = std::env::var("ZOOMHOOK_FUZZ_EXAMPLES").unwrap_or_else(|_| EXAMPLES.into());
    let mut command = python::schemathesis();
    command
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{}/api/openapi.json", server.base))
        .args(["--header", &format!("Authorization: Bearer {ADMIN}")])
        .args(["--checks", CHECKS])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", &examples, "--seed", &seed])
        .args(["--workers", "1", "--request-timeout", "30"])
        .args(["--generation-database", "none"])
        .args(["--suppress-health-check", "all"])
        .args(["--continue-on-failure", "--no-color"])
        .current_dir(dir.path());
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    let started = std::time::Instant::now();
    let output = tokio::time::timeout(FUZZ_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| {
            panic!("schemathesis ran over {FUZZ_LIMIT:?} (seed {seed}, {examples} examples)")
        })
        .expect("run schemathesis");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found failures on {:?} (seed {seed}; rerun with ZOOMHOOK_FUZZ_SEED={seed}):\n{report}",
        db.backend
    );
    eprintln!(
        "schemathesis on {:?}: {:.0?}, seed {seed}\n{}",
        db.backend,
        started.elapsed(),
        report.lines().rev().take(3).collect::<Vec<_>>().join("\n")
    );
    drop(server);
}

both_backends!(schemathesis_finds_nothing);
