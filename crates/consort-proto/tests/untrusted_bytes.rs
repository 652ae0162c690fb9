//! Untrusted bytes into `wire::open` and `Engine::handle_datagram`: a deterministic, stable-Rust
//! companion to the `fuzz/` targets, so that `cargo test` exercises the decoders too.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use consort_proto::codec::Control;
use consort_proto::messaging::{CallOptions, SendOptions, Target};
use consort_proto::wire::{self, FrameKind};
use consort_proto::{
    Config, Engine, Identity, Keyring, NodeId, Output, RejectReason, SavedState, Setup, Stats,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const GROUP: &str = "home";

fn keyring(secret: &str, group: &str) -> Keyring {
    Keyring::from_secrets(&[secret], group).unwrap()
}

fn addr(last: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], 7470))
}

fn engine(id: u64, at: SocketAddr, ring: Keyring, now: Instant) -> Engine {
    let mut e = Engine::new(
        Setup {
            id: NodeId(id),
            name: format!("node {id}"),
            priority: 0,
            addr: at,
            saved: SavedState::default(),
            keyring: ring,
            config: Config::default(),
            seed: id,
            wall_ms: 0,
            replica: Default::default(),
            entries: Vec::new(),
            meta: Default::default(),
            election: Default::default(),
        },
        now,
    );
    drain(&mut e);
    e
}

/// Drains every output; returns the datagrams sent.
fn drain(e: &mut Engine) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut sent = Vec::new();
    while let Some(out) = e.poll_output() {
        if let Output::Transmit { to, datagram } = out {
            sent.push((to, datagram));
        }
    }
    sent
}

fn total_rejected(stats: &Stats) -> u64 {
    stats.rejected.values().sum()
}

/// The reasons whose counters grew between two snapshots, once per increment.
fn grown(before: &Stats, after: &Stats) -> Vec<RejectReason> {
    let mut grew = Vec::new();
    for reason in RejectReason::ALL {
        let (b, a) = (before.rejected(reason), after.rejected(reason));
        assert!(a >= b, "{reason} went back");
        grew.extend(std::iter::repeat_n(reason, (a - b) as usize));
    }
    grew
}

/// Node `from` says hello to node `to` (a seed) and returns the datagram it sent there.
fn hello(from: &mut Engine, to: SocketAddr, now: Instant) -> Vec<u8> {
    from.add_seed(now, to);
    let sent = drain(from);
    let (_, d) = sent
        .into_iter()
        .find(|(a, _)| *a == to)
        .expect("a hello is sent to a new seed");
    d
}

/// Feeds one datagram and returns the reasons counted for it.
fn feed(e: &mut Engine, now: Instant, d: &[u8]) -> Vec<RejectReason> {
    let before = e.stats().clone();
    e.handle_datagram(now, addr(99), d);
    drain(e);
    let after = e.stats().clone();
    assert_eq!(after.datagrams_in, before.datagrams_in + 1);
    assert_eq!(after.bytes_in, before.bytes_in + d.len() as u64);
    grown(&before, &after)
}

/// Two nodes of the same group, and a datagram the first sent the second.
fn pair() -> (Instant, Engine, Engine, Vec<u8>) {
    let now = Instant::now();
    let mut a = engine(1, addr(1), keyring(SECRET, GROUP), now);
    let b = engine(2, addr(2), keyring(SECRET, GROUP), now);
    let d = hello(&mut a, addr(2), now);
    (now, a, b, d)
}

#[test]
fn overhead_is_34_bytes() {
    let (_, _, _, d) = pair();
    let opened = wire::open(&keyring(SECRET, GROUP), &d).unwrap();
    assert_eq!(opened.sender, NodeId(1));
    assert_eq!(d.len() - opened.payload.len(), 34);

    let ring = keyring(SECRET, GROUP);
    for len in [0, 1, 17, 500, wire::MAX_PAYLOAD] {
        let payload = vec![0xa5; len];
        for kind in [FrameKind::Swim, FrameKind::Control] {
            let d = wire::seal(ring.primary(), NodeId(7), len as u64, kind, &payload);
            assert_eq!(d.len() - payload.len(), 34);
            assert!(d.len() <= wire::MAX_DATAGRAM);
        }
    }
    assert_eq!(wire::OVERHEAD, 34);
}

