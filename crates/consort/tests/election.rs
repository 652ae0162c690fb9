//! Leader election on real nodes over loopback.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use consort::{Node, NodeConfig, NodeId};

fn config(dir: &Path, priority: i32, seeds: &[SocketAddr]) -> NodeConfig {
    let mut c = NodeConfig::new(dir, "election-test", "election test secret, 32 bytes!");
    c.bind = "127.0.0.1:0".parse().unwrap();
    c.mdns = false;
    c.seeds = seeds.to_vec();
    c.priority = priority;
    c
}

/// Polls until every node names `leader` with one common term; returns the time and the term.
async fn agree_on(nodes: &[&Node], leader: NodeId, limit: Duration) -> (Duration, u64) {
    let start = Instant::now();
    loop {
        let mut seen = Vec::new();
        for n in nodes {
            let s = n.status().await.unwrap();
            seen.push((s.leader, s.term));
        }
        if seen.iter().all(|s| *s == (Some(leader), seen[0].1)) {
            return (start.elapsed(), seen[0].1);
        }
        assert!(
            start.elapsed() < limit,
            "no agreement on {leader} within {limit:?}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn highest_priority_leads_and_a_stop_hands_over() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = Node::start(config(dirs[0].path(), 1, &[])).await.unwrap();
    let b = Node::start(config(dirs[1].path(), 5, &[a.local_addr()]))
        .await
        .unwrap();
    let c = Node::start(config(dirs[2].path(), 3, &[a.local_addr()]))
        .await
        .unwrap();
    let (took, term) = agree_on(&[&a, &b, &c], b.id(), Duration::from_secs(3)).await;
    println!("all agree on the priority-5 node at term {term} after {took:?}");

    b.leave().await;
    let (took, next) = agree_on(&[&a, &c], c.id(), Duration::from_secs(2)).await;
    println!("priority-3 node leads at term {next} {took:?} after the leader stopped");
    assert!(next > term, "terms only grow: {next} after {term}");
    a.leave().await;
    c.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_leads_itself() {
    let dir = tempfile::tempdir().unwrap();
    let n = Node::start(config(dir.path(), 0, &[])).await.unwrap();
    agree_on(&[&n], n.id(), Duration::from_secs(2)).await;
    n.leave().await;
}
