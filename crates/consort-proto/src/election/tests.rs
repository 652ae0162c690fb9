//! Unit tests: single instances, and small groups of instances wired by an in-memory network
//! that delivers claims and acks between nodes on the same side of a partition.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::*;

use ElectionEvent::{BecameFollower, Demoted, LeaderChanged, Promoted, StoppedFollowing};

fn id(n: u64) -> NodeId {
    NodeId(n)
}

fn changed(leader: Option<u64>, term: Term) -> ElectionEvent {
    LeaderChanged {
        leader: leader.map(NodeId),
        term,
    }
}

fn follow(n: u64) -> ElectionEvent {
    BecameFollower { leader: id(n) }
}

fn unfollow(n: u64) -> ElectionEvent {
    StoppedFollowing { leader: id(n) }
}

fn drain(e: &mut Election) -> Vec<ElectionEvent> {
    std::iter::from_fn(|| e.poll_event()).collect()
}

struct Node {
    election: Election,
    priority: i32,
    /// The members this node currently holds as live.
    view: Vec<NodeId>,
    events: Vec<ElectionEvent>,
}

/// Nodes wired by a network: two nodes reach each other iff they are on the same side.
struct Group {
    nodes: BTreeMap<NodeId, Node>,
    side: BTreeMap<NodeId, usize>,
    /// Probability that a claim or an ack is lost.
    loss: f64,
    rng: StdRng,
}

impl Group {
    fn new(config: ElectionConfig, members: &[(u64, i32)]) -> Group {
        let nodes = members
            .iter()
            .map(|&(n, priority)| {
                let node = Node {
                    election: Election::new(id(n), config),
                    priority,
                    view: Vec::new(),
                    events: Vec::new(),
                };
                (id(n), node)
            })
            .collect();
        Group {
            nodes,
            side: members.iter().map(|&(n, _)| (id(n), 0)).collect(),
            loss: 0.0,
            rng: StdRng::seed_from_u64(0),
        }
    }

    /// A connected group whose every view holds every member, settled.
    fn connected(config: ElectionConfig, members: &[(u64, i32)]) -> Group {
        let mut group = Group::new(config, members);
        group.heal();
        group.clear_events();
        group
    }

    fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    fn node(&mut self, n: u64) -> &mut Election {
        &mut self.nodes.get_mut(&id(n)).unwrap().election
    }

    /// Cuts the network into `sides`; each node's view becomes its side. Then runs a few beats.
    fn split(&mut self, sides: &[&[u64]]) {
        for (s, members) in sides.iter().enumerate() {
            for &n in *members {
                self.side.insert(id(n), s);
            }
        }
        for n in self.ids() {
            let view: Vec<u64> = self
                .ids()
                .into_iter()
                .filter(|m| self.side[m] == self.side[&n])
                .map(|m| m.0)
                .collect();
            self.set_view(n.0, &view);
        }
        self.settle();
        self.beats(3);
    }

    fn heal(&mut self) {
        let all: Vec<u64> = self.ids().iter().map(|n| n.0).collect();
        self.split(&[&all]);
    }

    /// Gives node `n` a view (membership lags or disagrees), without sending anything yet.
    fn set_view(&mut self, n: u64, view: &[u64]) {
        let live: Vec<(NodeId, i32)> = view
            .iter()
            .map(|&m| (id(m), self.nodes[&id(m)].priority))
            .collect();
        let node = self.nodes.get_mut(&id(n)).unwrap();
        node.view = live.iter().map(|&(m, _)| m).collect();
        node.election.update_view(&live);
        self.collect();
    }

    fn reach(&self, a: NodeId, b: NodeId) -> bool {
        self.side[&a] == self.side[&b]
    }

    fn lost(&mut self) -> bool {
        self.loss > 0.0 && self.rng.random_bool(self.loss)
    }

    /// Sends `claim` from `from` to every member of its view, and each ack back.
    fn broadcast(&mut self, from: NodeId, claim: Claim) {
        let view = self.nodes[&from].view.clone();
        for to in view {
            if to == from || !self.reach(from, to) || self.lost() {
                continue;
            }
            let ack = self
                .nodes
                .get_mut(&to)
                .unwrap()
                .election
                .handle_claim(from, claim);
            if !self.lost() {
                self.nodes
                    .get_mut(&from)
                    .unwrap()
                    .election
                    .handle_ack(to, ack);
            }
            self.collect();
        }
    }

