//! Messages and services through the real binary: `send`, `listen`, `serve --exec`, `call`, and
//! the HTTP routes behind them, on daemons over loopback.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{cluster, consort, http_post, poll, stderr, Daemon};
use serde_json::{json, Value};

/// A long-running client command (`listen`, `serve`) killed when dropped; its stdout goes to a
/// file.
struct Background {
    child: Child,
    out: PathBuf,
}

impl Background {
    fn start(daemon: &Daemon, args: &[&str], out: PathBuf) -> Background {
        let api = format!("http://{}", daemon.api_addr());
        let child = consort()
            .args(args)
            .args(["--api", &api])
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts");
        Background { child, out }
    }

    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cli(daemon: &Daemon, args: &[&str]) -> std::process::Output {
    daemon.cli(args)
}

/// Waits until `daemon` knows `n` providers of `service`.
fn providers(daemon: &Daemon, service: &str, n: usize) {
    let known = poll(Duration::from_secs(5), || {
        let (_, body) = common::http_get(daemon.api_addr(), "/v1/services", None).ok()?;
        let map: Value = serde_json::from_str(&body).ok()?;
        (map[service].as_array().map_or(0, Vec::len) == n).then_some(())
    });
    assert!(known.is_some(), "{n} providers of {service} never known");
}

/// The request numbers a `serve --exec` provider logged, one per run.
fn runs(log: &Path) -> Vec<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["n"].as_u64())
        .collect()
}

/// A provider: `serve light --exec` that logs each request and answers with its node name.
fn provider(daemon: &Daemon, name: &str, dir: &Path) -> (Background, PathBuf) {
    let log = dir.join(format!("{name}.runs"));
    let cmd = format!(
        "read req; echo \"$req\" >> {}; echo '{{\"served_by\":\"{name}\"}}'",
        log.display()
    );
    let bg = Background::start(
        daemon,
        &["serve", "light", "--exec", &cmd],
        dir.join(format!("{name}.out")),
    );
    (bg, log)
}

