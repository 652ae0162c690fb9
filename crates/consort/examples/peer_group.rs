//! info-beamer p2plib's `PeerGroup`, in Rust: callbacks for leadership, peers and messages.
//!
//! Three nodes share one process (on a LAN, one per device). Each runs the same `Player`
//! callbacks: the leader announces a scene to everyone (and to each newcomer), followers
//! acknowledge to the leader, and when the leader leaves the next one takes over and announces
//! again. Finishes on its own in
//! about five seconds:
//!
//! ```text
//! cargo run -p consort --example peer_group
//! ```

use std::error::Error;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use consort::group::{self, Group};
use consort::{Message, Node, NodeConfig, NodeId, Peer, PeerGroup};

/// A signage player: what p2plib users write as a `PeerGroup` subclass.
struct Player {
    name: &'static str,
}

impl PeerGroup for Player {
    fn setup_peer(&mut self, group: &Group) {
        println!("[{}] up as {}", self.name, group.id());
    }

    fn promote_leader(&mut self, group: &Group) {
        println!("[{}] leading {} peers", self.name, group.num_peers());
        // p2plib's broadcast_to_all: every member gets it, this node included.
        let scene = format!("scene 7, from {}", self.name);
        if let Err(e) = group.broadcast_to_all(scene) {
            println!("[{}] broadcast failed: {e}", self.name);
        }
    }

    fn demote_leader(&mut self, _: &Group) {
        println!("[{}] no longer leading", self.name);
    }

    fn promote_follower(&mut self, _: &Group, leader: NodeId) {
        println!("[{}] following {leader}", self.name);
    }

    fn on_peer_added(&mut self, group: &Group, peer: &Peer) {
        println!(
            "[{}] + {} ({}), {} peers",
            self.name,
            peer.name,
            peer.addr,
            group.num_peers()
        );
        if group.is_leader() {
            // A newcomer missed the broadcast: tell it directly.
            let _ = group.send_to(peer.id, format!("scene 7, from {}", self.name));
        }
    }

    fn on_peer_removed(&mut self, group: &Group, peer: &Peer) {
        println!(
            "[{}] - {}, {} peers",
            self.name,
            peer.name,
            group.num_peers()
        );
    }

    fn on_leader_message(&mut self, group: &Group, message: &Message) {
        let text = String::from_utf8_lossy(&message.body);
        println!("[{}] leader says {text:?}", self.name);
        if !group.is_leader() {
            // p2plib's send_to_leader: best-effort, like every p2plib message.
            let _ = group.send_to_leader(format!("{} shows it", self.name));
        }
    }

    fn on_peer_message(&mut self, _: &Group, message: &Message) {
        let text = String::from_utf8_lossy(&message.body);
        println!("[{}] {} says {text:?}", self.name, message.from);
    }
}

fn config(dir: &Path, name: &str, seeds: &[SocketAddr]) -> NodeConfig {
    let mut config = NodeConfig::new(dir, "example-players", "an example secret, 16+ bytes");
    config.bind = "127.0.0.1:0".parse().expect("an address");
    config.mdns = false;
    config.seeds = seeds.to_vec();
    config.name = Some(name.to_string());
    config
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let dirs = [
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    ];
    let mut nodes = Vec::new();
    let mut seeds = Vec::new();
    for (dir, name) in dirs.iter().zip(["left", "middle", "right"]) {
        let node = Arc::new(Node::start(config(dir.path(), name, &seeds)).await?);
        seeds = vec![node.local_addr()];
        // Callbacks run on their own task, one at a time, in the order things happened.
        tokio::spawn(group::run(node.clone(), Player { name }));
        nodes.push(node);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // With equal priorities the lowest node id leads; stop it and watch the next take over.
    let status = nodes[0].status().await.ok_or("a node stopped")?;
    let leader = status.leader.ok_or("no leader")?;
    println!("--- the leader, {leader}, leaves");
    let (leaving, staying): (Vec<_>, Vec<_>) = nodes.into_iter().partition(|n| n.id() == leader);
    for node in leaving {
        node.leave().await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("--- the others leave");
    let leaving: Vec<_> = staying
        .into_iter()
        .map(|node| tokio::spawn(async move { node.leave().await }))
        .collect();
    for node in leaving {
        node.await?;
    }
    Ok(())
}
