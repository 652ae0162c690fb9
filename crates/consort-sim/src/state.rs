//! Replicated state: writing through a node, reading a node's store, and the state invariants.

use std::collections::BTreeMap;
use std::time::Duration;

use consort_proto::replica::{Entry, Key, Value, Version, WriteError};

use crate::check::Divergence;
use crate::sim::Sim;

/// A write a node acknowledged as applied ([`consort_proto::replica::WriteOutcome::Applied`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckedWrite {
    /// Virtual time of the acknowledgement.
    pub at: Duration,
    /// The node the write was asked of.
    pub node: usize,
    /// The key written.
    pub key: Key,
    /// The value written; `None` for a delete.
    pub value: Option<Value>,
    /// The version it was applied at.
    pub version: Version,
}

fn result(at: Duration, problems: Vec<String>) -> Result<(), Divergence> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Divergence {
            subject: Divergence::STATE,
            at,
            problems,
        })
    }
}

impl Sim {
    /// Writes `value` (JSON text; `None` deletes) at `key` through the running `node`, without
    /// queueing ([`consort_proto::Engine::write`] with `queue = false`). An acknowledgement is
    /// recorded in [`Sim::acked_writes`] when the node reports it applied.
    ///
    /// # Panics
    ///
    /// If `node` is not running, or `key` or `value` is invalid.
    pub fn write(&mut self, node: usize, key: &str, value: Option<&str>) -> Result<(), WriteError> {
        let key = Key::new(key).expect("valid key");
        let value = value.map(|v| Value::parse(v).expect("valid JSON"));
        let now = self.instant();
        let engine = self.nodes[node]
            .engine
            .as_mut()
            .unwrap_or_else(|| panic!("n{node} is not running"));
        let outcome = engine.write(now, key.clone(), value.clone(), false);
        match outcome {
            Ok(id) => {
                self.nodes[node].pending.insert(id, (key, value));
                self.drain(node);
                Ok(())
            }
            Err(e) => {
                self.write_failures += 1;
                self.drain(node);
                Err(e)
            }
        }
    }

    /// Every write acknowledged as applied so far, in order.
    pub fn acked_writes(&self) -> &[AckedWrite] {
        &self.acked
    }

    /// Writes refused at once or completed without being applied.
    pub fn write_failures(&self) -> u64 {
        self.write_failures
    }

    /// Stream frames handed to their receiver so far.
    pub fn frames_delivered(&self) -> u64 {
        self.frames_delivered
    }

    /// Checks that what each running node holds in memory is what its disk holds: every change
    /// it made was committed.
    pub fn disks_match_memory(&self) -> Result<(), Divergence> {
        let mut problems = Vec::new();
        for n in self.running() {
            let memory = self.store(n).unwrap_or_default();
            let disk = self.stored(n);
            if memory != disk {
                let differs = memory
                    .iter()
                    .zip(&disk)
                    .find(|(m, d)| m != d)
                    .map(|(m, d)| format!("{m:?} in memory, {d:?} on disk"));
                problems.push(format!(
                    "n{n} holds {} entries in memory, {} on disk; first difference: {differs:?}",
                    memory.len(),
                    disk.len()
                ));
            }
        }
        result(self.now(), problems)
    }

    /// Writes asked of `node` and not completed yet.
    pub fn pending_writes(&self, node: usize) -> usize {
        self.nodes[node].pending.len()
    }

    /// Every entry of running `node`'s store, tombstones included, in key order.
    pub fn store(&self, node: usize) -> Option<Vec<Entry>> {
        self.engine(node).map(|e| e.list("").cloned().collect())
    }

    /// What `node` has made durable (its simulated database), tombstones included.
    pub fn stored(&self, node: usize) -> Vec<Entry> {
        self.nodes[node].entries.values().cloned().collect()
    }

    /// The entry at `key` in running `node`'s store, tombstones included.
    pub fn entry(&self, node: usize, key: &str) -> Option<Entry> {
        let key = Key::new(key).ok()?;
        self.engine(node)?.get(&key).cloned()
    }