fn call(daemon: &Daemon, n: u64) -> Result<Value, String> {
    let body = json!({ "body": { "n": n }, "timeout_ms": 5000 }).to_string();
    let (status, text) = http_post(
        daemon.api_addr(),
        "/v1/services/light/call",
        body.as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

#[test]
fn two_providers_share_calls_a_killed_one_is_replaced_and_none_runs_twice() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 3, &common::unique_group("svc"));
    let (_a, log_a) = provider(&nodes[0], "a", root.path());
    let (b, log_b) = provider(&nodes[1], "b", root.path());
    providers(&nodes[2], "light", 2);

    // 100 calls from the third node: 50/50.
    let mut by = std::collections::HashMap::new();
    for n in 0..100 {
        let reply = call(&nodes[2], n).unwrap_or_else(|e| panic!("call {n}: {e}"));
        *by.entry(reply["body"]["served_by"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(by.get("a"), Some(&50), "{by:?}");
    assert_eq!(by.get("b"), Some(&50), "{by:?}");
    let mut all = runs(&log_a);
    all.extend(runs(&log_b));
    all.sort_unstable();
    assert_eq!(
        all,
        (0..100).collect::<Vec<_>>(),
        "each call ran exactly once"
    );

    // 100 more; b's daemon is killed after the 50th: every call still succeeds, none twice.
    let mut slowest = Duration::ZERO;
    for n in 100..200 {
        if n == 150 {
            nodes[1].kill9();
        }
        let start = Instant::now();
        let reply = call(&nodes[2], n).unwrap_or_else(|e| panic!("call {n}: {e}"));
        slowest = slowest.max(start.elapsed());
        assert!(reply["body"]["served_by"].is_string());
    }
    drop(b);
    let mut all = runs(&log_a);
    all.extend(runs(&log_b));
    all.sort_unstable();
    assert_eq!(
        all,
        (0..200).collect::<Vec<_>>(),
        "each call ran exactly once"
    );
    println!("with a provider killed mid-run: 100 of 100 calls succeeded, slowest {slowest:?}");

    // No provider of a service: a clear error once the timeout has passed.
    let start = Instant::now();
    let out = cli(&nodes[2], &["call", "heating", "{}", "--timeout", "800"]);
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "consort: no provider of service \"heating\""
    );
    assert!(took >= Duration::from_millis(800), "{took:?}");
}

#[test]
fn broadcasts_come_from_the_leader_and_reach_every_listener_once() {
    let root = tempfile::tempdir().unwrap();
    let group = common::unique_group("msg");
    let nodes = common::cluster_with(root.path(), 3, &group, |i| {
        vec!["--priority".into(), (i * 10).to_string()]
    });
    let leader = &nodes[2];
    let ok = poll(Duration::from_secs(5), || {
        let ids: Vec<Option<(Option<String>, u64)>> = nodes.iter().map(|n| n.leader()).collect();
        ids.iter()
            .all(|l| l.as_ref().and_then(|(l, _)| l.clone()) == Some(leader.id()))
            .then_some(())
    });
    assert!(ok.is_some(), "no agreed leader");
    let listeners: Vec<Background> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| Background::start(n, &["listen"], root.path().join(format!("l{i}"))))
        .collect();
    let primed = poll(Duration::from_secs(5), || {
        listeners
            .iter()
            .all(|l| l.lines().iter().any(|e| e["type"] == "leader_changed"))
            .then_some(())
    });
    assert!(primed.is_some(), "listeners did not start");

    // A follower may not broadcast.
    let out = cli(&nodes[0], &["send", "--broadcast", r#"{"play":"x"}"#]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "consort: not sent: this node is not the leader; only the leader broadcasts"
    );
    // The leader's broadcast reaches everyone, itself included, once; a reliable direct
    // message reaches only its target; a publish reaches every other node.
    let out = cli(leader, &["send", "--broadcast", r#"{"play":"clip-1"}"#]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(
        &nodes[0],
        &["send", "--to", &nodes[1].id(), "--reliable", r#"{"hi":1}"#],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(&nodes[1], &["send", "--all", r#"{"all":true}"#]);
    assert!(out.status.success(), "{}", stderr(&out));
    let settled = poll(Duration::from_secs(5), || {
        let l1 = listeners[1].lines();
        (l1.iter().any(|e| e["body"]["hi"] == 1)
            && listeners
                .iter()
                .all(|l| l.lines().iter().any(|e| e["body"]["play"] == "clip-1"))
            && listeners[0]
                .lines()
                .iter()
                .any(|e| e["body"]["all"] == true))
        .then_some(())
    });
    assert!(settled.is_some(), "messages did not arrive");
    std::thread::sleep(Duration::from_millis(300));
    for (i, l) in listeners.iter().enumerate() {
        let events = l.lines();
        let count = |f: &dyn Fn(&Value) -> bool| events.iter().filter(|e| f(e)).count();
        let played = count(&|e| e["body"]["play"] == "clip-1");
        assert_eq!(played, 1, "node {i}: {events:?}");
        let b = events
            .iter()
            .find(|e| e["body"]["play"] == "clip-1")
            .unwrap();
        assert_eq!(b["type"], "leader_message");
        assert_eq!(b["from"], leader.id().as_str());
        assert_eq!(
            count(&|e| e["body"]["hi"] == 1),
            usize::from(i == 1),
            "node {i}"
        );
        assert_eq!(
            count(&|e| e["body"]["all"] == true),
            usize::from(i != 1),
            "node {i}"
        );
        assert_eq!(
            count(&|e| e["type"] == "peer_added"),
            2,
            "node {i}: {events:?}"
        );
        let role = if i == 2 {
            "promote_leader"
        } else {
            "promote_follower"
        };
        assert_eq!(count(&|e| e["type"] == role), 1, "node {i}: {events:?}");
    }
}
