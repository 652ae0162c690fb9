//! Messages between members, and services called by name.
//!
//! # Messages
//!
//! Four ways to address one ([`Target`]), as info-beamer's p2plib has them and a little more:
//! a leader's broadcast to every member (delivered to the leader too, stamped with its term, and
//! dropped by members that know a newer leadership), a message to the leader, to one node, and a
//! publish to every other member. Two delivery classes:
//!
//! - best-effort: one transmission, delivered at most once (the wire's replay window drops
//!   duplicates);
//! - reliable: numbered per (sender, receiver), acknowledged, retransmitted until a deadline,
//!   delivered exactly once and in the order sent to each receiver while both ends live. The
//!   sender learns the outcome ([`crate::Output::SendDone`]).
//!
//! Messages that do not fit in a datagram take the stream; over
//! [`MessagingConfig::max_message`] they are refused with [`SendError::TooLarge`].
//!
//! # Services
//!
//! A node advertises named services (in its replicated metadata entry, so every member knows the
//! providers). A call picks a provider by [`Policy`] and runs in two phases: the provider first
//! only keeps the request and accepts it; the caller then confirms and the provider runs it. A
//! provider that does not accept in time, or goes away before accepting, is replaced by the
//! next one, which is safe because it cannot have run the request. A provider runs each
//! request id at most once, however often the request or the confirmation arrives, and answers
//! retries from what it remembers. Once a provider has accepted, the call never goes elsewhere:
//! if that provider dies, the call fails with [`CallError::ProviderLost`] rather than risk
//! running the request twice.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::election::Term;
use crate::id::NodeId;

mod channel;
pub(crate) mod frame;
mod machine;
mod rpc;

pub(crate) use machine::{Action, Messaging, View};

/// A send's handle (reliable sends report their outcome under it).
pub type MessageId = u64;
/// A call's handle.
pub type CallId = u64;
/// A request this node serves; answer it with [`crate::Engine::respond`].
pub type ServeId = u64;

/// Longest service name, in bytes.
pub const MAX_SERVICE_NAME: usize = 64;

/// Messaging limits and defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessagingConfig {
    /// Largest message body (and request or reply body), in bytes.
    pub max_message: usize,
    /// How long a reliable message is retried when the send does not say.
    pub reliable_timeout: Duration,
    /// Reliable messages waiting per receiver before sends are refused with
    /// [`SendError::QueueFull`].
    pub max_queued: usize,
    /// Requests a provider remembers (to answer retries without running them again).
    pub max_remembered_requests: usize,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        MessagingConfig {
            max_message: 1 << 20,
            reliable_timeout: Duration::from_secs(30),
            max_queued: 65_536,
            max_remembered_requests: 65_536,
        }
    }
}

/// How a message was addressed, as its receiver sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// The leader's broadcast, at its term (p2plib's `broadcast_to_all`; `on_leader_message`).
    Broadcast {
        /// The sender's term when it sent it.
        term: Term,
    },
    /// Sent to the leader (p2plib's `send_to_leader`; `on_peer_message`).
    ToLeader,
    /// Sent to this node by id.
    Direct,
    /// Published to every member.
    Publish,
}

impl Kind {
    /// The kind's name in APIs: `broadcast`, `leader`, `direct`, `publish`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Broadcast { .. } => "broadcast",
            Kind::ToLeader => "leader",
            Kind::Direct => "direct",
            Kind::Publish => "publish",
        }
    }
}

/// Whom to send a message to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// Every member, this node included; only the leader may (p2plib's `broadcast_to_all`).
    Broadcast,
    /// The leader (a local delivery when this node leads).
    Leader,
    /// One node (a local delivery when it is this node).
    Node(NodeId),
    /// Every other live member.
    All,
}

/// A message delivered to this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Who sent it.
    pub from: NodeId,
    /// How it was addressed.
    pub kind: Kind,
    /// Whether it came in the reliable class.
    pub reliable: bool,
    /// The body, as sent.
    pub body: Vec<u8>,
}

/// Delivery class and deadline of a send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// Acked, retried, exactly once in order; otherwise best-effort.
    pub reliable: bool,
    /// How long a reliable message is retried ([`MessagingConfig::reliable_timeout`] if `None`).
    pub timeout: Option<Duration>,
}

