//! One simulated host: its persistent facts (id, address, disk), and the engine while it runs.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use consort_proto::election::ElectionConfig;
use consort_proto::replica::{Entry, Key, Meta, Value, WriteId};
use consort_proto::{Engine, NodeId, SavedState};

/// Where a simulated node is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NodeStatus {
    /// Added but never started.
    Idle,
    /// An engine is running.
    Running,
    /// Killed without a goodbye (kill -9, power cut); its disk survives.
    Crashed,
    /// Stopped gracefully after [`Engine::leave`]; its disk survives.
    Stopped,
}

impl NodeStatus {
    /// Whether an engine is running.
    pub fn is_running(self) -> bool {
        self == NodeStatus::Running
    }
}

/// A host: what survives restarts, plus the running engine.
pub(crate) struct SimNode {
    pub(crate) id: NodeId,
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    /// Addresses of the nodes it joins through.
    pub(crate) seeds: Vec<SocketAddr>,
    /// The last [`SavedState`] the engine emitted: the simulated disk.
    pub(crate) disk: SavedState,
    pub(crate) status: NodeStatus,
    pub(crate) engine: Option<Engine>,
    /// Counts starts, so that timers of an earlier run are recognised as stale.
    pub(crate) run: u64,
    /// The virtual time a timer event is queued for, if any.
    pub(crate) armed: Option<Duration>,
    /// Replicated entries made durable through `Output::Commit`: the simulated database.
    pub(crate) entries: BTreeMap<Key, Entry>,
    /// Replication metadata made durable with them.
    pub(crate) meta: Meta,
    /// How far this host's wall clock is ahead of the simulation's, in milliseconds (negative:
    /// behind).
    pub(crate) skew_ms: i64,
    /// The wall time (ms) the running engine was started with, and the virtual time it started
    /// at: together, the engine's wall clock.
    pub(crate) wall_base: Option<(u64, Duration)>,
    /// Election priority given to the engine at its next start.
    pub(crate) priority: i32,
    /// How the engine elects its leader, from its next start.
    pub(crate) election: ElectionConfig,
    /// How the engine that runs (or ran last) elects its leader.
    pub(crate) running_election: ElectionConfig,
    /// Writes asked of the running engine and not completed yet: key and value.
    pub(crate) pending: HashMap<WriteId, (Key, Option<Value>)>,
}

impl SimNode {
    pub(crate) fn new(id: NodeId, name: String, addr: SocketAddr) -> SimNode {
        SimNode {
            id,
            name,
            addr,
            seeds: Vec::new(),
            disk: SavedState::default(),
            status: NodeStatus::Idle,
            engine: None,
            run: 0,
            armed: None,
            entries: BTreeMap::new(),
            meta: Meta::default(),
            skew_ms: 0,
            wall_base: None,
            priority: 0,
            election: ElectionConfig::default(),
            running_election: ElectionConfig::default(),
            pending: HashMap::new(),
        }
    }

    /// The running engine's identity generation, if running.
    pub(crate) fn generation(&self) -> Option<u32> {
        self.engine.as_ref().map(|e| e.identity().generation)
    }
}
