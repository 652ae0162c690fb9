//! The `Node` handle: start a node, ask it about the group, stop it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use consort_proto::election::{ElectionConfig, Term};
use consort_proto::replica::{
    Entry, InvalidData, Key, ReplicaConfig, Value, WriteError, WriteOutcome,
};
use consort_proto::wire::SecretError;
use consort_proto::{Config, Engine, Event, Identity, Keyring, Member, NodeId, Setup, Stats};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::data_dir::{DataDir, DataDirError, Ports};
use crate::discovery::Discovery;
use crate::driver::{Command, Driver, Inputs, Parts};
use crate::net;
use crate::storage::{Storage, StorageError};
use crate::stream::Streams;
use crate::watch::{ChangeLog, TooOld, Watch};

/// The default group port (UDP datagrams, TCP streams).
pub const DEFAULT_GROUP_PORT: u16 = 7470;

/// How to start a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Where the node keeps its identity and state.
    pub data_dir: PathBuf,
    /// The group name: nodes join only nodes of the same group and secret.
    pub group: String,
    /// Group secrets; the first seals what this node sends, all are accepted.
    pub secrets: Vec<String>,
    /// Where to listen for the group protocol.
    pub bind: SocketAddr,
    /// If the bind port is busy, take a free one instead of failing.
    pub any_port_if_busy: bool,
    /// Addresses of nodes to join through.
    pub seeds: Vec<SocketAddr>,
    /// Advertise and discover over mDNS.
    pub mdns: bool,
    /// Human-readable name; defaults to the host name and the start of the node id.
    pub name: Option<String>,
    /// Election priority (higher leads in `ranked` mode).
    pub priority: i32,
    /// Protocol timings.
    pub protocol: Config,
    /// Replication: owned prefixes, value size limit, tombstone time.
    pub replica: ReplicaConfig,
    /// Leader election: `ranked` or `sticky`, optional quorum.
    pub election: ElectionConfig,
}

impl NodeConfig {
    /// A configuration with the defaults: port 7470 on every interface (or any free port when
    /// busy), mDNS on, no seeds.
    pub fn new(data_dir: impl Into<PathBuf>, group: &str, secret: &str) -> NodeConfig {
        NodeConfig {
            data_dir: data_dir.into(),
            group: group.to_string(),
            secrets: vec![secret.to_string()],
            bind: SocketAddr::from(([0, 0, 0, 0], DEFAULT_GROUP_PORT)),
            any_port_if_busy: true,
            seeds: Vec::new(),
            mdns: true,
            name: None,
            priority: 0,
            protocol: Config::default(),
            replica: ReplicaConfig::default(),
            election: ElectionConfig::default(),
        }
    }
}

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data dir could not be opened, locked or read.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// A group secret is unusable.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The group port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The group name is empty or too long.
    #[error("the group name must be 1 to 64 bytes, got {0}")]
    Group(usize),
    /// The stored state could not be opened or read.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a state operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The key or value is invalid; nothing was written.
    #[error(transparent)]
    Invalid(#[from] InvalidData),
    /// The write was refused (reserved key, owner unreachable or refusing).
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
}

/// What a node knows at one instant.
#[derive(Clone, Debug)]
pub struct Status {
    /// Its own identity.
    pub identity: Identity,
    /// Every member once, itself included.
    pub members: Vec<Member>,
    /// Traffic and rejection counters.
    pub stats: Stats,
    /// Live entries held (tombstones not counted).
    pub entries: usize,
    /// Whether the node is still pulling its state from a peer.
    pub bootstrapping: bool,
    /// The leader, as this node sees it.
    pub leader: Option<NodeId>,
    /// The term of the current leadership.
    pub term: Term,
    /// Round-trip time and clock offset per peer, once measured.
    pub clocks: Vec<(NodeId, consort_proto::clock::Estimate)>,
    /// The group's time (the leader's clock), in microseconds since the Unix epoch.
    pub group_time_us: i64,
    /// Services each member advertises (members advertising none are left out).
    pub services: std::collections::BTreeMap<NodeId, Vec<String>>,
    /// Message and service counters.
    pub messaging: consort_proto::messaging::MessagingStats,
    /// Tombstones, leader changes, anti-entropy rounds, bootstrap progress, propagation lag.
    pub telemetry: crate::telemetry::Telemetry,
}

