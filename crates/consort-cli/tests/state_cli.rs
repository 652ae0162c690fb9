//! The replicated state end to end, on real processes over loopback: `get`, `set`, `del`, `ls`,
//! `watch` and `pulse` through the CLI and the HTTP API, catching up after a stop, owned
//! prefixes with their owner gone and back, and bad input refused with nothing written.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::{
    assert_fails, cluster, cluster_with, consort, http_delete, http_get, http_post, http_put, poll,
    stderr, stdout, time_until, unique_group, Daemon, UpArgs,
};

/// Waits until every node shows every other as alive.
fn wait_all_alive(nodes: &[Daemon]) {
    let ids: Vec<String> = nodes.iter().map(Daemon::id).collect();
    let limit = Duration::from_secs(5);
    let all = time_until(limit, || {
        nodes.iter().all(|n| {
            ids.iter()
                .all(|id| n.state_of(id).as_deref() == Some("alive"))
        })
    });
    all.unwrap_or_else(|| panic!("not all alive within {limit:?}"));
}

/// Asserts a client command succeeded; returns its stdout.
fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        stderr(&output)
    );
    stdout(&output)
}

/// `consort ls PREFIX --json` on `node`, as printed.
fn ls_json(node: &Daemon, prefix: &str) -> String {
    ok(node.cli(&["ls", prefix, "--json"]))
        .trim_end()
        .to_string()
}

/// `consort get KEY --json` on `node`, parsed, if the key holds a value.
fn get_json(node: &Daemon, key: &str) -> Option<Value> {
    let output = node.cli(&["get", key, "--json"]);
    output
        .status
        .success()
        .then(|| serde_json::from_slice(&output.stdout).expect("get --json prints JSON"))
}

