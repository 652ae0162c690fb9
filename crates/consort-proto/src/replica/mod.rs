//! Replicated state: every node holds every entry; writes spread at once, anti-entropy repairs
//! what was lost, last writer wins.

pub mod entry;
pub mod message;
pub mod reconcile;
pub(crate) mod replicator;
pub mod store;

pub use entry::{Clock, Entry, Hlc, InvalidData, Key, Value, Version, MAX_KEY_LEN};
pub use message::{Refusal, ReplicaMessage};
pub use reconcile::{Session, Step};
pub use replicator::{
    node_meta_key, Change, Commit, Meta, Progress, ReplicaConfig, WriteError, WriteId,
    WriteOutcome, RESERVED_PREFIX,
};
pub use store::{Applied, Store};