    /// Checks that every running node holds the same live entries (keys, values, versions), and
    /// that a key deleted on one is deleted (a tombstone, or collected) on every other: tombstones
    /// may be collected at different times.
    pub fn state_converged(&self) -> Result<(), Divergence> {
        let mut problems = Vec::new();
        let running = self.running();
        let stores: Vec<(usize, BTreeMap<Key, Entry>)> = running
            .iter()
            .filter_map(|&n| {
                let store = self.store(n)?;
                Some((n, store.into_iter().map(|e| (e.key.clone(), e)).collect()))
            })
            .collect();
        // Every key anyone holds, with the newest entry anyone holds for it.
        let mut newest: BTreeMap<&Key, (usize, &Entry)> = BTreeMap::new();
        for (n, store) in &stores {
            for (key, entry) in store {
                let slot = newest.entry(key).or_insert((*n, entry));
                if entry.version > slot.1.version {
                    *slot = (*n, entry);
                }
            }
        }
        for (key, (holder, entry)) in &newest {
            for (n, store) in &stores {
                let mine = store.get(*key);
                let fine = match mine {
                    Some(m) => m == *entry,
                    None => entry.is_tombstone(),
                };
                if !fine {
                    problems.push(format!(
                        "n{n} has {key:?} as {}, n{holder} as {entry:?}",
                        mine.map_or_else(|| "missing".to_string(), |m| format!("{m:?}"))
                    ));
                }
            }
        }
        result(self.now(), problems)
    }

    /// Checks that every acknowledged write survives on every running node: the key's version
    /// there is at least the acknowledged one (a later write may supersede it, an older one never
    /// may), and a key whose newest acknowledged write is a delete is deleted there (a tombstone,
    /// or collected) unless a newer write it holds replaced the delete.
    pub fn acked_writes_survive(&self) -> Result<(), Divergence> {
        let mut problems = Vec::new();
        let mut latest: BTreeMap<&Key, &AckedWrite> = BTreeMap::new();
        for w in &self.acked {
            let slot = latest.entry(&w.key).or_insert(w);
            if w.version > slot.version {
                *slot = w;
            }
        }
        for n in self.running() {
            let Some(engine) = self.engine(n) else {
                continue;
            };
            for (key, w) in &latest {
                let have = engine.get(key);
                let ok = match have {
                    Some(e) => e.version >= w.version,
                    // Only a delete may be forgotten: its tombstone is collected.
                    None => w.value.is_none(),
                };
                if !ok {
                    problems.push(format!(
                        "n{n} has {key:?} as {}, but n{} acknowledged {:?} @{:?} at {:.3}s",
                        have.map_or_else(|| "missing".to_string(), |e| format!("{e:?}")),
                        w.node,
                        w.value,
                        w.version,
                        w.at.as_secs_f64()
                    ));
                }
            }
        }
        result(self.now(), problems)
    }

    /// For each key written with an acknowledgement: the acknowledged write with the highest
    /// version, the one last-writer-wins must keep.
    pub fn lww_winners(&self) -> BTreeMap<Key, AckedWrite> {
        let mut winners: BTreeMap<Key, AckedWrite> = BTreeMap::new();
        for w in &self.acked {
            match winners.get(&w.key) {
                Some(old) if old.version >= w.version => {}
                _ => {
                    winners.insert(w.key.clone(), w.clone());
                }
            }
        }
        winners
    }

    /// Runs until [`Sim::state_converged`] and [`Sim::acked_writes_survive`] hold, for at most
    /// `limit`; returns the time it took.
    pub fn await_state(&mut self, limit: Duration) -> Result<Duration, Divergence> {
        let ok = |sim: &Sim| sim.state_converged().is_ok() && sim.acked_writes_survive().is_ok();
        match self.run_until(limit, ok) {
            Some(took) => Ok(took),
            None => {
                self.state_converged()?;
                self.acked_writes_survive()?;
                Err(Divergence {
                    subject: Divergence::STATE,
                    at: self.now(),
                    problems: vec!["converged only after the limit".into()],
                })
            }
        }
    }
}
