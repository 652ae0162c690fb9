//! The group events a node reports (`consort listen`, the WebSocket, the PeerGroup callbacks)
//! across a leader's crash and return: each change reported once, roles strictly alternating.

mod common;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::{cluster_with, consort, poll, unique_group, Daemon};
use serde_json::Value;

struct Listener {
    child: Child,
    out: PathBuf,
}

impl Listener {
    fn start(daemon: &Daemon, out: PathBuf) -> Listener {
        let child = consort()
            .args(["listen", "--api", &format!("http://{}", daemon.api_addr())])
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Listener { child, out }
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn leader_of(daemon: &Daemon) -> Option<String> {
    daemon.leader().and_then(|(l, _)| l)
}

/// Checks one node's event log: roles alternate (a promotion only when it has no role, a
/// demotion only of the role it has, naming the leader it followed), and peers are added only
/// when absent and removed only when present. Returns the role events as short strings.
fn check(events: &[Value], node: usize) -> Vec<String> {
    let mut role: Option<String> = None;
    let mut peers = std::collections::BTreeSet::new();
    let mut roles = Vec::new();
    for e in events {
        let kind = e["type"].as_str().unwrap_or_default();
        match kind {
            "promote_leader" | "promote_follower" => {
                assert!(
                    role.is_none(),
                    "node {node}: {kind} while {role:?}: {events:?}"
                );
                role = Some(match kind {
                    "promote_leader" => "leader".into(),
                    _ => format!("follower of {}", e["leader"].as_str().unwrap()),
                });
            }
            "demote_leader" => {
                assert_eq!(role.as_deref(), Some("leader"), "node {node}: {events:?}");
                role = None;
            }
            "demote_follower" => {
                let was = format!("follower of {}", e["leader"].as_str().unwrap());
                assert_eq!(role.as_ref(), Some(&was), "node {node}: {events:?}");
                role = None;
            }
            "peer_added" => {
                let id = e["peer"]["id"].as_str().unwrap().to_string();
                assert!(peers.insert(id), "node {node}: added twice: {events:?}");
            }
            "peer_removed" => {
                let id = e["peer"]["id"].as_str().unwrap().to_string();
                assert!(
                    peers.remove(&id),
                    "node {node}: removed unknown: {events:?}"
                );
            }
            _ => continue,
        }
        if kind.starts_with("promote") || kind.starts_with("demote") {
            let who = e["leader"]
                .as_str()
                .map(|l| format!(" {}", &l[..4]))
                .unwrap_or_default();
            roles.push(format!("{kind}{who}"));
        }
    }
    roles
}

#[test]
fn a_crashed_leader_is_replaced_and_retakes_the_lead_each_change_reported_once() {
    let root = tempfile::tempdir().unwrap();
    let group = unique_group("events");
    let mut nodes = cluster_with(root.path(), 3, &group, |i| {
        vec!["--priority".into(), (10 * (i + 1)).to_string()]
    });
    let ids: Vec<String> = nodes.iter().map(Daemon::id).collect();
    let agreed = |nodes: &[Daemon], who: &[usize], leader: &str| {
        who.iter()
            .all(|&i| leader_of(&nodes[i]).as_deref() == Some(leader))
    };
    let formed = poll(Duration::from_secs(5), || {
        agreed(&nodes, &[0, 1, 2], &ids[2]).then_some(())
    });
    assert!(formed.is_some(), "no agreement on the priority-30 node");
    let listeners: Vec<Listener> = (0..2)
        .map(|i| Listener::start(&nodes[i], root.path().join(format!("events{i}"))))
        .collect();
    let primed = poll(Duration::from_secs(5), || {
        listeners
            .iter()
            .all(|l| l.events().iter().any(|e| e["type"] == "promote_follower"))
            .then_some(())
    });
    assert!(primed.is_some(), "listeners did not start");

    nodes[2].kill9();
    let replaced = poll(Duration::from_secs(5), || {
        agreed(&nodes, &[0, 1], &ids[1]).then_some(())
    });
    assert!(replaced.is_some(), "the priority-20 node did not take over");
    nodes[2].respawn();
    let back = poll(Duration::from_secs(5), || {
        agreed(&nodes, &[0, 1, 2], &ids[2]).then_some(())
    });
    assert!(
        back.is_some(),
        "the returning priority-30 node did not lead again"
    );
    std::thread::sleep(Duration::from_millis(500));

    let short = |id: &String| id[..4].to_string();
    let roles: Vec<Vec<String>> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| check(&l.events(), i))
        .collect();
    println!("node 0: {:?}\nnode 1: {:?}", roles[0], roles[1]);
    let (l2, l1) = (short(&ids[2]), short(&ids[1]));
    // The surviving follower follows the old leader, then the new one, then the old one again.
    assert_eq!(
        roles[0],
        [
            format!("promote_follower {l2}"),
            format!("demote_follower {l2}"),
            format!("promote_follower {l1}"),
            format!("demote_follower {l1}"),
            format!("promote_follower {l2}"),
        ]
    );
    // The next in rank leads in between, once.
    assert_eq!(
        roles[1],
        [
            format!("promote_follower {l2}"),
            format!("demote_follower {l2}"),
            "promote_leader".to_string(),
            "demote_leader".to_string(),
            format!("promote_follower {l2}"),
        ]
    );
    for (i, l) in listeners.iter().enumerate() {
        let events = l.events();
        let removed = events
            .iter()
            .filter(|e| e["type"] == "peer_removed" && e["peer"]["id"] == ids[2].as_str())
            .count();
        let added = events
            .iter()
            .filter(|e| e["type"] == "peer_added" && e["peer"]["id"] == ids[2].as_str())
            .count();
        assert_eq!((added, removed), (2, 1), "node {i}: {events:?}");
    }
}
