//! Snapshots: a blank node (or one away longer than the tombstone time) pulls every entry from a
//! peer, in parts over the ordered stream.

use std::collections::HashSet;
use std::time::Instant;

use super::{Action, Bootstrap, Progress, Replicator, SNAPSHOT_PART};
use crate::id::NodeId;
use crate::replica::entry::{Entry, Hlc, Key};
use crate::replica::message::ReplicaMessage;

impl Replicator {
    /// Sends every entry, tombstones included, in parts.
    pub(super) fn send_snapshot(&mut self, to: NodeId) {
        let total = self.store.len() as u64;
        let horizon = self.store.gc_horizon();
        let entries: Vec<Entry> = self.store.range("").cloned().collect();
        let mut parts = entries.chunks(SNAPSHOT_PART).peekable();
        if parts.peek().is_none() {
            let msg = ReplicaMessage::Snapshot {
                entries: Vec::new(),
                total,
                horizon,
                done: true,
            };
            return self.actions.push_back(Action::Send(to, msg));
        }
        while let Some(part) = parts.next() {
            let msg = ReplicaMessage::Snapshot {
                entries: part.to_vec(),
                total,
                horizon,
                done: parts.peek().is_none(),
            };
            self.actions.push_back(Action::Send(to, msg));
        }
    }

    pub(super) fn receive_snapshot(
        &mut self,
        now: Instant,
        from: NodeId,
        entries: Vec<Entry>,
        total: u64,
        horizon: Hlc,
        done: bool,
    ) {
        let Bootstrap::Receiving {
            from: source,
            resync,
            received,
            seen,
            last_part,
        } = &mut self.bootstrap
        else {
            return;
        };
        if *source != from {
            return;
        }
        let resync = *resync;
        *received += entries.len() as u64;
        *last_part = now;
        let progress = Progress {
            from,
            received: *received,
            total,
            done,
        };
        if resync {
            seen.extend(entries.iter().map(|e| e.key.clone()));
        }
        for entry in entries {
            self.merge(entry);
        }
        let complete = done && progress.received >= total;
        self.actions.push_back(Action::Bootstrap(progress));
        if complete {
            if resync {
                self.drop_forgotten(horizon);
            }
            self.bootstrap = Bootstrap::Idle;
        } else if done {
            // Parts went missing (a broken connection): start over, from any live peer.
            self.bootstrap = Bootstrap::Wanted { resync };
        }
    }

    /// After a resync: drop what the peer forgot as deleted (absent there, older than its
    /// horizon); keep newer local writes, which win over any forgotten delete anyway.
    pub(super) fn drop_forgotten(&mut self, horizon: Hlc) {
        let Bootstrap::Receiving { seen, .. } = &self.bootstrap else {
            return;
        };
        let stale: Vec<Key> = self
            .store
            .range("")
            .filter(|e| e.version.hlc < horizon && !seen.contains(&e.key))
            .map(|e| e.key.clone())
            .collect();
        for key in stale {
            self.store.remove(&key);
            self.pending.removed.push(key);
        }
        let mine: Vec<Entry> = self
            .store
            .range("")
            .filter(|e| !seen.contains(&e.key))
            .cloned()
            .collect();
        self.push.extend(mine);
    }

    pub(super) fn advance_bootstrap(&mut self, now: Instant, live: &[NodeId]) {
        let resync = match &self.bootstrap {
            Bootstrap::Idle => return,
            Bootstrap::Wanted { resync } => *resync,
            Bootstrap::Receiving {
                from,
                resync,
                last_part,
                ..
            } => {
                let stalled = now.duration_since(*last_part) > self.config.bootstrap_timeout;
                if !stalled && live.contains(from) {
                    return;
                }
                *resync
            }
        };
        self.bootstrap = match live.first() {
            Some(&peer) => {
                self.actions
                    .push_back(Action::Send(peer, ReplicaMessage::SnapshotRequest));
                Bootstrap::Receiving {
                    from: peer,
                    resync,
                    received: 0,
                    seen: HashSet::new(),
                    last_part: now,
                }
            }
            None => Bootstrap::Wanted { resync },
        };
    }
}