/// A running `consort watch`, its NDJSON lines parsed as they come; killed when dropped.
struct Watcher {
    child: Child,
    lines: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Watcher {
    /// Starts `consort watch ARGS` against `node`.
    fn start(node: &Daemon, args: &[&str]) -> Watcher {
        let mut child = consort()
            .arg("watch")
            .args(args)
            .arg("--data-dir")
            .arg(&node.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("consort watch starts");
        let out = BufReader::new(child.stdout.take().expect("stdout piped"));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
                    panic!("watch printed a line that is not JSON: {line:?}: {e}")
                });
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Watcher {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first event (seen before or arriving within `limit`) that `matches`.
    fn wait_for(&mut self, limit: Duration, matches: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(found) = self.seen.iter().find(|e| matches(e)) {
                return Some(found.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(event) => self.seen.push(event),
                Err(_) => return None,
            }
        }
    }

    /// Waits until the watch is live: writes `key` on `node` (again and again, as the stream may
    /// not be open yet) until the watcher prints the change.
    fn wait_live(&mut self, node: &Daemon, key: &str) {
        let ready = poll(Duration::from_secs(5), || {
            let mark = next_mark();
            ok(node.cli(&["set", key, &mark.to_string()]));
            self.wait_for(Duration::from_millis(200), |e| {
                e["event"] == "change" && e["key"] == key && e["value"] == mark
            })
        });
        if ready.is_none() {
            let _ = self.child.kill();
            let err = self.child.stderr.take().map(|mut e| {
                let mut text = String::new();
                let _ = std::io::Read::read_to_string(&mut e, &mut text);
                text
            });
            panic!("the watch never went live: {err:?}");
        }
    }

    /// The events seen so far (after [`Watcher::wait_for`]) and any that already arrived.
    fn drain(&mut self) -> &[Value] {
        while let Ok(event) = self.lines.try_recv() {
            self.seen.push(event);
        }
        &self.seen
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A number that differs from one call to the next.
fn next_mark() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn a_value_set_on_one_node_is_read_and_watched_on_the_others() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3, &unique_group("state-set"));
    wait_all_alive(&nodes);
    let mut watch = Watcher::start(&nodes[1], &["kitchen"]);
    watch.wait_live(&nodes[1], "kitchen/watch-ready");

    let written = Instant::now();
    assert_eq!(ok(nodes[0].cli(&["set", "kitchen/light/on", "true"])), "");
    for node in &nodes[1..] {
        let took = time_until(Duration::from_secs(3), || {
            let out = node.cli(&["get", "kitchen/light/on"]);
            out.status.success() && stdout(&out) == "true\n"
        });
        let took = took.unwrap_or_else(|| panic!("{} never read the value", node.id()));
        println!("read on {} {took:?} after the set", node.id());
    }
    println!("set to read on both others: {:?}", written.elapsed());

    let origin = nodes[0].id();
    let entry = get_json(&nodes[2], "kitchen/light/on").expect("the entry");
    assert_eq!(entry["key"], "kitchen/light/on");
    assert_eq!(entry["value"], true);
    assert_eq!(entry["origin"], origin.as_str());
    let version = entry["version"].as_str().expect("version string");
    assert!(version.ends_with(&format!("-{origin}")), "{version}");

    let change = watch
        .wait_for(Duration::from_secs(3), |e| e["key"] == "kitchen/light/on")
        .unwrap_or_else(|| panic!("the watch printed no change: {:?}", watch.drain()));
    assert_eq!(change["event"], "change");
    assert_eq!(change["value"], true);
    assert_eq!(change["deleted"], false);
    assert_eq!(change["origin"], origin.as_str());
    assert_eq!(change["version"], version);
    let seq = change["seq"].as_u64().expect("seq");
    assert!(
        watch
            .drain()
            .iter()
            .all(|e| e["key"].as_str().is_some_and(|k| k.starts_with("kitchen/"))),
        "only the prefix is watched: {:?}",
        watch.seen
    );

    // Resuming from just before the change replays it, with the same sequence number.
    let from = (seq - 1).to_string();
    let mut resumed = Watcher::start(&nodes[1], &["kitchen", "--from", &from]);
    let replayed = resumed.wait_for(Duration::from_secs(3), |e| e["seq"] == seq);
    assert_eq!(replayed.as_ref(), Some(&change), "{:?}", resumed.drain());
    // So does the standard `Last-Event-ID` header, which wins over `from`.
    let stream = sse_until(
        nodes[1].api_addr(),
        "/v1/watch?prefix=kitchen&from=999999",
        &format!("Last-Event-ID: {from}"),
        &format!("id: {seq}\n"),
    );
    assert!(stream.contains("event: change\n"), "{stream}");

    // A delete from a third node: a change with no value, and the key gone everywhere.
    assert_eq!(ok(nodes[2].cli(&["del", "kitchen/light/on"])), "");
    let deleted = watch.wait_for(Duration::from_secs(3), |e| e["deleted"] == true);
    let deleted = deleted.unwrap_or_else(|| panic!("no delete event: {:?}", watch.drain()));
    assert_eq!(deleted["key"], "kitchen/light/on");
    assert!(deleted["value"].is_null());
    assert_eq!(deleted["origin"], nodes[2].id().as_str());
    let gone = poll(Duration::from_secs(3), || {
        nodes
            .iter()
            .all(|n| n.cli(&["get", "kitchen/light/on"]).status.code() == Some(1))
            .then_some(())
    });
    assert!(gone.is_some(), "the delete did not reach every node");
}

/// Opens `GET path` with `header` and reads the event stream until `needle` shows (5 s at most).
fn sse_until(addr: std::net::SocketAddr, path: &str, header: &str, needle: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("API reachable");
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{header}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if String::from_utf8_lossy(&seen).contains(needle) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(text.contains(needle), "{needle:?} never came: {text}");
    text
}

#[test]
fn a_stopped_node_catches_up_with_writes_overwrites_and_deletes() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 3, &unique_group("state-catchup"));
    wait_all_alive(&nodes);

