//! The OpenAPI document against the real daemon: schemathesis (from PyPI) generates requests from
//! `GET /v1/openapi.json` and checks every answer: no server error, status codes, content types,
//! headers and bodies as documented, invalid requests refused, valid ones accepted, no access
//! without the token. Settings and the operations left out, each with its reason, are in
//! `tests/openapi_fuzz/schemathesis.toml`; `tests/openapi_fuzz/hooks.py` keeps call timeouts
//! short.
//!
//! Skipped (with a printed reason) when schemathesis is not installed, unless
//! `CONSORT_REQUIRE_SCHEMATHESIS=1` (set by `.ci/run`). `CONSORT_FUZZ_EXAMPLES` and
//! `CONSORT_FUZZ_SEED` change the number of examples per operation and the seed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{http_get, secret_file, unique_group, Daemon, UpArgs};

const TOKEN: &str = "fuzz-token-0123456789";

/// Examples per operation: enough to find what the runs here found, and the run stays under
/// about a minute and a half.
const EXAMPLES: u32 = 60;

/// A fixed seed, so a failure in CI can be replayed.
const SEED: u64 = 20_261_122;

/// Longest the fuzzer may run before the test fails.
const LIMIT: Duration = Duration::from_secs(600);

/// The Python that has schemathesis, or why the test cannot run.
fn schemathesis() -> Result<String, String> {
    let python = std::env::var("CONSORT_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let found = Command::new(&python)
        .args(["-c", "import schemathesis; print(schemathesis.__version__)"])
        .stderr(Stdio::null())
        .output();
    match found {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
            eprintln!("schemathesis {version} ({python})");
            Ok(python)
        }
        Ok(_) => Err(format!(
            "schemathesis is not installed for {python} (pip install schemathesis)"
        )),
        Err(e) => Err(format!("{python} cannot run: {e}")),
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
        Err(_) => default,
    }
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi_fuzz")
}

#[test]
fn the_fuzzer_finds_no_server_error_and_no_answer_off_the_schema() {
    let python = match schemathesis() {
        Ok(python) => python,
        Err(why) if std::env::var("CONSORT_REQUIRE_SCHEMATHESIS").as_deref() == Ok("1") => {
            panic!("CONSORT_REQUIRE_SCHEMATHESIS=1 but {why}")
        }
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let secret = secret_file(tmp.path(), "secret", &"f".repeat(32));
    let mut node = Daemon::spawn(UpArgs {
        group: &unique_group("fuzz"),
        secret_file: Some(&secret),
        seeds: vec![],
        extra: vec!["--api-token".into(), TOKEN.into()],
    });
    node.wait_ready_with(Some(TOKEN));
    let api = node.api_addr();

    // The document is served, to token holders only.
    let (code, body) = http_get(api, "/v1/openapi.json", None).unwrap();
    assert_eq!(code, 401, "{body}");
    let (code, body) = http_get(api, "/v1/openapi.json", Some(TOKEN)).unwrap();
    assert_eq!(code, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/kv/{key}"]["put"].is_object(), "{body}");

    let examples: u32 = env_or("CONSORT_FUZZ_EXAMPLES", EXAMPLES);
    let seed: u64 = env_or("CONSORT_FUZZ_SEED", SEED);
    let dir = fuzz_dir();
    // Every check schemathesis has runs (its default); the config file turns off only those
    // that cannot hold for an operation, and says why.
    let mut fuzzer = Command::new(&python)
        .args(["-m", "schemathesis.cli", "--config-file"])
        .arg(dir.join("schemathesis.toml"))
        .arg("run")
        .arg(format!("http://{api}/v1/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--max-examples", &examples.to_string()])
        .args(["--seed", &seed.to_string()])
        .args(["--workers", "1", "--no-color", "--request-timeout", "10"])
        .env("SCHEMATHESIS_HOOKS", dir.join("hooks.py"))
        // Hypothesis keeps its example database in the working directory.
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(tmp.path().join("fuzz.log")).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("schemathesis starts");
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = fuzzer.try_wait().expect("fuzzer polled") {
            break exit;
        }
        if started.elapsed() > LIMIT {
            let _ = fuzzer.kill();
            let _ = fuzzer.wait();
            panic!("schemathesis ran past {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let report = std::fs::read_to_string(tmp.path().join("fuzz.log")).unwrap();
    eprintln!(
        "schemathesis: {exit} after {:.0?}\n{}",
        started.elapsed(),
        summary(&report)
    );
    assert!(
        exit.success(),
        "schemathesis found problems:\n{report}\n--- daemon log ---\n{}",
        node.stderr()
    );
    assert!(report.contains("passed"), "{report}");
    assert!(!report.contains("FAILURES"), "{report}");

    // The daemon counted the fuzzer's requests, and none of them, even in the operations left
    // out above, was answered 500.
    let (code, metrics) = http_get(api, "/metrics", Some(TOKEN)).unwrap();
    assert_eq!(code, 200, "{metrics}");
    let counted: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("consort_api_requests_total{"))
        .collect();
    for route in ["/v1/kv/{*key}", "/v1/messages", "/v1/services/{name}/call"] {
        assert!(
            counted
                .iter()
                .any(|l| l.contains(&format!("route=\"{route}\""))),
            "{route} not counted:\n{metrics}"
        );
    }
    let server_errors: Vec<&&str> = counted
        .iter()
        .filter(|l| l.contains("status=\"500\""))
        .collect();
    assert!(server_errors.is_empty(), "{server_errors:?}");
    assert!(!node.stderr().contains("panicked"), "{}", node.stderr());
}

/// The lines of the report from its summary on.
fn summary(report: &str) -> &str {
    report.find("SUMMARY").map_or(report, |at| {
        &report[report[..at].rfind('\n').unwrap_or(0)..]
    })
}
