//! Replicated state on real nodes over loopback: propagation, deletes, owned prefixes, pulses,
//! durability across restarts, bootstrap of a blank node.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use consort::{MemberState, Node, NodeConfig, StateError, WatchEvent, WriteError, WriteOutcome};

const SECRET: &str = "state test secret, 32 bytes long";

fn config(dir: &Path, group: &str, seeds: &[SocketAddr]) -> NodeConfig {
    let mut c = NodeConfig::new(dir, group, SECRET);
    c.bind = "127.0.0.1:0".parse().unwrap();
    c.mdns = false;
    c.seeds = seeds.to_vec();
    c
}

async fn wait_alive(nodes: &[&Node], limit: Duration) {
    let start = Instant::now();
    loop {
        let mut alive = 0;
        for n in nodes {
            alive += n
                .members()
                .await
                .iter()
                .filter(|m| m.state == MemberState::Alive)
                .count();
        }
        if alive == nodes.len() * nodes.len() {
            return;
        }
        assert!(start.elapsed() < limit, "group not formed within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls until `node` holds `json` at `key` (None: absent); returns how long it took.
async fn wait_value(node: &Node, key: &str, json: Option<&str>, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = node.get(key).await.unwrap();
        if got
            .as_ref()
            .and_then(|e| e.value.as_ref())
            .map(|v| v.as_str())
            == json
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{key} is {got:?}, not {json:?}, after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn group(dirs: &[tempfile::TempDir], name: &str, owned: &[&[&str]]) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let seeds: Vec<SocketAddr> = nodes.first().map(|n| n.local_addr()).into_iter().collect();
        let mut c = config(dir.path(), name, &seeds);
        c.replica.owned = owned
            .get(i)
            .map(|o| o.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default();
        nodes.push(Node::start(c).await.unwrap());
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_alive(&refs, Duration::from_secs(3)).await;
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_every_node_and_watchers() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = group(&dirs, "state-propagation", &[]).await;
    let mut watches: Vec<_> = nodes[1..]
        .iter()
        .map(|n| n.watch("kitchen", None).unwrap())
        .collect();

    assert_eq!(
        nodes[0].set("kitchen/light/on", "true").await.unwrap(),
        match nodes[0].get("kitchen/light/on").await.unwrap() {
            Some(e) => WriteOutcome::Applied(e.version),
            None => panic!("written locally"),
        }
    );
    for n in &nodes[1..] {
        wait_value(n, "kitchen/light/on", Some("true"), Duration::from_secs(2)).await;
    }
    for w in &mut watches {
        match tokio::time::timeout(Duration::from_secs(2), w.next())
            .await
            .unwrap()
        {
            Some(WatchEvent::Changed { entry, .. }) => {
                assert_eq!(entry.key.as_str(), "kitchen/light/on");
                assert_eq!(entry.value.unwrap().as_str(), "true");
                assert_eq!(entry.version.origin, nodes[0].id());
            }
            other => panic!("{other:?}"),
        }
    }

    // Propagation: from the write call to the watch event on both other nodes.
    let mut samples = Vec::new();
    for i in 0..40 {
        let start = Instant::now();
        nodes[0].set("kitchen/temp", &i.to_string()).await.unwrap();
        for w in &mut watches {
            loop {
                match tokio::time::timeout(Duration::from_secs(2), w.next())
                    .await
                    .unwrap()
                {
                    Some(WatchEvent::Changed { entry, .. })
                        if entry.key.as_str() == "kitchen/temp" =>
                    {
                        break
                    }
                    Some(_) => continue,
                    None => panic!("node stopped"),
                }
            }
        }
        samples.push(start.elapsed());
    }
    samples.sort();
    let median = samples[samples.len() / 2];
    println!(
        "propagation to 2 watching peers (incl. durable commit), median {median:?}, max {:?}",
        samples.last().unwrap()
    );
    assert!(median < Duration::from_millis(50), "median {median:?}");

    // Deletes propagate and hide the key everywhere.
    nodes[2].delete("kitchen/light/on").await.unwrap();
    for n in &nodes {
        wait_value(n, "kitchen/light/on", None, Duration::from_secs(2)).await;
    }
    let listed: Vec<String> = nodes[1]
        .list("")
        .await
        .unwrap()
        .iter()
        .map(|e| e.key.to_string())
        .collect();
    assert_eq!(listed, ["kitchen/temp"]);
    for n in nodes {
        n.leave().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_prefixes_and_pulses() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = group(&dirs, "state-owned", &[&[], &["garage"]]).await;
    // Ownership is learnt through replicated metadata.
    let start = Instant::now();
    while nodes[0]
        .set("garage/door", "\"probe\"")
        .await
        .map_or(true, |o| o == WriteOutcome::Queued)
    {
        assert!(start.elapsed() < Duration::from_secs(3));
    }
    let outcome = nodes[0].set("garage/door", "\"open\"").await.unwrap();
    let WriteOutcome::Applied(version) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(version.origin, nodes[1].id(), "the owner applied it");
    wait_value(
        &nodes[2],
        "garage/door",
        Some("\"open\""),
        Duration::from_secs(2),
    )
    .await;

    // Pulses reach every watcher and are never stored.
    let mut watches: Vec<_> = nodes.iter().map(|n| n.watch("", None).unwrap()).collect();
    nodes[2].pulse("doorbell", "{\"ring\":1}").await.unwrap();
    for w in &mut watches {
        loop {
            match tokio::time::timeout(Duration::from_secs(2), w.next())
                .await
                .unwrap()
            {
                Some(WatchEvent::Pulse { key, value, origin }) => {
                    assert_eq!(
                        (key.as_str(), value.as_str(), origin),
                        ("doorbell", "{\"ring\":1}", nodes[2].id())
                    );
                    break;
                }
                Some(_) => continue,
                None => panic!("stopped"),
            }
        }
    }
    assert!(nodes[0].get("doorbell").await.unwrap().is_none());

    // Owner down: refused clearly; queued: lands when it returns, latest value only.
    let owner_id = nodes[1].id();
    let mut nodes = nodes;
    let owner = nodes.remove(1);
    owner.leave().await;
    drop(owner);
    let start = Instant::now();
    loop {
        match nodes[0].set("garage/door", "\"closed\"").await {
            Err(StateError::Write(WriteError::OwnerUnreachable(id))) => {
                assert_eq!(id, owner_id);
                break;
            }
            other => assert!(start.elapsed() < Duration::from_secs(3), "{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for v in ["1", "2", "3"] {
        let queued = nodes[0]
            .write("garage/door", Some(consort::Value::parse(v).unwrap()), true)
            .await
            .unwrap();
        assert_eq!(queued, WriteOutcome::Queued);
    }
    let mut c = config(dirs[1].path(), "state-owned", &[nodes[0].local_addr()]);
    c.replica.owned = vec!["garage".into()];
    let owner = Node::start(c).await.unwrap();
    let took = wait_value(&nodes[1], "garage/door", Some("3"), Duration::from_secs(5)).await;
    println!("queued write landed {took:?} after the owner restarted");
    let entry = owner.get("garage/door").await.unwrap().unwrap();
    assert_eq!(entry.version.origin, owner_id);
    for n in nodes.into_iter().chain([owner]) {
        n.leave().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_restart_and_a_blank_node_bootstraps() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = group(&dirs[..2], "state-durable", &[]).await;
    for i in 0..2000 {
        nodes[i % 2]
            .set(&format!("k/{i:05}"), &format!("{{\"n\":{i}}}"))
            .await
            .unwrap();
    }
    wait_value(
        &nodes[1],
        "k/01998",
        Some("{\"n\":1998}"),
        Duration::from_secs(3),
    )
    .await;
    wait_value(
        &nodes[0],
        "k/01999",
        Some("{\"n\":1999}"),
        Duration::from_secs(3),
    )
    .await;

    // Restart node 1 alone: it serves its state at once, before any peer answers.
    let n1 = nodes.remove(1);
    n1.leave().await;
    drop(n1);
    let n0 = nodes.remove(0);
    n0.leave().await;
    drop(n0);
    let alone = Node::start(config(dirs[1].path(), "state-durable", &[]))
        .await
        .unwrap();
    assert_eq!(alone.list("k").await.unwrap().len(), 2000);
    alone.leave().await;
    drop(alone);

    // A blank node pulls everything from a peer over a stream.
    let n0 = Node::start(config(dirs[0].path(), "state-durable", &[]))
        .await
        .unwrap();
    let start = Instant::now();
    let blank = Node::start(config(dirs[2].path(), "state-durable", &[n0.local_addr()]))
        .await
        .unwrap();
    let took = loop {
        if blank.list("k").await.unwrap().len() == 2000 {
            break start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "bootstrap incomplete"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!("blank node holds 2000 keys {took:?} after start");
    n0.leave().await;
    blank.leave().await;
}
