//! The initiator: one round of reconciliation with one peer, driven from this side.

use std::collections::{BTreeMap, VecDeque};

use super::message::{
    encoded_len, Answer, Probe, Reply, Request, Summary, VersionAt, FINGERPRINT_LEN, HEADER_LEN,
    MAX_MESSAGE,
};
use super::tree::{Node, ARITY, MAX_LEVEL};
use super::{differing, salt, ItemTag, LEAF_MAX, LISTED_MAX};
use crate::replica::entry::{Hlc, Key};
use crate::replica::store::Store;

/// One round of reconciliation, from the side that started it.
///
/// The session walks down the fingerprint tree into the parts that differ, at most
/// [`Session::MAX_IN_FLIGHT`] requests at a time. It holds no reference to the store: pass the
/// store in on every call, as it is then (entries may arrive meanwhile; that is fine).
#[derive(Clone, Debug)]
pub struct Session {
    round: u32,
    salt: u64,
    next_seq: u32,
    work: VecDeque<Work>,
    in_flight: BTreeMap<u32, InFlight>,
    peer: Option<Summary>,
}

/// What to do for the peer after a reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Send these requests to the peer.
    pub send: Vec<Request>,
    /// Send these entries to the peer (look them up when sending: the newest version is best).
    pub push: Vec<Key>,
    /// Entries the peer lacks but would refuse: they are not newer than its GC horizon, so they
    /// may be writes it deleted and forgot. Any means this node missed deletes and must resync
    /// from the peer rather than merge. Tombstones are never listed here (the peer does not need
    /// them).
    pub stale: Vec<Key>,
}

/// Something still to ask.
#[derive(Clone, Debug)]
enum Work {
    /// Open the round.
    Root,
    /// The node differs: list it if small on this side, else compare its children.
    Visit(Node),
    /// The node is too large on the peer's side to list: compare its children.
    Descend(Node),
    /// Ask for the peer's entries for these keys.
    Pull(Vec<Key>),
}

/// A request sent and not yet answered.
#[derive(Clone, Debug)]
struct InFlight {
    request: Request,
    /// What each probe was, with what answering it needs.
    plans: Vec<Plan>,
}

#[derive(Clone, Debug)]
enum Plan {
    Root,
    Children(Node),
    Items { node: Node, keys: Vec<Key> },
    Pull(Vec<Key>),
}

impl Plan {
    /// The work that asks this again.
    fn retry(self) -> Work {
        match self {
            Plan::Root => Work::Root,
            Plan::Children(node) => Work::Descend(node),
            Plan::Items { node, .. } => Work::Visit(node),
            Plan::Pull(keys) => Work::Pull(keys),
        }
    }

    /// Whether `answer` is a well-formed answer to this probe.
    fn accepts(&self, answer: &Answer) -> bool {
        match (self, answer) {
            (Plan::Root, Answer::Root { children, .. }) => children
                .as_ref()
                .is_none_or(|c| c.len() == ARITY * FINGERPRINT_LEN),
            (Plan::Children(_), Answer::Children { .. }) => true,
            (Plan::Items { .. }, Answer::Split) => true,
            (Plan::Items { keys, .. }, Answer::Items { want, differ }) => {
                want.len() == keys.len().div_ceil(8)
                    && differ.iter().all(|d| usize::from(d.index) < keys.len())
            }
            (Plan::Pull(_), Answer::Pulled) => true,
            _ => false,
        }
    }
}

impl Session {
    /// Most requests awaiting replies at once.
    pub const MAX_IN_FLIGHT: usize = 8;

    /// Opens a round and returns its first request: one probe with the root fingerprint.
    ///
    /// `round` should be random (it salts every fingerprint, so that a chance collision in the
    /// shortened forms hides a difference for one round only) and fresh for each round.
    pub fn start(store: &Store, round: u32) -> (Session, Request) {
        let mut session = Session {
            round,
            salt: salt(round),
            next_seq: 0,
            work: VecDeque::from([Work::Root]),
            in_flight: BTreeMap::new(),
            peer: None,
        };
        let first = session.fill(store).pop().expect("the root probe");
        (session, first)
    }

