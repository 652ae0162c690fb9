//! The messaging state machine: reliable channels per peer, local deliveries, calls and
//! serving, driven by the engine.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::channel::{Received, RecvChannel, SendChannel};
use super::frame::Frame;
use super::rpc::Rpc;
use super::{
    valid_service_name, CallError, CallId, CallOptions, Kind, Message, MessageId, MessagingConfig,
    MessagingStats, Reply, Request, SendError, SendOptions, ServeId, ServiceError, Target,
};
use crate::election::Term;
use crate::id::NodeId;

/// Senders whose reliable sequences a node keeps.
const MAX_RECV_CHANNELS: usize = 4096;
/// How often retransmissions and deadlines are checked while anything is pending.
const TICK: Duration = Duration::from_millis(5);
/// How long acks wait to be combined with others.
const ACK_DELAY: Duration = Duration::from_millis(1);
/// What the engine must do for messaging.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send a frame to a peer (datagram or stream by size).
    Send(NodeId, Frame),
    /// Deliver a message to this node's users.
    Deliver(Message),
    /// A reliable send ended.
    SendDone(MessageId, Result<(), SendError>),
    /// A call ended.
    CallDone(CallId, Result<Vec<Reply>, CallError>),
    /// Run a request.
    Serve(Request),
}

/// What the engine knows that messaging needs, at the moment of a call.
pub(crate) struct View<'a> {
    pub(crate) now: Instant,
    pub(crate) leader: Option<NodeId>,
    pub(crate) term: Term,
    pub(crate) is_leader: bool,
    /// Live peers, this node excluded.
    pub(crate) live: &'a [NodeId],
    /// Whether a node that is not live now is a member that may return (down, not left).
    pub(crate) may_return: &'a dyn Fn(NodeId) -> bool,
    /// Whether a leader message from `from` at `term` is current.
    pub(crate) accepts: &'a dyn Fn(NodeId, Term) -> bool,
    /// Live providers of a service, this node included.
    pub(crate) providers: &'a dyn Fn(&str) -> Vec<NodeId>,
}

/// A reliable send waiting for its acks.
#[derive(Debug)]
struct PendingSend {
    remaining: usize,
    failed: Vec<NodeId>,
}

/// One node's messaging state machine.
pub(crate) struct Messaging {
    own: NodeId,
    epoch: u32,
    config: MessagingConfig,
    next_id: u64,
    out: HashMap<NodeId, SendChannel>,
    /// Which receiver each reliable send waits on, by message.
    sends: HashMap<MessageId, PendingSend>,
    inbound: HashMap<NodeId, RecvChannel>,
    acks_owed: BTreeSet<NodeId>,
    ack_at: Option<Instant>,
    tick_at: Option<Instant>,
    rpc: Rpc,
    actions: VecDeque<Action>,
    stats: MessagingStats,
    scratch: Vec<Frame>,
}

impl Messaging {
    /// `epoch` must grow with every run of the node (its first generation of the run).
    pub(crate) fn new(own: NodeId, epoch: u32, config: MessagingConfig) -> Messaging {
        Messaging {
            own,
            epoch,
            rpc: Rpc::new(own, epoch, config.max_remembered_requests),
            config,
            next_id: 1,
            out: HashMap::new(),
            sends: HashMap::new(),
            inbound: HashMap::new(),
            acks_owed: BTreeSet::new(),
            ack_at: None,
            tick_at: None,
            actions: VecDeque::new(),
            stats: MessagingStats::default(),
            scratch: Vec::new(),
        }
    }

