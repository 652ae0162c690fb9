//! The engine: one node's protocol, composed from the wire, membership and timers.
//!
//! Inputs arrive through `handle_*` and the other `&mut self` methods, each with the time `now`.
//! Outputs leave through [`Engine::poll_output`], and the next deadline through
//! [`Engine::poll_timeout`]. The rule: after any input, drain `poll_output` until it returns
//! `None`, act on every output in order, then wait for a datagram or the deadline.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::clock::{ClockConfig, GroupClock};
use crate::codec::Control;
use crate::config::Config;
use crate::election::{Election, ElectionConfig, ElectionEvent};
use crate::id::{clip_name, Identity, NodeId};
use crate::membership::{Member, MemberEvent, Membership};
use crate::messaging::{
    CallError, CallId, Message, MessageId, Messaging, Reply, Request, SendError,
};
use crate::replica::replicator::Replicator;
use crate::replica::{Change, Commit, Entry, Key, Meta, Progress, ReplicaConfig, Value};
use crate::replica::{WriteError, WriteId, WriteOutcome};
use crate::timer::TimerQueue;
use crate::wire::{self, CounterBlock, FrameKind, Keyring, RejectReason, ReplayWindow};

mod coordination;
mod messaging;
mod replication;

/// How often a leader claims its term (the election's heartbeat; the same on every node).
const HEARTBEAT: Duration = Duration::from_millis(250);
/// How often each peer's clock is probed.
const CLOCK_PROBE: Duration = Duration::from_secs(1);

/// How often the replicator's timers (forward retries, anti-entropy, bootstrap) are checked.
const REPLICA_TICK: Duration = Duration::from_millis(50);

/// Most seed and discovered addresses kept for announcing.
const MAX_SEEDS: usize = 256;

/// Down members greeted per announce period by a node that has no live member left.
const DOWN_GREETINGS: usize = 3;

/// What a node must keep on disk between runs, beside its node id.
///
/// The engine emits [`Output::Save`] whenever it changes; the driver must make it durable before
/// acting on any later output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    /// No counter at or above this was ever used.
    pub counter_limit: u64,
    /// The highest identity generation ever used.
    pub generation: u32,
}

/// Everything an engine starts from.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The persistent node id.
    pub id: NodeId,
    /// Human-readable name (clipped to [`crate::id::MAX_NAME_LEN`] bytes).
    pub name: String,
    /// Election priority.
    pub priority: i32,
    /// The address peers reach this node at.
    pub addr: SocketAddr,
    /// What the previous run saved (default for a new node).
    pub saved: SavedState,
    /// The group keys.
    pub keyring: Keyring,
    /// Timings.
    pub config: Config,
    /// Seed for every random choice the engine makes (the simulator replays runs with it).
    pub seed: u64,
    /// Wall-clock time at `now`, in milliseconds since the Unix epoch (for hybrid logical clocks;
    /// it need not agree with other nodes' clocks).
    pub wall_ms: u64,
    /// Replication settings (owned prefixes, limits, timings).
    pub replica: ReplicaConfig,
    /// Entries stored by the previous run.
    pub entries: Vec<Entry>,
    /// Replication metadata stored by the previous run.
    pub meta: Meta,
    /// How the leader is elected.
    pub election: ElectionConfig,
}

/// Something the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Send a datagram.
    Transmit {
        /// Destination.
        to: SocketAddr,
        /// The sealed datagram, at most [`wire::MAX_DATAGRAM`] bytes.
        datagram: Vec<u8>,
    },
    /// Make this state durable before acting on any later output.
    Save(SavedState),
    /// Make these entries durable (one transaction for several commits is fine), then call
    /// [`Engine::committed`] with their writes.
    Commit(Commit),
    /// A write from [`Engine::write`] is complete.
    WriteDone {
        /// The write.
        id: WriteId,
        /// How it ended.
        result: Result<WriteOutcome, WriteError>,
    },
    /// Send a frame over the authenticated stream to a peer (too large for a datagram); feed
    /// frames that arrive with [`Engine::handle_stream`].
    Stream {
        /// The peer.
        to: NodeId,
        /// Where it listens (TCP, same port as the datagrams).
        addr: SocketAddr,
        /// The frame.
        frame: Vec<u8>,
    },
    /// A reliable send from [`Engine::send`] ended.
    SendDone {
        /// The send.
        id: MessageId,
        /// Acknowledged by every receiver, or who did not acknowledge it in time.
        result: Result<(), SendError>,
    },
    /// A call from [`Engine::call`] ended.
    CallDone {
        /// The call.
        id: CallId,
        /// The replies (one, or one per provider for [`crate::messaging::Policy::All`]).
        result: Result<Vec<Reply>, CallError>,
    },
    /// Run a request for a service this node provides, then answer with [`Engine::respond`].
    Serve(Request),
    /// Something happened that users or logs may want to know.
    Event(Event),
}