    // State the stopped node will hold stale: 40 keys, some later overwritten or deleted.
    let api0 = nodes[0].api_addr();
    for i in 0..40 {
        let (code, body) = http_put(api0, &format!("/v1/kv/bulk/k{i}"), b"\"before\"").unwrap();
        assert_eq!(code, 200, "{body}");
    }
    let before = ls_json(&nodes[0], "bulk");
    let synced = poll(Duration::from_secs(3), || {
        (ls_json(&nodes[2], "bulk") == before).then_some(())
    });
    assert!(synced.is_some(), "node 2 never had the first 40 keys");

    nodes[2].sigterm();
    assert_eq!(nodes[2].wait_exit(Duration::from_secs(5)), Some(0));

    // 300 operations, half on each live node at once, on 60 keys they share: puts, overwrites
    // of each other's values, and deletes (of present and absent keys).
    let started = Instant::now();
    let apis = [nodes[0].api_addr(), nodes[1].api_addr()];
    let workers: Vec<_> = apis
        .iter()
        .enumerate()
        .map(|(w, &api)| {
            std::thread::spawn(move || {
                let mut state = 0x9e37_79b9_u64 + w as u64;
                let mut counts = [0u32; 2];
                let mut touched = BTreeSet::new();
                for op in 0..150 {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let index = (state >> 33) % 60;
                    touched.insert(format!("bulk/k{index}"));
                    let key = format!("/v1/kv/bulk/k{index}");
                    let (code, body) = if (state >> 20) % 10 < 3 {
                        counts[1] += 1;
                        http_delete(api, &key).unwrap()
                    } else {
                        counts[0] += 1;
                        let value = json!({ "writer": w, "op": op });
                        http_put(api, &key, value.to_string().as_bytes()).unwrap()
                    };
                    assert_eq!(code, 200, "{key}: {body}");
                }
                (counts, touched)
            })
        })
        .collect();
    let (mut puts, mut deletes, mut touched) = (0, 0, BTreeSet::new());
    for worker in workers {
        let (counts, keys) = worker.join().unwrap();
        puts += counts[0];
        deletes += counts[1];
        touched.extend(keys);
    }
    println!(
        "{puts} puts and {deletes} deletes in {:?} while node 2 was stopped",
        started.elapsed()
    );

    let restarted = Instant::now();
    nodes[2].respawn();
    let ready = restarted.elapsed();
    let mut last = Vec::new();
    let took = time_until(Duration::from_secs(3), || {
        last = nodes.iter().map(|n| ls_json(n, "bulk")).collect();
        last[0] == last[1] && last[1] == last[2]
    });
    let took = took.unwrap_or_else(|| {
        let lens: Vec<usize> = last
            .iter()
            .map(|l| serde_json::from_str::<Vec<Value>>(l).map_or(0, |v| v.len()))
            .collect();
        panic!("not converged 3 s after the restart; entries per node {lens:?}")
    });
    println!("node 2 answering {ready:?} after the restart, converged {took:?} later");

    // Every key written during the stop holds a later value (or none); the others are as before.
    let entries: Vec<Value> = serde_json::from_str(&last[0]).unwrap();
    assert!(
        !entries.is_empty() && entries.len() < 60,
        "{}",
        entries.len()
    );
    for entry in &entries {
        let key = entry["key"].as_str().unwrap();
        let stale = entry["value"] == "before";
        assert_eq!(stale, !touched.contains(key), "{entry}");
    }
    let untouched = (0..40)
        .filter(|i| !touched.contains(&format!("bulk/k{i}")))
        .count();
    assert_eq!(
        entries.iter().filter(|e| e["value"] == "before").count(),
        untouched
    );
    let keys: Vec<&str> = entries.iter().map(|e| e["key"].as_str().unwrap()).collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted, "ls lists in key order");
    println!("{} keys live after 340 operations", entries.len());
}

