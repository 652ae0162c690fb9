//! The simulator: many engines, one virtual clock, one queue of things about to happen.
//!
//! Everything runs in the calling thread. Time only moves when [`Sim::run_for`] or
//! [`Sim::run_until`] takes the next queued happening (a datagram arriving, or an engine's timer)
//! and jumps the clock to it. The driving rule of `consort_proto` is followed everywhere: after
//! every input to an engine, its outputs are drained and acted on in order, and its next timeout is
//! queued.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use consort_proto::election::ElectionEvent;
use consort_proto::replica::{Commit, WriteId, WriteOutcome};
use consort_proto::{Config, Engine, Event, Keyring, MemberEvent, NodeId, Output, Setup};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::net::{lan_addr, LinkDelay, NetConfig, NetStats, Network};
use crate::node::{NodeStatus, SimNode};
use crate::record::{ElectionRecord, Record};
use crate::state::AckedWrite;

/// How often [`Sim::run_until`] looks at its condition, in virtual time.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Environment variable that makes every simulator print what happens: `1` prints scenario steps
/// and membership events, `2` also every delivered datagram, decoded.
pub const TRACE_ENV: &str = "CONSORT_SIM_TRACE";

/// Wall-clock time (ms since the Unix epoch) at virtual time zero, before any node's skew.
pub const WALL_EPOCH_MS: u64 = 1_700_000_000_000;

/// The group secret every simulated node shares.
const SECRET: &str = "consort-sim shared group secret";

/// Something queued to happen at a virtual time.
struct Scheduled {
    at: Duration,
    /// Breaks ties in the order things were queued, so runs are reproducible.
    seq: u64,
    what: Happening,
}

enum Happening {
    /// A datagram reaches whoever listens at `to`.
    Deliver {
        from_node: usize,
        from: SocketAddr,
        to: SocketAddr,
        datagram: Vec<u8>,
    },
    /// A node's engine asked to be woken up; `run` tells which of its runs asked.
    Timer { node: usize, run: u64 },
    /// A frame sent over the stream between two runs of two nodes reaches its end.
    Stream {
        from_node: usize,
        from_run: u64,
        dest: usize,
        dest_run: u64,
        frame: Vec<u8>,
    },
}

