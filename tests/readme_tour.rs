//! The README's tour, run as written (issue 12): every command of the fenced `sh` blocks of
//! "## A five-minute tour" is taken from README.md itself — so a README change that breaks a step
//! fails here — and run through the real binary, in order, against a fresh server on a port other
//! than the default, reached through `ZOOMHOOK_URL` and `ZOOMHOOK_TOKEN` exactly as the tour sets
//! them. A step fails the test when it exits non-zero or prints an error.
//!
//! How a reader's session is reproduced:
//! - Each command runs with `sh -c` (so quoting, `$ZOOMHOOK_URL`, `>` redirections and `\`
//!   continuations work as in a shell) in a fresh directory, where `tests/` is a link to the
//!   repository's, as in a clone, and `zoomhook` is on `PATH` (the test build stands in for
//!   `cargo build --release`, which is the one command not run).
//! - `export NAME=VALUE` lines set the environment of every later step, `zoomhook serve`
//!   included.
//! - `zoomhook serve` is started by the harness in that directory with `ZOOMHOOK_LISTEN` on a free
//!   port (not 8080), `ZOOMHOOK_DELIVERY_ALLOW_CIDRS=127.0.0.0/8` (the stand-in endpoint below is
//!   local) and `ZOOMHOOK_SMTP_URL` (the email step says it needs one). No admin token is given:
//!   the token is the one serve prints at its first start, as the tour says. The PostgreSQL run
//!   also sets `ZOOMHOOK_DATABASE_URL` for serve and every step (`sync status` reads it).
//! - `zoomhook events tail` runs until it has printed an event sent while it follows, then is
//!   stopped, as a reader would press Ctrl-C.
//!
//! Placeholders are replaced by values the earlier steps produced ([`Session::fill`]):
//!
//! | in the README | replaced by |
//! |---|---|
//! | `http://127.0.0.1:8080` in `export ZOOMHOOK_URL=…` | the address serve really listens on |
//! | `zh_…` | the admin token serve printed at its first start |
//! | `evt_01J…` | the newest event's id, from `zoomhook events list --json` |
//! | `<host_id>` | a meeting's `host_id`, from `zoomhook meetings list --json` |
//! | `sub_01J…` | the id the first `zoomhook subs add` printed (`created sub_…`) |
//! | `msg_01J…` | the first delivery id `zoomhook deliveries list sub_…` prints |
//! | `https://crm.example.com/zoom` | an endpoint of the test that answers 200 ("your endpoint") |
//!
//! A placeholder the table does not know (anything left with `…` or `<…>`), or a step that names
//! the default address instead of `$ZOOMHOOK_URL`, fails the test: the tour must work off the
//! default port.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::receiver::Receiver;
use common::{Backend, TestDb};
use serde_json::Value;

/// The commands of the fenced `sh` blocks of the README section titled `heading`, with `\`
/// continuations joined and comments removed.
fn section_commands(readme: &str, heading: &str) -> Vec<String> {
    let start = readme
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README.md has no section {heading:?}"));
    let rest = &readme[start + heading.len() + 2..];
    let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in section.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_block = !in_block && trimmed == "```sh";
            continue;
        }
        if !in_block {
            continue;
        }
        let code = strip_comment(line);
        match code.trim_end().strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head.trim());
                pending.push(' ');
            }
            None => {
                pending.push_str(code.trim());
                let command = std::mem::take(&mut pending).trim().to_owned();
                if !command.is_empty() {
                    commands.push(command);
                }
            }
        }
    }
    assert!(!in_block, "an unclosed code block in {heading:?}");
    commands
}

/// `line` without a shell comment (a `#` at the start of a word, outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (None, '#') if previous.is_whitespace() => return &line[..i],
            _ => {}
        }
        previous = c;
    }
    line
}

