//! Election: one leader derived from each node's own view of the live members, with terms.
//!
//! No votes and no log: every node picks the leader from its (eventually consistent) membership
//! view, so once views agree, picks agree. Terms make the transitions safe. A node that becomes
//! leader starts a new term, one above the highest it has seen, and announces it in a [`Claim`]
//! to every live member, on change and on every heartbeat. A node follows the leader it picked
//! once it holds that leader's claim at a term above the one it follows (or the same term from
//! the same node: two sides of a partition can reach the same number). Every claim is answered
//! with an [`Ack`] naming whom the sender follows, at which term, and whom it picks: a leader
//! learns from acks how many members follow it, and which members wait for it to outgrow a term.
//! A leader that steps down while live retracts its claim; a claim not heard again for
//! [`CLAIM_LIFETIME`] heartbeats lapses, in case the retraction was lost.
//!
//! # Modes
//!
//! - [`Mode::Ranked`]: the live member with the highest priority, then the lowest node id. A
//!   better node that returns takes over.
//! - [`Mode::Sticky`]: among live members with a claim in force, the one followed by the most
//!   members (its claim's `support`), then the one with the higher term, then ranked order; if
//!   nobody claims, ranked order. The current leader therefore stays while it is live, and when
//!   two leaders meet after a partition the one leading the larger side stays: a node that led
//!   itself while cut off does not take over on its return, however high its term.
//!
//! # Partitions
//!
//! Each side of a partition picks its own leader, and a side that lost its leader starts a new
//! term. On heal the views converge and one leader remains. A leader starts a new term (highest
//! seen + 1) whenever a live rival claims a term at least as high as its own, or a live member
//! that picks it, or that has no leader, acknowledges a term it cannot follow it at. So the
//! surviving leadership ends with a term above the demoted leader's and at or above every term
//! either side reached (above all of them unless it already held the highest), and members drop
//! the demoted leader's messages ([`Election::accept_leader_message`]).
//!
//! # Driving rule
//!
//! 1. Call [`Election::update_view`] whenever membership changes, with the live members (alive
//!    or suspect), this node included unless it is leaving.
//! 2. Every heartbeat (200-500 ms, the same period on every node), call [`Election::tick`] and
//!    send the claim it returns, if any, to every live member.
//! 3. Answer each received claim with the [`Ack`] that [`Election::handle_claim`] returns; feed
//!    received acks to [`Election::handle_ack`].
//! 4. After every call, send [`Election::poll_claim`] to every live member if it is `Some`, and
//!    drain [`Election::poll_event`].
//! 5. Stamp messages sent as leader with [`Election::term`]; deliver a received leader message
//!    only if [`Election::accept_leader_message`] says so.

use std::cmp::Reverse;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::id::NodeId;

#[cfg(test)]
mod tests;

/// A leadership's number. Grows with every new leadership; 0 means "none yet".
pub type Term = u64;

/// Heartbeats ([`Election::tick`]) a claim or ack stays valid without being heard again.
///
/// A node that stops leading while still live retracts its claim once; if that retraction is
/// lost, its last claim lapses after this many beats. All nodes should tick at the same period.
pub const CLAIM_LIFETIME: u64 = 4;

/// How the leader is picked from the live members.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Mode {
    /// Highest priority, then lowest node id; a returning better node takes over.
    #[default]
    Ranked,
    /// The current leader stays while it is live.
    Sticky,
}

