//! The `consort` binary's single-node behaviour: a created secret and its join hint, bad input
//! refused with the right exit code and one line, the API token, and `keygen`.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{
    assert_fails, http_get, poll, run, secret_file, stdout, unique_group, Daemon, UpArgs,
};

/// Runs `consort up` on loopback ports the OS picks, its API on `api`, to completion.
fn run_up(api: &str, data: &Path, extra: &[&str]) -> Output {
    let data = data.to_str().unwrap();
    let mut args = vec!["up", "--no-mdns", "--bind", "127.0.0.1:0", "--api", api];
    args.extend(["--data-dir", data]);
    args.extend(extra);
    run(&args)
}

#[test]
fn up_without_a_secret_creates_one_and_prints_how_to_join() {
    let group = unique_group("hint");
    let node = Daemon::start(UpArgs {
        group: &group,
        secret_file: None,
        seeds: vec![],
        extra: vec![],
    });
    let secret = std::fs::read_to_string(node.data_dir.join("secret")).expect("secret created");
    let secret = secret.trim();
    assert_eq!(secret.len(), 64);
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
    let join = format!(
        "consort up --group {group} --secret-file <path-to-the-copy> --seed {}",
        node.group_addr()
    );
    let hint = poll(Duration::from_secs(2), || {
        let out = node.stdout();
        out.contains(&join).then_some(out)
    });
    let hint = hint.unwrap_or_else(|| panic!("no join hint: {:?}", node.stdout()));
    assert!(hint.contains("secret"), "{hint}");
}

#[test]
fn a_short_secret_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let short = secret_file(tmp.path(), "short", "tooshort");
    let data = tmp.path().join("data");
    let output = run_up(
        "127.0.0.1:0",
        &data,
        &["--secret-file", short.to_str().unwrap()],
    );
    assert_fails(&output, 2, "at least 16");
}

#[test]
fn an_api_beyond_loopback_needs_a_token() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let output = run_up("0.0.0.0:0", &data, &[]);
    assert_fails(&output, 2, "--api-token");
    assert!(
        !data.join("secret").exists(),
        "refused before touching the data dir"
    );
}

#[test]
fn with_a_token_every_request_must_carry_it() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = secret_file(tmp.path(), "secret", &"c".repeat(32));
    let token = "s3cret-token";
    let mut node = Daemon::spawn(UpArgs {
        group: &unique_group("token"),
        secret_file: Some(&secret),
        seeds: vec![],
        extra: ["--api", "0.0.0.0:0", "--api-token", token]
            .map(String::from)
            .to_vec(),
    });
    node.wait_ready_with(Some(token));
    let with_token = node.status_with(&["--api-token", token]);
    assert!(
        with_token.is_some(),
        "status --api-token: {}",
        node.stderr()
    );
    let api = node.api_addr();
    let get = |path, token| http_get(api, path, token).expect("API answers");

    for given in [None, Some("wrong")] {
        let (code, body) = get("/v1/status", given);
        assert_eq!(code, 401, "{body}");
        let error: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
        assert!(error["error"].is_string(), "{body}");
    }
    let (code, body) = get("/v1/peers", Some(token));
    assert_eq!(code, 200, "{body}");
    let (code, body) = get("/metrics", Some(token));
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("consort_datagrams_rejected_total{reason=\"bad_tag\"} 0"),
        "{body}"
    );
    assert!(
        body.contains("consort_members{state=\"alive\"} 1"),
        "{body}"
    );
    let (code, body) = get("/v1/nothing-here", Some(token));
    assert_eq!(code, 404);
    assert!(body.contains("\"error\""), "{body}");

    let data = node.data_dir.to_str().unwrap().to_string();
    assert_fails(&run(&["status", "--data-dir", &data]), 1, "401");
}

#[test]
fn an_unknown_config_key_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("consort.toml");
    std::fs::write(
        &config,
        "group = \"g\"\nseeds = []\nsecrte = \"0123456789abcdef0\"\n",
    )
    .unwrap();
    let output = run(&["up", "--config", config.to_str().unwrap()]);
    assert_fails(&output, 2, "secrte");
}

#[test]
fn an_unreachable_daemon_is_one_line() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let api = format!("http://127.0.0.1:{port}");
    for command in ["status", "peers"] {
        assert_fails(&run(&[command, "--api", &api]), 1, "no daemon at");
    }
    let tmp = tempfile::tempdir().unwrap();
    let output = run(&[
        "peers",
        "--json",
        "--data-dir",
        tmp.path().to_str().unwrap(),
    ]);
    assert_fails(&output, 1, "no daemon");
}

#[test]
fn keygen_prints_64_hex_digits() {
    let first = run(&["keygen"]);
    assert!(first.status.success());
    let text = stdout(&first);
    assert_eq!(text.lines().count(), 1);
    let secret = text.trim_end();
    assert_eq!(secret.len(), 64);
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(stdout(&run(&["keygen"])), text, "each secret is new");
}

#[test]
fn election_flags_are_checked_and_quorum_holds_back_a_lone_leader() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    assert_fails(
        &run_up("127.0.0.1:0", &data, &["--quorum", "0"]),
        2,
        "quorum",
    );
    assert_fails(
        &run_up("127.0.0.1:0", &data, &["--election", "bogus"]),
        2,
        "bogus",
    );

    let group = unique_group("quorum");
    let lone = Daemon::start(UpArgs {
        group: &group,
        secret_file: None,
        seeds: vec![],
        extra: vec![
            "--quorum".into(),
            "2".into(),
            "--election".into(),
            "sticky".into(),
        ],
    });
    // Well past the first heartbeats: still no leader, and `consort leader` says so (exit 1).
    std::thread::sleep(Duration::from_millis(800));
    assert!(lone.status().unwrap()["leader"].is_null());
    let out = lone.cli(&["leader"]);
    assert_fails(&out, 1, "no leader");

    let alone = Daemon::start(UpArgs {
        group: &unique_group("no-quorum"),
        secret_file: None,
        seeds: vec![],
        extra: vec![],
    });
    let leads = poll(Duration::from_secs(2), || {
        let status = alone.status()?;
        (status["leader"] == status["node"]["id"]).then_some(())
    });
    assert!(leads.is_some(), "without a quorum a lone node leads itself");
}