/// A notable happening.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The membership view changed.
    Member(MemberEvent),
    /// An entry changed (a local write, or one from a peer).
    Changed(Change),
    /// An event on a key; never stored.
    Pulse {
        /// The key.
        key: Key,
        /// The payload.
        value: Value,
        /// Who sent it.
        origin: NodeId,
    },
    /// A snapshot being pulled from a peer made progress.
    Bootstrap(Progress),
    /// Leadership changed.
    Election(ElectionEvent),
    /// A message arrived (or a leader's own broadcast, or a message to itself).
    Message(Message),
    /// A datagram was dropped. Emitted at most once per reason per
    /// [`Config::reject_log_interval`]; `suppressed` counts the drops not reported since.
    Rejected {
        /// Where it came from.
        from: SocketAddr,
        /// Why it was dropped.
        reason: RejectReason,
        /// Drops for the same reason not reported as events since the last one.
        suppressed: u64,
    },
}

/// Traffic counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams received, accepted or not.
    pub datagrams_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Dropped datagrams by reason.
    pub rejected: BTreeMap<RejectReason, u64>,
    /// Bytes of anti-entropy (reconciliation) messages received, by datagram or stream.
    pub anti_entropy_bytes_in: u64,
    /// Bytes of anti-entropy (reconciliation) messages sent, by datagram or stream.
    pub anti_entropy_bytes_out: u64,
}

impl Stats {
    /// Dropped datagrams for one reason.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected.get(&reason).copied().unwrap_or(0)
    }
}

#[derive(Debug)]
enum Timer {
    Swim(foca::Timer<Identity>),
    Announce,
    Replica,
    Heartbeat,
    ClockProbe,
}

/// One node's protocol state machine. See the module docs for the driving rule.
pub struct Engine {
    config: Config,
    keyring: Keyring,
    counter: CounterBlock,
    saved: SavedState,
    membership: Membership,
    windows: HashMap<NodeId, ReplayWindow>,
    /// Addresses to join through, with the node expected there when known (mDNS says).
    seeds: Vec<(SocketAddr, Option<NodeId>)>,
    timers: TimerQueue<Timer>,
    outputs: VecDeque<Output>,
    stats: Stats,
    reject_log: HashMap<RejectReason, (Option<Instant>, u64)>,
    replicator: Replicator,
    election: Election,
    messaging: Messaging,
    clock: GroupClock,
    rng: StdRng,
    /// Wall time (ms) at `start`; wall time later is derived from the monotonic clock.
    wall_base: (Instant, u64),
}