impl Mode {
    /// The lowercase name used in configuration and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Ranked => "ranked",
            Mode::Sticky => "sticky",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not a [`Mode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("election mode is `ranked` or `sticky`, got {0:?}")]
pub struct ParseModeError(pub String);

impl FromStr for Mode {
    type Err = ParseModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "ranked" => Ok(Mode::Ranked),
            "sticky" => Ok(Mode::Sticky),
            other => Err(ParseModeError(other.to_string())),
        }
    }
}

/// How a group elects its leader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ElectionConfig {
    /// How the leader is picked.
    pub mode: Mode,
    /// No leader unless at least this many members, this node included, are live.
    pub quorum: Option<usize>,
}

/// "I lead at this term": sent by a leader to every live member, periodically and on change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The leadership's term.
    pub term: Term,
    /// Live members following this leader, itself included (ranks leaders in sticky mode).
    /// 0 retracts the claim: the sender stopped leading at `term`.
    pub support: u32,
}

impl Claim {
    /// Whether this claim says the sender stopped leading.
    pub fn is_retraction(&self) -> bool {
        self.support == 0
    }
}

/// The answer to a [`Claim`]: whom the sender follows, at which term, and whom it picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The leader the sender follows, `None` while it has none.
    pub leader: Option<NodeId>,
    /// The sender's current term.
    pub term: Term,
    /// The node the sender's view designates. When it names the claimant but `leader` does not,
    /// the sender waits for a claim above `term`.
    pub candidate: Option<NodeId>,
}

/// A change of leadership, as seen by this node.
///
/// For one change the events come in this order: the end of this node's old role ([`Demoted`],
/// [`StoppedFollowing`]), then [`LeaderChanged`], then its new role ([`Promoted`],
/// [`BecameFollower`]). Each is emitted once per change; a node without a leader (quorum lost, or
/// waiting for the new leader's claim) is neither leader nor follower.
///
/// [`Demoted`]: ElectionEvent::Demoted
/// [`StoppedFollowing`]: ElectionEvent::StoppedFollowing
/// [`LeaderChanged`]: ElectionEvent::LeaderChanged
/// [`Promoted`]: ElectionEvent::Promoted
/// [`BecameFollower`]: ElectionEvent::BecameFollower
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ElectionEvent {
    /// This node stopped leading (p2plib's `demote_leader`).
    Demoted,
    /// This node stopped following `leader` (p2plib's `demote_follower`).
    StoppedFollowing {
        /// The leader it followed.
        leader: NodeId,
    },
    /// The leader or its term changed (a leader starting a new term is a change too).
    LeaderChanged {
        /// The new leader, `None` if there is none.
        leader: Option<NodeId>,
        /// The term of the new leadership, or the last term when there is no leader.
        term: Term,
    },
    /// This node became leader (p2plib's `promote_leader`).
    Promoted,
    /// This node started following `leader` (p2plib's `promote_follower`).
    BecameFollower {
        /// The leader it follows.
        leader: NodeId,
    },
}

/// One node's election state machine. See the module docs for the driving rule.
#[derive(Clone, Debug)]
pub struct Election {
    own: NodeId,
    config: ElectionConfig,
    /// Live members with their priority, best ranked first.
    live: Vec<(NodeId, i32)>,
    /// The newest claim heard from each node, with the beat it was heard at.
    claims: HashMap<NodeId, (Claim, u64)>,
    /// The last ack from each live member, with its beat; only kept while leading.
    acks: HashMap<NodeId, (Ack, u64)>,
    /// Heartbeats so far.
    beat: u64,
    /// The node this node's view designates, confirmed or not.
    candidate: Option<NodeId>,
    /// The confirmed leader (this node, or the candidate whose claim it holds).
    leader: Option<NodeId>,
    /// The current leadership's term, or the last one when there is no leader.
    term: Term,
    /// The node that led `term`: another node's claim at the same term is a different leadership.
    owner: Option<NodeId>,
    /// The highest term seen anywhere.
    highest: Term,
    claim_due: bool,
    /// The term this node stopped leading at, while its retraction is not sent yet.
    resigned: Option<Term>,
    events: VecDeque<ElectionEvent>,
}

impl Election {
    /// A node with an empty view: no leader until [`Election::update_view`].
    pub fn new(own: NodeId, config: ElectionConfig) -> Election {
        Election {
            own,
            config,
            live: Vec::new(),
            claims: HashMap::new(),
            acks: HashMap::new(),
            beat: 0,
            candidate: None,
            leader: None,
            term: 0,
            owner: None,
            highest: 0,
            claim_due: false,
            resigned: None,
            events: VecDeque::new(),
        }
    }

    /// Raises the highest term seen, e.g. to one saved before a restart, so that this node's next
    /// leadership starts above it. Emits nothing.
    pub fn observe_term(&mut self, term: Term) {
        self.highest = self.highest.max(term);
    }

    /// Replaces the view with the live members and their priorities.
    ///
    /// This node is a candidate, and counts towards the quorum, only if it is listed. A node
    /// listed twice keeps its first priority.
    pub fn update_view(&mut self, live: &[(NodeId, i32)]) {
        let mut view: Vec<(NodeId, i32)> = Vec::with_capacity(live.len());
        for &(id, priority) in live {
            if !view.iter().any(|&(seen, _)| seen == id) {
                view.push((id, priority));
            }
        }
        view.sort_by_key(|&(id, priority)| (Reverse(priority), id));
        let newcomer = view.iter().any(|&(id, _)| !self.is_live(id));
        self.live = view;
        let (live, term) = (&self.live, self.term);
        let is_live = |id: &NodeId| live.iter().any(|&(l, _)| l == *id);
        self.claims
            .retain(|id, (claim, _)| is_live(id) || claim.term >= term);
        // An ack heard this beat outlives its sender leaving the view until the next beat: after
        // a heal SWIM may declare a follower's old identity down just before its new one comes
        // up, and a sticky leader whose support dropped for that instant would yield.
        let beat = self.beat;
        self.acks
            .retain(|id, (_, heard)| is_live(id) || *heard == beat);
        self.settle();
        // A newcomer learns who leads from the next claim; send it now rather than a beat later.
        self.claim_due |= newcomer && self.is_leader();
    }

    /// Handles a claim from `from`; returns the ack to send back to it.
    ///
    /// Claims from nodes outside the view are kept (the view may lag) but only count once the
    /// node is live. A claim older than one already held from `from` is ignored.
    pub fn handle_claim(&mut self, from: NodeId, claim: Claim) -> Ack {
        if from != self.own && claim.term > 0 {
            self.highest = self.highest.max(claim.term);
            let newer = self
                .claims
                .get(&from)
                .is_none_or(|(c, _)| c.term <= claim.term);
            if newer {
                self.claims.insert(from, (claim, self.beat));
            }
            self.settle();
        }
        Ack {
            leader: self.leader,
            term: self.term,
            candidate: self.candidate,
        }
    }

    /// Handles the answer of `from` to one of this node's claims.
    pub fn handle_ack(&mut self, from: NodeId, ack: Ack) {
        if from == self.own || !self.is_leader() {
            return;
        }
        self.highest = self.highest.max(ack.term);
        self.acks.insert(from, (ack, self.beat));
        self.settle();
    }

    /// Counts one heartbeat: forgets claims and acks not heard for [`CLAIM_LIFETIME`] beats, and
    /// returns the claim to send to every live member if this node leads.
    pub fn tick(&mut self) -> Option<Claim> {
        self.beat += 1;
        let oldest = self.beat.saturating_sub(CLAIM_LIFETIME);
        let before = (self.claims.len(), self.acks.len());
        self.claims.retain(|_, (_, heard)| *heard >= oldest);
        let live = &self.live;
        self.acks
            .retain(|id, (_, heard)| *heard >= oldest && live.iter().any(|&(l, _)| l == *id));
        if before != (self.claims.len(), self.acks.len()) {
            self.settle();
        }
        self.claim()
    }

    /// Whether to deliver a message that `from` sent as leader at `term`.
    ///
    /// Only the node this node's view designates as leader is heard, at the term followed (if
    /// `from` holds it) or a higher one, since the claim announcing it may still be on its way. A
    /// demoted leader's old-term messages are dropped.
    pub fn accept_leader_message(&self, from: NodeId, term: Term) -> bool {
        self.candidate == Some(from) && self.is_newer(from, term)
    }

    /// The confirmed leader, this node included.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The node the view designates as leader, even before its claim has arrived.
    pub fn candidate(&self) -> Option<NodeId> {
        self.candidate
    }

    /// The current leadership's term, or the last one when there is no leader.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The highest term seen anywhere (persist it to resume with [`Election::observe_term`]).
    pub fn highest_term(&self) -> Term {
        self.highest
    }

    /// Whether this node leads.
    pub fn is_leader(&self) -> bool {
        self.leader == Some(self.own)
    }

    /// Whether this node follows another node.
    pub fn is_follower(&self) -> bool {
        self.leader.is_some_and(|l| l != self.own)
    }

    /// This node's claim while it leads (what [`Election::tick`] returns).
    pub fn claim(&self) -> Option<Claim> {
        self.is_leader().then(|| Claim {
            term: self.term,
            support: self.support(),
        })
    }

    /// The claim to send to every live member now, once after each change that calls for one:
    /// a new term, a new member while leading, or a retraction after stepping down.
    pub fn poll_claim(&mut self) -> Option<Claim> {
        if let Some(term) = self.resigned.take() {
            return Some(Claim { term, support: 0 });
        }
        if !std::mem::take(&mut self.claim_due) {
            return None;
        }
        self.claim()
    }

    /// The next leadership change, in the order documented on [`ElectionEvent`].
    pub fn poll_event(&mut self) -> Option<ElectionEvent> {
        self.events.pop_front()
    }

    fn is_live(&self, id: NodeId) -> bool {
        self.live.iter().any(|&(l, _)| l == id)
    }

    /// Live members other than this node.
    fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.live
            .iter()
            .map(|&(id, _)| id)
            .filter(move |&id| id != self.own)
    }

    /// The claim held from `id` if it is in force (heard recently, not retracted).
    fn claim_of(&self, id: NodeId) -> Option<Claim> {
        self.claims
            .get(&id)
            .map(|&(claim, _)| claim)
            .filter(|c| !c.is_retraction())
    }

    /// This node plus the members whose last ack names it as their leader (the live ones, and
    /// until the next beat those out of the view).
    fn support(&self) -> u32 {
        let followers = self
            .acks
            .iter()
            .filter(|&(&id, (ack, _))| id != self.own && ack.leader == Some(self.own))
            .count();
        u32::try_from(followers + 1).unwrap_or(u32::MAX)
    }

    /// Recomputes the leader and term from the view, claims and acks; queues events on change.
    fn settle(&mut self) {
        self.candidate = self.pick();
        let next = match self.candidate {
            None => (None, self.term),
            Some(id) if id == self.own => {
                let keep = self.is_leader() && !self.challenged();
                let term = if keep {
                    self.term
                } else {
                    self.highest.saturating_add(1)
                };
                (Some(id), term)
            }
            Some(id) => match self.claim_of(id) {
                Some(claim) if self.is_newer(id, claim.term) => (Some(id), claim.term),
                _ => (None, self.term),
            },
        };
        self.enter(next);
    }

    /// The node this node's view designates, if the quorum is met.
    fn pick(&self) -> Option<NodeId> {
        if self.live.len() < self.config.quorum.unwrap_or(0) {
            return None;
        }
        let ranked = self.live.first().map(|&(id, _)| id);
        match self.config.mode {
            Mode::Ranked => ranked,
            Mode::Sticky => self.strongest_claimant().or(ranked),
        }
    }

    /// The live claimant with the most support, then the highest term, then the best rank.
    ///
    /// Claims below the term this node follows are stale (their leadership was superseded) and
    /// do not count.
    fn strongest_claimant(&self) -> Option<NodeId> {
        let claim_of = |id: NodeId| {
            if id == self.own {
                self.claim()
            } else {
                self.claim_of(id).filter(|c| c.term >= self.term)
            }
        };
        self.live
            .iter()
            .enumerate()
            .filter_map(|(rank, &(id, _))| {
                claim_of(id).map(|c| ((c.support, c.term, Reverse(rank)), id))
            })
            .max_by_key(|&(strength, _)| strength)
            .map(|(_, id)| id)
    }

    /// Whether `leader`'s leadership at `term` is at least the one this node follows: a higher
    /// term, or the same term held by the same node.
    fn is_newer(&self, leader: NodeId, term: Term) -> bool {
        term > self.term || (term == self.term && self.owner == Some(leader))
    }

    /// Whether this leader must start a new term: a live rival claims a term at least as high,
    /// or a live member picks this node but cannot follow it at its term (it waits for a higher
    /// one, after following another leadership at an equal or higher term), or has no leader
    /// and a higher term.
    fn challenged(&self) -> bool {
        let own = Some(self.own);
        self.peers().any(|id| {
            let rival = self.claim_of(id).is_some_and(|c| c.term >= self.term);
            let waiting = self.acks.get(&id).is_some_and(|(a, _)| {
                let following = a.leader == own && a.term == self.term;
                let picks = a.candidate == own && a.term >= self.term && !following;
                // A leaderless member at a higher term cannot follow this leadership, whomever
                // it picks: in sticky mode it disregards claims below its term and may wait for
                // a node that follows this leader. Outgrow its term.
                let stranded = a.leader.is_none() && a.term > self.term;
                picks || stranded
            });
            rival || waiting
        })
    }

    /// Moves to `(leader, term)`, queueing the events of the change in the documented order.
    fn enter(&mut self, (leader, term): (Option<NodeId>, Term)) {
        if (leader, term) == (self.leader, self.term) {
            return;
        }
        let own = Some(self.own);
        let (old, old_term) = (self.leader, self.term);
        let (was_leader, is_leader) = (old == own, leader == own);
        if was_leader && !is_leader {
            self.events.push_back(ElectionEvent::Demoted);
            self.resigned = Some(old_term);
        }
        if let Some(prev) = old.filter(|_| !was_leader && leader != old) {
            self.events
                .push_back(ElectionEvent::StoppedFollowing { leader: prev });
        }
        self.events
            .push_back(ElectionEvent::LeaderChanged { leader, term });
        if is_leader && !was_leader {
            self.events.push_back(ElectionEvent::Promoted);
        }
        if let Some(next) = leader.filter(|_| !is_leader && leader != old) {
            self.events
                .push_back(ElectionEvent::BecameFollower { leader: next });
        }
        self.leader = leader;
        self.term = term;
        self.owner = leader.or(self.owner);
        self.highest = self.highest.max(term);
        if is_leader {
            self.claim_due = true;
            self.resigned = None;
        } else {
            self.acks.clear();
            self.claim_due = false;
        }
    }
}
