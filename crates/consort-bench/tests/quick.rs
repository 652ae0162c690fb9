//! `consort-bench all --quick` of one cheap scenario writes a well-formed report: the figure
//! asked for and only it, with its unit, Consort's number, a null for each baseline that does
//! not apply, and its goal. The other scenarios are not run by the test suite (they take
//! minutes and want Mosquitto); `cargo run --release -p consort-bench -- all` runs them.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

#[test]
fn a_quick_run_of_one_scenario_writes_well_formed_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("results.json");
    let bench = Path::new(env!("CARGO_BIN_EXE_consort-bench"));
    let mut command = Command::new(bench);
    command
        .args(["all", "--quick", "--only", "wire_overhead_bytes", "--out"])
        .arg(&out);
    // `cargo test --workspace` has built the daemon beside the bench; use it as it is rather
    // than have the bench ask cargo to build it again (alone, with other features).
    let consort = bench.with_file_name("consort");
    if consort.is_file() {
        command.arg("--consort").arg(consort);
    }
    let output = command.output().expect("consort-bench runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "consort-bench failed: {stderr}");

    let text = std::fs::read_to_string(&out).expect("the report is written");
    let report: Value = serde_json::from_str(&text).expect("the report is JSON");
    let scenarios = report["scenarios"].as_object().expect("a scenarios object");
    let names: Vec<&String> = scenarios.keys().collect();
    assert_eq!(names, ["wire_overhead_bytes"], "{text}");

    let figure = &scenarios["wire_overhead_bytes"];
    for key in ["unit", "consort", "mosquitto", "udp_floor", "goal"] {
        assert!(figure.get(key).is_some(), "no {key:?} in {figure}");
    }
    assert_eq!(figure["unit"], "bytes");
    let overhead = figure["consort"]
        .as_f64()
        .expect("Consort's figure is a number");
    assert!(overhead > 0.0 && overhead <= 1200.0, "{overhead}");
    assert!(
        figure["mosquitto"].is_null() && figure["udp_floor"].is_null(),
        "{figure}"
    );
    assert!(
        figure["goal"].as_str().is_some_and(|g| !g.is_empty()),
        "{figure}"
    );
    assert!(
        report["warnings"].as_array().is_some_and(Vec::is_empty),
        "{stderr}"
    );
}