    /// Delivers the claims due after changes until none is due.
    fn settle(&mut self) {
        for _ in 0..100 {
            let due: Vec<(NodeId, Claim)> = self
                .nodes
                .iter_mut()
                .filter_map(|(&n, node)| node.election.poll_claim().map(|c| (n, c)))
                .collect();
            if due.is_empty() {
                return;
            }
            for (from, claim) in due {
                self.broadcast(from, claim);
            }
        }
        panic!("claims still due after 100 rounds: a claim storm");
    }

    /// One heartbeat: every leader sends its claim; then whatever follows is delivered.
    fn beat(&mut self) {
        for n in self.ids() {
            let claim = self.nodes.get_mut(&n).unwrap().election.tick();
            self.collect();
            if let Some(claim) = claim {
                self.broadcast(n, claim);
            }
        }
        self.settle();
    }

    fn beats(&mut self, count: usize) {
        for _ in 0..count {
            self.beat();
        }
    }

    fn collect(&mut self) {
        for node in self.nodes.values_mut() {
            node.events.extend(drain(&mut node.election));
        }
    }

    fn events(&mut self, n: u64) -> Vec<ElectionEvent> {
        std::mem::take(&mut self.nodes.get_mut(&id(n)).unwrap().events)
    }

    fn clear_events(&mut self) {
        for node in self.nodes.values_mut() {
            node.events.clear();
        }
    }

    /// Every distinct (leader, term) held, and how many nodes lead.
    fn leadership(&self) -> (BTreeSet<(Option<NodeId>, Term)>, usize) {
        let held = self
            .nodes
            .values()
            .map(|n| (n.election.leader(), n.election.term()))
            .collect();
        let leaders = self
            .nodes
            .values()
            .filter(|n| n.election.is_leader())
            .count();
        (held, leaders)
    }

    /// Asserts that every node follows or is `leader` at `term`.
    fn assert_agree(&self, leader: u64, term: Term) {
        assert_eq!(
            self.leadership(),
            (BTreeSet::from([(Some(id(leader)), term)]), 1)
        );
    }
}

fn ranked() -> ElectionConfig {
    ElectionConfig::default()
}

fn sticky() -> ElectionConfig {
    ElectionConfig {
        mode: Mode::Sticky,
        quorum: None,
    }
}

#[test]
fn lone_node_leads_itself() {
    let mut e = Election::new(id(7), ranked());
    assert_eq!((e.leader(), e.term(), e.claim()), (None, 0, None));
    e.update_view(&[(id(7), 0)]);
    assert_eq!(drain(&mut e), [changed(Some(7), 1), Promoted]);
    assert!(e.is_leader() && !e.is_follower());
    let claim = Claim {
        term: 1,
        support: 1,
    };
    assert_eq!(e.poll_claim(), Some(claim));
    assert_eq!(e.poll_claim(), None, "due once per change");
    assert_eq!(e.claim(), Some(claim), "heartbeat claim");
    e.update_view(&[(id(7), 0)]);
    assert_eq!(drain(&mut e), [], "no change, no event");
    assert!(e.accept_leader_message(id(7), 1));
}

#[test]
fn ranked_picks_highest_priority_then_lowest_id() {
    let mut e = Election::new(id(5), ranked());
    e.update_view(&[(id(5), 1), (id(9), 7), (id(3), 7), (id(4), -2)]);
    assert_eq!(e.candidate(), Some(id(3)));
    assert_eq!(e.leader(), None, "not followed before its claim arrives");
    let ack = e.handle_claim(
        id(3),
        Claim {
            term: 4,
            support: 3,
        },
    );
    assert_eq!(
        ack,
        Ack {
            leader: Some(id(3)),
            term: 4,
            candidate: Some(id(3)),
        }
    );
    assert_eq!(drain(&mut e), [changed(Some(3), 4), follow(3)]);
    assert!(e.is_follower());

    // Equal priorities: the lowest id, here this node, which starts a new term.
    e.update_view(&[(id(9), 0), (id(5), 0), (id(7), 0)]);
    assert_eq!(
        (e.candidate(), e.leader(), e.term()),
        (Some(id(5)), Some(id(5)), 5)
    );
    assert_eq!(drain(&mut e), [unfollow(3), changed(Some(5), 5), Promoted]);
}

