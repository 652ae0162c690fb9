//! The Rust example of the README, kept here so that CI compiles it; a test
//! (`crates/consort-cli/tests/docs_curl.rs`) checks that the README shows exactly the code below.
//!
//! It joins (or founds) the group `home` on this LAN, writes a key, sees the change, and leaves;
//! it finishes on its own within a second:
//!
//! ```text
//! cargo run -p consort --example readme
//! ```

use consort::{Node, NodeConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = NodeConfig::new("/tmp/consort-readme", "home", "the group secret, 16+ bytes");
    let node = Node::start(config).await?; // port 7470 (or a free one), peers found over mDNS
    let mut changes = node.watch("kitchen", None)?; // every change under kitchen/, from anyone
    node.set("kitchen/light/on", "true").await?; // durable here, then pushed to every peer
    println!("{:?}", changes.next().await);
    node.leave().await; // peers see this node `left`, not `down`
    Ok(())
}
