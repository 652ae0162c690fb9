//! Durability under `kill -9`: a lone node (no peers, so durability is its own) takes a burst of
//! writes over the HTTP API from a few connections, is killed with SIGKILL at a random moment
//! (seeded, printed), and started again on the same data dir. It must come up, and every write
//! it acknowledged (200) must be there with its exact value, in this trial and all before.
//! A write whose answer never came may be there or not, but never with another value; once
//! seen after a restart, it must stay like an acknowledged one.

mod common;

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{cluster, http_get, test_seed, unique_group, Daemon, HttpConn, Rng};

/// How many times the node is killed.
const TRIALS: usize = 20;

/// What the keys of this test live under.
const PREFIX: &str = "crash";

/// What one writer connection did before the node died.
#[derive(Default)]
struct Written {
    /// Key to value (compact JSON) of every write answered 200.
    acked: Vec<(String, String)>,
    /// The write sent but never answered, if any.
    in_flight: Option<(String, String)>,
    /// The longest an answered write took.
    slowest: Duration,
    /// How long the unanswered write had waited when the connection broke.
    waited: Duration,
}

/// Writes distinct keys one after the other on one keep-alive connection until the node stops
/// answering.
fn writer(node: std::net::SocketAddr, trial: usize, w: usize) -> Written {
    let mut done = Written::default();
    let Ok(mut conn) = HttpConn::connect(node) else {
        return done;
    };
    for i in 0.. {
        let key = format!("{PREFIX}/{trial:02}/{w}/{i:05}");
        // Values differ in size too, so a torn write cannot pass for another.
        let pad = "x".repeat((i * 7 + w * 13) % 200);
        let value = format!(r#"{{"t":{trial},"w":{w},"i":{i},"pad":"{pad}"}}"#);
        let sent = Instant::now();
        match conn.request("PUT", &format!("/v1/kv/{key}"), Some(value.as_bytes())) {
            Ok((200, _)) => {
                done.slowest = done.slowest.max(sent.elapsed());
                done.acked.push((key, value));
            }
            Ok((code, body)) => panic!("PUT {key} answered {code}: {body}"),
            Err(_) => {
                done.waited = sent.elapsed();
                done.in_flight = Some((key, value));
                break;
            }
        }
    }
    done
}

/// Every entry under [`PREFIX`]: key to value, as compact JSON.
fn entries(node: &Daemon) -> BTreeMap<String, String> {
    let (code, body) = http_get(node.api_addr(), &format!("/v1/kv?prefix={PREFIX}"), None)
        .unwrap_or_else(|e| panic!("listing failed: {e}"));
    assert_eq!(code, 200, "listing answered {code}: {body}");
    let list: Vec<Value> = serde_json::from_str(&body).expect("the list is JSON");
    list.into_iter()
        .map(|e| {
            let key = e["key"].as_str().expect("key").to_string();
            (key, e["value"].to_string())
        })
        .collect()
}

/// The same JSON text, as the node stores it (compact, keys in order).
fn compact(json: &str) -> String {
    serde_json::from_str::<Value>(json).unwrap().to_string()
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let mut rng = Rng::new(test_seed("acknowledged_writes_survive_kill_9"));
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 1, &unique_group("crash"));
    let node = &mut nodes[0];
    let api = node.api_addr();

    // Everything ever acknowledged, over all trials: key to compact value.
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    let started = Instant::now();
    for trial in 0..TRIALS {
        let writers = rng.range(1, 5) as usize;
        let kill_after = Duration::from_millis(rng.range(20, 600));
        let handles: Vec<_> = (0..writers)
            .map(|w| thread::spawn(move || writer(api, trial, w)))
            .collect();
        thread::sleep(kill_after);
        node.kill9();
        let results: Vec<Written> = handles.into_iter().map(|h| h.join().unwrap()).collect();

        let restart = Instant::now();
        node.respawn();
        let restarted = restart.elapsed();

        let trial_acked: usize = results.iter().map(|r| r.acked.len()).sum();
        let slowest = results.iter().map(|r| r.slowest).max().unwrap_or_default();
        let waited = results.iter().map(|r| r.waited).max().unwrap_or_default();
        let mut in_flight = BTreeMap::new();
        for r in &results {
            for (key, value) in &r.acked {
                acked.insert(key.clone(), compact(value));
            }
            if let Some((key, value)) = &r.in_flight {
                in_flight.insert(key.clone(), compact(value));
            }
        }

        let held = entries(node);
        let lost: Vec<(&String, &String)> = acked
            .iter()
            .filter(|(k, v)| held.get(*k) != Some(*v))
            .collect();
        let unacked_kept = in_flight.keys().filter(|k| held.contains_key(*k)).count();
        println!(
            "trial {trial:2}: {writers} writer(s), killed after {kill_after:?}: {trial_acked} \
             acknowledged (slowest {slowest:.1?}), {} in flight ({unacked_kept} kept, waited up \
             to {waited:.1?}), {} held in all; restarted in {restarted:.1?}",
            in_flight.len(),
            held.len()
        );
        if let Some((key, value)) = lost.first() {
            panic!(
                "trial {trial}: {} acknowledged write(s) lost or changed after kill -9, e.g. \
                 {key}: expected {value}, held {:?}",
                lost.len(),
                held.get(*key)
            );
        }
        for (key, value) in &held {
            let expected = acked.get(key).or_else(|| in_flight.get(key));
            assert_eq!(
                expected,
                Some(value),
                "trial {trial}: {key} holds {value}, which was never written there"
            );
        }
        // A write seen after the restart is durable from then on, like an acknowledged one;
        // one not seen must never come back.
        for (key, value) in in_flight {
            if held.contains_key(&key) {
                acked.insert(key, value);
            }
        }
    }
    assert!(!acked.is_empty(), "no write was ever acknowledged");
    println!(
        "{TRIALS} kills, {} acknowledged writes kept, in {:?}",
        acked.len(),
        started.elapsed()
    );
}