#[test]
fn node_outside_its_own_view_never_leads() {
    // A leaving node lists only the others: it may follow but not lead.
    let mut e = Election::new(id(1), ranked());
    e.update_view(&[(id(2), 0), (id(3), 0)]);
    assert_eq!(e.candidate(), Some(id(2)));
    e.update_view(&[]);
    assert_eq!((e.candidate(), e.leader()), (None, None));
    assert_eq!(drain(&mut e), []);
}

#[test]
fn group_agrees_on_ranked_leader_and_failover_starts_a_new_term() {
    let mut g = Group::connected(ranked(), &[(1, 0), (2, 5), (3, 5)]);
    g.assert_agree(2, 1);
    // Node 2 fails: 3 is next (priority 5), and starts term 2.
    g.split(&[&[1, 3], &[2]]);
    assert_eq!(g.events(3), [unfollow(2), changed(Some(3), 2), Promoted]);
    assert_eq!(
        g.events(1),
        [
            unfollow(2),
            changed(None, 1),
            changed(Some(3), 2),
            follow(3)
        ],
        "node 1 waits for 3's claim, then follows it"
    );
    assert!(g.node(1).accept_leader_message(id(3), 2));
    assert!(!g.node(1).accept_leader_message(id(2), 1));
}

#[test]
fn returning_better_node_takes_over_in_ranked_mode() {
    let mut g = Group::connected(ranked(), &[(1, 0), (2, 0), (3, 9)]);
    g.assert_agree(3, 1);
    g.split(&[&[1, 2], &[3]]);
    g.assert_agree_on(&[1, 2], 1, 2);
    g.clear_events();
    g.heal();
    // 3 led itself meanwhile (term 2, the same number as 1's); it must outgrow term 2.
    g.assert_agree(3, 3);
    assert_eq!(
        g.events(1),
        [Demoted, changed(None, 2), changed(Some(3), 3), follow(3)]
    );
    assert_eq!(
        g.events(2),
        [
            unfollow(1),
            changed(None, 2),
            changed(Some(3), 3),
            follow(3)
        ]
    );
    assert_eq!(g.events(3), [changed(Some(3), 3)]);
}

#[test]
fn returning_better_node_does_not_take_over_in_sticky_mode() {
    let mut g = Group::connected(sticky(), &[(1, 0), (2, 0), (3, 9)]);
    g.assert_agree(3, 1);
    g.split(&[&[1, 2], &[3]]);
    g.assert_agree_on(&[1, 2], 1, 2);
    g.clear_events();
    g.heal();
    // 1 leads two members, 3 (still at term 1) only itself: 1 stays.
    g.assert_agree(1, 2);
    assert_eq!((g.events(1), g.events(2)), (vec![], vec![]));
    assert_eq!(g.events(3), [Demoted, changed(Some(1), 2), follow(1)]);

    // Cut off again, 3 leads itself at a new term, higher than 1's: 1 still stays, and outgrows it.
    g.split(&[&[1, 2], &[3]]);
    assert_eq!(g.events(3), [unfollow(1), changed(Some(3), 3), Promoted]);
    g.heal();
    g.assert_agree(1, 4);
    assert_eq!(g.events(1), [changed(Some(1), 4)]);
    assert_eq!(g.events(2), [changed(Some(1), 4)]);
    assert_eq!(g.events(3), [Demoted, changed(Some(1), 4), follow(1)]);
}

#[test]
fn fresh_better_node_takes_over_only_in_ranked_mode() {
    for (config, leader, term) in [(ranked(), 9, 7), (sticky(), 1, 6)] {
        let mut g = Group::new(config, &[(1, 0), (2, 0), (9, 5)]);
        g.node(1).observe_term(5);
        // 1 and 2 form a group at term 6; the better node 9 starts apart and leads itself.
        g.split(&[&[1, 2], &[9]]);
        g.assert_agree_on(&[1, 2], 1, 6);
        g.assert_agree_on(&[9], 9, 1);
        g.heal();
        g.assert_agree(leader, term);
    }
}

