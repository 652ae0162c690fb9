//! Leader election and group time in a simulation: per-node election settings and clock skew,
//! the invariant that each connected part of the network agrees on one leader, checks of the
//! recorded election events, and the true clock offsets that estimates are measured against.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use consort_proto::election::{ElectionConfig, ElectionEvent, Term};

use crate::check::Divergence;
use crate::record::ElectionRecord;
use crate::sim::Sim;

/// What one connected part of the network agrees on, as [`Sim::leaders_agree`] found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// The running nodes of the part, ascending.
    pub nodes: Vec<usize>,
    /// The leader they all follow (one of them), or `None` if the part is below its quorum.
    pub leader: Option<usize>,
    /// The term they all hold.
    pub term: Term,
}

impl Sim {
    /// Sets `node`'s election priority, from its next start.
    pub fn set_priority(&mut self, node: usize, priority: i32) {
        self.nodes[node].priority = priority;
    }

    /// Sets how `node` elects its leader, from its next start.
    pub fn set_election(&mut self, node: usize, config: ElectionConfig) {
        self.nodes[node].election = config;
    }

    /// Sets how far `node`'s wall clock runs ahead of the simulation's, from its next start.
    pub fn set_skew(&mut self, node: usize, skew: Duration) {
        self.set_skew_ms(node, skew.as_millis() as i64);
    }

    /// Sets `node`'s wall clock `skew_ms` milliseconds ahead of the simulation's (behind if
    /// negative), from its next start.
    pub fn set_skew_ms(&mut self, node: usize, skew_ms: i64) {
        self.nodes[node].skew_ms = skew_ms;
    }

    /// The running `node`'s wall clock now, µs since the Unix epoch, exactly as its engine
    /// reckons it (the wall time it started with plus the virtual time since).
    pub fn wall_us(&self, node: usize) -> Option<i64> {
        let n = &self.nodes[node];
        let (base_ms, started) = n.wall_base.filter(|_| n.status.is_running())?;
        Some(base_ms as i64 * 1000 + (self.now() - started).as_micros() as i64)
    }

    /// The group time `node`'s engine gives now ([`consort_proto::Engine::group_time_us`]).
    pub fn group_time_us(&self, node: usize) -> Option<i64> {
        Some(self.engine(node)?.group_time_us(self.instant()))
    }

    /// How far `observer`'s estimate of `subject`'s clock offset is from the truth, µs, once
    /// it has one; both must run.
    pub fn offset_error_us(&self, observer: usize, subject: usize) -> Option<i64> {
        let estimate = self
            .engine(observer)?
            .clock_estimate(self.node_id(subject))?;
        let truth = self.wall_us(subject)? - self.wall_us(observer)?;
        Some(estimate.offset_us - truth)
    }

    /// The leader `node` follows or is, by index, while it runs.
    pub fn leader_of(&self, node: usize) -> Option<usize> {
        self.index_of(self.engine(node)?.leader()?)
    }

    /// Every election event so far, in order.
    pub fn election_records(&self) -> &[ElectionRecord] {
        &self.election_records
    }