    /// Takes in a reply from the peer. Replies to other rounds, unknown or answered requests,
    /// and malformed replies are ignored (the request stays in flight, for [`Session::resend`]).
    pub fn handle(&mut self, store: &Store, reply: &Reply) -> Step {
        let mut step = Step::default();
        let Some(flight) = self.in_flight.get(&reply.seq) else {
            return step;
        };
        let fits = reply.answers.len() <= flight.plans.len()
            && flight
                .plans
                .iter()
                .zip(&reply.answers)
                .all(|(p, a)| p.accepts(a));
        if reply.round != self.round || !fits {
            return step;
        }
        let mut plans = self.in_flight.remove(&reply.seq).expect("just seen").plans;
        let unanswered = plans.split_off(reply.answers.len());
        let mut pulls = Vec::new();
        for (plan, answer) in plans.into_iter().zip(&reply.answers) {
            self.absorb(store, plan, answer, &mut step, &mut pulls);
        }
        for plan in unanswered.into_iter().rev() {
            self.work.push_front(plan.retry());
        }
        self.work.extend(pull_batches(pulls).map(Work::Pull));
        step.send = self.fill(store);
        step
    }

    /// The requests still unanswered, to send again after a timeout. Answering twice is
    /// harmless, so the driver may resend a few times, then drop the session.
    pub fn resend(&self) -> Vec<Request> {
        self.in_flight.values().map(|f| f.request.clone()).collect()
    }

    /// Whether the round is over: every request answered and nothing left to ask.
    pub fn is_done(&self) -> bool {
        self.work.is_empty() && self.in_flight.is_empty()
    }

    /// The peer's summary, once its first reply has come.
    pub fn peer(&self) -> Option<Summary> {
        self.peer
    }

    /// The round number.
    pub fn round(&self) -> u32 {
        self.round
    }

    fn absorb(
        &mut self,
        store: &Store,
        plan: Plan,
        answer: &Answer,
        step: &mut Step,
        pulls: &mut Vec<Key>,
    ) {
        match (plan, answer) {
            (Plan::Root, Answer::Root { summary, children }) => {
                self.peer = Some(*summary);
                if let Some(theirs) = children {
                    let mine = store.salted_children(Node::ROOT, self.salt);
                    self.visit_children(Node::ROOT, differing(&mine, theirs));
                }
            }
            (Plan::Children(node), Answer::Children { differ }) => {
                self.visit_children(node, *differ);
            }
            (Plan::Items { node, .. }, Answer::Split) => self.work.push_back(Work::Descend(node)),
            (Plan::Items { keys, .. }, Answer::Items { want, differ }) => {
                for (index, key) in keys.iter().enumerate() {
                    if want[index / 8] & (1 << (index % 8)) != 0 {
                        self.offer(store, key, step);
                    }
                }
                for &VersionAt { index, version } in differ {
                    let key = &keys[usize::from(index)];
                    match store.get(key).map(|e| e.version) {
                        Some(mine) if mine > version => step.push.push(key.clone()),
                        Some(mine) if mine == version => {}
                        _ => pulls.push(key.clone()),
                    }
                }
            }
            _ => {} // Pulled; mismatches were refused in `handle`.
        }
    }

    fn visit_children(&mut self, node: Node, differ: u16) {
        let differing = (0..ARITY).filter(|i| differ & (1 << i) != 0);
        self.work
            .extend(differing.map(|i| Work::Visit(node.child(i))));
    }

    /// Pushes `key`, which the peer lacks, unless the peer would refuse it (see [`Step::stale`]).
    fn offer(&self, store: &Store, key: &Key, step: &mut Step) {
        let Some(entry) = store.get(key) else {
            return;
        };
        let horizon = self.peer.map_or(Hlc(0), |p| p.horizon);
        if horizon == Hlc(0) || entry.version.hlc > horizon {
            step.push.push(key.clone());
        } else if !entry.is_tombstone() {
            step.stale.push(key.clone());
        }
    }

