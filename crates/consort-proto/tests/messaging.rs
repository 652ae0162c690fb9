//! Messaging between engines over an in-memory lossy network with virtual time: reliable
//! delivery exactly once and in order, best-effort never twice, calls executed at most once.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use consort_proto::messaging::{CallOptions, Kind, Policy, SendOptions, Target};
use consort_proto::replica::WriteId;
use consort_proto::{Config, Engine, Event, Keyring, NodeId, Output, SavedState, Setup};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Something in flight: receiver, sender, bytes, whether it goes over the stream.
type InFlight = (usize, usize, Vec<u8>, bool);
/// A delivered message: sender, reliable, kind, body.
type Delivered = (NodeId, bool, Kind, Vec<u8>);
/// A call's outcome: each provider with its reply body, or the error text.
type CallOutcome = Result<Vec<(NodeId, Vec<u8>)>, String>;

struct Net {
    t0: Instant,
    now: Duration,
    engines: Vec<Engine>,
    addrs: Vec<SocketAddr>,
    /// By arrival time, then sending order.
    queue: BTreeMap<(Duration, u64), InFlight>,
    seq: u64,
    rng: StdRng,
    loss: f64,
    /// Messages delivered, per node.
    delivered: Vec<Vec<Delivered>>,
    /// Requests served per node: (from, body).
    served: Vec<Vec<Vec<u8>>>,
    sends_done: HashMap<(usize, u64), bool>,
    calls_done: HashMap<(usize, u64), CallOutcome>,
}