#[test]
fn replayed_datagram_is_counted_as_replay() {
    let (now, _, mut b, d) = pair();
    assert_eq!(feed(&mut b, now, &d), []);
    assert_eq!(feed(&mut b, now, &d), [RejectReason::Replay]);
    assert_eq!(
        feed(&mut b, now + Duration::from_secs(5), &d),
        [RejectReason::Replay]
    );
    assert_eq!(b.stats().rejected(RejectReason::Replay), 2);
    assert_eq!(total_rejected(b.stats()), 2);
}

#[test]
fn forged_datagram_is_bad_tag_or_unknown_key() {
    let (now, _, mut b, d) = pair();
    let key_id = keyring(SECRET, GROUP).primary().id();
    let kinds = frame_kinds(&keyring(SECRET, GROUP));
    let mut flips = 0;
    for bit in 0..d.len() * 8 {
        let mut forged = d.clone();
        forged[bit / 8] ^= 1 << (bit % 8);
        let expected = match bit / 8 {
            // Version and frame kind: another valid kind changes the associated data.
            0 if forged[0] >> 4 == wire::VERSION && kinds.contains(&(forged[0] & 0x0f)) => {
                RejectReason::BadTag
            }
            0 => RejectReason::UnknownVersion,
            1 => {
                assert_ne!(forged[1], key_id);
                RejectReason::UnknownKey
            }
            _ => RejectReason::BadTag,
        };
        assert_eq!(
            wire::open(&keyring(SECRET, GROUP), &forged),
            Err(expected),
            "bit {bit}"
        );
        assert_eq!(feed(&mut b, now, &forged), [expected], "bit {bit}");
        flips += 1;
    }
    assert_eq!(total_rejected(b.stats()), flips);
    assert!(b.stats().rejected(RejectReason::BadTag) >= flips - 16);
    // The genuine datagram still goes through: forgeries never touched the replay window.
    assert_eq!(feed(&mut b, now, &d), []);
}

#[test]
fn truncated_and_oversized_datagrams() {
    let (now, _, mut b, d) = pair();
    for len in 0..wire::OVERHEAD {
        assert_eq!(
            feed(&mut b, now, &d[..len]),
            [RejectReason::Truncated],
            "len {len}"
        );
    }
    // Long enough for a header and a tag, but cut: the tag no longer verifies.
    for len in wire::OVERHEAD..d.len() {
        assert_eq!(
            feed(&mut b, now, &d[..len]),
            [RejectReason::BadTag],
            "len {len}"
        );
    }
    let mut long = d.clone();
    long.resize(wire::MAX_DATAGRAM + 1, 0);
    assert_eq!(feed(&mut b, now, &long), [RejectReason::Oversized]);
    assert_eq!(
        feed(&mut b, now, &vec![0x10; 65_507]),
        [RejectReason::Oversized]
    );
    assert_eq!(
        b.stats().rejected(RejectReason::Truncated),
        wire::OVERHEAD as u64
    );
    assert_eq!(b.stats().rejected(RejectReason::Oversized), 2);
    assert_eq!(feed(&mut b, now, &d), []);
}

#[test]
fn datagram_from_another_secret_or_group_is_refused() {
    let now = Instant::now();
    let mut b = engine(2, addr(2), keyring(SECRET, GROUP), now);
    let mut other_secret = engine(
        3,
        addr(3),
        keyring("not the secret of this group", GROUP),
        now,
    );
    let mut other_group = engine(4, addr(4), keyring(SECRET, "garage"), now);
    for from in [&mut other_secret, &mut other_group] {
        let d = hello(from, addr(2), now);
        let got = feed(&mut b, now, &d);
        assert!(
            got == [RejectReason::UnknownKey] || got == [RejectReason::BadTag],
            "{got:?}"
        );
    }
    assert_eq!(total_rejected(b.stats()), 2);
    assert_eq!(b.members().len(), 1);
}