    /// Packs waiting work into requests, as many as the in-flight limit allows.
    fn fill(&mut self, store: &Store) -> Vec<Request> {
        let mut out = Vec::new();
        while self.in_flight.len() < Session::MAX_IN_FLIGHT && !self.work.is_empty() {
            let (mut probes, mut plans, mut size) = (Vec::new(), Vec::new(), HEADER_LEN);
            while let Some(work) = self.work.pop_front() {
                let (probe, plan) = self.build(store, work);
                let len = encoded_len(&probe);
                if !probes.is_empty() && size + len > MAX_MESSAGE {
                    self.work.push_front(plan.retry());
                    break;
                }
                size += len;
                probes.push(probe);
                plans.push(plan);
            }
            let request = Request {
                round: self.round,
                seq: self.next_seq,
                probes,
            };
            self.next_seq = self.next_seq.wrapping_add(1);
            let flight = InFlight {
                request: request.clone(),
                plans,
            };
            self.in_flight.insert(request.seq, flight);
            out.push(request);
        }
        out
    }

    fn build(&self, store: &Store, work: Work) -> (Probe, Plan) {
        match work {
            Work::Root => {
                let fingerprint = store.fingerprint(Node::ROOT).salted::<8>(self.salt);
                let summary = store.summary();
                (
                    Probe::Root {
                        summary,
                        fingerprint,
                    },
                    Plan::Root,
                )
            }
            Work::Visit(node) if node.level == MAX_LEVEL => self.list(store, node),
            Work::Visit(node) if store.count_upto(node, LEAF_MAX + 1) <= LEAF_MAX => {
                self.list(store, node)
            }
            Work::Visit(node) | Work::Descend(node) if node.level < MAX_LEVEL => {
                let fingerprints = store.salted_children(node, self.salt);
                (Probe::Children { node, fingerprints }, Plan::Children(node))
            }
            Work::Visit(node) | Work::Descend(node) => self.list(store, node),
            Work::Pull(keys) => (Probe::Pull { keys: keys.clone() }, Plan::Pull(keys)),
        }
    }

    /// An items probe listing this side's entries under `node`.
    fn list(&self, store: &Store, node: Node) -> (Probe, Plan) {
        let (mut tags, mut keys) = (Vec::new(), Vec::new());
        for (kid, placed) in store.placed_under(node).take(LISTED_MAX) {
            tags.extend(ItemTag::new(kid, placed.item, self.salt).to_bytes());
            keys.push(placed.key.clone());
        }
        (Probe::Items { node, tags }, Plan::Items { node, keys })
    }
}