/// The trace level [`TRACE_ENV`] asks for.
fn trace_level() -> u8 {
    match std::env::var(TRACE_ENV) {
        Ok(v) if v.trim() == "2" => 2,
        Ok(v) if v.trim() == "0" => 0,
        Ok(_) => 1,
        Err(_) => 0,
    }
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A deterministic simulation of a Consort group. See the crate docs for an example.
pub struct Sim {
    /// The one real instant taken; virtual time is added to it for the engines.
    base: Instant,
    now: Duration,
    rng: StdRng,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    pub(crate) nodes: Vec<SimNode>,
    by_id: HashMap<NodeId, usize>,
    pub(crate) net: Network,
    config: Config,
    keyring: Keyring,
    next_addr: usize,
    pub(crate) records: Vec<Record>,
    pub(crate) election_records: Vec<ElectionRecord>,
    pub(crate) false_downs: Vec<Record>,
    rejected: u64,
    /// 0: quiet, 1: steps and events, 2: datagrams too (see [`TRACE_ENV`]).
    trace: u8,
    tap: Option<Tap>,
    scratch: Vec<Output>,
    /// When the last frame queued on each (sender, receiver) stream arrives: frames keep order.
    stream_tail: HashMap<(usize, usize), Duration>,
    pub(crate) acked: Vec<AckedWrite>,
    pub(crate) write_failures: u64,
    /// Stream frames handed to a receiver.
    pub(crate) frames_delivered: u64,
    /// Messages, requests and outcomes (see `messaging.rs`).
    pub(crate) messaging: crate::messaging::Log,
}

/// A function shown every datagram handed to a running engine: virtual time, sending node,
/// receiving node, sealed bytes. For debugging a replayed seed.
pub type Tap = Box<dyn FnMut(Duration, usize, usize, &[u8]) + Send>;

impl Sim {
    /// An empty simulation; every random choice it makes follows from `seed`.
    pub fn new(seed: u64, net: NetConfig, config: Config) -> Sim {
        let keyring = Keyring::from_secrets(&[SECRET], "consort-sim").expect("constant secret");
        Sim {
            base: Instant::now(),
            now: Duration::ZERO,
            rng: StdRng::seed_from_u64(seed),
            seq: 0,
            queue: BinaryHeap::new(),
            nodes: Vec::new(),
            by_id: HashMap::new(),
            net: Network::new(net),
            config,
            keyring,
            next_addr: 0,
            records: Vec::new(),
            election_records: Vec::new(),
            false_downs: Vec::new(),
            rejected: 0,
            trace: trace_level(),
            tap: None,
            scratch: Vec::new(),
            stream_tail: HashMap::new(),
            acked: Vec::new(),
            write_failures: 0,
            frames_delivered: 0,
            messaging: Default::default(),
        }
    }

    /// Virtual time since the simulation was created.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// The engines' view of the current virtual time.
    pub(crate) fn instant(&self) -> Instant {
        self.base + self.now
    }

    /// The simulator's random source, for scenarios that want their choices replayed too.
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// Shows every delivered datagram to `tap` from now on.
    pub fn set_tap(&mut self, tap: Tap) {
        self.tap = Some(tap);
    }

    /// Timings given to engines started from now on.
    pub fn set_config(&mut self, config: Config) {
        self.config = config;
    }

    /// The network model in force from now on (links already cut stay cut).
    pub fn set_net(&mut self, net: NetConfig) {
        self.net.config = net;
    }

    /// The network model in force.
    pub fn net(&self) -> &NetConfig {
        &self.net.config
    }

    /// Sets the loss probability from now on.
    pub fn set_loss(&mut self, loss: f64) {
        self.note(format_args!("loss {:.1}%", loss * 100.0));
        self.net.config.loss = loss;
    }

    /// Adds a node that is not started yet; returns its index. Its id is random (from the seed),
    /// its address the next free one of `10.213.0.0/16`, its name `n<index>`.
    pub fn add_node(&mut self) -> usize {
        let index = self.nodes.len();
        let id = loop {
            let id = NodeId::random(&mut self.rng);
            if !self.by_id.contains_key(&id) {
                break id;
            }
        };
        let addr = self.fresh_addr();
        self.net.bind(index, None, addr);
        self.by_id.insert(id, index);
        self.nodes.push(SimNode::new(id, format!("n{index}"), addr));
        index
    }

    /// An address no node has used yet.
    pub fn fresh_addr(&mut self) -> SocketAddr {
        loop {
            let addr = lan_addr(self.next_addr);
            self.next_addr += 1;
            if self.net.owner(addr).is_none() {
                return addr;
            }
        }
    }

    /// Makes `node` join through `seed`'s current address, now if it runs and on every start.
    pub fn add_seed(&mut self, node: usize, seed: usize) {
        let addr = self.nodes[seed].addr;
        if node == seed || self.nodes[node].seeds.contains(&addr) {
            return;
        }
        self.nodes[node].seeds.push(addr);
        let now = self.instant();
        if let Some(engine) = self.nodes[node].engine.as_mut() {
            engine.add_seed(now, addr);
            self.drain(node);
        }
    }

    /// Tells a running `node` that `other` was discovered at its current address, as an mDNS
    /// browse would; unlike a seed, this is forgotten when `node` restarts.
    pub fn add_discovered(&mut self, node: usize, other: usize) {
        let (id, addr) = (self.nodes[other].id, self.nodes[other].addr);
        let now = self.instant();
        if let Some(engine) = self.nodes[node].engine.as_mut() {
            engine.add_discovered(now, id, addr);
            self.drain(node);
        }
    }

    /// Starts `node` (first start or restart) from what its disk holds.
    ///
    /// # Panics
    ///
    /// If it is already running.
    pub fn start(&mut self, node: usize) {
        let n = &self.nodes[node];
        assert!(!n.status.is_running(), "{} is already running", n.name);
        let wall_ms = (WALL_EPOCH_MS as i64 + self.now.as_millis() as i64 + n.skew_ms) as u64;
        let setup = Setup {
            id: n.id,
            name: n.name.clone(),
            priority: n.priority,
            addr: n.addr,
            saved: n.disk,
            keyring: self.keyring.clone(),
            config: self.config.clone(),
            seed: self.rng.random(),
            wall_ms,
            replica: Default::default(),
            entries: n.entries.values().cloned().collect(),
            meta: n.meta,
            election: n.election,
        };
        let now = self.instant();
        let mut engine = Engine::new(setup, now);
        for seed in &n.seeds {
            engine.add_seed(now, *seed);
        }
        let n = &mut self.nodes[node];
        n.engine = Some(engine);
        n.status = NodeStatus::Running;
        n.run += 1;
        n.armed = None;
        n.wall_base = Some((wall_ms, self.now));
        n.running_election = n.election;
        self.note(format_args!("start n{node}"));
        self.drain(node);
    }

    /// Starts a crashed or stopped node again, with the same id and the state it last saved.
    ///
    /// # Panics
    ///
    /// If it is running.
    pub fn restart(&mut self, node: usize) {
        self.start(node);
    }

    /// Kills `node` at once: no goodbye, timers gone; datagrams already sent still arrive.
    pub fn crash(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        if n.engine.take().is_some() {
            n.status = NodeStatus::Crashed;
            n.armed = None;
            n.pending.clear();
            self.note(format_args!("crash n{node}"));
        }
    }

    /// Stops `node` gracefully: it leaves, its goodbyes are sent, then its engine is dropped.
    pub fn stop(&mut self, node: usize) {
        let now = self.instant();
        let Some(engine) = self.nodes[node].engine.as_mut() else {
            return;
        };
        engine.leave(now);
        self.note(format_args!("stop n{node}"));
        self.drain(node);
        let n = &mut self.nodes[node];
        n.engine = None;
        n.status = NodeStatus::Stopped;
        n.armed = None;
        n.pending.clear();
    }

    /// Moves `node` to `addr` (a DHCP change, a new interface): the network delivers to the new
    /// address only, and a running engine is told through [`Engine::set_addr`].
    ///
    /// # Panics
    ///
    /// If another node listens at `addr`.
    pub fn set_addr(&mut self, node: usize, addr: SocketAddr) {
        let owner = self.net.owner(addr);
        assert!(
            owner.is_none_or(|o| o == node),
            "{addr} belongs to n{owner:?}"
        );
        let old = self.nodes[node].addr;
        self.net.bind(node, Some(old), addr);
        self.nodes[node].addr = addr;
        self.note(format_args!("move n{node} to {addr}"));
        let now = self.instant();
        if let Some(engine) = self.nodes[node].engine.as_mut() {
            engine.set_addr(now, addr);
            self.drain(node);
        }
    }

    /// Splits the network: nodes in different groups cannot reach each other. Nodes in no group
    /// keep reaching everyone. Adds to links already cut.
    pub fn partition(&mut self, groups: &[&[usize]]) {
        self.note(format_args!("partition {groups:?}"));
        for (i, a) in groups.iter().enumerate() {
            for b in &groups[i + 1..] {
                for &x in a.iter() {
                    for &y in b.iter() {
                        self.net.cut(x, y);
                        self.net.cut(y, x);
                    }
                }
            }
        }
    }

    /// Cuts `node` off from every other node, both ways.
    pub fn isolate(&mut self, node: usize) {
        self.note(format_args!("isolate n{node}"));
        for other in 0..self.nodes.len() {
            self.net.cut(node, other);
            self.net.cut(other, node);
        }
    }

    /// Cuts the one-way link `from -> to`: `to` no longer hears `from`, but `from` hears `to`.
    pub fn cut(&mut self, from: usize, to: usize) {
        self.note(format_args!("cut n{from} -> n{to}"));
        self.net.cut(from, to);
    }

    /// Restores the one-way link `from -> to` if it was cut; other cuts stay.
    pub fn mend(&mut self, from: usize, to: usize) {
        self.note(format_args!("mend n{from} -> n{to}"));
        self.net.mend(from, to);
    }

    /// Slows the one-way link `from -> to` by `delay` from now on: an asymmetric path.
    pub fn slow_down(&mut self, from: usize, to: usize, delay: LinkDelay) {
        self.note(format_args!("slow n{from} -> n{to}: {delay:?}"));
        self.net.slow_down(from, to, delay);
    }

    /// Gives every link the network's delay again.
    pub fn clear_delays(&mut self) {
        self.note(format_args!("clear link delays"));
        self.net.clear_delays();
    }

    /// Restores every cut link.
    pub fn heal(&mut self) {
        self.note(format_args!("heal"));
        self.net.heal();
    }

    /// Whether any link is cut.
    pub fn is_partitioned(&self) -> bool {
        self.net.is_partitioned()
    }

    /// Processes the next queued happening, moving the clock to it; `false` if nothing is queued.
    pub fn step(&mut self) -> bool {
        let Some(Reverse(next)) = self.queue.pop() else {
            return false;
        };
        self.now = self.now.max(next.at);
        match next.what {
            Happening::Deliver {
                from_node,
                from,
                to,
                datagram,
            } => self.deliver(from_node, from, to, &datagram),
            Happening::Timer { node, run } => self.fire(node, run, next.at),
            Happening::Stream {
                from_node,
                from_run,
                dest,
                dest_run,
                frame,
            } => self.deliver_frame(from_node, from_run, dest, dest_run, &frame),
        }
        true
    }

    /// Runs everything due in the next `duration` of virtual time; the clock ends exactly there.
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.queue.peek().is_some_and(|Reverse(s)| s.at <= end) {
            self.step();
        }
        self.now = end;
    }

    /// Runs until `done` holds (checked every [`CHECK_EVERY`]) or `limit` has passed; returns the
    /// virtual time it took, or `None` at the limit.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        loop {
            if done(self) {
                return Some(self.now - start);
            }
            if self.now - start >= limit {
                return None;
            }
            self.run_for(CHECK_EVERY);
        }
    }

    fn schedule(&mut self, at: Duration, what: Happening) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            what,
        }));
    }

    fn deliver(&mut self, from_node: usize, from: SocketAddr, to: SocketAddr, datagram: &[u8]) {
        let Some(dest) = self.net.owner(to) else {
            self.net.stats.unreachable += 1;
            return;
        };
        if !self.net.is_open(from_node, dest) {
            self.net.stats.blocked += 1;
            return;
        }
        if !self.nodes[dest].status.is_running() {
            self.net.stats.unreachable += 1;
            return;
        }
        self.net.stats.delivered += 1;
        if let Some(tap) = self.tap.as_mut() {
            tap(self.now, from_node, dest, datagram);
        }
        if self.trace >= 2 {
            self.trace_datagram(from_node, dest, datagram);
        }
        let now = self.instant();
        if let Some(engine) = self.nodes[dest].engine.as_mut() {
            engine.handle_datagram(now, from, datagram);
            self.drain(dest);
        }
    }

    fn fire(&mut self, node: usize, run: u64, at: Duration) {
        let now = self.instant();
        let n = &mut self.nodes[node];
        if n.run != run || n.armed != Some(at) {
            return; // a timer of an earlier run, or one superseded by an earlier deadline
        }
        n.armed = None;
        if let Some(engine) = n.engine.as_mut() {
            engine.handle_timeout(now);
            self.drain(node);
        }
    }

    /// Acts on every output of `node`'s engine, in order, then queues its next timeout.
    ///
    /// Commits are durable as soon as they are acted on; once a pass of outputs is done, the
    /// engine is told which writes they held ([`Engine::committed`]), and what that produces is
    /// drained in turn, before anything else happens.
    pub(crate) fn drain(&mut self, node: usize) {
        let mut writes: Vec<WriteId> = Vec::new();
        loop {
            let now = self.instant();
            let Some(engine) = self.nodes[node].engine.as_mut() else {
                return;
            };
            if !writes.is_empty() {
                engine.committed(now, &writes);
                writes.clear();
            }
            // Requests served here are answered at once, after their outputs are acted on.
            for (id, reply) in self.messaging.answers.drain(..) {
                engine.respond(now, id, Ok(reply));
            }
            let mut outputs = std::mem::take(&mut self.scratch);
            while let Some(output) = engine.poll_output() {
                outputs.push(output);
            }
            for output in outputs.drain(..) {
                self.act(node, output, &mut writes);
            }
            self.scratch = outputs;
            if writes.is_empty() && self.messaging.answers.is_empty() {
                break;
            }
        }
        self.arm(node);
    }

    fn act(&mut self, node: usize, output: Output, committed: &mut Vec<WriteId>) {
        match output {
            Output::Transmit { to, datagram } => self.send(node, to, datagram),
            // Acted on before any later output, which is what "durable first" asks.
            Output::Save(state) => self.nodes[node].disk = state,
            Output::Commit(commit) => {
                self.make_durable(node, &commit);
                committed.extend(commit.writes);
            }
            Output::WriteDone { id, result } => self.write_done(node, id, result),
            Output::Stream { to, addr, frame } => self.send_frame(node, to, addr, frame),
            Output::Event(Event::Member(event)) => self.record(node, event),
            Output::Event(Event::Election(event)) => self.record_election(node, event),
            Output::Event(Event::Rejected { .. }) => self.rejected += 1,
            Output::Event(Event::Message(message)) => self.record_message(node, message),
            Output::Serve(request) => self.record_request(node, request),
            Output::SendDone { id, result } => self.record_send(node, id, result),
            Output::CallDone { id, result } => self.record_call(node, id, result),
            // Other events (changes, pulses, bootstrap progress) are not recorded.
            _ => {}
        }
    }

    /// Makes a commit durable on `node`'s disk, as the real store does: collected keys removed,
    /// then entries stored where newer than what is there, and the metadata kept.
    fn make_durable(&mut self, node: usize, commit: &Commit) {
        let n = &mut self.nodes[node];
        for key in &commit.removed {
            n.entries.remove(key);
        }
        for entry in &commit.entries {
            match n.entries.get(&entry.key) {
                Some(old) if old.version >= entry.version => {}
                _ => {
                    n.entries.insert(entry.key.clone(), entry.clone());
                }
            }
        }
        n.meta = commit.meta;
    }

    /// Records how a write asked through [`Sim::write`] ended.
    fn write_done(
        &mut self,
        node: usize,
        id: WriteId,
        result: Result<WriteOutcome, consort_proto::replica::WriteError>,
    ) {
        let Some((key, value)) = self.nodes[node].pending.remove(&id) else {
            return;
        };
        match result {
            Ok(WriteOutcome::Applied(version)) => {
                if self.trace >= 1 {
                    eprintln!(
                        "{:>10.4}s n{node}: acked {key:?}={value:?} @{version:?}",
                        self.now.as_secs_f64()
                    );
                }
                self.acked.push(AckedWrite {
                    at: self.now,
                    node,
                    key,
                    value,
                    version,
                });
            }
            // Queued writes are never asked for; anything else did not happen.
            _ => self.write_failures += 1,
        }
    }

    /// Queues a frame for the node listening at `addr` if it is `to` and can be reached now; it
    /// arrives after the link's latency, after every frame queued before it on the same stream.
    fn send_frame(&mut self, node: usize, to: NodeId, addr: SocketAddr, frame: Vec<u8>) {
        let Some(dest) = self.net.owner(addr) else {
            self.net.stats.unreachable += 1;
            return;
        };
        if self.nodes[dest].id != to
            || !self.nodes[dest].status.is_running()
            || !self.stream_open(node, dest)
        {
            self.net.stats.unreachable += 1;
            return;
        }
        let jitter = self.net.config.jitter.as_nanos() as u64;
        let extra = if jitter == 0 {
            0
        } else {
            self.rng.random_range(0..=jitter)
        };
        let arrival = self.now + self.net.config.latency + Duration::from_nanos(extra);
        let tail = self.stream_tail.entry((node, dest)).or_default();
        let at = arrival.max(*tail);
        *tail = at;
        let what = Happening::Stream {
            from_node: node,
            from_run: self.nodes[node].run,
            dest,
            dest_run: self.nodes[dest].run,
            frame,
        };
        self.schedule(at, what);
    }

    /// Whether a stream between two nodes works: both directions open.
    fn stream_open(&self, a: usize, b: usize) -> bool {
        self.net.is_open(a, b) && self.net.is_open(b, a)
    }

    /// Hands a frame to its receiver unless the stream broke: a link cut, an end that stopped or
    /// crashed (even if it restarted since).
    fn deliver_frame(
        &mut self,
        from_node: usize,
        from_run: u64,
        dest: usize,
        dest_run: u64,
        frame: &[u8],
    ) {
        let (from, to) = (&self.nodes[from_node], &self.nodes[dest]);
        let intact = from.run == from_run
            && from.status.is_running()
            && to.run == dest_run
            && to.status.is_running()
            && self.stream_open(from_node, dest);
        if !intact {
            self.net.stats.blocked += 1;
            return;
        }
        let from_id = from.id;
        self.frames_delivered += 1;
        let now = self.instant();
        if let Some(engine) = self.nodes[dest].engine.as_mut() {
            engine.handle_stream(now, from_id, frame);
            self.drain(dest);
        }
    }

    fn send(&mut self, node: usize, to: SocketAddr, datagram: Vec<u8>) {
        let dest = self.net.owner(to);
        let delays = self.net.fate(&mut self.rng, node, dest);
        if let Some((&last, copies)) = delays.split_last() {
            for &delay in copies {
                self.transit(node, to, delay, datagram.clone());
            }
            self.transit(node, to, last, datagram);
        }
    }

    /// Queues the arrival of one copy of a datagram `delay` from now.
    fn transit(&mut self, node: usize, to: SocketAddr, delay: Duration, datagram: Vec<u8>) {
        let what = Happening::Deliver {
            from_node: node,
            from: self.nodes[node].addr,
            to,
            datagram,
        };
        self.schedule(self.now + delay, what);
    }

    /// Queues a timer event for `node`'s next deadline unless one at or before it is queued.
    fn arm(&mut self, node: usize) {
        let Some(deadline) = self.nodes[node]
            .engine
            .as_ref()
            .and_then(Engine::poll_timeout)
        else {
            return;
        };
        let at = deadline.saturating_duration_since(self.base).max(self.now);
        let n = &mut self.nodes[node];
        if n.armed.is_some_and(|armed| armed <= at) {
            return;
        }
        n.armed = Some(at);
        let run = n.run;
        self.schedule(at, Happening::Timer { node, run });
    }

    /// Prints a scenario step when tracing.
    fn note(&self, what: std::fmt::Arguments<'_>) {
        if self.trace >= 1 {
            eprintln!("{:>10.4}s ---- {what}", self.now.as_secs_f64());
        }
    }

    fn record(&mut self, node: usize, event: MemberEvent) {
        let record = Record {
            at: self.now,
            node,
            event,
        };
        if self.trace >= 1 {
            eprintln!(
                "{:>10.4}s n{node}: {:?}",
                self.now.as_secs_f64(),
                record.event
            );
        }
        if let MemberEvent::Down(identity) = &record.event {
            let subject = self.by_id.get(&identity.id).map(|&s| &self.nodes[s]);
            if subject.is_some_and(|s| s.generation() == Some(identity.generation)) {
                self.false_downs.push(record.clone());
            }
        }
        self.records.push(record);
    }

    fn record_election(&mut self, node: usize, event: ElectionEvent) {
        if self.trace >= 1 {
            eprintln!("{:>10.4}s n{node}: {event:?}", self.now.as_secs_f64());
        }
        self.election_records.push(ElectionRecord {
            at: self.now,
            node,
            run: self.nodes[node].run,
            event,
        });
    }

    fn trace_datagram(&self, from: usize, to: usize, datagram: &[u8]) {
        let name = |id: NodeId| {
            self.index_of(id)
                .map_or_else(|| id.to_string(), |i| format!("n{i}"))
        };
        let text = crate::trace::describe(&self.keyring, &name, datagram);
        eprintln!(
            "{:>10.4}s   n{from} -> n{to}: {text}",
            self.now.as_secs_f64()
        );
    }

    /// Rejection events the engines reported (each may stand for several drops).
    pub fn rejections(&self) -> u64 {
        self.rejected
    }

    /// What happened to datagrams so far.
    pub fn net_stats(&self) -> NetStats {
        self.net.stats
    }

    /// The index of the node with this id.
    pub fn index_of(&self, id: NodeId) -> Option<usize> {
        self.by_id.get(&id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scenario;

    /// Runs a lossy scenario with a crash and a restart; returns everything observable.
    fn run(seed: u64) -> (Vec<Record>, NetStats, Vec<u32>) {
        let mut sim = Scenario::new(seed)
            .nodes(6)
            .loss(0.1)
            .duplicate(0.05)
            .build();
        sim.run_for(Duration::from_secs(5));
        sim.crash(2);
        sim.run_for(Duration::from_secs(3));
        sim.restart(2);
        sim.run_for(Duration::from_secs(3));
        let generations = (0..6).map(|n| sim.disk(n).generation).collect();
        (sim.records().to_vec(), sim.net_stats(), generations)
    }

    #[test]
    fn same_seed_replays_exactly() {
        let (records, stats, generations) = run(11);
        assert_eq!(run(11), (records.clone(), stats, generations));
        assert!(stats.lost > 0 && stats.duplicated > 0, "{stats:?}");
        assert_ne!(run(12).0, records);
    }

    #[test]
    fn restart_resumes_from_disk_with_next_generation() {
        let mut sim = Scenario::new(3).nodes(3).build();
        sim.run_for(Duration::from_secs(1));
        let before = sim.disk(1);
        sim.crash(1);
        sim.run_for(Duration::from_secs(1));
        assert_eq!(sim.status(1), NodeStatus::Crashed);
        sim.restart(1);
        let engine = sim.engine(1).expect("running");
        assert_eq!(engine.identity().generation, before.generation + 1);
        assert!(sim.disk(1).counter_limit > before.counter_limit);
    }

    #[test]
    fn run_for_ends_exactly_at_the_deadline() {
        let mut sim = Scenario::new(1).nodes(2).build();
        sim.run_for(Duration::from_millis(1234));
        assert_eq!(sim.now(), Duration::from_millis(1234));
        assert!(sim.net_stats().delivered > 0);
    }
}