#[test]
fn quorum_two_of_three() {
    let config = ElectionConfig {
        mode: Mode::Ranked,
        quorum: Some(2),
    };
    let mut lone = Election::new(id(1), config);
    lone.update_view(&[(id(1), 0)]);
    assert_eq!(
        (lone.leader(), lone.claim()),
        (None, None),
        "quorum not met alone"
    );

    let mut g = Group::connected(config, &[(1, 0), (2, 0), (3, 0)]);
    g.assert_agree(1, 1);
    // The isolated follower has no leader and is no follower.
    g.split(&[&[1, 2], &[3]]);
    assert_eq!(g.events(3), [unfollow(1), changed(None, 1)]);
    assert!(!g.node(3).is_leader() && !g.node(3).is_follower());
    assert!(!g.node(3).accept_leader_message(id(1), 1));
    assert_eq!((g.events(1), g.events(2)), (vec![], vec![]));
    g.heal();
    assert_eq!(g.events(3), [changed(Some(1), 1), follow(1)]);
    g.assert_agree(1, 1);

    // The isolated leader steps down; the majority elects 2.
    g.split(&[&[1], &[2, 3]]);
    assert_eq!(g.events(1), [Demoted, changed(None, 1)]);
    assert_eq!(g.events(2), [unfollow(1), changed(Some(2), 2), Promoted]);
    assert_eq!(g.node(1).claim(), None);
    // Quorum regained: 1 leads again, above 2's term though it never saw it.
    g.heal();
    g.assert_agree(1, 3);
    assert_eq!(
        g.events(1),
        [changed(Some(1), 2), Promoted, changed(Some(1), 3)],
        "1 first claims 2, learns from the acks that term 2 is taken, claims 3"
    );
}

#[test]
fn partition_heal_leaves_one_leader_with_a_newer_term() {
    let mut g = Group::connected(ranked(), &[(1, 0), (2, 0), (3, 0), (4, 0)]);
    g.assert_agree(1, 1);
    g.split(&[&[1, 2], &[3, 4]]);
    g.assert_agree_on(&[1, 2], 1, 1);
    g.assert_agree_on(&[3, 4], 3, 2);
    g.clear_events();

    // Views converge one node at a time, with heartbeats in between.
    g.side.values_mut().for_each(|s| *s = 0);
    for n in [4, 1, 3, 2] {
        g.set_view(n, &[1, 2, 3, 4]);
        g.beat();
    }
    g.beats(2);
    let term = g.node(1).term();
    assert!(term > 2, "term {term} must exceed both sides' terms");
    g.assert_agree(1, term);
    for n in [1, 2, 3, 4] {
        let e = g.node(n);
        assert!(!e.accept_leader_message(id(3), 2), "demoted leader's term");
        assert!(
            !e.accept_leader_message(id(1), 1),
            "the winner's own old term"
        );
        assert!(e.accept_leader_message(id(1), term));
    }
    // 4 saw the whole group first and waited for 1's new term; by the time 3's view caught
    // up it held 1's claim of term 3 already.
    assert_eq!(
        g.events(4),
        [
            unfollow(3),
            changed(None, 2),
            changed(Some(1), 3),
            follow(1)
        ]
    );
    assert_eq!(g.events(3), [Demoted, changed(Some(1), 3), follow(1)]);
    assert_eq!(g.events(1), [changed(Some(1), 3)]);
    assert_eq!(g.events(2), [changed(Some(1), 3)]);
}

#[test]
fn sticky_heal_keeps_the_leader_of_the_larger_side() {
    let mut g = Group::connected(sticky(), &[(1, 9), (2, 0), (3, 0), (4, 0), (5, 0)]);
    g.assert_agree(1, 1);
    g.split(&[&[1, 2], &[3, 4, 5]]);
    g.assert_agree_on(&[3, 4, 5], 3, 2);
    g.clear_events();
    g.heal();
    // 3 is followed by three members, 1 by two: 3 stays, already above 1's term.
    g.assert_agree(3, 2);
    assert_eq!(g.events(1), [Demoted, changed(Some(3), 2), follow(3)]);
    assert_eq!(g.events(2), [unfollow(1), changed(Some(3), 2), follow(3)]);
    assert_eq!(g.events(3), []);
    assert!(!g.node(2).accept_leader_message(id(1), 1));
}