impl Engine {
    /// Starts a node. Its first output is a [`Output::Save`] reserving counters for this run.
    pub fn new(setup: Setup, now: Instant) -> Engine {
        let generation = setup.saved.generation.wrapping_add(1);
        let identity = Identity {
            id: setup.id,
            addr: setup.addr,
            generation,
            priority: setup.priority,
            name: clip_name(&setup.name),
        };
        let counter = CounterBlock {
            next: setup.saved.counter_limit,
            limit: setup.saved.counter_limit.saturating_add(CounterBlock::SIZE),
        };
        let saved = SavedState {
            counter_limit: counter.limit,
            generation,
        };
        let replicator = Replicator::new(
            setup.id,
            &identity.name,
            setup.replica,
            setup.entries,
            setup.meta,
            setup.wall_ms,
        );
        let mut engine = Engine {
            replicator,
            election: Election::new(setup.id, setup.election),
            messaging: Messaging::new(setup.id, generation, setup.config.messaging.clone()),
            clock: GroupClock::new(setup.id, ClockConfig::default()),
            rng: StdRng::seed_from_u64(setup.seed ^ 0x5eed_0fc0_5027),
            wall_base: (now, setup.wall_ms),
            membership: Membership::new(identity, &setup.config, setup.seed),
            config: setup.config,
            keyring: setup.keyring,
            counter,
            saved,
            windows: HashMap::new(),
            seeds: Vec::new(),
            timers: TimerQueue::default(),
            outputs: VecDeque::new(),
            stats: Stats::default(),
            reject_log: HashMap::new(),
        };
        engine.outputs.push_back(Output::Save(saved));
        engine
            .timers
            .push(now + engine.config.announce_period, Timer::Announce);
        engine.timers.push(now, Timer::Replica);
        engine.timers.push(now + HEARTBEAT, Timer::Heartbeat);
        engine.timers.push(now + CLOCK_PROBE, Timer::ClockProbe);
        engine.update_election_view();
        engine.flush(now);
        engine
    }

    /// This node's current identity.
    pub fn identity(&self) -> &Identity {
        self.membership.identity()
    }

    /// Every member once, this node included, sorted by id.
    pub fn members(&self) -> Vec<Member> {
        self.membership.members()
    }

    /// Traffic and rejection counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether [`Engine::leave`] was called.
    pub fn is_leaving(&self) -> bool {
        self.membership.is_leaving()
    }

