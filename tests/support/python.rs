//! Python tools from PyPI at pinned versions, in a virtual environment cached under the target
//! directory: `openapi-spec-validator` (is the document valid OpenAPI?) and `schemathesis` (does
//! the server answer what the document says?).
//!
//! Nothing is skipped when Python or PyPI is missing: the tests that use these exist to check
//! zoomhook with the tools its API's clients use, so without them they fail and say what to do.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The pinned tools. Changing a pin makes a new environment (its directory is named after them).
pub const REQUIREMENTS: &[&str] = &["openapi-spec-validator==0.9.0", "schemathesis==4.32.5"];

/// The environment's interpreter, installed on first use. Installed into a private directory and
/// renamed into place, so tests running at the same time (nextest runs each in its own process)
/// never see half an install. The environment is only ever run as `bin/python -m …` or
/// `bin/python -c …`, which keep working after the rename (the console scripts' `#!` lines would
/// not).
pub fn python() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let name = format!("pyvenv-{}", REQUIREMENTS.join("-").replace("==", "-"));
    let cache = tmp.join(&name);
    if installed(&cache) {
        return interpreter(&cache);
    }
    let staging = tmp.join(format!(
        "{name}.{}.{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&staging)
        .output()
        .unwrap_or_else(|e| {
            panic!("this test runs Python tools and needs `python3` (3.9 or later) on PATH: {e}")
        });
    assert!(
        made.status.success(),
        "python3 -m venv failed (on Debian/Ubuntu install python3-venv): {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let pip = Command::new(interpreter(&staging))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
        ])
        .args(REQUIREMENTS)
        .output()
        .expect("run pip");
    assert!(
        pip.status.success(),
        "pip install {} failed (is PyPI reachable? a proxy goes in HTTPS_PROXY or PIP_INDEX_URL):\n{}{}",
        REQUIREMENTS.join(" "),
        String::from_utf8_lossy(&pip.stdout),
        String::from_utf8_lossy(&pip.stderr)
    );
    std::fs::write(staging.join("installed.txt"), REQUIREMENTS.join("\n"))
        .expect("mark the environment installed");
    if std::fs::rename(&staging, &cache).is_err() {
        // Another test finished its install first; use that one.
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(
        installed(&cache),
        "a Python environment in {}",
        cache.display()
    );
    interpreter(&cache)
}

fn interpreter(venv: &Path) -> PathBuf {
    venv.join("bin/python")
}

/// Written last by [`python`], so its presence means pip finished.
fn installed(venv: &Path) -> bool {
    std::fs::read_to_string(venv.join("installed.txt"))
        .is_ok_and(|text| text == REQUIREMENTS.join("\n"))
}

/// `schemathesis ARGS…` of the environment, as a command to complete and run.
pub fn schemathesis() -> Command {
    let mut command = Command::new(python());
    command.args([
        "-c",
        "import sys; from schemathesis.cli import schemathesis; sys.argv[0] = 'schemathesis'; sys.exit(schemathesis())",
    ]);
    command
}

/// `openapi-spec-validator ARGS…` of the environment, as a command to complete and run.
pub fn openapi_spec_validator() -> Command {
    let mut command = Command::new(python());
    command.args(["-m", "openapi_spec_validator"]);
    command
}