#[test]
fn writes_to_an_owned_prefix_go_to_the_owner_or_wait_for_it() {
    let root = tempfile::tempdir().unwrap();
    let own = |i| match i {
        1 => vec!["--own".to_string(), "garage".to_string()],
        _ => Vec::new(),
    };
    let mut nodes = cluster_with(root.path(), 2, &unique_group("state-own"), own);
    wait_all_alive(&nodes);
    let owner = nodes[1].id();

    // Node 0 learns who owns `garage` from node 1's replicated metadata.
    let known = poll(Duration::from_secs(3), || {
        let meta: Vec<Value> = serde_json::from_str(&ls_json(&nodes[0], "@consort")).ok()?;
        meta.iter()
            .any(|e| {
                e["key"].as_str().is_some_and(|k| k.ends_with(&owner))
                    && e["value"]["owns"] == json!(["garage"])
            })
            .then_some(())
    });
    assert!(known.is_some(), "node 0 never learned the owner");

    assert_eq!(ok(nodes[0].cli(&["set", "garage/door", "\"open\""])), "");
    let on_owner = get_json(&nodes[1], "garage/door").expect("applied by the owner");
    assert_eq!(on_owner["value"], "open");
    assert_eq!(on_owner["origin"], owner.as_str());
    let back = poll(Duration::from_secs(3), || {
        get_json(&nodes[0], "garage/door").filter(|e| e == &on_owner)
    });
    assert!(
        back.is_some(),
        "the owner's version never came back to node 0"
    );

    let mut watch = Watcher::start(&nodes[0], &[]);
    watch.wait_live(&nodes[0], "watch-ready");

    nodes[1].kill9();
    let down = time_until(Duration::from_secs(5), || {
        nodes[0].state_of(&owner).as_deref() == Some("down")
    });
    println!("owner down after {:?}", down.expect("owner seen down"));
    let refused = nodes[0].cli(&["set", "garage/door", "\"closed\""]);
    assert_fails(&refused, 1, &owner);
    assert!(
        stderr(&refused).contains("unreachable"),
        "{}",
        stderr(&refused)
    );
    print!("with the owner down: {}", stderr(&refused));

    for value in ["\"v1\"", "\"v2\"", "\"v3\""] {
        let queued = ok(nodes[0].cli(&["set", "garage/door", value, "--queue"]));
        assert_eq!(queued, "queued\n");
    }
    let still = get_json(&nodes[0], "garage/door").expect("the old value");
    assert_eq!(
        still["value"], "open",
        "nothing applied while the owner is away"
    );

    let restarted = Instant::now();
    nodes[1].respawn();
    let landed = time_until(Duration::from_secs(5), || {
        [&nodes[0], &nodes[1]].iter().all(|n| {
            get_json(n, "garage/door")
                .is_some_and(|e| e["value"] == "v3" && e["origin"] == owner.as_str())
        })
    });
    let landed = landed.unwrap_or_else(|| {
        panic!(
            "the queued write never landed: {:?}",
            get_json(&nodes[0], "garage/door")
        )
    });
    println!(
        "queued write applied {landed:?} after the owner answered ({:?} after its restart)",
        restarted.elapsed()
    );
    let door_values: Vec<&Value> = watch
        .drain()
        .iter()
        .filter(|e| e["key"] == "garage/door")
        .map(|e| &e["value"])
        .collect();
    assert_eq!(
        door_values,
        [&json!("v3")],
        "only the latest queued value lands"
    );
}