impl Net {
    fn new(n: usize, seed: u64) -> Net {
        let t0 = Instant::now();
        let ring = Keyring::from_secrets(&["messaging engines secret 0123456789"], "home").unwrap();
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|i| SocketAddr::from(([10, 0, 0, i as u8 + 1], 7470)))
            .collect();
        let engines = (0..n)
            .map(|i| {
                Engine::new(
                    Setup {
                        id: NodeId(i as u64 + 1),
                        name: format!("n{i}"),
                        priority: i as i32,
                        addr: addrs[i],
                        saved: SavedState::default(),
                        keyring: ring.clone(),
                        config: Config::default(),
                        seed: seed * 100 + i as u64,
                        wall_ms: 1_700_000_000_000,
                        replica: Default::default(),
                        entries: Vec::new(),
                        meta: Default::default(),
                        election: Default::default(),
                    },
                    t0,
                )
            })
            .collect();
        let mut net = Net {
            t0,
            now: Duration::ZERO,
            engines,
            addrs,
            queue: BTreeMap::new(),
            seq: 0,
            rng: StdRng::seed_from_u64(seed),
            loss: 0.0,
            delivered: vec![Vec::new(); n],
            served: vec![Vec::new(); n],
            sends_done: HashMap::new(),
            calls_done: HashMap::new(),
        };
        for i in 1..n {
            let seed = net.addrs[0];
            net.engines[i].add_seed(t0, seed);
        }
        for i in 0..n {
            net.drain(i);
        }
        net
    }

    fn at(&self) -> Instant {
        self.t0 + self.now
    }

    fn id(&self, i: usize) -> NodeId {
        NodeId(i as u64 + 1)
    }

    fn drain(&mut self, i: usize) {
        let mut commits: Vec<WriteId> = Vec::new();
        loop {
            while let Some(out) = self.engines[i].poll_output() {
                match out {
                    Output::Transmit { to, datagram } => {
                        let Some(dest) = self.addrs.iter().position(|a| *a == to) else {
                            continue;
                        };
                        if self.rng.random_bool(self.loss) {
                            continue;
                        }
                        let delay = Duration::from_micros(self.rng.random_range(100..600));
                        self.seq += 1;
                        self.queue
                            .insert((self.now + delay, self.seq), (dest, i, datagram, false));
                    }
                    Output::Stream { addr, frame, .. } => {
                        let dest = self.addrs.iter().position(|a| *a == addr).unwrap();
                        self.seq += 1;
                        let delay = Duration::from_micros(700);
                        self.queue
                            .insert((self.now + delay, self.seq), (dest, i, frame, true));
                    }
                    Output::Commit(c) => commits.extend(c.writes),
                    Output::SendDone { id, result } => {
                        self.sends_done.insert((i, id), result.is_ok());
                    }
                    Output::CallDone { id, result } => {
                        let result = result
                            .map(|rs| {
                                rs.into_iter()
                                    .map(|r| (r.from, r.result.unwrap_or_default()))
                                    .collect()
                            })
                            .map_err(|e| e.to_string());
                        self.calls_done.insert((i, id), result);
                    }
                    Output::Serve(request) => {
                        self.served[i].push(request.body.clone());
                        let mut reply = b"done:".to_vec();
                        reply.extend_from_slice(&request.body);
                        let now = self.at();
                        self.engines[i].respond(now, request.id, Ok(reply));
                    }
                    Output::Event(Event::Message(m)) => {
                        self.delivered[i].push((m.from, m.reliable, m.kind, m.body));
                    }
                    _ => {}
                }
            }
            if commits.is_empty() {
                break;
            }
            let now = self.at();
            self.engines[i].committed(now, &std::mem::take(&mut commits));
        }
    }

    /// Runs until virtual time `until`.
    fn run_until(&mut self, until: Duration) {
        loop {
            let next_timer = (0..self.engines.len())
                .filter_map(|i| self.engines[i].poll_timeout().map(|t| (t - self.t0, i)))
                .min();
            let next_packet = self.queue.keys().next().copied();
            let step = match (next_timer, next_packet) {
                (Some((t, _)), Some((p, _))) => t.min(p),
                (Some((t, _)), None) => t,
                (None, Some((p, _))) => p,
                (None, None) => until,
            };
            if step > until {
                self.now = until;
                return;
            }
            self.now = self.now.max(step);
            if next_packet.is_some_and(|(p, _)| p <= step) {
                let key = next_packet.unwrap();
                let (dest, from, bytes, stream) = self.queue.remove(&key).unwrap();
                let now = self.at();
                if stream {
                    let from_id = self.id(from);
                    self.engines[dest].handle_stream(now, from_id, &bytes);
                } else {
                    let from_addr = self.addrs[from];
                    self.engines[dest].handle_datagram(now, from_addr, &bytes);
                }
                self.drain(dest);
            } else if let Some((_, i)) = next_timer {
                let now = self.at();
                self.engines[i].handle_timeout(now);
                self.drain(i);
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }
}

fn formed(n: usize, seed: u64) -> Net {
    let mut net = Net::new(n, seed);
    net.run_for(Duration::from_secs(3));
    for i in 0..n {
        let live = net.engines[i]
            .members()
            .iter()
            .filter(|m| m.state.is_live())
            .count();
        assert_eq!(live, n, "node {i} sees {live} live");
        assert_eq!(net.engines[i].leader(), Some(net.id(n - 1)), "node {i}");
    }
    net
}

#[test]
fn ten_thousand_reliable_messages_at_20_percent_loss_arrive_once_in_order() {
    for seed in 1..=3 {
        let mut net = formed(3, seed);
        net.loss = 0.2;
        let reliable = SendOptions {
            reliable: true,
            timeout: Some(Duration::from_secs(120)),
        };
        let target = net.id(2);
        let mut ids = Vec::new();
        for i in 0..10_000u32 {
            let now = net.at();
            let id = net.engines[0]
                .send(
                    now,
                    Target::Node(target),
                    i.to_be_bytes().to_vec(),
                    reliable,
                )
                .unwrap();
            ids.push(id);
            net.drain(0);
            if i % 100 == 99 {
                net.run_for(Duration::from_millis(5));
            }
        }
        net.run_for(Duration::from_secs(20));
        let got: Vec<u32> = net.delivered[2]
            .iter()
            .filter(|(from, reliable, _, _)| *from == net.id(0) && *reliable)
            .map(|(_, _, _, b)| u32::from_be_bytes(b.clone().try_into().unwrap()))
            .collect();
        assert_eq!(got.len(), 10_000, "seed {seed}: {} delivered", got.len());
        assert!(
            got.iter().enumerate().all(|(i, n)| *n == i as u32),
            "seed {seed}: out of order"
        );
        let acked = ids
            .iter()
            .filter(|id| net.sends_done.get(&(0, **id)) == Some(&true))
            .count();
        assert_eq!(acked, 10_000, "seed {seed}: acked");
        let stats = net.engines[0].messaging_stats();
        println!(
            "seed {seed}: {} retransmissions for 10000 messages at 20% loss",
            stats.retransmitted
        );
    }
}

#[test]
fn reliable_messages_after_a_quiet_spell_still_arrive() {
    let mut net = formed(2, 9);
    let reliable = SendOptions {
        reliable: true,
        timeout: None,
    };
    let target = net.id(1);
    for round in 0..3u8 {
        for i in 0..5u8 {
            let now = net.at();
            net.engines[0]
                .send(now, Target::Node(target), vec![round, i], reliable)
                .unwrap();
            net.drain(0);
        }
        net.run_for(Duration::from_secs(1));
    }
    let got: Vec<Vec<u8>> = net.delivered[1].iter().map(|d| d.3.clone()).collect();
    let want: Vec<Vec<u8>> = (0..3u8)
        .flat_map(|r| (0..5u8).map(move |i| vec![r, i]))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn ten_thousand_best_effort_messages_are_never_delivered_twice() {
    let mut net = formed(3, 7);
    net.loss = 0.2;
    for i in 0..10_000u32 {
        let now = net.at();
        net.engines[0]
            .send(
                now,
                Target::All,
                i.to_be_bytes().to_vec(),
                SendOptions::default(),
            )
            .unwrap();
        net.drain(0);
        if i % 100 == 99 {
            net.run_for(Duration::from_millis(5));
        }
    }
    net.run_for(Duration::from_secs(2));
    for node in 1..3 {
        let mut seen = std::collections::HashSet::new();
        for (_, reliable, _, body) in &net.delivered[node] {
            assert!(!reliable);
            assert!(seen.insert(body.clone()), "node {node}: delivered twice");
        }
        let share = seen.len() as f64 / 10_000.0;
        assert!(
            (0.7..0.9).contains(&share),
            "node {node}: {share} delivered at 20% loss"
        );
    }
}

#[test]
fn large_messages_take_the_stream_and_oversized_ones_are_refused() {
    let mut net = formed(2, 3);
    let body = vec![b'x'; 200_000];
    let now = net.at();
    let target = net.id(1);
    let reliable = SendOptions {
        reliable: true,
        timeout: None,
    };
    let id = net.engines[0]
        .send(now, Target::Node(target), body.clone(), reliable)
        .unwrap();
    net.drain(0);
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.delivered[1].len(), 1);
    assert_eq!(net.delivered[1][0].3, body);
    assert_eq!(net.sends_done.get(&(0, id)), Some(&true));
    let err = net.engines[0]
        .send(now, Target::Node(target), vec![0; (1 << 20) + 1], reliable)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "message of 1048577 bytes is over the limit of 1048576 bytes"
    );
}

