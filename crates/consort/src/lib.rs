//! Consort: keep a group of devices or program instances in sync, peer to peer, with no broker.
//!
//! This crate is the library people embed: it runs the `consort-proto` state machine on tokio
//! (UDP socket, timers), discovers peers over mDNS and seeds, and keeps the node's identity in
//! its data dir.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use consort::{Node, NodeConfig};
//!
//! let node = Node::start(NodeConfig::new("/var/lib/consort", "home", "the group secret, 16+ bytes")).await?;
//! for member in node.members().await {
//!     println!("{} {} {:?}", member.identity.id, member.identity.addr, member.state);
//! }
//! node.leave().await;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod data_dir;
pub mod discovery;
mod driver;
pub mod group;
mod messages;
mod net;
mod node;
mod service;
pub mod storage;
mod stream;
pub mod telemetry;
pub mod watch;

pub use consort_proto::messaging::{
    CallError, CallOptions, Kind, Message, Policy, Reply, SendError, SendOptions, ServiceError,
    Target,
};
pub use consort_proto::replica::{Entry, Key, ReplicaConfig, Value, WriteError, WriteOutcome};
pub use consort_proto::{
    Event, Identity, Member, MemberEvent, MemberState, NodeId, RejectReason, Stats,
};
pub use data_dir::{DataDir, DataDirError, Ports};
pub use group::{GroupEvent, GroupEvents, Peer, PeerGroup};
pub use messages::{MessageError, PendingSend};
pub use node::{Node, NodeConfig, StartError, StateError, Status, DEFAULT_GROUP_PORT};
pub use service::{IncomingRequest, Service};
pub use watch::{Watch, WatchEvent};