/// Why a send failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// A broadcast from a node that does not lead.
    #[error("this node is not the leader; only the leader broadcasts")]
    NotLeader,
    /// A message to the leader while there is none.
    #[error("there is no leader")]
    NoLeader,
    /// A message to a node that is not a member.
    #[error("node {0} is not a member of the group")]
    UnknownNode(NodeId),
    /// The body is over the limit.
    #[error("message of {size} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// Body size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Too many reliable messages wait for a receiver.
    #[error("too many reliable messages are waiting for node {0}")]
    QueueFull(NodeId),
    /// A reliable message was not acknowledged by these nodes before its deadline (it may or may
    /// not have reached them).
    #[error("not acknowledged before the deadline by {}", list(.0))]
    Undelivered(Vec<NodeId>),
}

fn list(nodes: &[NodeId]) -> String {
    nodes
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// How a call picks its provider.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Policy {
    /// The providers in turn, per caller and service (Freedomotic's round robin).
    #[default]
    RoundRobin,
    /// This node if it provides the service, else round robin.
    LocalFirst,
    /// The leader, which must provide the service.
    Leader,
    /// Every provider; the call gathers every reply.
    All,
    /// This node, which must provide the service.
    Node(NodeId),
}

impl Policy {
    /// Parses `round_robin`, `local_first`, `leader` or `all`.
    pub fn parse(text: &str) -> Option<Policy> {
        match text {
            "round_robin" => Some(Policy::RoundRobin),
            "local_first" => Some(Policy::LocalFirst),
            "leader" => Some(Policy::Leader),
            "all" => Some(Policy::All),
            _ => None,
        }
    }
}

/// A call's policy and deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallOptions {
    /// Which provider.
    pub policy: Policy,
    /// How long the call may take in all, failovers included.
    pub timeout: Duration,
}

impl Default for CallOptions {
    fn default() -> Self {
        CallOptions {
            policy: Policy::RoundRobin,
            timeout: Duration::from_secs(5),
        }
    }
}

/// What a provider answered, when it did not answer with a body.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The node does not provide the service.
    #[error("the node does not provide this service")]
    NoSuchService,
    /// The provider remembers too many requests to take another.
    #[error("the provider is busy")]
    Busy,
    /// The handler ran and failed.
    #[error("{0}")]
    Failed(String),
    /// No answer before the call's deadline (for [`Policy::All`]).
    #[error("no answer before the deadline")]
    Timeout,
    /// The provider went away after accepting the request (for [`Policy::All`]).
    #[error("the provider went away")]
    Lost,
}

/// One provider's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The provider.
    pub from: NodeId,
    /// Its answer.
    pub result: Result<Vec<u8>, ServiceError>,
}

/// Why a call failed as a whole.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No live member provides the service (none appeared before the deadline).
    #[error("no provider of service {0:?}")]
    NoProvider(String),
    /// A provider accepted the request but did not answer before the deadline.
    #[error("the call timed out (provider {0} accepted it but did not answer in time)")]
    Timeout(NodeId),
    /// Providers existed but none accepted the request before the deadline.
    #[error("no provider of service {0:?} accepted the request in time")]
    NotAccepted(String),
    /// The provider went away after accepting the request; it may have run. Not retried
    /// elsewhere, so that it runs at most once.
    #[error("provider {0} went away after accepting the request; it may have run")]
    ProviderLost(NodeId),
    /// The service name is not valid.
    #[error("invalid service name {0:?}: 1 to 64 bytes of letters, digits and -_.:/")]
    InvalidService(String),
    /// The request body is over the limit.
    #[error("request of {size} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// Body size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// Whether `name` is a valid service name.
pub fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SERVICE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b))
}

/// A request for this node to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Answer with [`crate::Engine::respond`] and this id.
    pub id: ServeId,
    /// The caller.
    pub from: NodeId,
    /// The service.
    pub service: String,
    /// The request body.
    pub body: Vec<u8>,
}

/// Messaging and service counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessagingStats {
    /// Messages handed to the network or delivered locally, best-effort and reliable.
    pub sent: [u64; 2],
    /// Messages delivered to this node, best-effort and reliable.
    pub delivered: [u64; 2],
    /// Reliable transmissions beyond the first.
    pub retransmitted: u64,
    /// Reliable messages abandoned at their deadline.
    pub expired: u64,
    /// Reliable messages waiting for an ack now (a gauge), per receiver summed.
    pub pending: u64,
    /// Leader messages dropped for a stale term or a sender that does not lead.
    pub stale: u64,
    /// Calls ended, by outcome: ok, failed (no provider, timeout, lost...).
    pub calls: [u64; 2],
    /// Requests served here (handler started).
    pub served: u64,
    /// Request retries answered from the cache without running again.
    pub deduplicated: u64,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Broadcast => f.write_str("broadcast"),
            Target::Leader => f.write_str("leader"),
            Target::Node(node) => write!(f, "{node}"),
            Target::All => f.write_str("all"),
        }
    }
}