/// Splits keys to pull into lists that each fit one request.
fn pull_batches(keys: Vec<Key>) -> impl Iterator<Item = Vec<Key>> {
    // A key costs its bytes and a length of at most 2; the probe's tag and list length, 4.
    let budget = MAX_MESSAGE - HEADER_LEN - 4;
    let mut batches: Vec<Vec<Key>> = Vec::new();
    let mut size = budget;
    for key in keys {
        let len = key.as_str().len() + 2;
        if size + len > budget {
            batches.push(Vec::new());
            size = 0;
        }
        size += len;
        batches.last_mut().expect("just pushed").push(key);
    }
    batches.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::NodeId;
    use crate::replica::entry::{Entry, Value, Version};

    fn entry(key: &str, hlc: u64, value: Option<&str>) -> Entry {
        Entry {
            key: Key::new(key).unwrap(),
            value: value.map(|v| Value::parse(v).unwrap()),
            version: Version {
                hlc: Hlc(hlc),
                origin: NodeId(1),
            },
        }
    }

    fn store(n: u64, hlc: u64) -> Store {
        let mut s = Store::new();
        for i in 0..n {
            s.apply(entry(&format!("k/{i}"), hlc, Some("1")));
        }
        s
    }

    #[test]
    fn identical_stores_finish_on_the_first_reply() {
        let (a, b) = (store(100, 1), store(100, 1));
        let (mut session, request) = Session::start(&a, 42);
        assert_eq!(request.probes.len(), 1);
        let response = b.answer(&request).unwrap();
        assert_eq!(response.peer, Some(a.summary()));
        let step = session.handle(&a, &response.reply);
        assert_eq!(step, Step::default());
        assert!(session.is_done());
        assert_eq!(session.peer(), Some(b.summary()));
    }

    #[test]
    fn foreign_and_malformed_replies_are_ignored() {
        let (a, b) = (store(100, 1), store(100, 2));
        let (mut session, request) = Session::start(&a, 42);
        let reply = b.answer(&request).unwrap().reply;
        let mut other_round = reply.clone();
        other_round.round += 1;
        let mut wrong_kind = reply.clone();
        wrong_kind.answers = vec![Answer::Pulled];
        let mut short_children = reply.clone();
        short_children.answers = vec![Answer::Root {
            summary: Summary::default(),
            children: Some(vec![0; 3]),
        }];
        for bad in [other_round, wrong_kind, short_children] {
            assert_eq!(session.handle(&a, &bad), Step::default());
        }
        assert_eq!(session.resend(), [request]);
        let step = session.handle(&a, &reply);
        assert!(!step.send.is_empty());
        assert_eq!(
            session.handle(&a, &reply),
            Step::default(),
            "answered already"
        );
    }

    #[test]
    fn unanswered_probes_are_asked_again() {
        let (a, b) = (store(3000, 1), store(3000, 2));
        let (mut session, request) = Session::start(&a, 1);
        let step = session.handle(&a, &b.answer(&request).unwrap().reply);
        let second = &step.send[0];
        assert!(second.probes.len() > 1);
        let mut reply = b.answer(second).unwrap().reply;
        reply.answers.truncate(1);
        let step = session.handle(&a, &reply);
        let again: Vec<&Probe> = step.send.iter().flat_map(|r| &r.probes).collect();
        assert!(again.contains(&&second.probes[1]));
    }

    #[test]
    fn entries_a_peer_collected_past_are_reported_stale() {
        let mut a = Store::new();
        a.apply(entry("gone", 10, Some("1")));
        a.apply(entry("dead", 10, None));
        // The peer deleted both at 20 and collected the deletes.
        let mut b = Store::new();
        b.apply(entry("gone", 20, None));
        b.apply(entry("dead", 20, None));
        b.collect_tombstones(Hlc(30));
        let (mut session, request) = Session::start(&a, 3);
        let mut step = session.handle(&a, &b.answer(&request).unwrap().reply);
        let (mut push, mut stale) = (Vec::new(), Vec::new());
        while let Some(request) = step.send.pop() {
            let next = session.handle(&a, &b.answer(&request).unwrap().reply);
            push.extend(next.push);
            stale.extend(next.stale);
            step.send.extend(next.send);
        }
        assert!(session.is_done());
        assert!(push.is_empty());
        assert_eq!(stale, [Key::new("gone").unwrap()]);
    }

    #[test]
    fn pulls_are_cut_to_fit() {
        let keys: Vec<Key> = (0..100)
            .map(|i| Key::new(&format!("{i:0>100}")).unwrap())
            .collect();
        let batches: Vec<Vec<Key>> = pull_batches(keys.clone()).collect();
        assert!(batches.len() > 1);
        assert_eq!(batches.concat(), keys);
        for keys in batches {
            let request = Request {
                round: u32::MAX,
                seq: u32::MAX,
                probes: vec![Probe::Pull { keys }],
            };
            assert!(
                crate::replica::reconcile::Message::Request(request).encoded_len() <= MAX_MESSAGE
            );
        }
    }
}
