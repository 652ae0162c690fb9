//! The replication state machine: local writes, owned prefixes, pulses, remote entries,
//! snapshots for blank nodes, tombstone collection.
//!
//! It knows nothing of addresses or datagrams: it names peers by node id and says what to send
//! through [`Action`]s, which the engine carries out (packing pushes into datagrams, falling back
//! to a stream when a message is too large).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::entry::{Clock, Entry, Hlc, InvalidData, Key, Value, Version};
use super::message::{Refusal, ReplicaMessage};
use super::reconcile::Message as Reconcile;
use super::store::{Applied, Store};
use crate::id::NodeId;

mod anti_entropy;
mod snapshot;

use anti_entropy::AntiEntropy;

/// Keys under this prefix are Consort's own (node metadata); users cannot write them.
pub const RESERVED_PREFIX: &str = "@consort";

/// Entries per snapshot part sent over a stream.
const SNAPSHOT_PART: usize = 2000;
/// Forwarded requests remembered by an owner to answer retries without applying twice.
const SERVED_MEMORY: usize = 4096;
/// Pulses remembered to drop duplicates.
const PULSE_MEMORY: usize = 4096;

/// Replication settings.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// Largest value, in bytes of compact JSON.
    pub max_value: usize,
    /// How long deletes are remembered before their tombstones are collected.
    pub tombstone_ttl: Duration,
    /// How often tombstones are collected.
    pub gc_period: Duration,
    /// Prefixes this node owns: only it applies writes under them.
    pub owned: Vec<String>,
    /// How long a forwarded write waits for its owner before failing.
    pub forward_timeout: Duration,
    /// How often a forwarded write is resent until acknowledged.
    pub forward_retry: Duration,
    /// How long without a snapshot part before a bootstrap tries another peer.
    pub bootstrap_timeout: Duration,
    /// How often a reconciliation round starts with a random peer.
    pub anti_entropy_period: Duration,
    /// How long a reconciliation request waits for its reply before it is sent again.
    pub anti_entropy_resend: Duration,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            max_value: 64 * 1024,
            tombstone_ttl: Duration::from_secs(24 * 3600),
            gc_period: Duration::from_secs(60),
            owned: Vec::new(),
            forward_timeout: Duration::from_secs(3),
            forward_retry: Duration::from_millis(250),
            bootstrap_timeout: Duration::from_secs(5),
            anti_entropy_period: Duration::from_millis(150),
            anti_entropy_resend: Duration::from_millis(100),
        }
    }
}

/// Identifies a local write until it is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriteId(pub u64);

/// Why a write was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The key or value is invalid.
    #[error(transparent)]
    Invalid(#[from] InvalidData),
    /// The key is under the reserved `@consort` prefix.
    #[error("keys under {RESERVED_PREFIX}/ are reserved for consort")]
    Reserved,
    /// The key's owner is not reachable (and the write was not queued).
    #[error("the owner of this key, node {0}, is unreachable")]
    OwnerUnreachable(NodeId),
    /// The owner refused the write.
    #[error("the owner, node {owner}, refused the write: {refusal}")]
    Refused {
        /// The owner.
        owner: NodeId,
        /// Why.
        refusal: Refusal,
    },
}

/// How a write was completed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteOutcome {
    /// Durable at the node that applied it (this one, or the owner), at this version.
    Applied(Version),
    /// Queued until the owner is reachable; a later write to the same key replaces it.
    Queued,
    /// A queued write replaced by a later one before it reached the owner.
    Superseded,
}

/// One applied change, numbered for watchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Local sequence number; grows by one per change, across restarts.
    pub seq: u64,
    /// The entry as stored now (a tombstone for a delete).
    pub entry: Entry,
}

/// What must become durable together (group commit).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Commit {
    /// Entries to store (replacing older versions).
    pub entries: Vec<Entry>,
    /// Keys whose tombstones were collected, or dropped by a resync.
    pub removed: Vec<Key>,
    /// Metadata to store in the same transaction.
    pub meta: Meta,
    /// Local writes acknowledged once this commit is durable.
    pub writes: Vec<WriteId>,
}

