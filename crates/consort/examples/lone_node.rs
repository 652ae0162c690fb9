//! A lone node: it leads itself, keeps state, watches it, serves a service and calls it.
//!
//! Everything a group does works with one member, so a program can start alone and gain peers
//! later. This one runs on loopback with mDNS off and a throw-away data dir, and finishes on its
//! own in about a second:
//!
//! ```text
//! cargo run -p consort --example lone_node
//! ```

use std::error::Error;
use std::time::Duration;

use consort::{CallOptions, GroupEvent, Node, NodeConfig, WatchEvent};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // A real node keeps its data dir (its identity and its copy of the state) across restarts.
    let data_dir = tempfile::tempdir()?;
    let mut config = NodeConfig::new(data_dir.path(), "example", "an example secret, 16+ bytes");
    config.bind = "127.0.0.1:0".parse()?; // any free port, on loopback only
    config.mdns = false; // no discovery: nobody else is expected
    let node = Node::start(config).await?;
    println!("node {} listening on {}", node.id(), node.local_addr());

    // Leadership: a lone node leads itself within a heartbeat or two.
    let mut events = node.group_events().await.ok_or("the node stopped")?;
    while let Some(event) = events.next().await {
        if event == GroupEvent::PromotedLeader {
            println!("this node leads the group");
            break;
        }
    }

    // State: a write returns once durable on disk; a watcher sees it.
    let mut watch = node.watch("kitchen", None)?;
    node.set("kitchen/light/on", "true").await?;
    if let Some(WatchEvent::Changed { seq, entry }) = watch.next().await {
        let value = entry.value.as_ref().map_or("(deleted)", |v| v.as_str());
        println!("change #{seq}: {} = {value}", entry.key);
    }
    let entry = node
        .get("kitchen/light/on")
        .await?
        .ok_or("the key vanished")?;
    println!("read back at version {}", entry.version);

    // A service: requests arrive on the handle; this one answers with the request, upper-cased.
    let mut service = node.serve("shout").await?;
    tokio::spawn(async move {
        while let Some(request) = service.next().await {
            let reply = String::from_utf8_lossy(request.body()).to_uppercase();
            request.respond(Ok(reply.into_bytes()));
        }
    });
    let reply = node.call("shout", "hello", CallOptions::default()).await?;
    println!("shout answered {:?}", String::from_utf8_lossy(&reply));

    // A leader's broadcast reaches every member, the leader included.
    node.broadcast("lights out at ten").await?;
    let heard = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match events.next().await {
                Some(GroupEvent::LeaderMessage(message)) => return Some(message),
                Some(_) => continue,
                None => return None,
            }
        }
    })
    .await?
    .ok_or("the node stopped")?;
    println!(
        "heard my own broadcast: {:?}",
        String::from_utf8_lossy(&heard.body)
    );

    node.leave().await;
    Ok(())
}