/// The frame-kind nibbles this wire version speaks: Swim (0) and Control (1), and whatever kinds
/// were added since (found by asking `wire::open`, which tells an unknown kind from a bad tag).
fn frame_kinds(ring: &Keyring) -> Vec<u8> {
    let kinds: Vec<u8> = (0..16)
        .filter(|&n| {
            let mut d = vec![0u8; wire::OVERHEAD];
            d[0] = wire::VERSION << 4 | n;
            d[1] = ring.primary().id();
            wire::open(ring, &d) != Err(RejectReason::UnknownVersion)
        })
        .collect();
    assert_eq!(kinds[..2], [0, 1], "Swim and Control");
    kinds
}

/// What `wire::open` must answer for bytes that are not an authentic datagram, worked out from
/// the header alone (a forgery verifies with probability 2^-128).
fn expected_rejection(d: &[u8], key_id: u8, kinds: &[u8]) -> RejectReason {
    if d.len() > wire::MAX_DATAGRAM {
        RejectReason::Oversized
    } else if d.len() < wire::OVERHEAD {
        RejectReason::Truncated
    } else if d[0] >> 4 != wire::VERSION || !kinds.contains(&(d[0] & 0x0f)) {
        RejectReason::UnknownVersion
    } else if d[1] != key_id {
        RejectReason::UnknownKey
    } else {
        RejectReason::BadTag
    }
}

/// The payloads two nodes (1 and 2) exchange in their first two seconds: joining, replicating
/// their metadata, a reliable and a best-effort message, and a service call with its reply.
fn payloads_of_a_join(mut now: Instant) -> Vec<(FrameKind, Vec<u8>)> {
    let ring = keyring(SECRET, GROUP);
    let mut nodes = [
        engine(1, addr(1), ring.clone(), now),
        engine(2, addr(2), ring.clone(), now),
    ];
    nodes[0].add_seed(now, addr(2));
    let mut payloads = Vec::new();
    for step in 0..40 {
        if step == 5 {
            nodes[1].serve(now, "light").unwrap();
        }
        if step == 20 {
            let reliable = SendOptions {
                reliable: true,
                timeout: None,
            };
            let body = br#"{"on":true}"#.to_vec();
            nodes[0]
                .send(now, Target::Node(NodeId(2)), body.clone(), reliable)
                .unwrap();
            nodes[0]
                .send(now, Target::All, body.clone(), SendOptions::default())
                .unwrap();
            nodes[0]
                .call(now, "light", body, CallOptions::default())
                .unwrap();
        }
        let mut in_flight: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
        for n in nodes.iter_mut() {
            n.handle_timeout(now);
            in_flight.extend(drain_serving(n, now));
        }
        while let Some((to, d)) = in_flight.pop() {
            let Some(n) = nodes.iter_mut().find(|n| n.identity().addr == to) else {
                continue;
            };
            let o = wire::open(&ring, &d).unwrap();
            payloads.push((o.kind, o.payload));
            n.handle_datagram(now, addr(0), &d);
            in_flight.extend(drain_serving(n, now));
        }
        now += Duration::from_millis(50);
    }
    assert!(nodes.iter().all(|n| n.members().len() == 2));
    let messages = payloads
        .iter()
        .filter(|(k, _)| *k == FrameKind::Message)
        .count();
    assert!(messages >= 6, "{messages} messaging payloads");
    payloads
}

/// [`drain`], answering every service request with a small reply.
fn drain_serving(e: &mut Engine, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut sent = Vec::new();
    let mut requests = Vec::new();
    while let Some(out) = e.poll_output() {
        match out {
            Output::Transmit { to, datagram } => sent.push((to, datagram)),
            Output::Serve(request) => requests.push(request.id),
            _ => {}
        }
    }
    for id in requests {
        e.respond(now, id, Ok(b"{\"done\":true}".to_vec()));
        sent.extend(drain(e));
    }
    sent
}

