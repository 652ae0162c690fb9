//! The driver: one task per node that moves datagrams, stream frames, time and commands into
//! the engine and carries out what comes out. It makes no protocol decision of its own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use consort_proto::election::ElectionEvent;
use consort_proto::messaging::{
    CallError, CallId, CallOptions, MessageId, Reply, SendError, SendOptions, Target,
};
use consort_proto::replica::{Commit, Entry, Key, Value, WriteError, WriteId, WriteOutcome};
use consort_proto::{Engine, Event, MemberEvent, Output};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::data_dir::DataDir;
use crate::discovery::{Discovery, Sighting};
use crate::group::{GroupEvent, GroupEvents, Translator};
use crate::net;
use crate::node::Status;
use crate::service::{IncomingRequest, Response};
use crate::storage::Storage;
use crate::stream::{Received, Streams};
use crate::telemetry::Recorder;
use crate::watch::ChangeLog;

/// Requests from [`crate::Node`] handles.
pub(crate) enum Command {
    Status(oneshot::Sender<Status>),
    AddSeed(SocketAddr),
    Leave(oneshot::Sender<()>),
    Write {
        key: Key,
        value: Option<Value>,
        queue: bool,
        reply: oneshot::Sender<Result<WriteOutcome, WriteError>>,
    },
    Get(Key, oneshot::Sender<Option<Entry>>),
    List(String, oneshot::Sender<Vec<Entry>>),
    Pulse(Key, Value, oneshot::Sender<Result<(), WriteError>>),
    /// A message; `reply` (if any) gets the outcome: at once for best-effort, once acked for
    /// reliable.
    Send {
        target: Target,
        body: Vec<u8>,
        options: SendOptions,
        reply: Option<oneshot::Sender<Result<(), SendError>>>,
    },
    Call {
        service: String,
        body: Vec<u8>,
        options: CallOptions,
        reply: oneshot::Sender<Result<Vec<Reply>, CallError>>,
    },
    Serve {
        service: String,
        requests: mpsc::Sender<IncomingRequest>,
        reply: oneshot::Sender<Result<(), CallError>>,
    },
    GroupEvents(oneshot::Sender<GroupEvents>),
}

/// Most datagrams or frames taken in one turn before the outputs are carried out.
const BATCH: usize = 256;

/// How often a wildcard-bound node checks whether its address changed.
const ADDR_CHECK: Duration = Duration::from_secs(1);

/// Everything a driver needs besides the engine.
pub(crate) struct Parts {
    pub(crate) socket: UdpSocket,
    pub(crate) bound: SocketAddr,
    pub(crate) seeds: Vec<SocketAddr>,
    pub(crate) data_dir: Arc<DataDir>,
    pub(crate) storage: Arc<Storage>,
    pub(crate) streams: Streams,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) changes: Arc<Mutex<ChangeLog>>,
    pub(crate) discovery: Option<Discovery>,
    /// Where handlers send their answers (handed to each [`IncomingRequest`]).
    pub(crate) responses: mpsc::UnboundedSender<Response>,
}

pub(crate) struct Driver {
    engine: Engine,
    parts: Parts,
    /// Addresses found over mDNS, by instance name, so a removal can be undone.
    discovered: HashMap<String, Vec<SocketAddr>>,
    /// Local writes waiting for their outcome.
    waiters: HashMap<WriteId, oneshot::Sender<Result<WriteOutcome, WriteError>>>,
    /// Reliable sends waiting for their acks.
    sends: HashMap<MessageId, oneshot::Sender<Result<(), SendError>>>,
    /// Calls waiting for their replies.
    calls: HashMap<CallId, oneshot::Sender<Result<Vec<Reply>, CallError>>>,
    /// Where requests for each service served here go.
    handlers: HashMap<String, mpsc::Sender<IncomingRequest>>,
    translator: Translator,
    /// Counters for monitoring, from the events carried out.
    recorder: Recorder,
}

/// Channels the driver listens on.
pub(crate) struct Inputs {
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) sightings: mpsc::Receiver<Sighting>,
    pub(crate) frames: mpsc::Receiver<Received>,
    pub(crate) responses: mpsc::UnboundedReceiver<Response>,
    pub(crate) unserves: mpsc::UnboundedReceiver<String>,
}

