//! Looking at a simulation: per-node queries, invariant checks, and detection measurements.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use consort_proto::{Engine, Member, MemberEvent, MemberState, NodeId, SavedState};

use crate::node::NodeStatus;
use crate::record::Record;
use crate::sim::Sim;

/// Why a check of the nodes failed (membership views, leaders, or replicated state): one line per
/// difference found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// What was checked and did not hold, e.g. "membership not converged".
    pub subject: &'static str,
    /// Virtual time of the check.
    pub at: Duration,
    /// Each difference, e.g. `n2 sees n4 as suspect`.
    pub problems: Vec<String>,
}

impl Divergence {
    /// Membership views that do not agree.
    pub const MEMBERSHIP: &'static str = "membership not converged";
    /// Replicated state that is wrong somewhere.
    pub const STATE: &'static str = "replicated state wrong";
    /// Connected nodes that do not agree on one leader and term.
    pub const ELECTION: &'static str = "leaders not agreed";
    /// Election events that no correct run emits.
    pub const ELECTION_HISTORY: &'static str = "election events unsound";
    /// Messages or service requests delivered in a way their class forbids.
    pub const MESSAGING: &'static str = "messaging guarantee broken";
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {:.3}s ({} problems):",
            self.subject,
            self.at.as_secs_f64(),
            self.problems.len()
        )?;
        for problem in self.problems.iter().take(20) {
            write!(f, "\n  {problem}")?;
        }
        if self.problems.len() > 20 {
            write!(f, "\n  ... and {} more", self.problems.len() - 20)?;
        }
        Ok(())
    }
}

impl std::error::Error for Divergence {}

impl Sim {
    /// How many nodes were added.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Indices of the running nodes.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].status.is_running())
            .collect()
    }

    /// Where `node` is in its life.
    pub fn status(&self, node: usize) -> NodeStatus {
        self.nodes[node].status
    }

    /// `node`'s persistent id.
    pub fn node_id(&self, node: usize) -> NodeId {
        self.nodes[node].id
    }

    /// `node`'s current address.
    pub fn addr(&self, node: usize) -> SocketAddr {
        self.nodes[node].addr
    }

    /// What `node` last saved: its simulated disk.
    pub fn disk(&self, node: usize) -> SavedState {
        self.nodes[node].disk
    }

    /// `node`'s engine, while it runs.
    pub fn engine(&self, node: usize) -> Option<&Engine> {
        self.nodes[node].engine.as_ref()
    }

    /// `node`'s membership view, while it runs.
    pub fn members(&self, node: usize) -> Option<Vec<Member>> {
        self.engine(node).map(Engine::members)
    }

    /// How `observer` sees `subject` right now: `None` if not running or not listed.
    pub fn view(&self, observer: usize, subject: usize) -> Option<Member> {
        let id = self.nodes[subject].id;
        self.members(observer)?
            .into_iter()
            .find(|m| m.identity.id == id)
    }

    /// Every membership event so far, in order.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// `Down` events about a node that was running, with the very identity declared down, when
    /// the event happened. Expected during partitions; a failure detector bug otherwise.
    pub fn false_downs(&self) -> &[Record] {
        &self.false_downs
    }

    /// For each running node other than `subject`: how long after `since` it first reported
    /// `subject` as `state` (only [`MemberState::Down`] and [`MemberState::Left`] are events).
    pub fn detections(
        &self,
        subject: usize,
        since: Duration,
        state: MemberState,
    ) -> Vec<(usize, Option<Duration>)> {
        let id = self.nodes[subject].id;
        let matches = |event: &MemberEvent| match (event, state) {
            (MemberEvent::Down(who), MemberState::Down) => who.id == id,
            (MemberEvent::Left(who), MemberState::Left) => who.id == id,
            _ => false,
        };
        self.running()
            .into_iter()
            .filter(|&o| o != subject)
            .map(|o| {
                let first = self
                    .records
                    .iter()
                    .find(|r| r.node == o && r.at >= since && matches(&r.event));
                (o, first.map(|r| r.at - since))
            })
            .collect()
    }

    /// Checks that membership has converged: every running node lists every other running node
    /// once, `Alive`, with its current address and generation; lists every crashed or stopped node
    /// as `Down` or `Left`, or not at all; and lists no stranger.
    pub fn membership_converged(&self) -> Result<(), Divergence> {
        let mut problems = Vec::new();
        for observer in self.running() {
            self.check_view(observer, &mut problems);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Divergence {
                subject: Divergence::MEMBERSHIP,
                at: self.now(),
                problems,
            })
        }
    }

    /// Runs until membership converges, for at most `limit`; returns the time it took.
    pub fn await_convergence(&mut self, limit: Duration) -> Result<Duration, Divergence> {
        match self.run_until(limit, |sim| sim.membership_converged().is_ok()) {
            Some(took) => Ok(took),
            None => Err(self
                .membership_converged()
                .err()
                .unwrap_or_else(|| Divergence {
                    subject: Divergence::MEMBERSHIP,
                    at: self.now(),
                    problems: vec!["converged only after the limit".into()],
                })),
        }
    }

    fn check_view(&self, observer: usize, problems: &mut Vec<String>) {
        let Some(members) = self.members(observer) else {
            return;
        };
        let mut listed: BTreeMap<NodeId, Vec<&Member>> = BTreeMap::new();
        for member in &members {
            listed.entry(member.identity.id).or_default().push(member);
        }
        let me = &self.nodes[observer].name;
        for (id, entries) in &listed {
            match self.index_of(*id) {
                None => problems.push(format!("{me} lists unknown node {id}")),
                Some(_) if entries.len() > 1 => {
                    problems.push(format!(
                        "{me} lists {} {} times",
                        self.name_of(*id),
                        entries.len()
                    ));
                }
                Some(_) => {}
            }
        }
        for subject in 0..self.nodes.len() {
            let entry = listed
                .get(&self.nodes[subject].id)
                .and_then(|e| e.first().copied());
            if let Some(problem) = self.judge(observer, subject, entry) {
                problems.push(format!("{me} {problem}"));
            }
        }
    }

    /// What is wrong, if anything, with `entry` as `observer`'s view of `subject`.
    fn judge(&self, observer: usize, subject: usize, entry: Option<&Member>) -> Option<String> {
        let s = &self.nodes[subject];
        let name = &s.name;
        if !s.status.is_running() {
            return match entry {
                Some(m) if m.state.is_live() => Some(format!(
                    "sees {:?} {name} as {}",
                    s.status,
                    m.state.as_str()
                )),
                _ => None,
            };
        }
        let Some(m) = entry else {
            return Some(format!("does not list {name}"));
        };
        let expected = (s.addr, s.generation().unwrap_or(0));
        let seen = (m.identity.addr, m.identity.generation);
        if m.state != MemberState::Alive {
            Some(format!("sees {name} as {}", m.state.as_str()))
        } else if seen != expected {
            Some(format!(
                "sees {name} at {}#{}, but it is at {}#{}",
                seen.0, seen.1, expected.0, expected.1
            ))
        } else if m.is_self != (observer == subject) {
            Some(format!("has is_self wrong for {name}"))
        } else {
            None
        }
    }

    fn name_of(&self, id: NodeId) -> String {
        self.index_of(id)
            .map_or_else(|| id.to_string(), |i| self.nodes[i].name.clone())
    }
}
