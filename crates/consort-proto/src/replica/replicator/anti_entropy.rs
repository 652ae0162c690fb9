//! Anti-entropy: a reconciliation round with a random live peer, repairing what pushes lost.

use std::time::{Duration, Instant};

use super::{Action, Bootstrap, Replicator};
use crate::id::NodeId;
use crate::replica::entry::{Entry, Key};
use crate::replica::message::ReplicaMessage;
use crate::replica::reconcile::{Message as Reconcile, Session};

/// The reconciliation round this node drives, if any.
#[derive(Debug, Default)]
pub(super) struct AntiEntropy {
    round: Option<Round>,
    next_start: Option<Instant>,
    /// Rounds started and completed, and bytes of reconciliation messages, for metrics.
    started: u64,
    completed: u64,
}

#[derive(Debug)]
struct Round {
    peer: NodeId,
    session: Session,
    last_activity: Instant,
    started: Instant,
}

/// Give up a round that makes no progress for this long (the peer may be gone).
const ROUND_ABANDON: Duration = Duration::from_secs(2);

impl Replicator {
    /// Starts a round with a random live peer when due; resends or abandons a stalled one.
    pub(super) fn drive_anti_entropy(&mut self, now: Instant, live: &[NodeId], round_seed: u32) {
        if let Some(round) = &mut self.anti_entropy.round {
            let idle = now.duration_since(round.last_activity);
            if !live.contains(&round.peer) || now.duration_since(round.started) > ROUND_ABANDON {
                self.anti_entropy.round = None;
            } else if idle >= self.config.anti_entropy_resend {
                round.last_activity = now;
                let peer = round.peer;
                for request in round.session.resend() {
                    self.actions.push_back(Action::Send(
                        peer,
                        ReplicaMessage::Reconcile(Reconcile::Request(request)),
                    ));
                }
            }
            return;
        }
        let due = self.anti_entropy.next_start.is_none_or(|t| now >= t);
        // A node pulling a snapshot would only reconcile what the snapshot brings anyway.
        let Some(&peer) = live.first().filter(|_| due && !self.is_bootstrapping()) else {
            return;
        };
        self.anti_entropy.next_start = Some(now + self.config.anti_entropy_period);
        let (session, request) = Session::start(&self.store, round_seed);
        self.anti_entropy.started += 1;
        self.anti_entropy.round = Some(Round {
            peer,
            session,
            last_activity: now,
            started: now,
        });
        self.actions.push_back(Action::Send(
            peer,
            ReplicaMessage::Reconcile(Reconcile::Request(request)),
        ));
    }

    /// Answers a peer's reconciliation request, and sends it what it lacks.
    pub(super) fn answer_reconcile(
        &mut self,
        from: NodeId,
        request: &crate::replica::reconcile::Request,
    ) {
        let Ok(response) = self.store.answer(request) else {
            return; // a bug or a version mismatch at the peer; nothing to answer
        };
        self.actions.push_back(Action::Send(
            from,
            ReplicaMessage::Reconcile(Reconcile::Reply(response.reply)),
        ));
        self.push_keys(from, &response.push);
    }

    /// Feeds a reply to the round this node drives.
    pub(super) fn continue_round(
        &mut self,
        now: Instant,
        from: NodeId,
        reply: &crate::replica::reconcile::Reply,
    ) {
        let Some(round) = self.anti_entropy.round.as_mut().filter(|r| r.peer == from) else {
            return;
        };
        round.last_activity = now;
        let step = round.session.handle(&self.store, reply);
        let done = round.session.is_done();
        for request in step.send {
            self.actions.push_back(Action::Send(
                from,
                ReplicaMessage::Reconcile(Reconcile::Request(request)),
            ));
        }
        self.push_keys(from, &step.push);
        if !step.stale.is_empty() {
            // The peer forgot deletes this node never saw: merging could resurrect them.
            self.anti_entropy.round = None;
            self.bootstrap = Bootstrap::Wanted { resync: true };
            return;
        }
        if done {
            self.anti_entropy.round = None;
            self.anti_entropy.completed += 1;
        }
    }

    fn push_keys(&mut self, to: NodeId, keys: &[Key]) {
        let entries: Vec<Entry> = keys
            .iter()
            .filter_map(|k| self.store.get(k).cloned())
            .collect();
        if !entries.is_empty() {
            self.actions.push_back(Action::PushTo(to, entries));
        }
    }

    /// Reconciliation rounds started and completed by this node.
    pub(crate) fn anti_entropy_rounds(&self) -> (u64, u64) {
        (self.anti_entropy.started, self.anti_entropy.completed)
    }
}