/// Replication metadata kept with the entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Last change sequence number used.
    pub seq: u64,
    /// Newest tombstone version ever collected (older deletes are forgotten).
    pub horizon: Hlc,
    /// Wall time (ms) this node last had a live peer.
    pub last_contact_ms: u64,
}

/// Bootstrap progress, for events and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The peer sending the snapshot.
    pub from: NodeId,
    /// Entries received so far.
    pub received: u64,
    /// Entries in the snapshot.
    pub total: u64,
    /// Whether the snapshot is complete.
    pub done: bool,
}

/// What the replicator asks the engine to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send to one peer.
    Send(NodeId, ReplicaMessage),
    /// Push entries to every live peer.
    PushToAll(Vec<Entry>),
    /// Send entries to one peer (repairs found by reconciliation).
    PushTo(NodeId, Vec<Entry>),
    /// Send to every live peer.
    SendToAll(ReplicaMessage),
    /// Make this durable, then call [`Replicator::committed`].
    Commit(Commit),
    /// A local write is complete.
    WriteDone(WriteId, Result<WriteOutcome, WriteError>),
    /// An entry changed.
    Changed(Change),
    /// A pulse arrived (or was sent from here).
    Pulse {
        key: Key,
        value: Value,
        origin: NodeId,
    },
    /// Snapshot progress.
    Bootstrap(Progress),
}

/// A write waiting for its owner.
#[derive(Debug)]
struct Forward {
    key: Key,
    value: Option<Value>,
    owner: NodeId,
    deadline: Option<Instant>,
    next_try: Instant,
}

#[derive(Debug, PartialEq, Eq)]
enum Bootstrap {
    /// Not needed.
    Idle,
    /// Needed; waiting for a live peer.
    Wanted { resync: bool },
    /// Receiving from `from`.
    Receiving {
        from: NodeId,
        resync: bool,
        received: u64,
        seen: HashSet<Key>,
        last_part: Instant,
    },
}

/// The replication state machine. See the module docs.
pub(crate) struct Replicator {
    own: NodeId,
    config: ReplicaConfig,
    store: Store,
    clock: Clock,
    meta: Meta,
    next_id: u64,
    /// This node's name and services, published in its metadata entry.
    name: String,
    services: Vec<String>,
    /// Owned prefix → owner, from the nodes' metadata entries; longest prefix first.
    owners: Vec<(String, NodeId)>,
    /// Service → the nodes whose metadata entries list it, by id.
    providers: HashMap<String, Vec<NodeId>>,
    forwards: BTreeMap<u64, (WriteId, Forward)>,
    /// Queued (owner unreachable) forward per key: only the latest is kept.
    queued: HashMap<Key, u64>,
    served: HashMap<(NodeId, u64), Result<Version, Refusal>>,
    served_order: VecDeque<(NodeId, u64)>,
    /// Versions of local writes waiting for their commit.
    local_versions: HashMap<WriteId, Version>,
    /// Writes applied by this owner for a peer, answered once durable.
    owed: Vec<(WriteId, NodeId, u64)>,
    pulses: HashSet<(NodeId, u64)>,
    pulse_order: VecDeque<(NodeId, u64)>,
    bootstrap: Bootstrap,
    pending: Commit,
    push: Vec<Entry>,
    actions: VecDeque<Action>,
    last_gc: Option<Instant>,
    anti_entropy: AntiEntropy,
}

impl Replicator {
    /// Starts from the entries and metadata a previous run stored.
    pub(crate) fn new(
        own: NodeId,
        name: &str,
        config: ReplicaConfig,
        stored: Vec<Entry>,
        meta: Meta,
        wall_ms: u64,
    ) -> Replicator {
        let mut store = Store::new();
        let mut clock = Clock::default();
        for entry in stored {
            clock.observe(entry.version.hlc);
            store.apply(entry);
        }
        let away = meta.last_contact_ms > 0
            && wall_ms.saturating_sub(meta.last_contact_ms)
                > config.tombstone_ttl.as_millis() as u64;
        let blank = store.range("").all(|e| e.key.is_under(RESERVED_PREFIX));
        let bootstrap = if blank || away {
            Bootstrap::Wanted { resync: away }
        } else {
            Bootstrap::Idle
        };
        let mut replicator = Replicator {
            own,
            config,
            store,
            clock,
            meta,
            next_id: 1,
            name: name.to_string(),
            services: Vec::new(),
            owners: Vec::new(),
            providers: HashMap::new(),
            forwards: BTreeMap::new(),
            queued: HashMap::new(),
            served: HashMap::new(),
            served_order: VecDeque::new(),
            local_versions: HashMap::new(),
            owed: Vec::new(),
            pulses: HashSet::new(),
            pulse_order: VecDeque::new(),
            bootstrap,
            pending: Commit::default(),
            push: Vec::new(),
            actions: VecDeque::new(),
            last_gc: None,
            anti_entropy: AntiEntropy::default(),
        };
        replicator.publish_node_meta(wall_ms);
        replicator.rebuild_directory();
        replicator
    }