#[test]
fn a_follower_may_not_broadcast_and_the_leader_hears_its_own() {
    let mut net = formed(3, 5);
    let now = net.at();
    let err = net.engines[0]
        .send(
            now,
            Target::Broadcast,
            b"x".to_vec(),
            SendOptions::default(),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "this node is not the leader; only the leader broadcasts"
    );
    net.engines[2]
        .send(
            now,
            Target::Broadcast,
            b"play".to_vec(),
            SendOptions::default(),
        )
        .unwrap();
    net.drain(2);
    net.run_for(Duration::from_millis(100));
    let term = net.engines[2].term();
    for i in 0..3 {
        let leader_msgs: Vec<_> = net.delivered[i]
            .iter()
            .filter(|(_, _, k, _)| *k == Kind::Broadcast { term })
            .collect();
        assert_eq!(leader_msgs.len(), 1, "node {i}");
    }
}

#[test]
fn calls_under_loss_run_at_most_once_and_alternate_providers() {
    let mut net = formed(3, 11);
    for p in 0..2 {
        let now = net.at();
        net.engines[p].serve(now, "light").unwrap();
        net.drain(p);
    }
    net.run_for(Duration::from_secs(1));
    assert_eq!(
        net.engines[2].providers("light"),
        vec![net.id(0), net.id(1)]
    );
    net.loss = 0.2;
    let mut calls = Vec::new();
    for i in 0..200u32 {
        let now = net.at();
        let options = CallOptions {
            policy: Policy::RoundRobin,
            timeout: Duration::from_secs(10),
        };
        let id = net.engines[2]
            .call(now, "light", i.to_string().into_bytes(), options)
            .unwrap();
        net.drain(2);
        calls.push(id);
        net.run_for(Duration::from_millis(20));
    }
    net.run_for(Duration::from_secs(15));
    let mut served: Vec<Vec<u8>> = net.served[0].clone();
    served.extend(net.served[1].clone());
    let mut unique = served.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), served.len(), "a request ran twice");
    let ok = calls
        .iter()
        .filter(|c| matches!(net.calls_done.get(&(2, **c)), Some(Ok(_))))
        .count();
    assert_eq!(ok, 200, "every call succeeds at 20% loss");
    let (a, b) = (net.served[0].len(), net.served[1].len());
    assert_eq!((a, b), (100, 100), "round robin");
}