#[test]
fn sticky_leaders_with_equal_support_and_term_resolve_by_rank() {
    let mut g = Group::connected(sticky(), &[(1, 0), (2, 0), (3, 0), (4, 0), (5, 0)]);
    g.assert_agree(1, 1);
    // 1 fails; 2 and 4 lead halves at term 2 each; 1 returns as a follower of the merged group.
    g.split(&[&[2, 3], &[4, 5], &[1]]);
    g.assert_agree_on(&[2, 3], 2, 2);
    g.assert_agree_on(&[4, 5], 4, 2);
    g.split(&[&[2, 3, 4, 5], &[1]]);
    g.assert_agree_on(&[2, 3, 4, 5], 2, 3);
    g.heal();
    g.assert_agree(2, 3);
}

#[test]
fn stale_term_messages_are_rejected() {
    let mut e = Election::new(id(2), ranked());
    e.update_view(&[(id(1), 0), (id(2), 0)]);
    let claim = |term| Claim { term, support: 2 };
    e.handle_claim(id(1), claim(5));
    assert!(e.accept_leader_message(id(1), 5));
    assert!(
        e.accept_leader_message(id(1), 6),
        "claim of term 6 may be in flight"
    );
    assert!(!e.accept_leader_message(id(1), 4));
    assert!(!e.accept_leader_message(id(3), 9), "not the leader");
    // An older claim arriving late changes nothing.
    e.handle_claim(id(1), claim(3));
    assert_eq!((e.leader(), e.term()), (Some(id(1)), 5));
    assert_eq!(drain(&mut e), [changed(Some(1), 5), follow(1)]);
}

#[test]
fn stepping_down_retracts_the_claim_once() {
    let mut leader = Election::new(id(2), ranked());
    leader.update_view(&[(id(2), 0)]);
    leader.poll_claim();
    let mut follower = Election::new(id(3), ranked());
    follower.update_view(&[(id(2), 0), (id(3), 0)]);
    follower.handle_claim(id(2), leader.claim().unwrap());
    drain(&mut leader);
    drain(&mut follower);

    // The leader sees a better node the follower does not see yet.
    leader.update_view(&[(id(1), 0), (id(2), 0)]);
    assert_eq!(drain(&mut leader), [Demoted, changed(None, 1)]);
    let retraction = leader.poll_claim().unwrap();
    assert_eq!(
        retraction,
        Claim {
            term: 1,
            support: 0
        }
    );
    assert!(retraction.is_retraction());
    assert_eq!(leader.poll_claim(), None);
    assert_eq!(leader.tick(), None);

    follower.handle_claim(id(2), retraction);
    assert_eq!(drain(&mut follower), [unfollow(2), changed(None, 1)]);
    assert_eq!(
        follower.candidate(),
        Some(id(2)),
        "its view has not changed"
    );
}

#[test]
fn silent_leader_claim_lapses_after_its_lifetime() {
    let mut e = Election::new(id(3), ranked());
    e.update_view(&[(id(2), 0), (id(3), 0)]);
    let claim = Claim {
        term: 6,
        support: 2,
    };
    e.handle_claim(id(2), claim);
    for _ in 0..CLAIM_LIFETIME {
        assert_eq!(e.tick(), None);
    }
    assert_eq!(e.leader(), Some(id(2)), "still within the lifetime");
    e.tick();
    assert_eq!((e.leader(), e.term()), (None, 6));
    assert!(
        e.accept_leader_message(id(2), 6),
        "still the node its view designates"
    );
    e.handle_claim(id(2), claim);
    assert_eq!(e.leader(), Some(id(2)), "the same leadership, heard again");
    assert_eq!(
        drain(&mut e),
        [
            changed(Some(2), 6),
            follow(2),
            unfollow(2),
            changed(None, 6),
            changed(Some(2), 6),
            follow(2)
        ]
    );
}