    /// Handles a datagram received from `from`. Never panics, whatever the bytes.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += datagram.len() as u64;
        let opened = match wire::open(&self.keyring, datagram) {
            Ok(opened) => opened,
            Err(reason) => return self.reject(now, from, reason),
        };
        if opened.sender == self.identity().id {
            return; // our own datagram, looped back through a seed or multicast
        }
        if !self
            .windows
            .entry(opened.sender)
            .or_default()
            .accept(opened.counter)
        {
            return self.reject(now, from, RejectReason::Replay);
        }
        match opened.kind {
            FrameKind::Swim => {
                if let Err(foca::Error::Decode(_) | foca::Error::MalformedPacket) =
                    self.membership.handle_packet(&opened.payload)
                {
                    self.reject(now, from, RejectReason::Malformed);
                }
            }
            FrameKind::Control => match Control::decode(&opened.payload) {
                Ok(control) => self.handle_control(now, opened.sender, control),
                Err(_) => self.reject(now, from, RejectReason::Malformed),
            },
            FrameKind::Replica => {
                if !self.handle_replica(now, opened.sender, &opened.payload) {
                    self.reject(now, from, RejectReason::Malformed);
                }
            }
            FrameKind::Message => {
                if !self.handle_message(now, opened.sender, &opened.payload) {
                    self.reject(now, from, RejectReason::Malformed);
                }
            }
        }
        self.flush(now);
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.messaging_tick(now);
        self.flush(now);
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Swim(t) => self.membership.handle_timer(t),
                Timer::Announce => {
                    self.announce_to_seeds();
                    self.timers
                        .push(now + self.config.announce_period, Timer::Announce);
                }
                Timer::Heartbeat => {
                    self.heartbeat();
                    self.timers.push(now + HEARTBEAT, Timer::Heartbeat);
                }
                Timer::ClockProbe => {
                    self.probe_clocks(now);
                    self.timers.push(now + CLOCK_PROBE, Timer::ClockProbe);
                }
                Timer::Replica => {
                    if !self.is_leaving() {
                        self.replica_tick(now);
                        self.timers.push(now + REPLICA_TICK, Timer::Replica);
                    }
                }
            }
            self.flush(now);
        }
    }

    /// The next instant [`Engine::handle_timeout`] must be called at.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.timers.next_deadline(), self.messaging_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next thing the driver must do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Adds an address to join through (a static seed); announces to it now and again every
    /// [`Config::announce_period`] while no live member answers there.
    pub fn add_seed(&mut self, now: Instant, addr: SocketAddr) {
        self.remember_seed(now, addr, None);
    }

    /// Adds an address where node `id` was discovered (mDNS); announced to like a seed while
    /// that node is not a live member.
    pub fn add_discovered(&mut self, now: Instant, id: NodeId, addr: SocketAddr) {
        if id != self.identity().id {
            self.remember_seed(now, addr, Some(id));
        }
    }

    /// Stops announcing to an address (an mDNS record went away).
    pub fn remove_seed(&mut self, addr: SocketAddr) {
        self.seeds.retain(|(a, _)| *a != addr);
    }

    fn remember_seed(&mut self, now: Instant, addr: SocketAddr, id: Option<NodeId>) {
        match self.seeds.iter_mut().find(|(a, _)| *a == addr) {
            Some(seed) => seed.1 = id.or(seed.1),
            None => {
                if self.seeds.len() >= MAX_SEEDS {
                    self.seeds.remove(0);
                }
                self.seeds.push((addr, id));
            }
        }
        if self.should_announce(addr, id) {
            self.say_hello(addr);
            self.flush(now);
        }
    }

    fn should_announce(&self, addr: SocketAddr, id: Option<NodeId>) -> bool {
        !self.is_leaving()
            && addr != self.identity().addr
            && !self.membership.has_live_member_at(addr)
            && !id.is_some_and(|id| self.membership.is_live(id))
    }

    /// This node is now reachable at `addr`: take the next generation and tell the group.
    pub fn set_addr(&mut self, now: Instant, addr: SocketAddr) {
        if addr == self.identity().addr || self.is_leaving() {
            return;
        }
        self.membership.change_addr(addr);
        self.flush(now);
    }

    /// Leaves the group on purpose: every live member is told directly, then foca gossips it.
    pub fn leave(&mut self, now: Instant) {
        if self.is_leaving() {
            return;
        }
        let identity = self.identity().clone();
        let peers = self.membership.leave();
        let goodbye = Control::Leave { identity }.encode();
        // Twice, so that one lost datagram does not turn a leave into a `down`.
        for _ in 0..2 {
            for peer in &peers {
                self.transmit(peer.addr, FrameKind::Control, &goodbye);
            }
        }
        self.flush(now);
    }

    fn handle_control(&mut self, now: Instant, from: NodeId, control: Control) {
        match control {
            Control::Claim(claim) => self.handle_claim(from, claim),
            Control::Ack(ack) => self.handle_ack(from, ack),
            Control::Probe(probe) => self.handle_probe(now, from, probe),
            Control::ProbeReply(reply) => self.handle_probe_reply(now, from, reply),
            Control::Hello { identity } => self.membership.announce_to(identity),
            Control::Leave { identity } => self.membership.handle_leave(identity),
        }
    }

    fn say_hello(&mut self, addr: SocketAddr) {
        let hello = Control::Hello {
            identity: self.identity().clone(),
        };
        self.transmit(addr, FrameKind::Control, &hello.encode());
    }

    fn announce_to_seeds(&mut self) {
        let quiet: Vec<SocketAddr> = self
            .seeds
            .iter()
            .filter(|(addr, id)| self.should_announce(*addr, *id))
            .map(|(addr, _)| *addr)
            .collect();
        for addr in quiet {
            self.say_hello(addr);
        }
        let own = self.identity().addr;
        for addr in self.membership.down_addrs_to_greet(DOWN_GREETINGS) {
            if addr != own {
                self.say_hello(addr);
            }
        }
    }

    /// Moves what membership produced into outputs and timers.
    fn flush(&mut self, now: Instant) {
        while let Some((to, packet)) = self.membership.poll_send() {
            self.transmit(to.addr, FrameKind::Swim, &packet);
        }
        while let Some((after, timer)) = self.membership.poll_timer() {
            self.timers.push(now + after, Timer::Swim(timer));
        }
        let mut renewed = false;
        let mut view_changed = false;
        while let Some(event) = self.membership.poll_event() {
            view_changed = true;
            if let MemberEvent::Down(m) | MemberEvent::Left(m) = &event {
                self.clock.forget(m.id);
            }
            if let MemberEvent::SelfRenewed(identity) = &event {
                self.saved.generation = self.saved.generation.max(identity.generation);
                self.outputs.push_back(Output::Save(self.saved));
                renewed = true;
            }
            match &event {
                MemberEvent::Up(identity) => {
                    self.replicator.peer_up(now, identity.id);
                    self.messaging_peer_up(now, identity.id);
                }
                MemberEvent::Renamed { to, .. } => self.messaging_peer_up(now, to.id),
                MemberEvent::Down(m) => self.messaging_peer_gone(now, m.id, false),
                MemberEvent::Left(m) => self.messaging_peer_gone(now, m.id, true),
                MemberEvent::SelfRenewed(_) => {}
            }
            self.outputs.push_back(Output::Event(Event::Member(event)));
        }
        if renewed {
            self.hello_to_known();
        }
        if view_changed || self.is_leaving() {
            self.update_election_view();
        }
        self.run_election();
        self.replicator.flush();
        self.run_replica_actions();
        self.run_messaging_actions();
        // Sending may have produced more membership output (none today), and acting on the
        // replicator's actions never produces more actions: one pass is enough.
    }

    /// Live peers (alive or suspect), this node excluded.
    fn live_peers(&self) -> Vec<NodeId> {
        self.membership.live_ids()
    }

    /// Where a live peer receives datagrams.
    fn addr_of(&self, node: NodeId) -> Option<SocketAddr> {
        self.membership.live_addr(node)
    }

    /// Wall time at `now`, from the wall time at start and the monotonic clock since.
    fn wall_ms(&self, now: Instant) -> u64 {
        let (start, base) = self.wall_base;
        base + now.saturating_duration_since(start).as_millis() as u64
    }

    /// Says hello to every address of a known member and every seed.
    ///
    /// After this node takes a new identity, foca drops every packet still addressed to the old
    /// one, and it stops probing until a packet is accepted. If a peer renewed at the same moment
    /// (both told `TurnUndead`), each would address the other's old identity forever; the hello
    /// makes each peer announce to the new identity, which foca always accepts.
    fn hello_to_known(&mut self) {
        let own = self.identity().addr;
        let mut addrs: Vec<SocketAddr> = self.membership.known_addrs();
        addrs.extend(self.seeds.iter().map(|(addr, _)| *addr));
        addrs.sort_unstable();
        addrs.dedup();
        for addr in addrs.into_iter().filter(|a| *a != own) {
            self.say_hello(addr);
        }
    }

    fn transmit(&mut self, to: SocketAddr, kind: FrameKind, payload: &[u8]) {
        if payload.len() > wire::MAX_PAYLOAD {
            debug_assert!(false, "payload of {} bytes", payload.len());
            return;
        }
        if self.counter.next.saturating_add(CounterBlock::SIZE / 2) >= self.counter.limit {
            self.counter.limit = self.counter.limit.saturating_add(CounterBlock::SIZE);
            self.saved.counter_limit = self.counter.limit;
            self.outputs.push_back(Output::Save(self.saved));
        }
        let counter = self.counter.next;
        self.counter.next += 1;
        let datagram = wire::seal(
            self.keyring.primary(),
            self.identity().id,
            counter,
            kind,
            payload,
        );
        self.stats.datagrams_out += 1;
        self.stats.bytes_out += datagram.len() as u64;
        self.outputs.push_back(Output::Transmit { to, datagram });
    }

    fn reject(&mut self, now: Instant, from: SocketAddr, reason: RejectReason) {
        *self.stats.rejected.entry(reason).or_default() += 1;
        let interval = self.config.reject_log_interval;
        let entry = self.reject_log.entry(reason).or_insert((None, 0));
        if entry
            .0
            .is_none_or(|last| now.duration_since(last) >= interval)
        {
            let suppressed = entry.1;
            *entry = (Some(now), 0);
            self.outputs.push_back(Output::Event(Event::Rejected {
                from,
                reason,
                suppressed,
            }));
        } else {
            entry.1 += 1;
        }
    }
}
