//! The Python client's test suite (`clients/python/tests`, pytest) against the `consort` binary
//! of this build: every client method and the p2plib `PeerGroup` on real daemons, and
//! info-beamer's example program failing over when its leader's daemon is killed.
//!
//! Needs `python3` with `pytest` and `websocket-client` (`.ci/run` runs `pip install
//! ./clients/python pytest`). Without them the test is skipped with a message, unless
//! `CONSORT_REQUIRE_PYTHON=1` (set by CI), where it fails instead. The suite imports the package
//! from this checkout (`clients/python/src` first on `PYTHONPATH`), so an older installed copy is
//! never what is tested. Its temporary files live in a directory removed at the end; the suite
//! kills every process it starts.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

/// `python3` with `src` first on its module path and no `CONSORT_*` variable from outside.
fn python(src: &Path) -> Command {
    let mut paths = vec![src.to_path_buf()];
    if let Some(old) = std::env::var_os("PYTHONPATH") {
        paths.extend(std::env::split_paths(&old));
    }
    let mut command = Command::new("python3");
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("CONSORT_") {
            command.env_remove(var);
        }
    }
    command.env(
        "PYTHONPATH",
        std::env::join_paths(paths).expect("paths join"),
    );
    command
}

/// Why the suite cannot run here, if it cannot.
fn missing(src: &Path) -> Option<String> {
    let probe = python(src)
        .args(["-c", "import pytest, websocket, consort.p2plib"])
        .output();
    match probe {
        Err(e) => Some(format!("python3 cannot be run ({e})")),
        Ok(out) if !out.status.success() => {
            let err = String::from_utf8_lossy(&out.stderr);
            let why = err.trim_end().lines().next_back().unwrap_or("").to_string();
            Some(format!(
                "python3 lacks what the client needs ({why}); run `pip install ./clients/python pytest`"
            ))
        }
        Ok(_) => None,
    }
}

#[test]
fn python_client_suite_passes_against_real_daemons() {
    let root = repo();
    let src = root.join("clients/python/src");
    if let Some(reason) = missing(&src) {
        assert!(
            std::env::var("CONSORT_REQUIRE_PYTHON").as_deref() != Ok("1"),
            "the Python client's tests are required (CONSORT_REQUIRE_PYTHON=1) but cannot run: {reason}"
        );
        eprintln!("skipped: {reason}");
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut basetemp = OsString::from("--basetemp=");
    basetemp.push(tmp.path().join("pytest"));
    let output = python(&src)
        .args(["-m", "pytest", "clients/python/tests", "-q", "-s"])
        .args(["-p", "no:cacheprovider"])
        .arg(basetemp)
        .current_dir(&root)
        .env("CONSORT_BIN", env!("CARGO_BIN_EXE_consort"))
        // Plugins installed for other projects must not change (or slow) this run.
        .env("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let text = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "pytest failed ({}):\n{text}",
        output.status
    );
    let summary = stdout.lines().rev().find(|l| !l.trim().is_empty());
    assert!(
        summary.is_some_and(|l| l.contains(" passed") && !l.contains("skipped")),
        "pytest ran no test or skipped some: {text}"
    );
    for line in stdout.lines().filter(|l| l.starts_with("failover:")) {
        println!("{line}");
    }
    println!("pytest: {}", summary.unwrap_or_default());
}