    /// The running nodes split into the parts of the network that reach each other: two nodes
    /// are in one part if a chain of links open both ways joins them. Each part ascending, the
    /// parts ordered by their first node.
    pub fn components(&self) -> Vec<Vec<usize>> {
        let running = self.running();
        let mut part: BTreeMap<usize, usize> = running.iter().map(|&n| (n, n)).collect();
        // Few nodes: relabel until nothing changes rather than keep a union-find.
        loop {
            let mut changed = false;
            for &a in &running {
                for &b in &running {
                    let linked = self.net.is_open(a, b) && self.net.is_open(b, a);
                    if linked && part[&b] < part[&a] {
                        part.insert(a, part[&b]);
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        let mut parts: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (node, label) in part {
            parts.entry(label).or_default().push(node);
        }
        parts.into_values().collect()
    }

    /// Checks the election invariant: in each connected part of the network
    /// ([`Sim::components`]), every node that counts enough members for its quorum follows
    /// the same leader at the same term, that leader is in the part and is the only node there
    /// that leads; a node whose part is below its quorum has no leader. Holds once membership
    /// is stable, not during changes.
    pub fn leaders_agree(&self) -> Result<Vec<Leadership>, Divergence> {
        let mut problems = Vec::new();
        let leaderships = self
            .components()
            .into_iter()
            .map(|part| self.judge_part(part, &mut problems))
            .collect();
        if problems.is_empty() {
            Ok(leaderships)
        } else {
            Err(Divergence {
                subject: Divergence::ELECTION,
                at: self.now(),
                problems,
            })
        }
    }

    /// Runs until [`Sim::leaders_agree`] holds, for at most `limit`; returns the time it took
    /// and what each part agreed on.
    pub fn await_leaders(
        &mut self,
        limit: Duration,
    ) -> Result<(Duration, Vec<Leadership>), Divergence> {
        match self.run_until(limit, |sim| sim.leaders_agree().is_ok()) {
            Some(took) => Ok((took, self.leaders_agree()?)),
            None => Err(self.leaders_agree().err().unwrap_or_else(|| Divergence {
                subject: Divergence::ELECTION,
                at: self.now(),
                problems: vec!["agreed only after the limit".into()],
            })),
        }
    }

    /// The leadership of one part, adding what is wrong with it to `problems`.
    fn judge_part(&self, nodes: Vec<usize>, problems: &mut Vec<String>) -> Leadership {
        let size = nodes.len();
        let (mut voters, mut leaderless) = (Vec::new(), Vec::new());
        for &n in &nodes {
            let quorum = self.nodes[n].running_election.quorum.unwrap_or(0);
            if size >= quorum {
                voters.push(n);
            } else {
                leaderless.push(n);
            }
        }
        let engine = |n: usize| self.engine(n).expect("part of running nodes");
        for &n in &leaderless {
            if let Some(leader) = engine(n).leader() {
                problems.push(format!(
                    "n{n} follows {} though its part {nodes:?} is below its quorum",
                    self.name(leader)
                ));
            }
        }
        let Some(&first) = voters.first() else {
            let term = nodes.iter().map(|&n| engine(n).term()).max().unwrap_or(0);
            return Leadership {
                nodes,
                leader: None,
                term,
            };
        };
        let held = |n: usize| (engine(n).leader(), engine(n).term());
        let (leader, term) = held(first);
        let leader = leader.and_then(|id| self.index_of(id));
        for &n in &voters {
            if held(n) != held(first) {
                let (l, t) = held(n);
                let (fl, ft) = held(first);
                problems.push(format!(
                    "n{n} follows {} at term {t}, n{first} {} at term {ft}",
                    l.map_or("nobody".into(), |id| self.name(id)),
                    fl.map_or("nobody".into(), |id| self.name(id)),
                ));
            }
        }
        match leader {
            None => problems.push(format!("part {nodes:?} has no leader (n{first})")),
            Some(l) if !nodes.contains(&l) => {
                problems.push(format!("part {nodes:?} follows n{l}, outside it"))
            }
            Some(_) => {}
        }
        for &n in &nodes {
            if engine(n).is_leader() && Some(n) != leader {
                problems.push(format!("n{n} leads too, in part {nodes:?}"));
            }
        }
        Leadership {
            nodes,
            leader,
            term,
        }
    }

    /// Checks the recorded election events: within each run of a node terms never go down;
    /// a node follows a leadership (leader, term) only after that leader emitted it as its own;
    /// `Promoted` and `BecameFollower` come right after the `LeaderChanged` that names them.
    pub fn election_history_sound(&self) -> Result<(), Divergence> {
        let mut problems = Vec::new();
        let mut term_of: BTreeMap<(usize, u64), Term> = BTreeMap::new();
        let mut held: HashSet<(usize, Term)> = HashSet::new();
        let mut last: BTreeMap<usize, ElectionEvent> = BTreeMap::new();
        for r in &self.election_records {
            let at = format!("{:.3}s n{}", r.at.as_secs_f64(), r.node);
            let previous = last.insert(r.node, r.event);
            let entered = match r.event {
                ElectionEvent::LeaderChanged { leader, term } => {
                    let before = term_of.insert((r.node, r.run), term).unwrap_or(0);
                    if term < before {
                        problems.push(format!("{at}: term went down from {before} to {term}"));
                    }
                    let leader = leader.map(|id| self.index_of(id));
                    if let Some(problem) = self.check_followed(r.node, leader, term, &mut held) {
                        problems.push(format!("{at}: {problem}"));
                    }
                    None
                }
                ElectionEvent::Promoted => Some(self.node_id(r.node)),
                ElectionEvent::BecameFollower { leader } => Some(leader),
                _ => None,
            };
            let announced = match previous {
                Some(ElectionEvent::LeaderChanged { leader, .. }) => leader,
                _ => None,
            };
            if entered.is_some_and(|l| announced != Some(l)) {
                problems.push(format!("{at}: {:?} after {previous:?}", r.event));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Divergence {
                subject: Divergence::ELECTION_HISTORY,
                at: self.now(),
                problems,
            })
        }
    }

    /// What is wrong, if anything, with `node` following `leader` (an index, `None` for an
    /// unknown node) at `term`; records the leaderships nodes take for themselves in `held`.
    fn check_followed(
        &self,
        node: usize,
        leader: Option<Option<usize>>,
        term: Term,
        held: &mut HashSet<(usize, Term)>,
    ) -> Option<String> {
        match leader? {
            None => Some("follows an unknown node".into()),
            Some(l) if l == node => {
                held.insert((l, term));
                None
            }
            Some(l) if !held.contains(&(l, term)) => Some(format!(
                "follows n{l} at term {term}, which n{l} never held"
            )),
            Some(_) => None,
        }
    }

    fn name(&self, id: consort_proto::NodeId) -> String {
        self.index_of(id)
            .map_or_else(|| id.to_string(), |i| format!("n{i}"))
    }
}
