//! The deployment files hold what they claim: the committed example configuration is what the
//! configuration code generates and is accepted by `config check`; the container's environment
//! defaults are a valid configuration; the health probe the container uses tells a ready server
//! from an unready or absent one; the metric names the deployment guide alerts on exist.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::binary::Binary;
use common::{Backend, TestDb};

fn repo_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn read_repo_file(name: &str) -> String {
    std::fs::read_to_string(repo_file(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

/// The real binary with a clean environment (no ZOOMHOOK_* or ZOOM_* of the test runner), run in
/// a fresh directory so a default SQLite path cannot touch the repository.
fn zoomhook(args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    Command::new(env!("CARGO_BIN_EXE_zoomhook"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .current_dir(dir.path())
        .output()
        .expect("run zoomhook")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn committed_example_is_what_config_example_prints() {
    let out = zoomhook(&["config", "example"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let committed = read_repo_file("zoomhook.example.toml");
    assert!(
        text(&out.stdout) == committed,
        "zoomhook.example.toml is stale: regenerate it with \
         `cargo run -q -- config example > zoomhook.example.toml`"
    );
}

#[test]
fn example_passes_config_check_as_shipped() {
    let path = repo_file("zoomhook.example.toml");
    let path = path.to_str().expect("utf-8 path");
    let out = zoomhook(&["config", "check", "--config", path], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("configuration OK"), "{stdout}");
    assert!(
        stdout.contains("listen            127.0.0.1:8080"),
        "{stdout}"
    );
}

/// Uncommenting lines is how the example is meant to be used: the lines must be real TOML in the
/// right table.
#[test]
fn uncommented_example_lines_configure_the_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let edited: String = read_repo_file("zoomhook.example.toml")
        .lines()
        .map(|line| match line {
            "# listen = \"127.0.0.1:8080\"" => "listen = \"0.0.0.0:8080\"".to_owned(),
            l if l.starts_with("# secret = ")
                || l.starts_with("# previous_secret = ")
                || l.starts_with("# allow_ips = ")
                || l.starts_with("# dedupe_window = ") =>
            {
                l.trim_start_matches("# ").to_owned()
            }
            l => l.to_owned(),
        })
        .map(|l| l + "\n")
        .collect();
    let path = dir.path().join("zoomhook.toml");
    std::fs::write(&path, edited).expect("write config");
    let out = zoomhook(
        &["config", "check", "--config", path.to_str().expect("utf-8")],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("listen            0.0.0.0:8080"),
        "{stdout}"
    );
    assert!(
        stdout.contains("signature (2 secrets, rotation), 2 allowed networks"),
        "{stdout}"
    );
    assert!(stdout.contains("dedupe window     7days"), "{stdout}");
}

/// `ENV NAME=value` pairs of the Dockerfile's final stage.
fn dockerfile_env() -> Vec<(String, String)> {
    let dockerfile = read_repo_file("Dockerfile");
    let runtime = dockerfile
        .rsplit_once("\nFROM ")
        .map(|(_, last)| last.to_owned())
        .expect("a multi-stage Dockerfile");
    runtime
        .lines()
        .filter_map(|l| l.strip_prefix("ENV "))
        .flat_map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|pair| {
            let (k, v) = pair.trim_end_matches('\\').split_once('=')?;
            Some((k.to_owned(), v.trim_matches('"').to_owned()))
        })
        .collect()
}

#[test]
fn container_defaults_are_a_valid_configuration_listening_on_all_interfaces() {
    let env = dockerfile_env();
    assert!(
        env.iter().any(|(k, _)| k == "ZOOMHOOK_DATABASE_URL"),
        "{env:?}"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    // The image's data directory does not exist here; point the database at a temporary one
    // with the same file name.
    let env: Vec<(String, String)> = env
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "ZOOMHOOK_DATABASE_URL" => {
                let file = v.rsplit('/').next().unwrap_or("zoomhook.db").to_owned();
                (k, format!("sqlite://{}", dir.path().join(file).display()))
            }
            _ => (k, v),
        })
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = zoomhook(&["config", "check"], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("listen            0.0.0.0:8080"),
        "{}",
        text(&out.stdout)
    );
}

fn health_of_running_server(backend: Backend) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let db = runtime.block_on(TestDb::new(backend));
    let server = Binary::start(&db);
    let readyz = format!("{}/readyz", server.base);
    let out = zoomhook(&["health", "--url", &readyz], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("ready: "),
        "{}",
        text(&out.stdout)
    );
    // Without --url the probe asks where the configuration says the server listens, as the
    // container's HEALTHCHECK does.
    let out = zoomhook(&["health"], &[("ZOOMHOOK_LISTEN", &server.addr)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    drop(server);
    drop(db);
}

#[test]
fn health_passes_for_a_ready_server_on_sqlite() {
    health_of_running_server(Backend::Sqlite);
}

#[test]
fn health_passes_for_a_ready_server_on_postgres() {
    health_of_running_server(Backend::Postgres);
}

#[test]
fn health_fails_when_nothing_listens() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let out = zoomhook(&["health", "--listen", &addr.to_string()], &[]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("not ready: cannot reach"), "{stderr}");
}

/// A server that answers `/readyz` with 503 (its store unreachable) is unhealthy, and the probe
/// says why.
#[test]
fn health_fails_on_an_unavailable_answer_and_shows_its_detail() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let answer = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().expect("accept");
        let mut request = [0u8; 1024];
        let _ = socket.read(&mut request);
        let body = r#"{"status":"unavailable","error":"store_unreachable","detail":"the store does not answer"}"#;
        let _ = write!(
            socket,
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
    });
    let out = zoomhook(&["health", "--url", &format!("http://{addr}/readyz")], &[]);
    answer.join().expect("answering thread");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("503"), "{stderr}");
    assert!(stderr.contains("the store does not answer"), "{stderr}");
}

#[test]
fn health_refuses_hostile_urls_with_a_clear_error() {
    let long = format!("http://{}/", "a".repeat(70_000));
    for url in [
        "http://exa\u{1}mple/",
        "http://a\nb/",
        "ftp://127.0.0.1/",
        "🦀://x",
        long.as_str(),
    ] {
        let out = zoomhook(&["health", "--url", url, "--timeout", "2s"], &[]);
        assert!(!out.status.success(), "{url:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("not an http:// or https:// URL") || stderr.contains("not ready"),
            "{stderr}"
        );
    }
}

/// The text of every `.rs` file under `dir`.
fn rust_sources(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir)
        .expect("read src/")
        .map_while(Result::ok)
    {
        let path = entry.path();
        if path.is_dir() {
            text.push_str(&rust_sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            text.push_str(&std::fs::read_to_string(&path).expect("read a source file"));
        }
    }
    text
}

/// Every metric the deployment guide alerts on is one the server records (by the name its
/// `metrics::counter!`/`gauge!`/`histogram!` call spells).
#[test]
fn metrics_named_in_the_deployment_guide_exist() {
    let guide = read_repo_file("docs/deploy.md");
    let (_, alerts) = guide
        .split_once("### Metrics worth alerting on")
        .expect("docs/deploy.md has a section on the metrics worth alerting on");
    let recorded = rust_sources(&repo_file("src"));
    let mut named = 0;
    for word in alerts.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        let Some(rest) = word.strip_prefix("zoomhook_") else {
            continue;
        };
        if rest.is_empty() {
            continue;
        }
        let metric = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| word.strip_suffix(suffix))
            .unwrap_or(word);
        assert!(
            recorded.contains(&format!("\"{metric}\"")),
            "docs/deploy.md alerts on {word}, which no metrics:: macro in src/ records"
        );
        named += 1;
    }
    assert!(named >= 5, "the guide names the metrics worth alerting on");
}