#[test]
fn a_pulse_reaches_every_watcher_and_is_never_stored() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3, &unique_group("state-pulse"));
    wait_all_alive(&nodes);
    let mut watchers: Vec<Watcher> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let mut watch = Watcher::start(node, &[]);
            watch.wait_live(node, &format!("ready/n{i}"));
            watch
        })
        .collect();

    let sent = Instant::now();
    assert_eq!(
        ok(nodes[0].cli(&["pulse", "doorbell", r#"{"ring":1}"#])),
        ""
    );
    let origin = nodes[0].id();
    for (i, watch) in watchers.iter_mut().enumerate() {
        let pulse = watch.wait_for(Duration::from_secs(3), |e| e["event"] == "pulse");
        let pulse = pulse.unwrap_or_else(|| panic!("no pulse on node {i}: {:?}", watch.drain()));
        assert_eq!(
            pulse,
            json!({"event": "pulse", "key": "doorbell", "value": {"ring": 1}, "origin": origin})
        );
    }
    println!(
        "pulse seen by all three watchers {:?} after sending",
        sent.elapsed()
    );

    for node in &nodes {
        let listed: Vec<Value> = serde_json::from_str(&ls_json(node, "")).unwrap();
        assert!(
            listed.iter().all(|e| e["key"] != "doorbell"),
            "a pulse is not stored: {listed:?}"
        );
        assert_fails(&node.cli(&["get", "doorbell"]), 1, "no such key: doorbell");
    }
}

#[test]
fn bad_input_is_refused_clearly_and_nothing_is_written() {
    let mut node = Daemon::spawn(UpArgs {
        group: &unique_group("state-bad"),
        secret_file: None,
        seeds: vec![],
        extra: vec!["--max-value".into(), "64".into()],
    });
    node.wait_ready();
    let api = node.api_addr();
    let long_key = format!("/v1/kv/{}", "k".repeat(513));
    let big = format!("\"{}\"", "x".repeat(100));
    let cases: [(&str, &str, &[u8], u16, &str); 11] = [
        ("PUT", "/v1/kv/", b"1", 400, "empty"),
        ("PUT", &long_key, b"1", 400, "513"),
        ("PUT", "/v1/kv/a//b", b"1", 400, "empty segment"),
        ("PUT", "/v1/kv/a%FF", b"1", 400, "UTF-8"),
        ("PUT", "/v1/kv/a%07b", b"1", 400, "control"),
        ("PUT", "/v1/kv/ok", b"{nope", 400, "not JSON"),
        ("PUT", "/v1/kv/ok", b"\"\xff\"", 400, "UTF-8"),
        ("PUT", "/v1/kv/ok", big.as_bytes(), 413, "at most 64"),
        ("PUT", "/v1/kv/@consort/x", b"1", 403, "reserved"),
        ("POST", "/v1/pulse/a%FF", b"1", 400, "UTF-8"),
        ("POST", "/v1/pulse/bell", big.as_bytes(), 413, "at most 64"),
    ];
    for (method, path, body, want, needle) in cases {
        let (code, answer) = match method {
            "PUT" => http_put(api, path, body),
            _ => http_post(api, path, body),
        }
        .unwrap();
        assert_eq!(code, want, "{method} {path}: {answer}");
        let error: Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {answer}"));
        let message = error["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"));
        assert!(
            message.contains(needle),
            "{method} {path}: {message:?} lacks {needle:?}"
        );
    }
    let (code, answer) = http_get(api, "/v1/kv/missing", None).unwrap();
    assert_eq!(
        (code, answer.as_str()),
        (404, r#"{"error":"no such key: missing"}"#)
    );
    let (code, answer) = http_get(api, "/v1/watch?from=nope", None).unwrap();
    assert_eq!(code, 400, "{answer}");

    assert_fails(
        &node.cli(&["set", "ok", "{nope"]),
        2,
        "the value is not JSON",
    );
    assert_fails(&node.cli(&["set", "", "1"]), 2, "the key is empty");
    assert_fails(&node.cli(&["set", "a//b", "1"]), 2, "empty segment");
    assert_fails(&node.cli(&["set", "ok", &big]), 2, "at most 64");
    assert_fails(&node.cli(&["set", "@consort/x", "1"]), 1, "reserved");
    assert_fails(&node.cli(&["pulse", "bell", "{nope"]), 2, "not JSON");
    assert_fails(&node.cli(&["get", "missing"]), 1, "no such key: missing");

    assert_eq!(ls_json(&node, ""), "[]", "nothing was written");
    assert_fails(&node.cli(&["get", "@consort/x"]), 1, "no such key");
    // And a good write still goes through.
    assert_eq!(ok(node.cli(&["set", "ok", "[1, 2]"])), "");
    assert_eq!(ok(node.cli(&["ls"])), "ok = [1,2]\n");
}