    pub(crate) fn stats(&self) -> MessagingStats {
        let mut stats = self.stats.clone();
        stats.pending = self.out.values().map(|c| c.pending() as u64).sum();
        self.rpc.add_stats(&mut stats);
        stats
    }

    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Messaging::tick`] must run next.
    pub(crate) fn poll_deadline(&self) -> Option<Instant> {
        match (self.ack_at, self.tick_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn wake(&mut self, now: Instant) {
        if self.tick_at.is_none() {
            self.tick_at = Some(now + TICK);
        }
    }

    /// Sends a message; see [`Target`] and [`SendOptions`].
    pub(crate) fn send(
        &mut self,
        view: &View<'_>,
        target: Target,
        body: Vec<u8>,
        options: SendOptions,
    ) -> Result<MessageId, SendError> {
        if body.len() > self.config.max_message {
            return Err(SendError::TooLarge {
                size: body.len(),
                max: self.config.max_message,
            });
        }
        let (kind, local, peers): (Kind, bool, Vec<NodeId>) = match target {
            Target::Broadcast if view.is_leader => (
                Kind::Broadcast { term: view.term },
                true,
                view.live.to_vec(),
            ),
            Target::Broadcast => return Err(SendError::NotLeader),
            Target::Leader => match view.leader {
                None => return Err(SendError::NoLeader),
                Some(leader) if leader == self.own => (Kind::ToLeader, true, Vec::new()),
                Some(leader) => (Kind::ToLeader, false, vec![leader]),
            },
            Target::Node(node) if node == self.own => (Kind::Direct, true, Vec::new()),
            Target::Node(node) => {
                let reachable =
                    view.live.contains(&node) || (options.reliable && (view.may_return)(node));
                if !reachable {
                    return Err(SendError::UnknownNode(node));
                }
                (Kind::Direct, false, vec![node])
            }
            Target::All => (Kind::Publish, false, view.live.to_vec()),
        };
        let id = self.fresh_id();
        let class = usize::from(options.reliable);
        if options.reliable {
            if let Some(full) = peers.iter().find(|p| {
                self.out
                    .get(p)
                    .is_some_and(|c| c.pending() >= self.config.max_queued)
            }) {
                return Err(SendError::QueueFull(*full));
            }
            let deadline = view.now + options.timeout.unwrap_or(self.config.reliable_timeout);
            let body: Arc<[u8]> = body.as_slice().into();
            for &peer in &peers {
                let epoch = self.epoch;
                let channel = self
                    .out
                    .entry(peer)
                    .or_insert_with(|| SendChannel::new(epoch));
                channel.push(id, kind, body.clone(), deadline);
                self.transmit_channel(view.now, peer);
            }
            self.stats.sent[class] += peers.len() as u64;
            if peers.is_empty() {
                self.actions.push_back(Action::SendDone(id, Ok(())));
            } else {
                self.sends.insert(
                    id,
                    PendingSend {
                        remaining: peers.len(),
                        failed: Vec::new(),
                    },
                );
                self.wake(view.now);
            }
        } else {
            for &peer in &peers {
                let frame = Frame::Data {
                    kind,
                    seq: None,
                    body: body.clone(),
                };
                self.actions.push_back(Action::Send(peer, frame));
            }
            self.stats.sent[class] += peers.len() as u64;
        }
        if local {
            self.stats.sent[class] += 1;
            self.deliver(Message {
                from: self.own,
                kind,
                reliable: options.reliable,
                body,
            });
        }
        Ok(id)
    }

    fn transmit_channel(&mut self, now: Instant, peer: NodeId) {
        let Some(channel) = self.out.get_mut(&peer) else {
            return;
        };
        let mut frames = std::mem::take(&mut self.scratch);
        channel.transmit(now, &mut frames);
        for frame in frames.drain(..) {
            self.actions.push_back(Action::Send(peer, frame));
        }
        self.scratch = frames;
    }

    fn deliver(&mut self, message: Message) {
        self.stats.delivered[usize::from(message.reliable)] += 1;
        self.actions.push_back(Action::Deliver(message));
    }

    /// Delivers `message` unless it is a leader message from an outdated leadership.
    fn deliver_checked(&mut self, view: &View<'_>, message: Message) {
        if let Kind::Broadcast { term } = message.kind {
            if !(view.accepts)(message.from, term) {
                self.stats.stale += 1;
                return;
            }
        }
        self.deliver(message);
    }

    /// Handles a frame from a peer. Returns `false` if it does not decode.
    pub(crate) fn handle(&mut self, view: &View<'_>, from: NodeId, bytes: &[u8]) -> bool {
        let Ok(frame) = Frame::decode(bytes) else {
            return false;
        };
        match frame {
            Frame::Data {
                kind,
                seq: None,
                body,
            } => self.deliver_checked(
                view,
                Message {
                    from,
                    kind,
                    reliable: false,
                    body,
                },
            ),
            Frame::Data {
                kind,
                seq: Some(seq),
                body,
            } => {
                if !self.inbound.contains_key(&from) && self.inbound.len() >= MAX_RECV_CHANNELS {
                    return true; // dropped unacked; its sender retries
                }
                let channel = self
                    .inbound
                    .entry(from)
                    .or_insert_with(|| RecvChannel::new(seq));
                match channel.receive(seq, kind, body) {
                    Received::Stale => return true,
                    Received::Duplicate => {}
                    Received::Deliver(messages) => {
                        for (kind, body) in messages {
                            let message = Message {
                                from,
                                kind,
                                reliable: true,
                                body,
                            };
                            self.deliver_checked(view, message);
                        }
                    }
                }
                self.acks_owed.insert(from);
                if self.ack_at.is_none() {
                    self.ack_at = Some(view.now + ACK_DELAY);
                }
            }
            Frame::Ack { epoch, next, sack } => {
                if let Some(channel) = self.out.get_mut(&from) {
                    let done = channel.on_ack(view.now, epoch, next, &sack);
                    let mut frames = std::mem::take(&mut self.scratch);
                    channel.retransmit(view.now, &mut frames);
                    self.stats.retransmitted += frames.len() as u64;
                    for frame in frames.drain(..) {
                        self.actions.push_back(Action::Send(from, frame));
                    }
                    self.scratch = frames;
                    for id in done {
                        self.part_done(id, None);
                    }
                    self.transmit_channel(view.now, from);
                }
            }
            Frame::Request {
                id,
                service,
                ttl_ms,
                body,
            } => {
                let ttl = Duration::from_millis(u64::from(ttl_ms));
                self.rpc
                    .handle_request(view.now, from, id, service, ttl, body, &mut self.actions);
            }
            Frame::Accepted { id, epoch } => {
                self.rpc
                    .handle_accepted(view.now, from, id, epoch, &mut self.actions)
            }
            Frame::Run { id } => self.rpc.handle_run(view.now, from, id, &mut self.actions),
            Frame::Started { id } => self.rpc.handle_started(view.now, from, id),
            Frame::Reply { id, result } => {
                self.rpc
                    .handle_reply(view, from, id, result, &mut self.actions)
            }
        }
        true
    }

    /// One receiver of reliable send `id` is done with it: acked (`failed` none) or not.
    fn part_done(&mut self, id: MessageId, failed: Option<NodeId>) {
        let Some(pending) = self.sends.get_mut(&id) else {
            return;
        };
        pending.remaining -= 1;
        pending.failed.extend(failed);
        if pending.remaining == 0 {
            let pending = self.sends.remove(&id).expect("present");
            let result = if pending.failed.is_empty() {
                Ok(())
            } else {
                Err(SendError::Undelivered(pending.failed))
            };
            self.actions.push_back(Action::SendDone(id, result));
        }
    }

    /// Retransmissions, deadlines, delayed acks and call timers.
    pub(crate) fn tick(&mut self, view: &View<'_>) {
        let now = view.now;
        if self.ack_at.is_some_and(|at| at <= now) {
            self.ack_at = None;
            for peer in std::mem::take(&mut self.acks_owed) {
                if let Some(channel) = self.inbound.get(&peer) {
                    self.actions.push_back(Action::Send(peer, channel.ack()));
                }
            }
        }
        if self.tick_at.is_some_and(|at| at > now) {
            return;
        }
        self.tick_at = None;
        let peers: Vec<NodeId> = self.out.keys().copied().collect();
        let mut frames = std::mem::take(&mut self.scratch);
        for peer in peers {
            let channel = self.out.get_mut(&peer).expect("present");
            let expired = channel.expire(now);
            if view.live.contains(&peer) {
                let before = frames.len();
                channel.retransmit(now, &mut frames);
                self.stats.retransmitted += (frames.len() - before) as u64;
                channel.transmit(now, &mut frames);
                for frame in frames.drain(..) {
                    self.actions.push_back(Action::Send(peer, frame));
                }
            }
            self.stats.expired += expired.len() as u64;
            for id in expired {
                self.part_done(id, Some(peer));
            }
        }
        self.scratch = frames;
        self.rpc.tick(view, &mut self.actions);
        // An idle channel stays (its numbering must go on), but needs no ticks.
        if self.out.values().any(|c| !c.is_idle()) || self.rpc.is_busy() {
            self.tick_at = Some(now + TICK);
        }
    }

    /// A peer joined or returned: resend what it is missing now.
    pub(crate) fn peer_up(&mut self, now: Instant, peer: NodeId) {
        if let Some(channel) = self.out.get_mut(&peer) {
            channel.hurry(now);
            self.tick_at = Some(now);
        }
    }

    /// A peer is down (it may return) or left (it will not, in this run).
    pub(crate) fn peer_gone(&mut self, view: &View<'_>, peer: NodeId, left: bool) {
        if left {
            if let Some(mut channel) = self.out.remove(&peer) {
                for id in channel.abandon() {
                    self.part_done(id, Some(peer));
                }
            }
            self.inbound.remove(&peer);
            self.acks_owed.remove(&peer);
        }
        self.rpc.peer_gone(view, peer, &mut self.actions);
        self.wake(view.now);
    }

    /// Starts a call.
    pub(crate) fn call(
        &mut self,
        view: &View<'_>,
        service: &str,
        body: Vec<u8>,
        options: CallOptions,
    ) -> Result<CallId, CallError> {
        if !valid_service_name(service) {
            return Err(CallError::InvalidService(service.to_string()));
        }
        if body.len() > self.config.max_message {
            return Err(CallError::TooLarge {
                size: body.len(),
                max: self.config.max_message,
            });
        }
        let id = self.fresh_id();
        self.rpc
            .call(view, id, service, body, options, &mut self.actions);
        self.wake(view.now);
        Ok(id)
    }

    /// Advertises a service here (the engine publishes the list).
    pub(crate) fn serve(&mut self, service: &str) -> bool {
        self.rpc.serve(service)
    }

    /// Stops advertising a service.
    pub(crate) fn unserve(&mut self, service: &str) -> bool {
        self.rpc.unserve(service)
    }

    /// Services this node provides.
    pub(crate) fn services(&self) -> Vec<String> {
        self.rpc.services()
    }

    /// The answer to a request this node served; `false` if `id` is not waiting for one.
    pub(crate) fn respond(
        &mut self,
        view: &View<'_>,
        id: ServeId,
        result: Result<Vec<u8>, String>,
    ) -> bool {
        let result = match result {
            Ok(body) if body.len() > self.config.max_message => Err(ServiceError::Failed(format!(
                "reply of {} bytes is over the limit of {} bytes",
                body.len(),
                self.config.max_message
            ))),
            Ok(body) => Ok(body),
            Err(message) => Err(ServiceError::Failed(message)),
        };
        self.rpc.respond(view, id, result, &mut self.actions)
    }
}
