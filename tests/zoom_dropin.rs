//! zoomhook as a drop-in in front of existing Zoom consumers: a `zoom`-scheme subscription signs
//! with the consumer's own Zoom secret token (`"secret"`, `--secret`, `--secret-file`), and the
//! `compact` body format sends what `JSON.stringify(JSON.parse(body))` writes, so consumers that
//! verify over that (Zoom's `@zoom/rivet`, Zoom's sample code) accept every event.
//!
//! The expected values come from outside zoomhook: signatures from an HMAC computed here
//! (`common::zoom_signature`), the compact form from a real `node`, acceptance from
//! `@zoom/rivet`'s own `HttpReceiver` installed from npm.

mod common;
#[path = "support/node.rs"]
mod node;

use std::process::Output;

use common::delivery::*;
use common::receiver::{Received, Receiver};
use common::*;
use serde_json::{Value, json};

/// Runs `zoomhook <args>` (the real binary) against `server`, through `ZOOMHOOK_URL`.
async fn cli(server: &TestServer, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_zoomhook"));
    command.args(args).env("ZOOMHOOK_LOG", "warn");
    for (key, _) in std::env::vars() {
        if key.starts_with("ZOOMHOOK_") || key.starts_with("ZOOM_") {
            command.env_remove(key);
        }
    }
    command
        .env("ZOOMHOOK_URL", &server.base)
        .env("ZOOMHOOK_TOKEN", ADMIN);
    let output = command.output().await.expect("run zoomhook");
    assert!(
        output.status.success(),
        "zoomhook {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The id `subs add` printed (`created sub_…`).
fn created_id(output: &Output) -> String {
    let out = stdout(output);
    out.split_whitespace()
        .nth(1)
        .filter(|id| id.starts_with("sub_"))
        .unwrap_or_else(|| panic!("subs add printed no id: {out}"))
        .to_owned()
}

/// Every fixture Zoom would deliver as an event (the URL-validation challenge is answered, not
/// fanned out).
fn fixture_events() -> Vec<Vec<u8>> {
    fixtures()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("endpoint.url_validation"))
        .map(|(_, body)| body)
        .collect()
}

async fn send_all(server: &TestServer, bodies: &[Vec<u8>]) {
    for body in bodies {
        let response = server.send(body).await;
        assert!(
            response.status().is_success(),
            "{}: {}",
            response.status(),
            String::from_utf8_lossy(body)
        );
    }
}

/// Whether `r` carries a valid Zoom signature made with `token`, computed here independently.
fn signed_with(r: &Received, token: &str) -> bool {
    r.header("x-zm-signature") == zoom_signature(token, r.header("x-zm-request-timestamp"), &r.body)
}

const TOKEN_API: &str = "aPiS3cretT0ken_zoom-1";
const TOKEN_FLAG: &str = "fLagS3cretT0ken_zoom-2";
const TOKEN_FILE: &str = "fIleS3cretT0ken_zoom-3";
const TOKEN_NEXT: &str = "nExtS3cretT0ken_zoom-4";

both_backends!(an_existing_zoom_consumer_verifies_every_delivery_with_its_old_secret_token);

/// The consumer keeps verifying with the secret token it had from Zoom, unchanged, whichever way
/// the subscription was given it; the bodies are Zoom's, byte for byte.
async fn an_existing_zoom_consumer_verifies_every_delivery_with_its_old_secret_token(db: TestDb) {
    let receiver = Receiver::ok().await;
    let server = TestServer::start(delivery_config(&db, &[])).await;
    let sub = subscribe(
        &server,
        json!({"url": receiver.url("/api"), "events": "*", "scheme": "zoom", "secret": TOKEN_API}),
    )
    .await;
    assert!(
        sub["secret"].is_null(),
        "a given secret is not echoed: {sub}"
    );
    assert_eq!(sub["body_format"], "raw", "{sub}");

    let flag = cli(
        &server,
        &[
            "subs",
            "add",
            "--url",
            &receiver.url("/flag"),
            "--events",
            "*",
            "--scheme",
            "zoom",
            "--secret",
            TOKEN_FLAG,
        ],
    )
    .await;
    assert!(!stdout(&flag).contains(TOKEN_FLAG), "{}", stdout(&flag));
    let files = tempfile::tempdir().expect("tempdir");
    let token_file = files.path().join("zoom-secret-token");
    std::fs::write(&token_file, format!("{TOKEN_FILE}\n")).expect("write the token file");
    let from_file = cli(
        &server,
        &[
            "subs",
            "add",
            "--url",
            &receiver.url("/file"),
            "--events",
            "*",
            "--scheme",
            "zoom",
            "--secret-file",
            token_file.to_str().expect("utf-8 path"),
        ],
    )
    .await;
    let file_sub = created_id(&from_file);
    assert!(
        stdout(&from_file).contains("the one you gave"),
        "{}",
        stdout(&from_file)
    );

    let events = fixture_events();
    send_all(&server, &events).await;
    for (path, token) in [
        ("/api", TOKEN_API),
        ("/flag", TOKEN_FLAG),
        ("/file", TOKEN_FILE),
    ] {
        let got = receiver.wait_for(path, events.len()).await;
        assert_eq!(got.len(), events.len(), "{path}: one delivery per event");
        for r in &got {
            assert!(
                signed_with(r, token),
                "{path}: the consumer's own token verifies {}",
                String::from_utf8_lossy(&r.body)
            );
            assert!(
                events.contains(&r.body),
                "{path}: the body is Zoom's, verbatim"
            );
        }
    }

    // The consumer moves to a new Zoom token: rotate to it, switching at once.
    let next_file = files.path().join("next-token");
    std::fs::write(&next_file, format!("{TOKEN_NEXT}\r\n")).expect("write the token file");
    let rotated = cli(
        &server,
        &[
            "subs",
            "rotate-secret",
            &file_sub,
            "--overlap",
            "0s",
            "--secret-file",
            next_file.to_str().expect("utf-8 path"),
        ],
    )
    .await;
    assert!(
        !stdout(&rotated).contains(TOKEN_NEXT),
        "{}",
        stdout(&rotated)
    );
    let later = br#"{"event": "meeting.started", "event_ts": 1900000000000, "payload": {"account_id": "acc", "object": {"id": "777", "uuid": "u-777"}}}"#;
    send_all(&server, &[later.to_vec()]).await;
    let got = receiver.wait_for("/file", events.len() + 1).await;
    let last = got
        .iter()
        .find(|r| r.body == later)
        .expect("the later event was delivered");
    assert!(
        signed_with(last, TOKEN_NEXT),
        "the new token signs after the rotation"
    );
    assert!(
        !signed_with(last, TOKEN_FILE),
        "the old token no longer does"
    );
    server.stop().await;
}

both_backends!(given_secrets_and_body_formats_are_checked_and_a_refused_one_changes_nothing);

async fn given_secrets_and_body_formats_are_checked_and_a_refused_one_changes_nothing(db: TestDb) {
    let receiver = Receiver::ok().await;
    let server = TestServer::start(delivery_config(&db, &[])).await;
    let url = receiver.url("/checked");
    let long = "t".repeat(10_000);
    let refused: Vec<(Value, &str)> = vec![
        (json!({"scheme": "zoom", "secret": ""}), "secret"),
        (json!({"scheme": "zoom", "secret": "   "}), "secret"),
        (
            json!({"scheme": "zoom", "secret": "tok\u{0}en-NUL"}),
            "secret",
        ),
        (json!({"scheme": "zoom", "secret": long}), "secret"),
        (
            json!({"scheme": "zoom", "secret": "tökén-unicode"}),
            "secret",
        ),
        (
            json!({"scheme": "zoom", "secret": "token-\u{2028}-sep"}),
            "secret",
        ),
        (
            json!({"scheme": "zoom", "secret": "token-newline\n"}),
            "secret",
        ),
        (
            json!({"scheme": "zoom", "secret": "\u{202e}rtl-token"}),
            "secret",
        ),
        // A Zoom token is not a Standard Webhooks key, nor is a whsec_ of 4 bytes.
        (json!({"secret": TOKEN_API}), "secret"),
        (
            json!({"scheme": "standard", "secret": "whsec_c2hvcnQ="}),
            "secret",
        ),
        (
            json!({"kind": "email", "email": {"to": "a@example.com"}, "secret": TOKEN_API}),
            "secret",
        ),
        (
            json!({"scheme": "standard", "body_format": "compact"}),
            "body_format",
        ),
        (json!({"body_format": "compact"}), "body_format"),
        (
            json!({"scheme": "zoom", "body_format": "pretty"}),
            "body_format",
        ),
    ];
    for (fields, field) in refused {
        let mut body = json!({"url": url, "events": "*"});
        for (k, v) in fields.as_object().expect("object") {
            body[k] = v.clone();
        }
        let (status, error) = post_json(&server, "/api/v1/subscriptions", body.clone()).await;
        assert_eq!(status, 400, "{body}: {error}");
        let detail = error["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(&format!("`{field}`")), "{body}: {detail}");
        if let Some(secret) = fields["secret"].as_str().filter(|s| s.trim().len() > 3) {
            assert!(
                !error.to_string().contains(secret),
                "the answer echoes the secret: {error}"
            );
        }
    }
    let list = server.api("/api/v1/subscriptions").await;
    assert_eq!(
        list["data"].as_array().map(Vec::len),
        Some(0),
        "nothing was created: {list}"
    );

    // A good one, then updates that must be refused without changing it.
    let sub = subscribe(
        &server,
        json!({"url": url, "events": "*", "scheme": "zoom", "secret": TOKEN_API, "body_format": "compact"}),
    )
    .await;
    let path = format!("/api/v1/subscriptions/{}", sub["id"].as_str().expect("id"));
    for (patch, field) in [
        (json!({"secret": TOKEN_NEXT}), "secret"),
        (
            json!({"rotate_secret": true, "secret": "two words"}),
            "secret",
        ),
        (json!({"scheme": "standard"}), "secret"),
        (json!({"body_format": "minified"}), "body_format"),
    ] {
        let (status, error) = patch_json(&server, &path, patch.clone()).await;
        assert_eq!(status, 400, "{patch}: {error}");
        assert!(
            error["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(&format!("`{field}`")),
            "{patch}: {error}"
        );
    }
    let after = server.api(&path).await;
    assert_eq!(
        (
            &after["scheme"],
            &after["body_format"],
            &after["updated_at"]
        ),
        (&sub["scheme"], &sub["body_format"], &sub["updated_at"]),
        "unchanged: {after}"
    );

    // A Standard Webhooks consumer keeps its existing whsec_ secret too (as Svix allows).
    const SVIX_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let standard = subscribe(
        &server,
        json!({"url": receiver.url("/standard"), "events": "*", "secret": SVIX_SECRET}),
    )
    .await;
    assert!(standard["secret"].is_null(), "{standard}");

    let spaced = fixture("meeting.started.json");
    send_all(&server, std::slice::from_ref(&spaced)).await;
    let zoom = receiver.wait_for("/checked", 1).await;
    assert!(
        signed_with(&zoom[0], TOKEN_API),
        "still signed with the consumer's token"
    );
    assert_ne!(zoom[0].body, spaced, "still compact");
    let std_got = receiver.wait_for("/standard", 1).await;
    let r = &std_got[0];
    assert!(verify_standard(
        SVIX_SECRET,
        r.header("webhook-id"),
        r.header("webhook-timestamp"),
        &r.body,
        r.header("webhook-signature")
    ));
    assert_eq!(r.body, spaced, "standard deliveries carry the raw body");
    server.stop().await;
}

/// Webhook bodies that are not in the compact form in every way Zoom's (or a publisher's) JSON
/// can differ from it, each a distinct event (`{n}` is replaced by a number of its own).
fn awkward_events() -> Vec<Vec<u8>> {
    let nested = (0..50).fold(String::from("\"core\""), |inner, i| {
        if i % 2 == 0 {
            format!("[ {inner} , {i} ]")
        } else {
            format!("{{ \"k{i}\" : {inner} }}")
        }
    });
    let templates = [
        // Spaces and newlines, as most JSON encoders write it.
        "{\n  \"event\" : \"meeting.started\",\n  \"event_ts\" : {n},\n  \"payload\" : {\r\n\t\"account_id\" : \"acc\", \"object\" : { \"id\" : \"{n}\", \"topic\" : \"Team sync\" } }\n}\n",
        // Escapes JSON.stringify writes differently, or not at all.
        r#"{"event":"meeting.updated","event_ts":{n},"payload":{"account_id":"acc","object":{"id":"{n}","topic":"a\/b \"q\" \u00e9\u00E9 \u0041 tab\there \u0001\u001F\u007f back\\slash \b\f\n\r"}}}"#,
        // Raw Unicode, a raw and an escaped U+2028/2029, an escaped surrogate pair.
        "{\"event\":\"meeting.created\",\"event_ts\":{n},\"payload\":{\"account_id\":\"acc\",\"object\":{\"id\":\"{n}\",\"topic\":\"Réunion 会议 😀 \u{2028}\u{2029} \\u2028\\u2029 \\ud83d\\ude00 \\uD83D\\uDE00 \u{feff}\"}}}",
        // Duplicate keys (the last wins, at the first position) and array-index keys.
        r#"{"event":"meeting.ended","event_ts":{n},"payload":{"account_id":"acc","object":{"id":"{n}","topic":"first","b":1,"topic":"second","a":2,"10":"ten","2":"two","01":"zero-one"}}}"#,
        // Numbers: exponents, -0, 1.0, integers past 2^53, the extremes of a double.
        r#"{"event":"recording.completed","event_ts":{n},"payload":{"account_id":"acc","object":{"id":"{n}","one":1.0,"neg0":-0,"negzero":-0.0,"e":1E3,"e21":1e21,"e20":1e+20,"small":1.5e-7,"micro":0.000001,"big":12345678901234567890,"meeting_id":85746065432123456789,"max":1.7976931348623157e308,"min":5e-324,"pi":3.14159265358979323846264338327950288,"cents":0.30000000000000004,"list":[1.10,-2.50E-3,100,1e2]}}}"#,
        // Deep nesting (within what the receiver accepts).
        "{\"event\":\"meeting.deleted\",\"event_ts\":{n},\"payload\":{\"account_id\":\"acc\",\"object\":{\"id\":\"{n}\",\"deep\":NESTED}}}",
        // Already compact: must come out unchanged.
        r#"{"event":"user.created","event_ts":{n},"payload":{"account_id":"acc","object":{"id":"{n}","email":"a@example.com"}}}"#,
    ];
    templates
        .iter()
        .enumerate()
        .map(|(i, t)| {
            t.replace("{n}", &(1_800_000_000_000u64 + i as u64).to_string())
                .replace("NESTED", &nested)
                .into_bytes()
        })
        .collect()
}

both_backends!(compact_deliveries_are_what_nodes_json_stringify_writes_and_the_setting_persists);

/// Every delivery of a compact subscription is byte for byte what Node's
/// `JSON.stringify(JSON.parse(original))` gives, and carries a signature over exactly those bytes.
async fn compact_deliveries_are_what_nodes_json_stringify_writes_and_the_setting_persists(
    db: TestDb,
) {
    let receiver = Receiver::ok().await;
    let config = delivery_config(&db, &[]);
    let server = TestServer::start(config.clone()).await;
    let sub = subscribe(
        &server,
        json!({"url": receiver.url("/compact"), "events": "*", "scheme": "zoom", "secret": TOKEN_API, "body_format": "compact"}),
    )
    .await;
    let mut originals = fixture_events();
    originals.extend(awkward_events());
    let expected = node::node_compact(&originals);
    send_all(&server, &originals).await;
    let got = receiver.wait_for("/compact", originals.len()).await;
    assert_eq!(got.len(), originals.len());
    for (original, expected) in originals.iter().zip(&expected) {
        let expected = expected
            .as_ref()
            .expect("node parses every body the receiver accepted");
        let r = got.iter().find(|r| &r.body == expected).unwrap_or_else(|| {
            panic!(
                "no delivery is Node's compact form of {}\n  node: {}",
                String::from_utf8_lossy(original),
                String::from_utf8_lossy(expected)
            )
        });
        assert!(signed_with(r, TOKEN_API), "signed over the compact bytes");
    }
    server.stop().await;

    // The setting is in the store: a new server on the same database still sends compact.
    let server = TestServer::start(config).await;
    let shown = server
        .api(&format!(
            "/api/v1/subscriptions/{}",
            sub["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(shown["body_format"], "compact", "{shown}");
    let after = b"{ \"event\": \"meeting.started\", \"event_ts\": 1900000000001, \"payload\": { \"account_id\": \"acc\", \"object\": { \"id\": \"9\" } } }".to_vec();
    send_all(&server, std::slice::from_ref(&after)).await;
    let got = receiver.wait_for("/compact", originals.len() + 1).await;
    let node_form = node::node_compact(std::slice::from_ref(&after))
        .remove(0)
        .expect("node parses it");
    assert!(
        got.iter().any(|r| r.body == node_form),
        "compact after a restart"
    );
    server.stop().await;
}

/// A tiny deterministic generator, so a failure names a reproducible input.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

/// Many number spellings: integers and fractions of up to 25 digits, exponents out to both
/// ends of a double and past them.
fn generated_numbers(rng: &mut Lcg, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let mut s = String::new();
            if rng.next(3) == 0 {
                s.push('-');
            }
            let int_digits = 1 + rng.next(25);
            s.push(char::from(b'1' + rng.next(9) as u8));
            for _ in 1..int_digits {
                s.push(char::from(b'0' + rng.next(10) as u8));
            }
            if rng.next(2) == 0 {
                s.push('.');
                for _ in 0..1 + rng.next(20) {
                    s.push(char::from(b'0' + rng.next(10) as u8));
                }
            }
            if rng.next(2) == 0 {
                s.push(if rng.next(2) == 0 { 'e' } else { 'E' });
                match rng.next(3) {
                    0 => s.push('-'),
                    1 => s.push('+'),
                    _ => {}
                }
                s.push_str(&rng.next(340).to_string());
            }
            s
        })
        .collect()
}

/// Strings of escapes and raw characters, with surrogates (paired, lone, reversed) among them.
fn generated_strings(rng: &mut Lcg, n: usize) -> Vec<String> {
    const RAW: &[&str] = &[
        "a", "é", "会", "😀", "\u{2028}", "\u{2029}", "/", "\u{7f}", "\u{feff}", " ", "<",
        "\u{fffd}",
    ];
    (0..n)
        .map(|_| {
            let mut s = String::from("\"");
            for _ in 0..rng.next(12) {
                match rng.next(6) {
                    0 => s.push_str(RAW[rng.next(RAW.len() as u64) as usize]),
                    1 => s.push_str(&format!("\\u{:04x}", 0xd800 + rng.next(0x800))),
                    2 => s.push_str(&format!("\\u{:04X}", rng.next(0x10000))),
                    3 => s.push_str(&format!("\\u{:04x}", rng.next(0x20))),
                    4 => s.push_str(
                        ["\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t"]
                            [rng.next(8) as usize],
                    ),
                    _ => s.push_str("\\ud83d\\ude00"),
                }
            }
            s.push('"');
            s
        })
        .collect()
}

/// The compaction itself over a wide corpus (also what the receiver refuses, such as lone
/// surrogates and 1e400, which a publisher could still hand to a future path), checked against
/// a running Node byte for byte, refusals included.
#[test]
fn the_compact_form_is_byte_for_byte_what_node_writes() {
    let mut rng = Lcg(12);
    let mut corpus: Vec<String> = [
        " {\"a\" : 1 , \"b\":[ true,false , null ] } ",
        "\t\r\n[]\n",
        "{}",
        "\"\"",
        "0",
        "-0",
        "-0.0e-0",
        "1.0",
        "1e400",
        "-1e400",
        "1e-400",
        "123456789012345678901234567890",
        "12345678901234567890",
        "9007199254740993",
        "0.1",
        "100e-2",
        "1e21",
        "999999999999999999999",
        "1e-7",
        "0.000001",
        "2.2250738585072014e-308",
        "4.9406564584124654e-324",
        "1.7976931348623159e308",
        r#"{"a":1,"a":2}"#,
        r#"{"a":{"x":1},"b":2,"a":[3]}"#,
        r#"{"b":0,"4294967294":1,"4294967295":2,"1":3,"0":4,"-1":5,"1.5":6,"01":7,"\u0032":8}"#,
        r#"{"__proto__":{"x":1},"constructor":2}"#,
        r#""\ud800""#,
        r#""\udc00\ud800""#,
        r#""\ud83d\ude00""#,
        r#""\uD83D\uDE00""#,
        r#""\ud83d 😀""#,
        "\"\u{2028}\u{2029}\\u2028\"",
        r#""\/\"\\\b\f\n\r\t\u0000\u001f\u0020\u007f""#,
        // What JSON.parse refuses must be refused here too.
        "",
        " ",
        "{",
        "[1,]",
        "{\"a\":1,}",
        "01",
        "1.",
        ".5",
        "+1",
        "-",
        "1e",
        "\"\t\"",
        "\"\\x\"",
        "\"\\u12\"",
        "nul",
        "\u{feff}{}",
        "{} {}",
        "NaN",
        "Infinity",
        "'a'",
        "{a:1}",
        "[1 2]",
        "\u{a0}1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    corpus.push("[".repeat(500) + &"]".repeat(500));
    corpus.push("{\"a\":".repeat(300) + "1" + &"}".repeat(300));
    corpus.extend(generated_numbers(&mut rng, 3000));
    corpus.extend(generated_strings(&mut rng, 1000));
    let objects: Vec<String> = generated_strings(&mut rng, 300)
        .chunks(3)
        .map(|keys| {
            format!(
                "{{ {} : 1 , {} : [ 2 ] , {} : {{}} , {} : 4 }}",
                keys[0], keys[1], keys[2], keys[0]
            )
        })
        .collect();
    corpus.extend(objects);

    let mut bodies: Vec<Vec<u8>> = corpus.into_iter().map(String::into_bytes).collect();
    // Invalid UTF-8 is decoded as Node decodes a request body.
    bodies.push(b"\"a\xffb\xc3\"".to_vec());
    bodies.push(b"{\"k\xe2\x80\":\"\xf0\x9f\x98\"}".to_vec());
    let node = node::node_compact(&bodies);
    let mut mismatches = Vec::new();
    for (body, expected) in bodies.iter().zip(&node) {
        let ours = zoomhook::deliver::compact_json::compact(body).ok();
        if &ours != expected {
            mismatches.push(format!(
                "{:?}\n  node: {:?}\n  ours: {:?}",
                String::from_utf8_lossy(body),
                expected
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned()),
                ours.as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} differ from Node:\n{}",
        mismatches.len(),
        bodies.len(),
        mismatches[..mismatches.len().min(10)].join("\n")
    );
}

both_backends!(zoom_rivets_own_receiver_verifies_every_compact_delivery);

/// `@zoom/rivet`'s `HttpReceiver` — Zoom's Node SDK, verifying over `JSON.stringify(JSON.parse(body))`
/// — accepts every delivery of a compact subscription. The same events sent raw to a second
/// rivet receiver are refused, which is why the option exists (and shows this test can fail).
async fn zoom_rivets_own_receiver_verifies_every_compact_delivery(db: TestDb) {
    let rivet = node::RivetReceivers::start(TOKEN_API, &["compact", "raw"]);
    let server = TestServer::start(delivery_config(&db, &[])).await;
    let compact = subscribe(
        &server,
        json!({"url": rivet.url("compact"), "events": "*", "scheme": "zoom", "secret": TOKEN_API, "body_format": "compact"}),
    )
    .await;
    let raw = subscribe(
        &server,
        json!({"url": rivet.url("raw"), "events": "*", "scheme": "zoom", "secret": TOKEN_API}),
    )
    .await;
    let mut events = fixture_events();
    events.extend(awkward_events());
    send_all(&server, &events).await;

    let id = compact["id"].as_str().expect("id");
    let counts = eventually("every compact delivery to succeed", || async {
        let s = server.api(&format!("/api/v1/subscriptions/{id}")).await;
        let d = &s["delivery_counts"];
        (d["succeeded"].as_u64()? + d["failed"].as_u64()? == events.len() as u64).then(|| d.clone())
    })
    .await;
    assert_eq!(
        counts["succeeded"],
        events.len(),
        "rivet answered 200 to each: {counts}"
    );
    let accepted = rivet.accepted("compact");
    assert_eq!(
        accepted.len(),
        events.len(),
        "rivet handed every event to the app"
    );
    for original in &events {
        let parsed: Value = serde_json::from_slice(original).expect("json");
        assert!(
            accepted
                .iter()
                .any(|a| a["body"]["event_ts"] == parsed["event_ts"]
                    && a["body"]["event"] == parsed["event"]),
            "rivet did not accept {}",
            String::from_utf8_lossy(original)
        );
    }

    // Raw: rivet refuses each body that is not already compact (every one but one here).
    let id = raw["id"].as_str().expect("id");
    eventually("every raw delivery to end", || async {
        let s = server.api(&format!("/api/v1/subscriptions/{id}")).await;
        let d = &s["delivery_counts"];
        (d["succeeded"].as_u64()? + d["failed"].as_u64()? == events.len() as u64).then_some(())
    })
    .await;
    let already_compact: Vec<&Vec<u8>> = events
        .iter()
        .filter(|e| zoomhook::deliver::compact_json::compact(e).ok().as_ref() == Some(*e))
        .collect();
    assert!(
        already_compact.len() * 2 < events.len(),
        "most of the corpus is not compact"
    );
    assert_eq!(
        rivet.accepted("raw").len(),
        already_compact.len(),
        "raw bodies fail rivet's check unless they happen to be compact"
    );
    server.stop().await;
}