/// Changes `bytes` in place, at least one byte (or its length).
fn mutate(rng: &mut StdRng, bytes: &mut Vec<u8>) {
    let original = bytes.clone();
    for _ in 0..rng.random_range(1..=3) {
        let len = bytes.len();
        match rng.random_range(0..7) {
            0 if len > 0 => {
                let i = rng.random_range(0..len * 8);
                bytes[i / 8] ^= 1 << (i % 8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                bytes[i] = rng.random();
            }
            2 => bytes.truncate(rng.random_range(0..=len)),
            3 => {
                let extra = rng.random_range(1..=200);
                bytes.extend((0..extra).map(|_| rng.random::<u8>()));
            }
            4 if len > 0 => {
                let at = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - at).min(32));
                rng.fill(&mut bytes[at..at + n]);
            }
            5 if len > 0 => {
                // Interesting values for length, count and varint bytes.
                let i = rng.random_range(0..len);
                bytes[i] = [0x00, 0x01, 0x7f, 0x80, 0xff, 0xfe][rng.random_range(0..6)];
            }
            6 if len > 1 => {
                let i = rng.random_range(0..len - 1);
                bytes.swap(i, i + 1);
            }
            _ => bytes.push(rng.random()),
        }
    }
    if *bytes == original {
        bytes.push(0);
    }
}