/// A running node. Cheap to share behind an `Arc`; stop it with [`Node::leave`].
pub struct Node {
    id: NodeId,
    local_addr: SocketAddr,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) unserves: mpsc::UnboundedSender<String>,
    events: broadcast::Sender<Event>,
    data_dir: Arc<DataDir>,
    changes: Arc<Mutex<ChangeLog>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Node {
    /// Opens the data dir, binds the group port, and starts joining the group.
    pub async fn start(config: NodeConfig) -> Result<Node, StartError> {
        if config.group.is_empty() || config.group.len() > 64 {
            return Err(StartError::Group(config.group.len()));
        }
        let keyring = Keyring::from_secrets(&config.secrets, &config.group)?;
        let data_dir = Arc::new(DataDir::open(&config.data_dir)?);
        let id = data_dir.node_id()?;
        let saved = data_dir.saved_state()?;
        let (socket, listener) = bind(config.bind, config.any_port_if_busy).await?;
        let local_addr = socket.local_addr().map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
        })?;
        data_dir.write_ports(&Ports {
            group: local_addr.port(),
            api: None,
        })?;
        let storage = Arc::new(Storage::open(data_dir.path())?);
        let (now, wall_ms) = wall_clock();
        let keyring = Arc::new(keyring);
        let mut engine = Engine::new(
            Setup {
                id,
                name: config.name.clone().unwrap_or_else(|| default_name(id)),
                priority: config.priority,
                // With no routable interface yet, start on loopback; the driver moves to the
                // real address as soon as one appears.
                addr: net::advertised_addr(local_addr, &config.seeds)
                    .unwrap_or_else(|| SocketAddr::new([127, 0, 0, 1].into(), local_addr.port())),
                saved,
                keyring: (*keyring).clone(),
                config: config.protocol.clone(),
                seed: rand::random(),
                wall_ms,
                replica: config.replica.clone(),
                entries: storage.load()?,
                meta: storage.meta()?,
                election: config.election,
            },
            now,
        );
        for seed in &config.seeds {
            engine.add_seed(now, *seed);
        }
        let (sightings_tx, sightings) = mpsc::channel(64);
        let discovery = if config.mdns {
            match Discovery::start(id, &config.group, local_addr.port(), sightings_tx) {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::warn!("mDNS discovery is off: {e}; only seeds will be used");
                    None
                }
            }
        } else {
            None
        };
        let (frames_tx, frames) = mpsc::channel(1024);
        let streams = Streams::start(id, keyring, listener, frames_tx);
        let (commands, command_rx) = mpsc::channel(1024);
        let (responses_tx, responses) = mpsc::unbounded_channel();
        let (unserves_tx, unserves) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(4096);
        let changes = Arc::new(Mutex::new(ChangeLog::default()));
        let driver = Driver::new(
            engine,
            Parts {
                socket,
                bound: local_addr,
                seeds: config.seeds.clone(),
                data_dir: data_dir.clone(),
                storage,
                streams,
                events: events.clone(),
                changes: changes.clone(),
                discovery,
                responses: responses_tx,
            },
        );
        let inputs = Inputs {
            commands: command_rx,
            sightings,
            frames,
            responses,
            unserves,
        };
        let task = tokio::spawn(driver.run(inputs));
        Ok(Node {
            id,
            local_addr,
            commands,
            unserves: unserves_tx,
            events,
            data_dir,
            changes,
            task: Mutex::new(Some(task)),
        })
    }

    /// This node's persistent id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The local address of the group socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The data dir this node runs from.
    pub fn data_dir(&self) -> &DataDir {
        &self.data_dir
    }

    /// Membership, identity and counters, as the node sees them now.
    ///
    /// Returns `None` once the node has stopped.
    pub async fn status(&self) -> Option<Status> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Status(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Every member once, this node included (empty once stopped).
    pub async fn members(&self) -> Vec<Member> {
        self.status().await.map(|s| s.members).unwrap_or_default()
    }

    /// Membership changes and rejected datagrams, as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Adds a seed address at run time.
    pub async fn add_seed(&self, addr: SocketAddr) {
        let _ = self.commands.send(Command::AddSeed(addr)).await;
    }

    /// Writes `value` (JSON text) at `key`; returns once durable where it was applied.
    pub async fn set(&self, key: &str, json: &str) -> Result<WriteOutcome, StateError> {
        self.write(key, Some(Value::parse(json)?), false).await
    }

    /// Deletes `key` (a tombstone that wins over older writes everywhere).
    pub async fn delete(&self, key: &str) -> Result<WriteOutcome, StateError> {
        self.write(key, None, false).await
    }

    /// Writes or deletes; with `queue`, a write to an unreachable owner waits for it (latest
    /// value per key only) and returns [`WriteOutcome::Queued`] at once.
    pub async fn write(
        &self,
        key: &str,
        value: Option<Value>,
        queue: bool,
    ) -> Result<WriteOutcome, StateError> {
        let key = Key::new(key)?;
        let (reply, rx) = oneshot::channel();
        let command = Command::Write {
            key,
            value,
            queue,
            reply,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| StateError::Stopped)?;
        Ok(rx.await.map_err(|_| StateError::Stopped)??)
    }

    /// The entry at `key`, if it holds a value.
    pub async fn get(&self, key: &str) -> Result<Option<Entry>, StateError> {
        let key = Key::new(key)?;
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Get(key, reply))
            .await
            .map_err(|_| StateError::Stopped)?;
        rx.await.map_err(|_| StateError::Stopped)
    }

    /// Entries with a value at or under `prefix`, in key order. Consort's own `@consort/` keys
    /// are listed only when the prefix asks for them.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Entry>, StateError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::List(prefix.to_string(), reply))
            .await
            .map_err(|_| StateError::Stopped)?;
        let mut entries = rx.await.map_err(|_| StateError::Stopped)?;
        if !prefix.starts_with(consort_proto::replica::RESERVED_PREFIX) {
            entries.retain(|e| !e.key.is_under(consort_proto::replica::RESERVED_PREFIX));
        }
        Ok(entries)
    }

    /// Sends an event on `key` (JSON text) to every watcher in the group; never stored.
    pub async fn pulse(&self, key: &str, json: &str) -> Result<(), StateError> {
        let (key, value) = (Key::new(key)?, Value::parse(json)?);
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Pulse(key, value, reply))
            .await
            .map_err(|_| StateError::Stopped)?;
        Ok(rx.await.map_err(|_| StateError::Stopped)??)
    }

    /// Watches changes and pulses at or under `prefix`: from now, or resuming after sequence
    /// number `from` (if those changes are still kept).
    pub fn watch(&self, prefix: &str, from: Option<u64>) -> Result<Watch, TooOld> {
        Watch::new(&self.changes, self.events.subscribe(), prefix, from)
    }

    /// Leaves the group gracefully (peers show this node as `left`) and stops the node.
    pub async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Leave(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let task = self.task.lock().expect("task lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Binds the group port for UDP and TCP alike. An automatically chosen port (port 0, or a busy
/// default) is retried until both protocols get the same number.
async fn bind(
    addr: SocketAddr,
    any_port_if_busy: bool,
) -> Result<(UdpSocket, TcpListener), StartError> {
    let err = |source| StartError::Bind { addr, source };
    let mut last = None;
    for _ in 0..16 {
        let socket = net::bind_udp(addr, any_port_if_busy).await.map_err(err)?;
        let local = socket.local_addr().map_err(err)?;
        match TcpListener::bind(local).await {
            Ok(listener) => return Ok((socket, listener)),
            Err(e) if local.port() != addr.port() => last = Some(e),
            Err(e) => return Err(err(e)),
        }
    }
    Err(err(
        last.unwrap_or_else(|| std::io::Error::other("no free port"))
    ))
}

/// The wall clock in whole milliseconds since the Unix epoch, and the instant it read exactly
/// that: the engine derives microseconds from the pair, so the instant must sit on the
/// millisecond boundary, not up to a millisecond after it (clock offsets between nodes would be
/// off by that much).
fn wall_clock() -> (Instant, u64) {
    let now = Instant::now();
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ms = since_epoch.as_millis() as u64;
    let into_ms = since_epoch - std::time::Duration::from_millis(ms);
    (now.checked_sub(into_ms).unwrap_or(now), ms)
}

/// `<hostname>-<first 4 hex digits of the id>`: readable, and distinct for nodes on one host.
fn default_name(id: NodeId) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "consort".to_string());
    format!("{host}-{}", &id.to_string()[..4])
}
