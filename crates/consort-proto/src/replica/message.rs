//! Messages between replicas. Each travels in a datagram when it fits, else over a stream.

use serde::{Deserialize, Serialize};

use super::entry::{Entry, Hlc, Key, Value, Version};

/// Why an owner refused a forwarded write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The receiver does not own the key (ownership moved, or configurations disagree).
    #[error("the receiving node does not own this key")]
    NotOwner,
    /// The value breaks the owner's limits.
    #[error("the owner refused the value: {0}")]
    Invalid(String),
}

/// A message between replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ReplicaMessage {
    /// New entries, pushed by their writer (eager push) or sent to repair a difference.
    Push {
        /// The entries.
        entries: Vec<Entry>,
    },
    /// A write to a key this node does not own, for its owner to apply.
    Forward {
        /// The requester's id for this write; retries carry the same id.
        id: u64,
        /// The key.
        key: Key,
        /// The value, or `None` to delete.
        value: Option<Value>,
    },
    /// The owner's answer to a [`ReplicaMessage::Forward`].
    ForwardReply {
        /// The requester's id.
        id: u64,
        /// The version the owner wrote, or why it refused.
        result: Result<Version, Refusal>,
    },
    /// An event on a key, delivered to watchers and never stored.
    Pulse {
        /// The sender's id for it (with the sender's node id, unique).
        id: u64,
        /// The key.
        key: Key,
        /// The payload.
        value: Value,
    },
    /// Asks for every entry (a blank node, or one away longer than the tombstone time).
    SnapshotRequest,
    /// One part of a snapshot, in key order.
    Snapshot {
        /// Entries of this part.
        entries: Vec<Entry>,
        /// Entries in the whole snapshot.
        total: u64,
        /// The sender's tombstone horizon: deletes older than this were forgotten.
        horizon: Hlc,
        /// Whether this is the last part.
        done: bool,
    },
    /// A set-reconciliation step (anti-entropy).
    Reconcile(super::reconcile::Message),
}

impl ReplicaMessage {
    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("replica messages serialize")
    }

    /// Decodes a message; trailing bytes are an error.
    pub fn decode(bytes: &[u8]) -> Option<ReplicaMessage> {
        match postcard::take_from_bytes(bytes) {
            Ok((msg, [])) => Some(msg),
            _ => None,
        }
    }
}
