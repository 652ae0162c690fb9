//! Laws of the replicated store and its reconciliation: last-writer-wins merge is commutative,
//! associative and idempotent; incremental fingerprints equal fingerprints computed afresh; two
//! stores reconciled over a lossy link end equal to the merge of both; and the bytes it takes.

use std::collections::BTreeMap;

use consort_proto::replica::reconcile::{Fingerprint, Message, Node, Reply, Request, MAX_MESSAGE};
use consort_proto::replica::{Entry, Hlc, Key, Session, Store, Value, Version};
use consort_proto::NodeId;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Entries

/// An entry for key `k/{key}`. The value is a function of key and version, as in a real group
/// (a version names one write), so equal versions never carry different values.
fn entry(key: u16, hlc: u64, origin: u64) -> Entry {
    let tombstone = (u64::from(key) * 31 + hlc * 7 + origin).is_multiple_of(5);
    Entry {
        key: Key::new(&format!("k/{key}")).unwrap(),
        value: (!tombstone).then(|| Value::parse(&format!("[{key},{hlc},{origin}]")).unwrap()),
        version: Version {
            hlc: Hlc(hlc),
            origin: NodeId(origin),
        },
    }
}

fn arb_entry(keys: u16) -> impl Strategy<Value = Entry> {
    (0..keys, 1..40u64, 1..4u64).prop_map(|(k, h, o)| entry(k, h, o))
}

fn store_of<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Store {
    let mut store = Store::new();
    for e in entries {
        store.apply(e.clone());
    }
    store
}

/// `into` after applying every entry of `from`.
fn merged(into: &Store, from: &Store) -> Store {
    let mut out = into.clone();
    for e in from.iter() {
        out.apply(e.clone());
    }
    out
}