#[test]
fn hostile_terms_do_not_panic() {
    let mut e = Election::new(id(1), ranked());
    e.update_view(&[(id(1), 0), (id(2), 0)]);
    e.handle_claim(
        id(2),
        Claim {
            term: 0,
            support: 0,
        },
    );
    assert_eq!(e.term(), 1, "a claim of term 0 is ignored");
    e.handle_claim(
        id(2),
        Claim {
            term: u64::MAX,
            support: u32::MAX,
        },
    );
    e.handle_ack(
        id(2),
        Ack {
            leader: None,
            term: u64::MAX,
            candidate: Some(id(1)),
        },
    );
    assert_eq!((e.leader(), e.term()), (Some(id(1)), u64::MAX));
    e.handle_claim(
        id(1),
        Claim {
            term: 9,
            support: 1,
        },
    );
    assert_eq!(e.term(), u64::MAX, "own id in a claim is ignored");
}

/// Random partitions, lagging views and lost messages: terms never go down, events come in the
/// documented order, no claim storm; once healed, one leader and one term everywhere.
#[test]
fn random_partitions_converge_and_terms_only_grow() {
    let quorum = ElectionConfig {
        mode: Mode::Ranked,
        quorum: Some(3),
    };
    for seed in 0..200 {
        for config in [ranked(), sticky(), quorum] {
            random_run(seed, config);
        }
    }
}

fn random_run(seed: u64, config: ElectionConfig) {
    let mut rng = StdRng::seed_from_u64(seed);
    let members: Vec<(u64, i32)> = (1..=6).map(|n| (n, rng.random_range(0..3))).collect();
    let mut g = Group::new(config, &members);
    g.rng = StdRng::seed_from_u64(seed ^ 0xe1ec);
    g.heal();
    let mut terms: BTreeMap<NodeId, Term> = BTreeMap::new();
    for _ in 0..60 {
        g.loss = if rng.random_bool(0.5) { 0.2 } else { 0.0 };
        for n in g.ids() {
            g.side.insert(n, rng.random_range(0..3));
        }
        // Only some nodes notice the new partition before the next beats.
        for n in g.ids() {
            if rng.random_bool(0.6) {
                let view: Vec<u64> = g
                    .ids()
                    .into_iter()
                    .filter(|m| g.side[m] == g.side[&n] && (*m == n || rng.random_bool(0.9)))
                    .map(|m| m.0)
                    .collect();
                g.set_view(n.0, &view);
            }
        }
        g.settle();
        g.beats(rng.random_range(0..3));
        for (n, node) in &mut g.nodes {
            let term = node.election.term();
            assert!(
                term >= terms.get(n).copied().unwrap_or(0),
                "seed {seed}: term went down"
            );
            terms.insert(*n, term);
            check_event_order(&std::mem::take(&mut node.events));
        }
    }
    g.loss = 0.0;
    g.heal();
    let (held, leaders) = g.leadership();
    assert_eq!(
        (held.len(), leaders),
        (1, 1),
        "seed {seed} {config:?}: {held:?}"
    );
    let highest = g.nodes.values().map(|n| n.election.highest_term()).max();
    assert!(
        highest < Some(200),
        "seed {seed}: terms ran away to {highest:?}"
    );
}

/// Each change: at most one exit, then `LeaderChanged` (terms never lower), then at most one
/// entry.
fn check_event_order(events: &[ElectionEvent]) {
    let mut last_term = 0;
    for (i, event) in events.iter().enumerate() {
        let next = events.get(i + 1);
        let prev = i.checked_sub(1).map(|p| events[p]);
        match event {
            Demoted | StoppedFollowing { .. } => {
                assert!(matches!(next, Some(LeaderChanged { .. })), "{events:?}");
            }
            LeaderChanged { term, .. } => {
                assert!(*term >= last_term, "{events:?}");
                last_term = *term;
            }
            Promoted | BecameFollower { .. } => {
                assert!(matches!(prev, Some(LeaderChanged { .. })), "{events:?}");
            }
        }
    }
}