impl Driver {
    pub(crate) fn new(engine: Engine, parts: Parts) -> Driver {
        Driver {
            engine,
            parts,
            discovered: HashMap::new(),
            waiters: HashMap::new(),
            sends: HashMap::new(),
            calls: HashMap::new(),
            handlers: HashMap::new(),
            translator: Translator::default(),
            recorder: Recorder::default(),
        }
    }

    pub(crate) async fn run(mut self, mut inputs: Inputs) {
        let mut buf = vec![0u8; 2048];
        let mut addr_check = tokio::time::interval(ADDR_CHECK);
        let watch_addr = self.parts.bound.ip().is_unspecified();
        loop {
            if !self.drain().await {
                break;
            }
            let deadline = self.engine.poll_timeout();
            tokio::select! {
                received = self.parts.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => {
                        self.engine.handle_datagram(Instant::now(), from, &buf[..len]);
                        self.take_waiting_datagrams(&mut buf);
                    }
                    Err(e) => tracing::debug!("receive failed: {e}"),
                },
                () = sleep_until(deadline) => self.engine.handle_timeout(Instant::now()),
                command = inputs.commands.recv() => {
                    let Some(command) = command else {
                        self.leave().await;
                        break;
                    };
                    if !self.handle_command(command).await {
                        break;
                    }
                    // Take every command already queued before draining: one group commit.
                    while let Ok(command) = inputs.commands.try_recv() {
                        if !self.handle_command(command).await {
                            return self.stop();
                        }
                    }
                }
                Some(frame) = inputs.frames.recv() => {
                    self.engine.handle_stream(Instant::now(), frame.from, &frame.payload);
                    for _ in 0..BATCH {
                        let Ok(frame) = inputs.frames.try_recv() else { break };
                        self.engine.handle_stream(Instant::now(), frame.from, &frame.payload);
                    }
                }
                Some(sighting) = inputs.sightings.recv() => self.handle_sighting(sighting),
                Some((id, result)) = inputs.responses.recv() => {
                    self.engine.respond(Instant::now(), id, result);
                    while let Ok((id, result)) = inputs.responses.try_recv() {
                        self.engine.respond(Instant::now(), id, result);
                    }
                }
                Some(service) = inputs.unserves.recv() => self.unserve(&service),
                _ = addr_check.tick(), if watch_addr => self.check_addr(),
            }
        }
        self.stop();
    }

    /// Feeds the datagrams already queued in the socket, so that what they change is made
    /// durable in one group commit instead of one fsync each.
    fn take_waiting_datagrams(&mut self, buf: &mut [u8]) {
        for _ in 0..BATCH {
            match self.parts.socket.try_recv_from(buf) {
                Ok((len, from)) => self
                    .engine
                    .handle_datagram(Instant::now(), from, &buf[..len]),
                Err(_) => break,
            }
        }
    }

    fn stop(&mut self) {
        drop(self.parts.discovery.take());
    }

    /// Handles one command; returns false if the node stops.
    async fn handle_command(&mut self, command: Command) -> bool {
        let now = Instant::now();
        match command {
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::AddSeed(addr) => self.engine.add_seed(now, addr),
            Command::Leave(reply) => {
                self.leave().await;
                let _ = reply.send(());
                return false;
            }
            Command::Write {
                key,
                value,
                queue,
                reply,
            } => match self.engine.write(now, key, value, queue) {
                Ok(id) => {
                    self.waiters.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::Get(key, reply) => {
                let entry = self.engine.get(&key).filter(|e| !e.is_tombstone()).cloned();
                let _ = reply.send(entry);
            }
            Command::List(prefix, reply) => {
                let entries = self
                    .engine
                    .list(&prefix)
                    .filter(|e| !e.is_tombstone())
                    .cloned()
                    .collect();
                let _ = reply.send(entries);
            }
            Command::Pulse(key, value, reply) => {
                let _ = reply.send(self.engine.pulse(now, key, value));
            }
            Command::Send {
                target,
                body,
                options,
                reply,
            } => match self.engine.send(now, target, body, options) {
                Ok(id) if options.reliable => {
                    if let Some(reply) = reply {
                        self.sends.insert(id, reply);
                    }
                }
                result => {
                    if let Some(reply) = reply {
                        let _ = reply.send(result.map(|_| ()));
                    }
                }
            },
            Command::Call {
                service,
                body,
                options,
                reply,
            } => match self.engine.call(now, &service, body, options) {
                Ok(id) => {
                    self.calls.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::Serve {
                service,
                requests,
                reply,
            } => {
                let result = self.engine.serve(now, &service).map(|_| ());
                if result.is_ok() {
                    self.handlers.insert(service, requests);
                }
                let _ = reply.send(result);
            }
            Command::GroupEvents(reply) => {
                let _ = reply.send(self.translator.subscribe(self.role_events()));
            }
        }
        true
    }

    /// The current leadership and this node's part in it, as events (for a new subscriber).
    fn role_events(&self) -> Vec<GroupEvent> {
        let Some(leader) = self.engine.leader() else {
            return Vec::new();
        };
        let term = self.engine.term();
        let mut events = vec![GroupEvent::LeaderChanged {
            leader: Some(leader),
            term,
        }];
        if self.engine.is_leader() {
            events.push(GroupEvent::PromotedLeader);
        } else if self.engine.is_follower() {
            events.push(GroupEvent::PromotedFollower { leader });
        }
        events
    }

    /// A [`crate::Service`] handle was dropped: stop advertising, unless a newer handle took
    /// the name over.
    fn unserve(&mut self, service: &str) {
        if self.handlers.get(service).is_some_and(|tx| tx.is_closed()) {
            self.handlers.remove(service);
            self.engine.unserve(Instant::now(), service);
        }
    }

    /// Hands a request to its service's handler, or answers it with an error.
    fn dispatch(&mut self, request: consort_proto::messaging::Request) {
        let Some(handler) = self.handlers.get(&request.service) else {
            let error = format!("no handler for service {:?} on this node", request.service);
            self.engine.respond(Instant::now(), request.id, Err(error));
            return;
        };
        let id = request.id;
        let incoming = IncomingRequest::new(request, self.parts.responses.clone());
        if let Err(e) = handler.try_send(incoming) {
            // The handler is gone or swamped; dropping `incoming` answers with an error.
            tracing::debug!(request = id, "request not handed to its handler: {e}");
        }
    }

    fn check_addr(&mut self) {
        let addr = net::advertised_addr(self.parts.bound, &self.parts.seeds);
        if let Some(addr) = addr.filter(|a| *a != self.engine.identity().addr) {
            tracing::info!("address changed to {addr}");
            self.engine.set_addr(Instant::now(), addr);
        }
    }

    fn status(&self) -> Status {
        // One pass over the store for both counts (status is asked for on every API poll).
        let (stored, tombstones) = self.engine.list("").fold((0, 0), |(n, t), e| {
            (n + 1, t + usize::from(e.is_tombstone()))
        });
        Status {
            identity: self.engine.identity().clone(),
            members: self.engine.members(),
            stats: self.engine.stats().clone(),
            entries: stored - tombstones,
            bootstrapping: self.engine.is_bootstrapping(),
            leader: self.engine.leader(),
            term: self.engine.term(),
            clocks: self
                .engine
                .members()
                .iter()
                .filter_map(|m| {
                    let id = m.identity.id;
                    self.engine.clock_estimate(id).map(|e| (id, e))
                })
                .collect(),
            group_time_us: self.engine.group_time_us(Instant::now()),
            services: self
                .engine
                .members()
                .iter()
                .map(|m| (m.identity.id, self.engine.services_of(m.identity.id)))
                .filter(|(_, services)| !services.is_empty())
                .collect(),
            messaging: self.engine.messaging_stats(),
            telemetry: {
                let mut telemetry = self.recorder.telemetry.clone();
                telemetry.tombstones = tombstones;
                (
                    telemetry.anti_entropy_started,
                    telemetry.anti_entropy_completed,
                ) = self.engine.anti_entropy_rounds();
                telemetry
            },
        }
    }

    async fn leave(&mut self) {
        self.engine.leave(Instant::now());
        self.drain().await;
    }

    fn handle_sighting(&mut self, sighting: Sighting) {
        let now = Instant::now();
        match sighting {
            Sighting::Found { id, addrs } => {
                for addr in &addrs {
                    self.engine.add_discovered(now, id, *addr);
                }
                self.discovered.insert(id.to_string(), addrs);
            }
            Sighting::Gone { instance } => {
                for addr in self.discovered.remove(&instance).unwrap_or_default() {
                    self.engine.remove_seed(addr);
                }
            }
        }
    }

    /// Carries out every pending output in order; commits are grouped into one transaction per
    /// pass. Returns false if the node must stop.
    async fn drain(&mut self) -> bool {
        loop {
            let mut commits = Vec::new();
            while let Some(output) = self.engine.poll_output() {
                if !self.carry_out(output, &mut commits).await {
                    return false;
                }
            }
            self.recorder.end_pass();
            if commits.is_empty() {
                return true;
            }
            let commit = merge(commits);
            let writes = commit.writes.clone();
            let storage = self.parts.storage.clone();
            match tokio::task::spawn_blocking(move || storage.apply(&commit)).await {
                Ok(Ok(())) => self.engine.committed(Instant::now(), &writes),
                Ok(Err(e)) => {
                    tracing::error!("cannot store the state, stopping: {e}");
                    return false;
                }
                Err(e) => {
                    tracing::error!("storage task failed, stopping: {e}");
                    return false;
                }
            }
        }
    }

    async fn carry_out(&mut self, output: Output, commits: &mut Vec<Commit>) -> bool {
        match output {
            Output::Transmit { to, datagram } => {
                if let Err(e) = self.parts.socket.send_to(&datagram, to).await {
                    tracing::debug!("send to {to} failed: {e}");
                }
            }
            Output::Save(state) => {
                // Durable before any later datagram: a counter must never be reused.
                if let Err(e) = self.parts.data_dir.save_state(&state) {
                    tracing::error!("cannot save node state, stopping: {e}");
                    return false;
                }
            }
            Output::Commit(commit) => commits.push(commit),
            Output::WriteDone { id, result } => {
                if let Some(waiter) = self.waiters.remove(&id) {
                    let _ = waiter.send(result);
                }
            }
            Output::Stream { to, addr, frame } => self.parts.streams.send(to, addr, frame).await,
            Output::SendDone { id, result } => {
                if let Some(waiter) = self.sends.remove(&id) {
                    let _ = waiter.send(result);
                }
            }
            Output::CallDone { id, result } => {
                if let Some(waiter) = self.calls.remove(&id) {
                    let _ = waiter.send(result);
                }
            }
            Output::Serve(request) => self.dispatch(request),
            Output::Event(event) => {
                log_event(&event);
                let engine = &self.engine;
                self.recorder.event(
                    &event,
                    engine.identity().id,
                    engine.is_bootstrapping(),
                    |peer| engine.clock_estimate(peer).map(|e| e.offset_us),
                );
                self.translator.handle(&event);
                if let Event::Changed(change) = &event {
                    self.parts
                        .changes
                        .lock()
                        .expect("change log lock")
                        .record(change.clone());
                }
                if let Event::Member(MemberEvent::Down(m) | MemberEvent::Left(m)) = &event {
                    self.parts.streams.forget(m.id);
                }
                let _ = self.parts.events.send(event);
            }
            _ => {}
        }
        true
    }
}

/// Several commits of one pass as one: entries, removals and writes concatenated, the newest
/// metadata kept.
fn merge(commits: Vec<Commit>) -> Commit {
    let mut all = Commit::default();
    for c in commits {
        all.entries.extend(c.entries);
        all.removed.extend(c.removed);
        all.writes.extend(c.writes);
        all.meta = c.meta;
    }
    all
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn log_event(event: &Event) {
    match event {
        Event::Member(MemberEvent::Up(m)) => {
            tracing::info!(peer = %m.id, addr = %m.addr, name = %m.name, "peer up")
        }
        Event::Member(MemberEvent::Down(m)) => tracing::warn!(peer = %m.id, "peer down"),
        Event::Member(MemberEvent::Left(m)) => tracing::info!(peer = %m.id, "peer left"),
        Event::Member(MemberEvent::Renamed { from, to }) => {
            tracing::info!(peer = %to.id, from = %from.addr, to = %to.addr, "peer renewed")
        }
        Event::Member(MemberEvent::SelfRenewed(me)) => {
            tracing::info!(addr = %me.addr, generation = me.generation, "identity renewed")
        }
        Event::Rejected {
            from,
            reason,
            suppressed,
        } => tracing::warn!(%from, %reason, suppressed, "datagram rejected"),
        Event::Election(e @ ElectionEvent::LeaderChanged { .. }) => {
            tracing::info!(event = ?e, "election")
        }
        Event::Election(e) => tracing::debug!(event = ?e, "election"),
        Event::Bootstrap(p) => tracing::info!(
            from = %p.from, received = p.received, total = p.total, done = p.done,
            "bootstrap progress"
        ),
        _ => {}
    }
}
