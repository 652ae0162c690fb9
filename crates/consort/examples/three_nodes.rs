//! Three nodes on loopback: they join through a seed, elect the node with the highest priority,
//! replicate a write, and elect the next one when the leader leaves.
//!
//! On a LAN each node would run in its own process on its own device, with mDNS finding the
//! others; here all three share one process, and the second and third join through the first's
//! address. Finishes on its own in a few seconds:
//!
//! ```text
//! cargo run -p consort --example three_nodes
//! ```

use std::error::Error;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use consort::{Node, NodeConfig, NodeId};

/// Every member of a group uses the same group name and secret.
const GROUP: &str = "example-three";
const SECRET: &str = "an example secret, 16+ bytes";

fn config(dir: &Path, name: &str, priority: i32, seeds: &[SocketAddr]) -> NodeConfig {
    let mut config = NodeConfig::new(dir, GROUP, SECRET);
    config.bind = "127.0.0.1:0".parse().expect("an address");
    config.mdns = false;
    config.seeds = seeds.to_vec();
    config.name = Some(name.to_string());
    config.priority = priority; // in the default `ranked` mode, the highest priority leads
    config
}

/// Waits until every node sees `count` live members and names the same leader; returns it.
async fn settled(nodes: &[&Node], count: usize) -> Result<NodeId, Box<dyn Error>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let mut leaders = Vec::new();
        for node in nodes {
            let status = node.status().await.ok_or("a node stopped")?;
            let live = status.members.iter().filter(|m| m.state.is_live()).count();
            leaders.push((live == count).then_some(status.leader).flatten());
        }
        if let Some(Some(leader)) = leaders.first() {
            if leaders.iter().all(|l| *l == Some(*leader)) {
                return Ok(*leader);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err("the group did not settle within 10 s".into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let dirs = [
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    ];
    let started = Instant::now();
    let a = Node::start(config(dirs[0].path(), "a", 1, &[])).await?;
    let seed = [a.local_addr()];
    let b = Node::start(config(dirs[1].path(), "b", 3, &seed)).await?;
    let c = Node::start(config(dirs[2].path(), "c", 2, &seed)).await?;
    let leader = settled(&[&a, &b, &c], 3).await?;
    println!(
        "3 nodes joined in {:?}; leader {leader} (b, priority 3)",
        started.elapsed()
    );
    assert_eq!(leader, b.id());

    // A write on one node reaches the others at once.
    let written = Instant::now();
    a.set("hall/lamp", r#"{"on": true, "level": 80}"#).await?;
    while c.get("hall/lamp").await?.is_none() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    println!("a's write read on c after {:?}", written.elapsed());

    // Each node measures its peers' round-trip time and clock offset (a probe a second).
    let mut status = a.status().await.ok_or("a stopped")?;
    while status.clocks.len() < 2 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = a.status().await.ok_or("a stopped")?;
    }
    for (peer, clock) in &status.clocks {
        println!(
            "a sees {peer}: rtt {} us, clock offset {} us",
            clock.rtt_us, clock.offset_us
        );
    }

    // The leader leaves gracefully: the others see it `left` and elect the next priority.
    let left = Instant::now();
    b.leave().await;
    let next = settled(&[&a, &c], 2).await?;
    println!(
        "b left; {next} (c, priority 2) leads after {:?}",
        left.elapsed()
    );
    assert_eq!(next, c.id());

    a.leave().await;
    c.leave().await;
    Ok(())
}