#[test]
fn mode_parses_and_prints() {
    assert_eq!("ranked".parse::<Mode>(), Ok(Mode::Ranked));
    assert_eq!(" sticky ".parse::<Mode>(), Ok(Mode::Sticky));
    assert!("raft".parse::<Mode>().is_err());
    assert_eq!(Mode::Sticky.to_string(), "sticky");
}

#[test]
fn messages_round_trip_through_postcard() {
    let ack = Ack {
        leader: Some(id(3)),
        term: 7,
        candidate: None,
    };
    let bytes = postcard::to_stdvec(&ack).unwrap();
    assert_eq!(postcard::from_bytes::<Ack>(&bytes).unwrap(), ack);
    let claim = Claim {
        term: 7,
        support: 3,
    };
    let bytes = postcard::to_stdvec(&claim).unwrap();
    assert_eq!(postcard::from_bytes::<Claim>(&bytes).unwrap(), claim);
}

impl Group {
    /// Asserts that nodes `on` follow or are `leader` at `term`, and that exactly one leads.
    fn assert_agree_on(&self, on: &[u64], leader: u64, term: Term) {
        for &n in on {
            let e = &self.nodes[&id(n)].election;
            assert_eq!((e.leader(), e.term()), (Some(id(leader)), term), "node {n}");
        }
        let leaders = on
            .iter()
            .filter(|&&n| self.nodes[&id(n)].election.is_leader())
            .count();
        assert_eq!(leaders, 1);
    }
}

/// After a heal SWIM can declare a follower's old identity down an instant before its new one
/// comes up. A sticky leader keeps that follower's support until the next beat, so a node that
/// led itself while cut off does not take over in that instant; one gone for a beat is not
/// counted, even once back.
#[test]
fn sticky_support_outlives_a_follower_blinking_out_of_the_view() {
    let followed = Ack {
        leader: Some(id(1)),
        term: 1,
        candidate: Some(id(1)),
    };
    let mut e = Election::new(id(1), sticky());
    e.update_view(&[(id(1), 0), (id(2), 0)]);
    e.handle_ack(id(2), followed);
    assert_eq!(e.claim().map(|c| (c.term, c.support)), Some((1, 2)));
    e.update_view(&[(id(1), 0), (id(3), 0)]);
    e.handle_claim(
        id(3),
        Claim {
            term: 5,
            support: 1,
        },
    );
    assert!(e.is_leader(), "two members follow it, one follows 3");
    e.update_view(&[(id(1), 0), (id(2), 0), (id(3), 0)]);
    assert!(e.is_leader());

    let mut e = Election::new(id(1), sticky());
    e.update_view(&[(id(1), 0), (id(2), 0)]);
    e.handle_ack(id(2), followed);
    e.update_view(&[(id(1), 0)]);
    e.tick();
    e.update_view(&[(id(1), 0), (id(2), 0)]);
    assert_eq!(e.claim().map(|c| c.support), Some(1));
}

/// A sticky member left at a higher term by a leadership that died disregards the surviving
/// leader's older claims and picks, by rank, a node that follows that leader and never claims.
/// Its acks (no leader, a higher term) make the leader outgrow that term, and it follows.
#[test]
fn leader_outgrows_a_leaderless_member_at_a_higher_term() {
    let mut leader = Election::new(id(4), sticky());
    leader.update_view(&[(id(4), 5)]);
    leader.update_view(&[(id(4), 5), (id(1), 0), (id(2), 6)]);
    assert!(leader.is_leader());
    let mut member = Election::new(id(1), sticky());
    member.update_view(&[(id(1), 0), (id(4), 5), (id(7), 9)]);
    member.handle_claim(
        id(7),
        Claim {
            term: 8,
            support: 3,
        },
    );
    member.update_view(&[(id(1), 0), (id(4), 5), (id(2), 6)]);
    assert_eq!((member.leader(), member.candidate()), (None, Some(id(2))));
    for _ in 0..2 {
        let ack = member.handle_claim(id(4), leader.claim().expect("leads"));
        leader.handle_ack(id(1), ack);
    }
    assert_eq!(leader.term(), 9);
    assert_eq!((member.leader(), member.term()), (Some(id(4)), 9));
}
