//! The real `zoomhook serve` process, for tests that measure what only a separate process shows
//! honestly (its resident memory) or that need real signals.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{ADMIN, SECRET, TestDb};

/// A running `zoomhook serve`; killed when dropped.
pub struct Binary {
    pub child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// `127.0.0.1:PORT`
    pub addr: String,
}

impl Binary {
    /// Starts the binary on an ephemeral port with the test secret and admin token.
    pub fn start(db: &TestDb) -> Binary {
        Binary::start_with(db, &[])
    }

    /// Starts the binary on an ephemeral port with the test secret and admin token, plus `env`.
    pub fn start_with(db: &TestDb, env: &[(&str, &str)]) -> Binary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_zoomhook"))
            .args(["serve", "--listen", "127.0.0.1:0", "--database", &db.url])
            .envs(env.iter().copied())
            .env("ZOOM_WEBHOOK_SECRET_TOKEN", SECRET)
            .env("ZOOMHOOK_ADMIN_TOKEN", ADMIN)
            .env("ZOOMHOOK_LOG", "warn,zoomhook::server=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn zoomhook");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the log until the end (so the child never blocks on a full pipe).
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(addr) = line.split("listen=").nth(1) {
                    let addr = addr.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(addr.to_owned());
                    sent = true;
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("zoomhook printed its listen address");
        Binary {
            child,
            base: format!("http://{addr}"),
            addr,
        }
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// Sends `signal` (`-TERM`, `-INT` …) with the `kill` command.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Resident memory now (`VmRSS`), in MiB.
    pub fn rss_mib(&self) -> f64 {
        proc_status_mib(self.child.id(), "VmRSS:")
    }

    /// Peak resident memory (`VmHWM`), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        proc_status_mib(self.child.id(), "VmHWM:")
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
