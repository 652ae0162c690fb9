//! Scenario: real `consort up` processes on loopback form a group through a seed, and a node
//! with another secret is kept out (its datagrams are counted as rejected).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{poll, secret_file, unique_group, Daemon, UpArgs};
use serde_json::Value;

/// How long three nodes on loopback may take to see each other alive.
const CONVERGENCE: Duration = Duration::from_secs(3);

/// How long the foreign node is watched.
const WATCH: Duration = Duration::from_secs(3);

/// Starts `n` nodes of a new group, all seeded with the first; returns them and the group.
fn cluster(dir: &std::path::Path, tag: &str, n: usize) -> (Vec<Daemon>, String) {
    let group = unique_group(tag);
    let secret = secret_file(dir, "secret", &"a".repeat(32));
    let up = |seeds| UpArgs {
        group: &group,
        secret_file: Some(&secret),
        seeds,
        extra: vec![],
    };
    let first = Daemon::start(up(vec![]));
    let seed = first.group_addr();
    let mut nodes = vec![first];
    let mut rest: Vec<Daemon> = (1..n).map(|_| Daemon::spawn(up(vec![seed]))).collect();
    for node in &mut rest {
        node.wait_ready();
    }
    nodes.extend(rest);
    (nodes, group)
}

/// The (id, state) pairs of a peer list.
fn states(peers: &[Value]) -> BTreeSet<(String, String)> {
    peers
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                p["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Waits until every node lists exactly the ids in `ids`, all alive; returns the last lists.
fn wait_all_alive(nodes: &[Daemon], ids: &BTreeSet<String>, timeout: Duration) -> Vec<Vec<Value>> {
    let want: BTreeSet<(String, String)> =
        ids.iter().map(|id| (id.clone(), "alive".into())).collect();
    let mut last = Vec::new();
    let converged = poll(timeout, || {
        last = nodes
            .iter()
            .map(|n| n.peers().unwrap_or_default())
            .collect();
        last.iter().all(|peers| states(peers) == want).then_some(())
    });
    assert!(
        converged.is_some(),
        "not all alive within {timeout:?}: {last:#?}"
    );
    last
}

/// unknown_key + bad_tag rejections a node counted.
fn foreign_rejections(node: &Daemon) -> u64 {
    let status = node.status().expect("node answers");
    let rejected = &status["datagrams"]["rejected"];
    rejected["unknown_key"].as_u64().unwrap() + rejected["bad_tag"].as_u64().unwrap()
}

#[test]
fn three_nodes_seeded_by_the_first_all_see_three_alive() {
    let tmp = tempfile::tempdir().unwrap();
    let (nodes, _) = cluster(tmp.path(), "three", 3);
    let started = Instant::now();
    let ids: BTreeSet<String> = nodes.iter().map(Daemon::id).collect();
    assert_eq!(ids.len(), 3, "three distinct ids");
    let lists = wait_all_alive(&nodes, &ids, CONVERGENCE);
    for (node, peers) in nodes.iter().zip(&lists) {
        assert_eq!(peers.len(), 3);
        let me: Vec<&Value> = peers.iter().filter(|p| p["is_self"] == true).collect();
        assert_eq!(me.len(), 1);
        assert_eq!(me[0]["id"], node.id().as_str());
        for peer in peers {
            assert_eq!(peer["services"], Value::Array(vec![]));
        }
        assert_eq!(node.status().unwrap()["peers"], 2);
    }
    eprintln!("three nodes converged in {:?}", started.elapsed());

    // Equal priorities: the lowest node id leads, every node agrees on it and its term, and
    // exactly that peer is marked leader; once probes answered, every peer has an RTT and a
    // clock offset (small: the clocks are the same machine's).
    let lowest = ids.iter().next().unwrap().clone();
    let agreed = poll(CONVERGENCE, || {
        let statuses: Vec<Value> = nodes.iter().filter_map(Daemon::status).collect();
        let leaders: BTreeSet<(String, u64)> = statuses
            .iter()
            .map(|s| {
                (
                    s["leader"].as_str().unwrap_or("").to_string(),
                    s["term"].as_u64().unwrap(),
                )
            })
            .collect();
        let lists: Vec<Vec<Value>> = nodes
            .iter()
            .map(|n| n.peers().unwrap_or_default())
            .collect();
        let marked = lists.iter().all(|peers| {
            let leaders: Vec<&Value> = peers.iter().filter(|p| p["is_leader"] == true).collect();
            leaders.len() == 1 && leaders[0]["id"] == lowest.as_str()
        });
        let clocks = lists
            .iter()
            .flatten()
            .filter(|p| p["is_self"] == false)
            .all(|p| {
                p["rtt_ms"].as_f64().is_some_and(|r| r >= 0.0)
                    && p["clock_offset_ms"]
                        .as_f64()
                        .is_some_and(|o| o.abs() < 50.0)
            });
        (statuses.len() == 3 && leaders.len() == 1 && marked && clocks)
            .then(|| leaders.into_iter().next().unwrap())
    });
    let (leader, term) = agreed.expect("one leader, its term, RTTs and offsets everywhere");
    assert_eq!(leader, lowest);
    assert!(term >= 1);
    for node in &nodes {
        let out = node.cli(&["leader", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(answer["leader"]["id"], lowest.as_str());
        assert_eq!(answer["term"], term);
        assert_eq!(answer["is_self"], node.id() == lowest);
        let text = String::from_utf8(node.cli(&["leader"]).stdout).unwrap();
        assert!(text.starts_with(&format!("{lowest} (")), "{text}");
        assert!(text.contains(&format!("term {term}")), "{text}");
    }
    eprintln!("three nodes converged in {:?}", started.elapsed());
}

#[test]
fn a_node_with_another_secret_never_joins() {
    let tmp = tempfile::tempdir().unwrap();
    let (nodes, group) = cluster(tmp.path(), "foreign", 3);
    let ids: BTreeSet<String> = nodes.iter().map(Daemon::id).collect();
    wait_all_alive(&nodes, &ids, CONVERGENCE);
    let before: Vec<u64> = nodes.iter().map(foreign_rejections).collect();

    let other_secret = secret_file(tmp.path(), "other", &"b".repeat(32));
    let foreign = Daemon::start(UpArgs {
        group: &group,
        secret_file: Some(&other_secret),
        seeds: nodes.iter().map(Daemon::group_addr).collect(),
        extra: vec![],
    });
    let intruder = foreign.id();

    let deadline = Instant::now() + WATCH;
    while Instant::now() < deadline {
        for node in &nodes {
            let peers = node.peers().expect("node answers");
            assert!(
                peers.iter().all(|p| p["id"] != intruder.as_str()),
                "foreign node {intruder} listed: {peers:#?}"
            );
            assert_eq!(peers.len(), 3);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let alone = foreign.peers().expect("foreign node answers");
    assert_eq!(
        alone.len(),
        1,
        "the foreign node sees only itself: {alone:#?}"
    );
    for (node, before) in nodes.iter().zip(before) {
        let after = foreign_rejections(node);
        assert!(
            after > before,
            "rejections did not grow: {before} -> {after}"
        );
    }
}
