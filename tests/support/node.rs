//! Node.js as the reference: `JSON.stringify(JSON.parse(body))` computed by a real `node`, and
//! Zoom's own Node SDK `@zoom/rivet` installed from npm at a pinned version.
//!
//! Nothing here is skipped when Node or npm is missing: the tests that use it exist to compare
//! zoomhook with the consumers' real code, so without it they fail and say what to install.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The `@zoom/rivet` version the drop-in was checked against (the one issue 12 reports on).
pub const RIVET_VERSION: &str = "0.4.0";

/// Runs `node -e script` in `dir` with `input` on stdin; returns stdout. Panics with a clear
/// message when Node is not installed or the script fails.
pub fn run_node(dir: &Path, script: &str, input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("node")
        .arg("-e")
        .arg(script)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("this test compares with Node.js and needs `node` on PATH (install nodejs): {e}")
        });
    let mut stdin = child.stdin.take().expect("node stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output().expect("wait for node");
    let _ = writer.join();
    assert!(
        output.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// What Node makes of each body: `Some(JSON.stringify(JSON.parse(body)))` as UTF-8 bytes, or
/// `None` where `JSON.parse` throws. Bodies are decoded as `@zoom/rivet` decodes a request
/// (`Buffer.toString()`), and everything crosses the pipe as hex so no byte is reinterpreted.
pub fn node_compact(bodies: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
    const SCRIPT: &str = r#"
let input = "";
process.stdin.setEncoding("latin1");
process.stdin.on("data", (d) => (input += d));
process.stdin.on("end", () => {
  const out = [];
  for (const line of input.split("\n")) {
    if (line === "") continue;
    const text = Buffer.from(line.slice(1), "hex").toString();
    try {
      out.push(Buffer.from(JSON.stringify(JSON.parse(text)), "utf8").toString("hex"));
    } catch (e) {
      if (!(e instanceof SyntaxError)) throw e;
      out.push("error");
    }
  }
  process.stdout.write(out.join("\n") + "\n");
});
"#;
    // Each line starts with `x`, so an empty body is an empty hex string, not a missing line.
    let input: String = bodies
        .iter()
        .map(|b| format!("x{}\n", hex::encode(b)))
        .collect();
    let output = run_node(Path::new("."), SCRIPT, input.as_bytes());
    let lines: Vec<Option<Vec<u8>>> = String::from_utf8_lossy(&output)
        .lines()
        .map(|l| (l != "error").then(|| hex::decode(l).expect("node wrote hex")))
        .collect();
    assert_eq!(lines.len(), bodies.len(), "node answered every body");
    lines
}

/// A directory with `@zoom/rivet` installed (`node_modules/@zoom/rivet`), cached under the
/// target directory so the suite downloads it once. Installed into a private directory first
/// and renamed into place, so tests running at the same time never see half an install.
pub fn rivet_dir() -> PathBuf {
    let cache =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("zoom-rivet-{RIVET_VERSION}"));
    if rivet_installed(&cache) {
        return cache;
    }
    let staging = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "zoom-rivet-{RIVET_VERSION}.{}.{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    std::fs::create_dir_all(&staging).expect("create the npm staging directory");
    std::fs::write(
        staging.join("package.json"),
        r#"{"name": "zoomhook-rivet-check", "private": true}"#,
    )
    .expect("write package.json");
    let output = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--no-update-notifier"])
        .arg(format!("@zoom/rivet@{RIVET_VERSION}"))
        .current_dir(&staging)
        .output()
        .unwrap_or_else(|e| {
            panic!("this test runs @zoom/rivet and needs `npm` on PATH (install npm): {e}")
        });
    assert!(
        output.status.success(),
        "npm install @zoom/rivet@{RIVET_VERSION} failed (is the npm registry reachable?): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        rivet_installed(&staging),
        "npm installed another rivet version"
    );
    if std::fs::rename(&staging, &cache).is_err() {
        // Another test finished its install first; use that one.
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(
        rivet_installed(&cache),
        "@zoom/rivet is in {}",
        cache.display()
    );
    cache
}

fn rivet_installed(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("node_modules/@zoom/rivet/package.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .is_some_and(|p| p["version"] == RIVET_VERSION)
}

/// `@zoom/rivet`'s own `HttpReceiver` (the receiver its product clients start by default), one
/// per name, each on an ephemeral port of 127.0.0.1 at rivet's default path `/zoom/events`,
/// verifying with `secret`. Every event rivet accepts is printed as one JSON line
/// `{"receiver", "event", "body"}`, where `body` is the payload rivet hands to the application.
pub struct RivetReceivers {
    child: std::process::Child,
    /// `(name, http://127.0.0.1:PORT/zoom/events)`
    pub urls: Vec<(String, String)>,
    accepted: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl RivetReceivers {
    pub fn start(secret: &str, names: &[&str]) -> RivetReceivers {
        use std::io::{BufRead, BufReader};
        const SCRIPT: &str = r#"
const { HttpReceiver, LogLevel } = require("@zoom/rivet/meetings");
const [secret, ...names] = process.argv.slice(1);
(async () => {
  for (const name of names) {
    const receiver = new HttpReceiver({ webhooksSecretToken: secret, logLevel: LogLevel.ERROR });
    receiver.init({
      eventEmitter: {
        emit: async (event, payload) => {
          process.stdout.write(JSON.stringify({ receiver: name, event, body: payload }) + "\n");
        },
      },
    });
    const server = await receiver.start(0);
    process.stdout.write(JSON.stringify({ listening: name, port: server.address().port }) + "\n");
  }
})().catch((e) => { console.error(e); process.exit(1); });
"#;
        let dir = rivet_dir();
        let mut child = Command::new("node")
            .arg("-e")
            .arg(SCRIPT)
            .arg(secret)
            .args(names)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("this test runs @zoom/rivet and needs `node` on PATH: {e}"));
        let stdout = child.stdout.take().expect("node stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = std::sync::Arc::clone(&accepted);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if v.get("listening").is_some() {
                    let _ = tx.send(v);
                } else {
                    log.lock().expect("log").push(v);
                }
            }
        });
        let mut urls = Vec::new();
        for _ in names {
            let v = rx
                .recv_timeout(std::time::Duration::from_secs(30))
                .expect("rivet's HttpReceiver started listening");
            urls.push((
                v["listening"].as_str().unwrap_or_default().to_owned(),
                format!("http://127.0.0.1:{}/zoom/events", v["port"]),
            ));
        }
        RivetReceivers {
            child,
            urls,
            accepted,
        }
    }

    pub fn url(&self, name: &str) -> String {
        self.urls
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, u)| u.clone())
            .unwrap_or_else(|| panic!("no rivet receiver {name}"))
    }

    /// The events the receiver `name` verified and handed to the application.
    pub fn accepted(&self, name: &str) -> Vec<serde_json::Value> {
        self.accepted
            .lock()
            .expect("log")
            .iter()
            .filter(|v| v["receiver"] == name)
            .cloned()
            .collect()
    }
}

impl Drop for RivetReceivers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