    /// The entry stored for `key`, tombstones included.
    pub(crate) fn get(&self, key: &Key) -> Option<&Entry> {
        self.store.get(key)
    }

    /// Entries under `prefix`, tombstones included, in key order.
    pub(crate) fn list<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.store.range(prefix)
    }

    /// Whether this node is still pulling a snapshot (or waiting for a peer to pull from).
    pub(crate) fn is_bootstrapping(&self) -> bool {
        self.bootstrap != Bootstrap::Idle
    }

    /// The node that owns `key`, if any prefix covering it is owned.
    pub(crate) fn owner_of(&self, key: &Key) -> Option<NodeId> {
        self.owners
            .iter()
            .find(|(prefix, _)| key.is_under(prefix))
            .map(|(_, owner)| *owner)
    }

    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A local write (or delete, with `value: None`).
    pub(crate) fn write(
        &mut self,
        now: Instant,
        wall_ms: u64,
        key: Key,
        value: Option<Value>,
        queue: bool,
        is_live: &dyn Fn(NodeId) -> bool,
    ) -> Result<WriteId, WriteError> {
        if key.is_under(RESERVED_PREFIX) {
            return Err(WriteError::Reserved);
        }
        self.check_size(value.as_ref())?;
        let id = WriteId(self.fresh_id());
        match self.owner_of(&key) {
            Some(owner) if owner != self.own => {
                if !queue && !is_live(owner) {
                    return Err(WriteError::OwnerUnreachable(owner));
                }
                self.forward(now, id, owner, key, value, queue, is_live(owner));
            }
            _ => {
                // A blank node that starts writing on its own is no longer blank: anti-entropy
                // merges with the group when a peer appears.
                if self.bootstrap == (Bootstrap::Wanted { resync: false }) {
                    self.bootstrap = Bootstrap::Idle;
                }
                let version = self.apply_local(key, value, wall_ms);
                self.local_versions.insert(id, version);
                self.pending.writes.push(id);
            }
        }
        Ok(id)
    }

    fn check_size(&self, value: Option<&Value>) -> Result<(), InvalidData> {
        match value {
            Some(v) if v.len() > self.config.max_value => Err(InvalidData::ValueTooLarge {
                size: v.len(),
                max: self.config.max_value,
            }),
            _ => Ok(()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn forward(
        &mut self,
        now: Instant,
        id: WriteId,
        owner: NodeId,
        key: Key,
        value: Option<Value>,
        queue: bool,
        live: bool,
    ) {
        if queue {
            if let Some(old) = self.queued.insert(key.clone(), id.0) {
                if let Some((old_id, _)) = self.forwards.remove(&old) {
                    self.actions
                        .push_back(Action::WriteDone(old_id, Ok(WriteOutcome::Superseded)));
                }
            }
            self.actions
                .push_back(Action::WriteDone(id, Ok(WriteOutcome::Queued)));
        }
        let forward = Forward {
            key,
            value,
            owner,
            deadline: (!queue).then_some(now + self.config.forward_timeout),
            next_try: now,
        };
        self.forwards.insert(id.0, (id, forward));
        if live {
            self.send_forward(now, id.0);
        }
    }

    fn send_forward(&mut self, now: Instant, id: u64) {
        let retry = self.config.forward_retry;
        let Some((_, f)) = self.forwards.get_mut(&id) else {
            return;
        };
        f.next_try = now + retry;
        let msg = ReplicaMessage::Forward {
            id,
            key: f.key.clone(),
            value: f.value.clone(),
        };
        let owner = f.owner;
        self.actions.push_back(Action::Send(owner, msg));
    }

    /// Writes an entry with a fresh version from this node, and records the change.
    fn apply_local(&mut self, key: Key, value: Option<Value>, wall_ms: u64) -> Version {
        let version = Version {
            hlc: self.clock.tick(wall_ms),
            origin: self.own,
        };
        let entry = Entry {
            key,
            value,
            version,
        };
        if self.store.apply(entry.clone()) != Applied::Ignored {
            self.record(entry, true);
        }
        version
    }

    /// Numbers an applied change, queues it for the commit, the watchers and (if ours) the push.
    fn record(&mut self, entry: Entry, push: bool) {
        self.meta.seq += 1;
        if entry.key.is_under(RESERVED_PREFIX) {
            self.rebuild_directory();
        }
        self.pending.entries.push(entry.clone());
        if push {
            self.push.push(entry.clone());
        }
        self.actions.push_back(Action::Changed(Change {
            seq: self.meta.seq,
            entry,
        }));
    }

    /// An event on a key for every watcher in the group; never stored.
    pub(crate) fn pulse(&mut self, key: Key, value: Value) -> Result<(), WriteError> {
        if key.is_under(RESERVED_PREFIX) {
            return Err(WriteError::Reserved);
        }
        self.check_size(Some(&value))?;
        let id = self.fresh_id();
        self.remember_pulse((self.own, id));
        self.actions.push_back(Action::Pulse {
            key: key.clone(),
            value: value.clone(),
            origin: self.own,
        });
        self.actions
            .push_back(Action::SendToAll(ReplicaMessage::Pulse { id, key, value }));
        Ok(())
    }

    fn remember_pulse(&mut self, id: (NodeId, u64)) -> bool {
        if !self.pulses.insert(id) {
            return false;
        }
        self.pulse_order.push_back(id);
        if self.pulse_order.len() > PULSE_MEMORY {
            if let Some(old) = self.pulse_order.pop_front() {
                self.pulses.remove(&old);
            }
        }
        true
    }

    /// The engine made the last commit durable: acknowledge what waited for it.
    pub(crate) fn committed(&mut self, writes: &[WriteId]) {
        for id in writes {
            if let Some(pos) = self.owed.iter().position(|(w, _, _)| w == id) {
                let (_, peer, req) = self.owed.swap_remove(pos);
                let result = self.served.get(&(peer, req)).cloned();
                if let Some(result) = result {
                    self.actions.push_back(Action::Send(
                        peer,
                        ReplicaMessage::ForwardReply { id: req, result },
                    ));
                }
            } else if let Some(version) = self.local_versions.remove(id) {
                self.actions
                    .push_back(Action::WriteDone(*id, Ok(WriteOutcome::Applied(version))));
            }
        }
    }
}

impl Replicator {
    /// Handles a message from peer `from`.
    pub(crate) fn handle(&mut self, now: Instant, wall_ms: u64, from: NodeId, msg: ReplicaMessage) {
        match msg {
            ReplicaMessage::Push { entries } => {
                for entry in entries {
                    self.merge(entry);
                }
            }
            ReplicaMessage::Forward { id, key, value } => {
                self.serve_forward(wall_ms, from, id, key, value)
            }
            ReplicaMessage::ForwardReply { id, result } => self.forward_answered(id, result),
            ReplicaMessage::Pulse { id, key, value } => {
                if self.remember_pulse((from, id)) {
                    self.actions.push_back(Action::Pulse {
                        key,
                        value,
                        origin: from,
                    });
                }
            }
            ReplicaMessage::SnapshotRequest => self.send_snapshot(from),
            ReplicaMessage::Snapshot {
                entries,
                total,
                horizon,
                done,
            } => self.receive_snapshot(now, from, entries, total, horizon, done),
            ReplicaMessage::Reconcile(Reconcile::Request(request)) => {
                self.answer_reconcile(from, &request)
            }
            ReplicaMessage::Reconcile(Reconcile::Reply(reply)) => {
                self.continue_round(now, from, &reply)
            }
        }
    }

    /// Applies an entry from elsewhere; a newer one is recorded (but not pushed again: its
    /// writer pushed it to everyone, and anti-entropy repairs the rest).
    fn merge(&mut self, entry: Entry) {
        self.clock.observe(entry.version.hlc);
        if self.store.apply(entry.clone()) != Applied::Ignored {
            self.record(entry, false);
        }
    }

    fn serve_forward(
        &mut self,
        wall_ms: u64,
        from: NodeId,
        id: u64,
        key: Key,
        value: Option<Value>,
    ) {
        if let Some(result) = self.served.get(&(from, id)) {
            // A retry: answer again, unless the first attempt is still being made durable.
            if !self.owed.iter().any(|(_, p, r)| (*p, *r) == (from, id)) {
                let result = result.clone();
                self.actions.push_back(Action::Send(
                    from,
                    ReplicaMessage::ForwardReply { id, result },
                ));
            }
            return;
        }
        let result = if self.owner_of(&key) != Some(self.own) {
            Err(Refusal::NotOwner)
        } else if let Err(e) = self.check_size(value.as_ref()) {
            Err(Refusal::Invalid(e.to_string()))
        } else {
            Ok(self.apply_local(key, value, wall_ms))
        };
        self.remember_served((from, id), result.clone());
        match result {
            Ok(_) => {
                let write = WriteId(self.fresh_id());
                self.owed.push((write, from, id));
                self.pending.writes.push(write);
            }
            Err(_) => self.actions.push_back(Action::Send(
                from,
                ReplicaMessage::ForwardReply { id, result },
            )),
        }
    }

    fn remember_served(&mut self, request: (NodeId, u64), result: Result<Version, Refusal>) {
        self.served.insert(request, result);
        self.served_order.push_back(request);
        if self.served_order.len() > SERVED_MEMORY {
            if let Some(old) = self.served_order.pop_front() {
                self.served.remove(&old);
            }
        }
    }

    fn forward_answered(&mut self, id: u64, result: Result<Version, Refusal>) {
        let Some((write, forward)) = self.forwards.remove(&id) else {
            return; // a duplicate answer
        };
        if self.queued.get(&forward.key) == Some(&id) {
            self.queued.remove(&forward.key);
            return; // its caller was told `Queued` long ago
        }
        let outcome = result
            .map(WriteOutcome::Applied)
            .map_err(|refusal| WriteError::Refused {
                owner: forward.owner,
                refusal,
            });
        self.actions.push_back(Action::WriteDone(write, outcome));
    }

    /// Timers: forward retries and deadlines, bootstrap, tombstone collection. `live` lists the
    /// live peers in random order.
    pub(crate) fn tick(&mut self, now: Instant, wall_ms: u64, live: &[NodeId], round_seed: u32) {
        if !live.is_empty() {
            self.meta.last_contact_ms = wall_ms;
        }
        self.retry_forwards(now, live);
        self.advance_bootstrap(now, live);
        self.drive_anti_entropy(now, live, round_seed);
        if self
            .last_gc
            .is_none_or(|t| now.duration_since(t) >= self.config.gc_period)
        {
            self.last_gc = Some(now);
            self.collect_tombstones(wall_ms);
        }
    }

    fn retry_forwards(&mut self, now: Instant, live: &[NodeId]) {
        let mut expired = Vec::new();
        let mut due = Vec::new();
        for (id, (write, f)) in &self.forwards {
            if f.deadline.is_some_and(|d| now >= d) {
                expired.push((*id, *write, f.owner));
            } else if now >= f.next_try && live.contains(&f.owner) {
                due.push(*id);
            }
        }
        for (id, write, owner) in expired {
            self.forwards.remove(&id);
            self.actions.push_back(Action::WriteDone(
                write,
                Err(WriteError::OwnerUnreachable(owner)),
            ));
        }
        for id in due {
            self.send_forward(now, id);
        }
    }

    fn collect_tombstones(&mut self, wall_ms: u64) {
        let ttl = self.config.tombstone_ttl.as_millis() as u64;
        let Some(cutoff_ms) = wall_ms.checked_sub(ttl) else {
            return;
        };
        let removed = self.store.collect_tombstones(Hlc(cutoff_ms << 16));
        if !removed.is_empty() {
            self.meta.horizon = self.store.gc_horizon();
            self.pending.removed.extend(removed);
        }
    }

    /// A peer came up: resend what waits for it now instead of at the next retry.
    pub(crate) fn peer_up(&mut self, now: Instant, peer: NodeId) {
        let waiting: Vec<u64> = self
            .forwards
            .iter()
            .filter(|(_, (_, f))| f.owner == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            self.send_forward(now, id);
        }
    }

    /// End of a turn: push what was written locally, and ask for one group commit.
    pub(crate) fn flush(&mut self) {
        if !self.push.is_empty() {
            let entries = std::mem::take(&mut self.push);
            self.actions.push_back(Action::PushToAll(entries));
        }
        let pending = &self.pending;
        if !pending.entries.is_empty() || !pending.removed.is_empty() || !pending.writes.is_empty()
        {
            let mut commit = std::mem::take(&mut self.pending);
            commit.meta = self.meta;
            self.actions.push_back(Action::Commit(commit));
        }
    }

    /// Sets the services this node advertises, and publishes them.
    pub(crate) fn set_services(&mut self, services: Vec<String>, wall_ms: u64) {
        self.services = services;
        self.publish_node_meta(wall_ms);
    }

    /// Nodes whose metadata lists `service`, live or not, by id.
    pub(crate) fn providers(&self, service: &str) -> &[NodeId] {
        self.providers.get(service).map_or(&[], Vec::as_slice)
    }

    /// Services a node's metadata lists.
    pub(crate) fn services_of(&self, node: NodeId) -> Vec<String> {
        let mut services: Vec<String> = self
            .providers
            .iter()
            .filter(|(_, nodes)| nodes.contains(&node))
            .map(|(service, _)| service.clone())
            .collect();
        services.sort_unstable();
        services
    }

    /// Publishes this node's metadata (name, owned prefixes, services) as a replicated entry, if
    /// changed.
    fn publish_node_meta(&mut self, wall_ms: u64) {
        let key = node_meta_key(self.own);
        let json = serde_json::json!({
            "name": self.name,
            "owns": self.config.owned,
            "services": self.services,
        });
        let value = Value::from_json(&json);
        if self.store.get(&key).and_then(|e| e.value.as_ref()) != Some(&value) {
            self.apply_local(key, Some(value), wall_ms);
        }
    }

    /// Rebuilds the prefix → owner and service → providers tables from every node's metadata
    /// entry.
    fn rebuild_directory(&mut self) {
        let mut owners: Vec<(String, NodeId)> = Vec::new();
        let mut providers: HashMap<String, Vec<NodeId>> = HashMap::new();
        for entry in self.store.range(&format!("{RESERVED_PREFIX}/nodes")) {
            let (Some(value), Some(node)) = (&entry.value, node_of_meta_key(&entry.key)) else {
                continue;
            };
            let json = value.to_json();
            let owns = json["owns"].as_array().cloned().unwrap_or_default();
            for prefix in owns.iter().filter_map(|p| p.as_str()) {
                owners.push((prefix.trim_end_matches('/').to_string(), node));
            }
            let services = json["services"].as_array().cloned().unwrap_or_default();
            for service in services.iter().filter_map(|s| s.as_str()) {
                providers.entry(service.to_string()).or_default().push(node);
            }
        }
        for nodes in providers.values_mut() {
            nodes.sort_unstable();
            nodes.dedup();
        }
        self.providers = providers;
        // Longest prefix first; for the same prefix the lowest node id wins, everywhere alike.
        owners.sort_by(|a, b| {
            b.0.len()
                .cmp(&a.0.len())
                .then(a.0.cmp(&b.0))
                .then(a.1.cmp(&b.1))
        });
        owners.dedup_by(|later, earlier| later.0 == earlier.0);
        self.owners = owners;
    }
}

/// The key holding a node's metadata.
pub fn node_meta_key(node: NodeId) -> Key {
    Key::new(&format!("{RESERVED_PREFIX}/nodes/{node}")).expect("a valid key")
}

fn node_of_meta_key(key: &Key) -> Option<NodeId> {
    key.as_str()
        .strip_prefix(RESERVED_PREFIX)?
        .strip_prefix("/nodes/")?
        .parse()
        .ok()
}