#[test]
fn random_and_mutated_datagrams_are_counted_once() {
    let mut rng = StdRng::seed_from_u64(0xc0_5e_27);
    let ring = keyring(SECRET, GROUP);
    let key_id = ring.primary().id();
    let kinds = frame_kinds(&ring);
    let t0 = Instant::now();
    let mut now = t0;

    // Real payloads to start mutations from: the traffic of a join, and two goodbyes.
    let mut seeds = payloads_of_a_join(now);
    let swim = seeds.iter().filter(|(k, _)| *k == FrameKind::Swim).count();
    assert!(swim >= 10, "{swim} SWIM payloads");
    let identity = Identity {
        id: NodeId(1),
        addr: addr(1),
        generation: 3,
        priority: -1,
        name: "kitchen".into(),
    };
    seeds.push((FrameKind::Control, Control::Leave { identity }.encode()));
    let v6 = Identity {
        id: NodeId(9),
        addr: "[fd00::9%3]:7470".parse().unwrap(),
        generation: u32::MAX,
        priority: i32::MIN,
        name: "é".repeat(32),
    };
    seeds.push((FrameKind::Control, Control::Leave { identity: v6 }.encode()));

    // The engine under test: fed by a stranger with the group key (ids 10..14, never its own).
    let mut under_test = engine(2, addr(2), keyring(SECRET, GROUP), now);
    let mut counters = [0u64; 4];
    let mut authentic: Vec<Vec<u8>> = Vec::new();

    let (mut invalid, mut malformed, mut replays, mut accepted) = (0u64, 0u64, 0u64, 0u64);
    let (mut unsure, mut unsure_malformed) = (0u64, 0u64);
    const N: usize = 20_000;
    for i in 0..N {
        now += Duration::from_millis(rng.random_range(0..5));
        if i % 64 == 0 {
            under_test.handle_timeout(now);
            drain(&mut under_test);
        }
        let choice = rng.random_range(0..100);
        let (d, known): (Vec<u8>, Option<Option<RejectReason>>) = match choice {
            // Pure noise, of any length up to beyond the limit.
            0..=19 => {
                let mut d = vec![0u8; rng.random_range(0..1400)];
                rng.fill(&mut d[..]);
                (d, None)
            }
            // Noise behind a plausible header (version, kind, sometimes our key id).
            20..=34 => {
                let mut d = vec![0u8; rng.random_range(0..=wire::MAX_DATAGRAM)];
                rng.fill(&mut d[..]);
                if let Some(h) = d.get_mut(0) {
                    *h = wire::VERSION << 4 | rng.random_range(0..2);
                }
                if rng.random_bool(0.7) {
                    if let Some(k) = d.get_mut(1) {
                        *k = key_id;
                    }
                }
                (d, None)
            }
            // An authentic datagram, mutated after sealing.
            35..=64 => {
                let (kind, payload) = &seeds[rng.random_range(0..seeds.len())];
                let s = rng.random_range(0..4);
                counters[s] += 1;
                let mut d = wire::seal(
                    ring.primary(),
                    NodeId(10 + s as u64),
                    counters[s],
                    *kind,
                    payload,
                );
                mutate(&mut rng, &mut d);
                (d, None)
            }
            // A mutated payload, sealed with the group key: authentic, probably malformed.
            65..=89 => {
                let (kind, payload) = &seeds[rng.random_range(0..seeds.len())];
                let mut payload = payload.clone();
                mutate(&mut rng, &mut payload);
                payload.truncate(wire::MAX_PAYLOAD);
                let s = rng.random_range(0..4);
                counters[s] += 1;
                let d = wire::seal(
                    ring.primary(),
                    NodeId(10 + s as u64),
                    counters[s],
                    *kind,
                    &payload,
                );
                authentic.push(d.clone());
                // A control frame is malformed exactly when it does not decode.
                let known = match kind {
                    FrameKind::Control => Some(
                        Control::decode(&payload)
                            .err()
                            .map(|_| RejectReason::Malformed),
                    ),
                    _ => None,
                };
                (d, known)
            }
            // A replay of an authentic datagram already delivered.
            _ if !authentic.is_empty() => {
                let d = authentic[rng.random_range(0..authentic.len())].clone();
                (d, Some(Some(RejectReason::Replay)))
            }
            _ => (Vec::new(), Some(Some(RejectReason::Truncated))),
        };

        let opened = wire::open(&ring, &d);
        let got = feed(&mut under_test, now, &d);
        assert!(got.len() <= 1, "input {i}: counted {got:?}");
        match (&opened, known) {
            (Err(reason), _) => {
                // Everything `open` refuses is counted, once, under the reason it gave; and that
                // reason is the one the header calls for.
                assert_eq!(*reason, expected_rejection(&d, key_id, &kinds), "input {i}");
                assert_eq!(got, [*reason], "input {i}");
                invalid += 1;
            }
            (Ok(_), Some(Some(RejectReason::Replay))) => {
                assert_eq!(got, [RejectReason::Replay], "input {i}");
                replays += 1;
            }
            (Ok(o), Some(expect)) => {
                assert_eq!(o.kind, FrameKind::Control);
                assert_eq!(got, expect.into_iter().collect::<Vec<_>>(), "input {i}");
                match expect {
                    Some(_) => malformed += 1,
                    None => accepted += 1,
                }
            }
            (Ok(o), None) => {
                // An authentic SWIM (or replication) frame: some are refused without a counter
                // (see fuzz/README.md), but none with more than one, and only `malformed`.
                assert_ne!(o.kind, FrameKind::Control, "input {i}");
                assert!(
                    got.is_empty() || got == [RejectReason::Malformed],
                    "input {i}: {got:?}"
                );
                unsure += 1;
                unsure_malformed += got.len() as u64;
            }
        }
    }

    let stats = under_test.stats();
    println!(
        "{N} datagrams from {} seeds: {invalid} refused by open, {replays} replays, {malformed} + \
         {unsure_malformed} malformed, {accepted} control accepted, {unsure} authentic SWIM or replication; {:?}",
        seeds.len(),
        stats.rejected
    );
    assert_eq!(stats.datagrams_in, N as u64);
    assert_eq!(stats.rejected(RejectReason::Replay), replays);
    assert_eq!(
        total_rejected(stats),
        invalid + malformed + replays + unsure_malformed
    );
    assert_eq!(invalid + malformed + replays + accepted + unsure, N as u64);
    // Every branch was taken often enough to mean something.
    for reason in [
        RejectReason::Oversized,
        RejectReason::Truncated,
        RejectReason::UnknownVersion,
        RejectReason::UnknownKey,
        RejectReason::BadTag,
        RejectReason::Replay,
        RejectReason::Malformed,
    ] {
        assert!(stats.rejected(reason) >= 100, "{reason}: {stats:?}");
    }
    assert!(
        accepted > 0 && unsure > 1000,
        "accepted {accepted}, other {unsure}"
    );

    // Nothing of that poisoned the node: a real peer's datagram is still taken.
    let fresh = hello(
        &mut engine(5, addr(5), keyring(SECRET, GROUP), now),
        addr(2),
        now,
    );
    assert_eq!(feed(&mut under_test, now, &fresh), []);
}
