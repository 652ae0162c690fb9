//! The engine's side of replication: the user-facing state API, and carrying out what the
//! replicator asks (packing pushes into datagrams, falling back to a stream for what is too large).

use std::time::Instant;

use rand::seq::SliceRandom;
use rand::RngExt;

use super::{Engine, Event, Output};
use crate::id::NodeId;
use crate::replica::replicator::Action;
use crate::replica::{Entry, Key, ReplicaMessage, Value, WriteError, WriteId};
use crate::wire::{FrameKind, MAX_PAYLOAD};

/// Bytes an entry may take in a datagram push; larger ones travel over a stream.
const MAX_ENTRY_IN_DATAGRAM: usize = MAX_PAYLOAD - 8;

impl Engine {
    /// Writes `value` at `key` (or deletes it with `None`). The result arrives as
    /// [`Output::WriteDone`] once durable (after [`Engine::committed`]) or refused by the owner.
    ///
    /// `queue`: when the key's owner is unreachable, keep the write (the latest per key) until it
    /// returns instead of failing.
    pub fn write(
        &mut self,
        now: Instant,
        key: Key,
        value: Option<Value>,
        queue: bool,
    ) -> Result<WriteId, WriteError> {
        let wall = self.wall_ms(now);
        let live = self.live_peers();
        let id = self
            .replicator
            .write(now, wall, key, value, queue, &|n| live.contains(&n))?;
        self.flush(now);
        Ok(id)
    }

    /// Sends an event on `key` to every watcher in the group (this node included); not stored.
    pub fn pulse(&mut self, now: Instant, key: Key, value: Value) -> Result<(), WriteError> {
        self.replicator.pulse(key, value)?;
        self.flush(now);
        Ok(())
    }

    /// The entry at `key`, tombstones included.
    pub fn get(&self, key: &Key) -> Option<&Entry> {
        self.replicator.get(key)
    }

    /// Entries at or under `prefix`, tombstones included, in key order.
    pub fn list<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.replicator.list(prefix)
    }

    /// The node that owns `key`, if an owned prefix covers it.
    pub fn owner_of(&self, key: &Key) -> Option<NodeId> {
        self.replicator.owner_of(key)
    }

    /// Whether the node is still pulling its first snapshot (or resyncing).
    pub fn is_bootstrapping(&self) -> bool {
        self.replicator.is_bootstrapping()
    }

    /// Anti-entropy rounds this node started and completed.
    pub fn anti_entropy_rounds(&self) -> (u64, u64) {
        self.replicator.anti_entropy_rounds()
    }

    /// The driver made the [`Output::Commit`] holding these writes durable.
    pub fn committed(&mut self, now: Instant, writes: &[WriteId]) {
        self.replicator.committed(writes);
        self.flush(now);
    }

    /// Handles a frame that arrived over an authenticated stream from `from`.
    pub fn handle_stream(&mut self, now: Instant, from: NodeId, frame: &[u8]) {
        let Some((&kind, body)) = frame.split_first() else {
            return;
        };
        match FrameKind::from_nibble(kind) {
            Some(FrameKind::Replica) => {
                self.handle_replica(now, from, body);
            }
            Some(FrameKind::Message) => {
                self.handle_message(now, from, body);
            }
            _ => return,
        }
        self.flush(now);
    }

    /// Decodes and applies a replication message.
    pub(super) fn handle_replica(&mut self, now: Instant, from: NodeId, body: &[u8]) -> bool {
        let Some(msg) = ReplicaMessage::decode(body) else {
            return false;
        };
        if matches!(msg, ReplicaMessage::Reconcile(_)) {
            self.stats.anti_entropy_bytes_in += body.len() as u64;
        }
        let wall = self.wall_ms(now);
        self.replicator.handle(now, wall, from, msg);
        true
    }

    /// The replicator's periodic work.
    pub(super) fn replica_tick(&mut self, now: Instant) {
        let mut live = self.live_peers();
        live.shuffle(&mut self.rng);
        let wall = self.wall_ms(now);
        let seed = self.rng.random::<u32>();
        self.replicator.tick(now, wall, &live, seed);
    }

    /// Carries out what the replicator asked for.
    pub(super) fn run_replica_actions(&mut self) {
        while let Some(action) = self.replicator.poll_action() {
            match action {
                Action::Send(to, msg) => self.send_replica(to, &msg),
                Action::SendToAll(msg) => {
                    for peer in self.live_peers() {
                        self.send_replica(peer, &msg);
                    }
                }
                Action::PushTo(to, entries) => self.push(to, &entries),
                Action::PushToAll(entries) => {
                    for peer in self.live_peers() {
                        self.push(peer, &entries);
                    }
                }
                Action::Commit(commit) => self.outputs.push_back(Output::Commit(commit)),
                Action::WriteDone(id, result) => {
                    self.outputs.push_back(Output::WriteDone { id, result })
                }
                Action::Changed(change) => self
                    .outputs
                    .push_back(Output::Event(Event::Changed(change))),
                Action::Pulse { key, value, origin } => self
                    .outputs
                    .push_back(Output::Event(Event::Pulse { key, value, origin })),
                Action::Bootstrap(progress) => self
                    .outputs
                    .push_back(Output::Event(Event::Bootstrap(progress))),
            }
        }
    }

    /// Sends entries to a peer: as many per datagram as fit, each too large one over a stream.
    fn push(&mut self, to: NodeId, entries: &[Entry]) {
        let mut batch: Vec<Entry> = Vec::new();
        let mut size = 0;
        for entry in entries {
            let len = postcard::to_stdvec(entry).map_or(usize::MAX, |b| b.len());
            if len > MAX_ENTRY_IN_DATAGRAM {
                self.send_replica(
                    to,
                    &ReplicaMessage::Push {
                        entries: vec![entry.clone()],
                    },
                );
                continue;
            }
            if size + len > MAX_ENTRY_IN_DATAGRAM {
                let full = std::mem::take(&mut batch);
                self.send_replica(to, &ReplicaMessage::Push { entries: full });
                size = 0;
            }
            size += len;
            batch.push(entry.clone());
        }
        if !batch.is_empty() {
            self.send_replica(to, &ReplicaMessage::Push { entries: batch });
        }
    }

    /// Sends a message to a live peer: in a datagram if it fits, else over a stream.
    fn send_replica(&mut self, to: NodeId, msg: &ReplicaMessage) {
        let Some(addr) = self.addr_of(to) else {
            return; // not a live member any more; anti-entropy catches up later
        };
        let body = msg.encode();
        if matches!(msg, ReplicaMessage::Reconcile(_)) {
            self.stats.anti_entropy_bytes_out += body.len() as u64;
        }
        // Snapshot parts must arrive in order, the last one last: all of them take the stream.
        let ordered = matches!(msg, ReplicaMessage::Snapshot { .. });
        if body.len() <= MAX_PAYLOAD && !ordered {
            self.transmit(addr, FrameKind::Replica, &body);
        } else {
            let mut frame = Vec::with_capacity(body.len() + 1);
            frame.push(FrameKind::Replica.to_nibble());
            frame.extend_from_slice(&body);
            self.outputs.push_back(Output::Stream { to, addr, frame });
        }
    }
}