/// The model: for each key, the entry with the greatest version.
fn model<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Vec<Entry> {
    let mut best: BTreeMap<Key, Entry> = BTreeMap::new();
    for e in entries {
        let slot = best.entry(e.key.clone()).or_insert_with(|| e.clone());
        if e.version > slot.version {
            *slot = e.clone();
        }
    }
    best.into_values().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn merge_is_order_free_and_idempotent(
        entries in prop::collection::vec(arb_entry(12), 0..40),
        order in prop::collection::vec(any::<prop::sample::Index>(), 0..80),
    ) {
        let straight = store_of(&entries);
        prop_assert_eq!(straight.iter().cloned().collect::<Vec<_>>(), model(&entries));
        // Any order, with repeats: pick entries by index, then make sure each appears once more.
        let mut shuffled: Vec<&Entry> = order.iter().filter(|_| !entries.is_empty())
            .map(|i| &entries[i.index(entries.len())]).collect();
        shuffled.extend(entries.iter().rev());
        let other = store_of(shuffled);
        prop_assert_eq!(&other, &straight);
        prop_assert_eq!(other.fingerprint(Node::ROOT), straight.fingerprint(Node::ROOT));
        prop_assert_eq!(merged(&straight, &straight), straight);
    }

    #[test]
    fn merge_is_commutative_and_associative(
        a in prop::collection::vec(arb_entry(12), 0..25),
        b in prop::collection::vec(arb_entry(12), 0..25),
        c in prop::collection::vec(arb_entry(12), 0..25),
    ) {
        let (a, b, c) = (store_of(&a), store_of(&b), store_of(&c));
        prop_assert_eq!(merged(&a, &b), merged(&b, &a));
        prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
    }

    #[test]
    fn fingerprints_equal_a_fresh_count(
        ops in prop::collection::vec(
            prop_oneof![
                20 => arb_entry(400).prop_map(Op::Apply),
                1 => (1..40u64).prop_map(|h| Op::Collect(Hlc(h))),
                1 => (0..400u16).prop_map(|k| Op::Remove(Key::new(&format!("k/{k}")).unwrap())),
            ],
            0..400,
        ),
        probes in prop::collection::vec((any::<prop::sample::Index>(), 3..=16u8), 8),
    ) {
        let mut store = Store::new();
        for op in ops {
            match op {
                Op::Apply(e) => { store.apply(e); }
                Op::Collect(h) => { store.collect_tombstones(h); }
                Op::Remove(k) => { store.remove(&k); }
            }
        }
        let tombstones = store.iter().filter(|e| e.is_tombstone()).count();
        prop_assert_eq!(store.tombstone_count(), tombstones);
        prop_assert_eq!(store.live_len(), store.len() - tombstones);
        let mut fresh: BTreeMap<Node, Fingerprint> = BTreeMap::new();
        for e in store.iter() {
            for level in 0..=2 {
                fresh.entry(Node::containing(&e.key, level)).or_default().add(Fingerprint::of(e));
            }
        }
        for level in 0..=2u8 {
            for prefix in 0..1u64 << (4 * level) {
                let node = Node { level, prefix };
                prop_assert_eq!(store.fingerprint(node), fresh.get(&node).copied().unwrap_or_default());
            }
        }
        // Deeper nodes, around stored keys.
        let all: Vec<&Entry> = store.iter().collect();
        for (index, level) in probes.iter().filter(|_| !all.is_empty()) {
            let node = Node::containing(&all[index.index(all.len())].key, *level);
            let mut expected = Fingerprint::default();
            for e in all.iter().filter(|e| node.contains(&e.key)) {
                expected.add(Fingerprint::of(e));
            }
            prop_assert_eq!(store.fingerprint(node), expected);
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Apply(Entry),
    Collect(Hlc),
    Remove(Key),
}

// ---------------------------------------------------------------------------------------------
// In-memory reconciliation

/// A link between two stores that loses messages and entries at a given rate, and counts bytes.
struct Link {
    state: u64,
    loss_percent: u64,
    tally: Tally,
}

#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    requests: usize,
    replies: usize,
    request_bytes: usize,
    reply_bytes: usize,
    entries: usize,
    entry_bytes: usize,
    /// Batches of requests sent after one another: round trips, when nothing is lost.
    trips: usize,
}

impl Tally {
    fn message_bytes(&self) -> usize {
        self.request_bytes + self.reply_bytes
    }
    fn total(&self) -> usize {
        self.message_bytes() + self.entry_bytes
    }
}

impl Link {
    fn new(seed: u64, loss_percent: u64) -> Link {
        Link {
            state: seed | 1,
            loss_percent,
            tally: Tally::default(),
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn lost(&mut self) -> bool {
        self.random() % 100 < self.loss_percent
    }

    fn carry_request(&mut self, request: &Request) -> bool {
        let len = Message::Request(request.clone()).encode().len();
        assert!(len <= MAX_MESSAGE, "a request of {len} bytes");
        self.tally.requests += 1;
        self.tally.request_bytes += len;
        !self.lost()
    }

    fn carry_reply(&mut self, reply: &Reply) -> bool {
        let len = Message::Reply(reply.clone()).encode().len();
        assert!(len <= MAX_MESSAGE, "a reply of {len} bytes");
        self.tally.replies += 1;
        self.tally.reply_bytes += len;
        !self.lost()
    }

    /// Sends the entry for `key` from one store to the other, as the engine would.
    fn ship(&mut self, from: &Store, to: &mut Store, key: &Key) {
        let entry = from.get(key).expect("pushed keys are stored").clone();
        self.tally.entries += 1;
        self.tally.entry_bytes += postcard::to_stdvec(&entry).unwrap().len();
        if !self.lost() {
            to.apply(entry);
        }
    }

    /// One round, `init` initiating; abandoned after a few resends without progress.
    fn round(&mut self, init: &mut Store, resp: &mut Store) {
        let round = self.random() as u32;
        let (mut session, first) = Session::start(init, round);
        let mut outbox = vec![first];
        let mut idle = 0;
        loop {
            if outbox.is_empty() {
                if session.is_done() || idle == 3 {
                    return;
                }
                idle += 1;
                outbox = session.resend();
            }
            self.tally.trips += 1;
            for request in std::mem::take(&mut outbox) {
                if !self.carry_request(&request) {
                    continue;
                }
                let response = resp.answer(&request).expect("well-formed request");
                for key in &response.push {
                    self.ship(resp, init, key);
                }
                if !self.carry_reply(&response.reply) {
                    continue;
                }
                idle = 0;
                let step = session.handle(init, &response.reply);
                assert!(step.stale.is_empty(), "no GC here: {:?}", step.stale);
                for key in &step.push {
                    self.ship(init, resp, key);
                }
                outbox.extend(step.send);
            }
        }
    }

    /// Rounds, each side initiating in turn, until the stores are equal; returns how many.
    fn sync(&mut self, a: &mut Store, b: &mut Store, max_rounds: usize) -> usize {
        for rounds in 0..max_rounds {
            if a == b {
                return rounds;
            }
            if rounds % 2 == 0 {
                self.round(a, b);
            } else {
                self.round(b, a);
            }
        }
        assert_eq!(a, b, "not converged after {max_rounds} rounds");
        max_rounds
    }
}

/// Where a generated entry goes.
#[derive(Clone, Copy, Debug)]
enum Side {
    Both,
    A,
    B,
}

fn arb_side() -> impl Strategy<Value = Side> {
    prop_oneof![2 => Just(Side::Both), 1 => Just(Side::A), 1 => Just(Side::B)]
}

fn pair(entries: &[(Entry, Side)]) -> (Store, Store) {
    let (mut a, mut b) = (Store::new(), Store::new());
    for (e, side) in entries {
        if !matches!(side, Side::B) {
            a.apply(e.clone());
        }
        if !matches!(side, Side::A) {
            b.apply(e.clone());
        }
    }
    (a, b)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn reconciled_stores_equal_their_merge(
        entries in prop::collection::vec((arb_entry(300), arb_side()), 0..500),
        seed in any::<u64>(),
    ) {
        let (mut a, mut b) = pair(&entries);
        let expected = merged(&a, &b);
        let rounds = Link::new(seed, 0).sync(&mut a, &mut b, 4);
        prop_assert!(rounds <= 3, "{rounds} rounds");
        prop_assert_eq!(&a, &expected);
    }

    #[test]
    fn reconciliation_survives_loss(
        entries in prop::collection::vec((arb_entry(300), arb_side()), 0..300),
        seed in any::<u64>(),
        loss in 1..40u64,
    ) {
        let (mut a, mut b) = pair(&entries);
        let expected = merged(&a, &b);
        Link::new(seed, loss).sync(&mut a, &mut b, 300);
        prop_assert_eq!(&a, &expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// A few differences in a store large enough to make the walk go four levels down.
    #[test]
    fn few_differences_in_large_stores_are_found(
        changes in prop::collection::vec((0..5000u16, 41..60u64, 1..4u64, arb_side()), 1..30),
        seed in any::<u64>(),
        loss in 0..30u64,
    ) {
        let base: Vec<Entry> = (0..4000).map(|k| entry(k, 1, 1)).collect();
        let (mut a, mut b) = (store_of(&base), store_of(&base));
        for (k, h, o, side) in changes {
            let e = entry(k, h, o);
            if !matches!(side, Side::B) { a.apply(e.clone()); }
            if !matches!(side, Side::A) { b.apply(e); }
        }
        let expected = merged(&a, &b);
        Link::new(seed, loss).sync(&mut a, &mut b, 300);
        prop_assert_eq!(&a, &expected);
    }
}

#[test]
fn a_blank_store_fills_from_either_side() {
    let full = store_of(&(0..3000).map(|k| entry(k, 5, 1)).collect::<Vec<_>>());
    for blank_starts in [true, false] {
        let (mut a, mut b) = (Store::new(), full.clone());
        let mut link = Link::new(9, 0);
        if blank_starts {
            link.round(&mut a, &mut b);
        } else {
            link.round(&mut b, &mut a);
        }
        assert_eq!(a, full);
        assert_eq!(link.tally.entries, 3000);
    }
}

// ---------------------------------------------------------------------------------------------
// Cost

/// A realistic store: `n` keys of 27 bytes, values of 62 bytes, versions as a live
/// group makes them (57-bit HLCs, random 64-bit node ids).
fn house(n: usize) -> (Store, Vec<Value>) {
    let values: Vec<Value> = (0..16)
        .map(|i| {
            Value::parse(&format!(
                r#"{{"on":true,"level":{},"by":"panel-{i:02}","mode":"auto","t":21.5}}"#,
                100 + i
            ))
            .unwrap()
        })
        .collect();
    let mut store = Store::new();
    for i in 0..n {
        store.apply(house_entry(i, 0, &values));
    }
    (store, values)
}

const ORIGINS: [u64; 3] = [
    0x9f3a_5c11_02d4_e8b7,
    0xc001_d00d_7e57_ab1e,
    0x8bad_f00d_1234_5678,
];
const EPOCH_MS: u64 = 1_780_000_000_000;

fn house_entry(i: usize, generation: u64, values: &[Value]) -> Entry {
    Entry {
        key: Key::new(&format!("home/room{:03}/dev{:05}/state", i % 300, i)).unwrap(),
        value: Some(values[(i + generation as usize) % values.len()].clone()),
        version: Version {
            hlc: Hlc(((EPOCH_MS + generation * 60_000 + i as u64) << 16) | 3),
            origin: NodeId(ORIGINS[(i + generation as usize) % 3]),
        },
    }
}

#[test]
fn identical_stores_cost_one_request_and_one_reply() {
    let (mut a, _) = house(1000);
    let mut b = a.clone();
    let mut link = Link::new(1, 0);
    let (mut session, request) = Session::start(&a, 7);
    assert!(link.carry_request(&request));
    let response = b.answer(&request).unwrap();
    assert!(response.push.is_empty());
    assert!(link.carry_reply(&response.reply));
    let step = session.handle(&a, &response.reply);
    assert!(step.send.is_empty() && step.push.is_empty());
    assert!(session.is_done());
    // Request: tag, round, seq, list length, probe tag (1 each), summary (len 2, horizon 1),
    // root fingerprint (8). Reply: tag, round, seq, list length, answer tag (1 each), summary (3),
    // no children (1).
    assert_eq!((link.tally.request_bytes, link.tally.reply_bytes), (16, 9));
    // Any round number: at most 4 more bytes each way.
    link.round(&mut a, &mut b);
    assert_eq!((link.tally.requests, link.tally.replies), (2, 2));
    assert!(link.tally.message_bytes() <= 16 + 9 + 2 * (16 + 9 + 4));
}

#[test]
fn repairing_100_of_100k_costs_a_small_multiple_of_the_entries() {
    let (base, values) = house(100_000);
    let (mut a, mut b) = (base.clone(), base);
    let mut winners = Vec::new();
    for i in 0..25 {
        // New on each side.
        let only_a = house_entry(100_000 + i, 1, &values);
        let only_b = house_entry(100_100 + i, 1, &values);
        // Newer on each side; one in five a delete.
        let mut newer_a = house_entry(1000 + 3 * i, 2, &values);
        let mut newer_b = house_entry(50_000 + 7 * i, 2, &values);
        if i % 5 == 0 {
            newer_a.value = None;
            newer_b.value = None;
        }
        for (on_a, e) in [
            (true, only_a),
            (false, only_b),
            (true, newer_a),
            (false, newer_b),
        ] {
            if on_a { &mut a } else { &mut b }.apply(e.clone());
            winners.push(e);
        }
    }
    let entry_bytes: usize = winners
        .iter()
        .map(|e| postcard::to_stdvec(e).unwrap().len())
        .sum();
    let mut link = Link::new(3, 0);
    link.round(&mut a, &mut b);
    assert_eq!(a, b);
    let t = link.tally;
    let ratio = t.total() as f64 / entry_bytes as f64;
    println!(
        "100 of 100k: {} round trips, {} requests ({} B), {} replies ({} B), {} entries ({} B); \
         the 100 entries alone {} B; total {} B = {ratio:.2}x",
        t.trips,
        t.requests,
        t.request_bytes,
        t.replies,
        t.reply_bytes,
        t.entries,
        t.entry_bytes,
        entry_bytes,
        t.total()
    );
    let datagrams = t.requests + t.replies;
    println!(
        "with {} B of datagram overhead for each of the {datagrams} messages: {:.2}x",
        consort_proto::wire::OVERHEAD,
        (t.total() + datagrams * consort_proto::wire::OVERHEAD) as f64 / entry_bytes as f64
    );
    assert_eq!(t.entries, 100, "each differing entry is sent once");
    assert!(ratio <= 5.0, "{ratio:.2}x");
}
