//! Watching the state: recent changes kept for resuming, and live events after them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use consort_proto::replica::{Change, Entry, Key, Value};
use consort_proto::{Event, NodeId};
use tokio::sync::broadcast;

/// Changes kept for watchers that resume from a sequence number.
const KEPT: usize = 10_000;

/// Something a watcher sees.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchEvent {
    /// An entry changed (a tombstone for a delete).
    Changed {
        /// Local sequence number, for resuming.
        seq: u64,
        /// The entry as stored now.
        entry: Entry,
    },
    /// An event on a key, never stored.
    Pulse {
        /// The key.
        key: Key,
        /// The payload.
        value: Value,
        /// Who sent it.
        origin: NodeId,
    },
    /// The watcher fell behind and missed events; it should re-read the state.
    Lagged(u64),
}

/// The most recent changes, by sequence number.
#[derive(Debug, Default)]
pub(crate) struct ChangeLog {
    changes: VecDeque<Change>,
}

impl ChangeLog {
    pub(crate) fn record(&mut self, change: Change) {
        if self.changes.len() == KEPT {
            self.changes.pop_front();
        }
        self.changes.push_back(change);
    }

    /// Changes after `seq`, or `None` if some of them were already dropped.
    fn since(&self, seq: u64) -> Option<Vec<Change>> {
        let oldest = self.changes.front().map_or(u64::MAX, |c| c.seq);
        if seq.saturating_add(1) < oldest && !self.changes.is_empty() {
            return None;
        }
        Some(
            self.changes
                .iter()
                .filter(|c| c.seq > seq)
                .cloned()
                .collect(),
        )
    }
}

/// Why a watch cannot resume where asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("changes after {0} are no longer kept; read the state and watch from now")]
pub struct TooOld(pub u64);

/// A subscription to changes and pulses under a prefix.
pub struct Watch {
    prefix: String,
    backlog: VecDeque<WatchEvent>,
    live: broadcast::Receiver<Event>,
    last_seq: u64,
}

impl Watch {
    pub(crate) fn new(
        log: &Arc<Mutex<ChangeLog>>,
        live: broadcast::Receiver<Event>,
        prefix: &str,
        from: Option<u64>,
    ) -> Result<Watch, TooOld> {
        let mut watch = Watch {
            prefix: prefix.to_string(),
            backlog: VecDeque::new(),
            live,
            last_seq: 0,
        };
        let log = log.lock().expect("change log lock");
        match from {
            Some(seq) => {
                let changes = log.since(seq).ok_or(TooOld(seq))?;
                watch.last_seq = seq;
                for change in changes {
                    watch.accept_change(change);
                }
            }
            // Live from now: skip whatever the receiver may also hold from before.
            None => watch.last_seq = log.changes.back().map_or(0, |c| c.seq),
        }
        Ok(watch)
    }

    fn accept_change(&mut self, change: Change) {
        if change.seq <= self.last_seq {
            return;
        }
        self.last_seq = change.seq;
        if change.entry.key.is_under(&self.prefix) {
            self.backlog.push_back(WatchEvent::Changed {
                seq: change.seq,
                entry: change.entry,
            });
        }
    }

    /// The next event; `None` once the node has stopped.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        loop {
            if let Some(event) = self.backlog.pop_front() {
                return Some(event);
            }
            match self.live.recv().await {
                Ok(Event::Changed(change)) => self.accept_change(change),
                Ok(Event::Pulse { key, value, origin }) if key.is_under(&self.prefix) => {
                    return Some(WatchEvent::Pulse { key, value, origin });
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => return Some(WatchEvent::Lagged(n)),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use consort_proto::replica::{Hlc, Version};

    fn change(seq: u64, key: &str) -> Change {
        Change {
            seq,
            entry: Entry {
                key: Key::new(key).unwrap(),
                value: Some(Value::parse("1").unwrap()),
                version: Version {
                    hlc: Hlc(seq),
                    origin: NodeId(1),
                },
            },
        }
    }

    #[tokio::test]
    async fn resumes_after_a_sequence_number_with_the_prefix_applied() {
        let log = Arc::new(Mutex::new(ChangeLog::default()));
        for (seq, key) in [(1, "a/x"), (2, "b/y"), (3, "a/z")] {
            log.lock().unwrap().record(change(seq, key));
        }
        let (tx, rx) = broadcast::channel(16);
        let mut watch = Watch::new(&log, rx, "a", Some(1)).unwrap();
        tx.send(Event::Changed(change(3, "a/z"))).unwrap(); // also live: delivered once
        tx.send(Event::Changed(change(4, "a/w"))).unwrap();
        let seqs: Vec<u64> = [watch.next().await, watch.next().await]
            .into_iter()
            .map(|e| match e {
                Some(WatchEvent::Changed { seq, .. }) => seq,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(seqs, [3, 4]);
    }

    #[test]
    fn too_old_a_resume_point_is_refused() {
        let log = Arc::new(Mutex::new(ChangeLog::default()));
        for seq in 1..=(KEPT as u64 + 5) {
            log.lock().unwrap().record(change(seq, "k"));
        }
        let (_tx, rx) = broadcast::channel(16);
        assert!(Watch::new(&log, rx, "", Some(2)).is_err());
        let (_tx, rx) = broadcast::channel(16);
        assert!(Watch::new(&log, rx, "", Some(5)).is_ok());
    }
}