/// Whether `command` holds a `<name>` placeholder (a redirection `<` or `>` alone is not one).
fn has_angle_placeholder(command: &str) -> bool {
    command.split('<').skip(1).any(|rest| {
        rest.split_once('>').is_some_and(|(name, _)| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    })
}

/// A reader's terminal: the environment the tour built up, the directory, and what it produced.
struct Session {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
    /// Values for the placeholders, filled as the steps produce them.
    values: HashMap<&'static str, String>,
    serve: Option<Serve>,
    /// Stands in for `https://crm.example.com/zoom`.
    endpoint: Receiver,
    db: TestDb,
}

/// The `zoomhook serve` the harness started, with its log.
struct Serve {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_zoomhook")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether a step's output shows an error: the CLI's `error:`, a panic, or an API error body
/// (`{"error": …}`, which `curl` prints without failing).
fn shows_error(stdout: &str, stderr: &str) -> bool {
    let lower = stderr.to_lowercase();
    lower.contains("error") || lower.contains("panicked") || stdout.contains("\"error\"")
}

impl Session {
    async fn new(backend: Backend) -> Session {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo_tests = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests");
        std::os::unix::fs::symlink(repo_tests, dir.path().join("tests")).expect("link tests/");
        let bin_dir = Path::new(binary()).parent().expect("binary dir");
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut env = HashMap::from([("PATH".to_owned(), path)]);
        for key in ["HOME", "LANG", "TERM"] {
            if let Ok(value) = std::env::var(key) {
                env.insert(key.to_owned(), value);
            }
        }
        let db = TestDb::new(backend).await;
        if backend == Backend::Postgres {
            env.insert("ZOOMHOOK_DATABASE_URL".into(), db.url.clone());
        }
        Session {
            dir,
            env,
            values: HashMap::new(),
            serve: None,
            endpoint: Receiver::ok().await,
            db,
        }
    }

    /// A process in the session's directory with the session's environment only.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(self.dir.path())
            .env_clear()
            .envs(&self.env);
        command
    }

    /// Runs the real binary with `args` (for the values the placeholders need).
    fn zoomhook(&self, args: &[&str]) -> String {
        let out = self
            .command(binary())
            .args(args)
            .output()
            .expect("run zoomhook");
        assert!(
            out.status.success(),
            "zoomhook {args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// `command` with its placeholders replaced (see the table at the top).
    fn fill(&mut self, command: &str) -> String {
        let mut filled = command.to_owned();
        if let Some(url) = command.strip_prefix("export ZOOMHOOK_URL=") {
            assert_eq!(
                url, "http://127.0.0.1:8080",
                "the tour sets ZOOMHOOK_URL to serve's address"
            );
            filled = format!("export ZOOMHOOK_URL={}", self.value("url"));
        }
        if filled.contains("zh_…") {
            filled = filled.replace("zh_…", &self.value("token"));
        }
        if filled.contains("evt_01J…") {
            let events: Value = serde_json::from_str(&self.zoomhook(&["events", "list", "--json"]))
                .expect("events list --json");
            let id = events[0]["id"].as_str().expect("an event id").to_owned();
            filled = filled.replace("evt_01J…", &id);
        }
        if filled.contains("<host_id>") {
            let meetings: Value =
                serde_json::from_str(&self.zoomhook(&["meetings", "list", "--json"]))
                    .expect("meetings list --json");
            let host = meetings
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|m| m["host_id"].as_str())
                .expect("a meeting with a host")
                .to_owned();
            filled = filled.replace("<host_id>", &host);
        }
        if filled.contains("sub_01J…") {
            filled = filled.replace("sub_01J…", &self.value("sub"));
        }
        if filled.contains("msg_01J…") {
            let listed = self.zoomhook(&["deliveries", "list", &self.value("sub")]);
            let id = listed
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .find(|w| w.starts_with("msg_"))
                .expect("a delivery listed")
                .to_owned();
            filled = filled.replace("msg_01J…", &id);
        }
        filled = filled.replace("https://crm.example.com/zoom", &self.endpoint.url("/zoom"));
        assert!(
            !filled.contains('…') && !has_angle_placeholder(&filled),
            "a placeholder the test does not know: {filled}"
        );
        for default in ["127.0.0.1:8080", "localhost:8080"] {
            assert!(
                !filled.contains(default),
                "{command:?} names the default address; the tour goes through $ZOOMHOOK_URL"
            );
        }
        filled
    }

    fn value(&self, name: &str) -> String {
        self.values
            .get(name)
            .unwrap_or_else(|| panic!("no {name} yet: the tour uses it before a step made it"))
            .clone()
    }

    /// Runs one step of the tour.
    fn step(&mut self, command: &str) {
        if command.starts_with("cargo ") {
            return; // the test build is the binary on PATH
        }
        if command == "zoomhook serve" {
            return self.start_serve();
        }
        let command = self.fill(command);
        if let Some(assignment) = command.strip_prefix("export ") {
            let (name, value) = assignment.split_once('=').expect("export NAME=VALUE");
            self.env.insert(name.to_owned(), value.to_owned());
            return;
        }
        if command == "zoomhook events tail" {
            return self.tail();
        }
        eprintln!("$ {command}");
        let out: Output = self
            .command("sh")
            .args(["-c", &command])
            .output()
            .expect("sh");
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(
            out.status.success() && !shows_error(&stdout, &stderr),
            "README step failed: {command}\nexit: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}\nserve log:\n{}",
            out.status,
            self.serve_log()
        );
        if command.starts_with("zoomhook subs add") && !self.values.contains_key("sub") {
            let id = stdout
                .split_whitespace()
                .find(|w| w.starts_with("sub_"))
                .expect("subs add printed the id");
            self.values.insert("sub", id.to_owned());
        }
    }

    fn serve_log(&self) -> String {
        self.serve
            .as_ref()
            .map(|s| s.lines.lock().expect("log").join("\n"))
            .unwrap_or_default()
    }

    /// `zoomhook serve`, as the tour runs it, on a free port; reads the address and the token.
    fn start_serve(&mut self) {
        let smtp = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let smtp_url = format!("smtp://{}", smtp.local_addr().expect("addr"));
        drop(smtp);
        let mut child = self
            .command(binary())
            .arg("serve")
            .env("ZOOMHOOK_LISTEN", "127.0.0.1:0")
            .env("ZOOMHOOK_DELIVERY_ALLOW_CIDRS", "127.0.0.0/8")
            .env("ZOOMHOOK_SMTP_URL", smtp_url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn zoomhook serve");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log").push(line);
            }
        });
        self.serve = Some(Serve {
            child,
            lines: Arc::clone(&lines),
        });
        let started = Instant::now();
        loop {
            {
                let log = lines.lock().expect("log");
                let token = log
                    .iter()
                    .find_map(|l| l.split_whitespace().find(|w| w.starts_with("zh_")));
                let addr = log.iter().find_map(|l| {
                    l.split("listen=")
                        .nth(1)
                        .and_then(|a| a.split_whitespace().next())
                });
                if let (Some(token), Some(addr)) = (token, addr) {
                    assert!(
                        !addr.ends_with(":8080"),
                        "serve must not use the default port"
                    );
                    self.values.insert("token", token.to_owned());
                    self.values.insert("url", format!("http://{addr}"));
                    return;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "serve printed no token and address:\n{}",
                self.serve_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `zoomhook events tail`: follows until an event sent meanwhile shows up, then Ctrl-C.
    fn tail(&mut self) {
        let mut child = self
            .command(binary())
            .args(["events", "tail"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn events tail");
        let stdout = child.stdout.take().expect("stdout");
        let printed = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&printed);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut all = sink.lock().expect("printed");
                all.push_str(&line);
                all.push('\n');
            }
        });
        std::thread::sleep(Duration::from_millis(1_500));
        self.zoomhook(&["send", "--event", "user.created"]);
        let started = Instant::now();
        while !printed.lock().expect("printed").contains("user.created") {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("events tail ended by itself: {status:?}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "events tail did not print the event sent while it followed"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let out = child.wait_with_output().expect("tail ends on Ctrl-C");
        let stderr = text(&out.stderr);
        assert!(
            !shows_error(&printed.lock().expect("printed"), &stderr),
            "events tail: {stderr}"
        );
    }
}

async fn the_tour_runs_as_written(backend: Backend) {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .expect("README.md");
    let commands = section_commands(&readme, "## A five-minute tour");
    assert!(
        commands.len() >= 25 && commands.iter().any(|c| c == "zoomhook serve"),
        "the tour's commands were not found: {commands:#?}"
    );
    let mut session = Session::new(backend).await;
    let db_name = session.db.url.clone();
    // The steps wait on processes; the endpoint keeps answering on the runtime's other threads.
    tokio::task::block_in_place(|| {
        for command in &commands {
            session.step(command);
        }
    });
    // What the steps claim happened, did: the replay reached the endpoint and wrote its files.
    assert!(
        !session.endpoint.received_at("/zoom").is_empty(),
        "the replay delivered nothing ({db_name})"
    );
    for file in ["events.ndjson", "attendance.csv"] {
        let written = std::fs::read_to_string(session.dir.path().join(file)).expect(file);
        assert!(written.lines().count() >= 2, "{file}: {written}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tour_runs_as_written_on_sqlite() {
    the_tour_runs_as_written(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tour_runs_as_written_on_postgres() {
    the_tour_runs_as_written(Backend::Postgres).await;
}

#[test]
fn placeholders_are_told_from_redirections() {
    assert!(has_angle_placeholder(
        "zoomhook meetings list --host <host_id>"
    ));
    assert!(!has_angle_placeholder(
        "zoomhook events export > events.ndjson"
    ));
    assert!(!has_angle_placeholder("sort < in > out"));
}

#[test]
fn commands_are_read_with_continuations_and_without_comments() {
    let readme = "intro\n## A five-minute tour\n\n```sh\n# a comment\nzoomhook a 'x # y'   # note\nzoomhook b \\\n   --c d\n```\n\n```toml\nx = 1\n```\n## Next\n```sh\nnot this\n```\n";
    assert_eq!(
        section_commands(readme, "## A five-minute tour"),
        ["zoomhook a 'x # y'", "zoomhook b --c d"]
    );
}
