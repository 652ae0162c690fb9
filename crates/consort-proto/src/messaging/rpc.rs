//! Calls (the caller's side) and serving (the provider's side) of named services.
//!
//! A call runs in two phases, so that moving to another provider never runs a request twice:
//! the caller sends the request ([`Frame::Request`]) and the provider only keeps it and answers
//! [`Frame::Accepted`]; the caller then confirms with [`Frame::Run`], the provider runs it and
//! answers [`Frame::Started`], and later the reply. A caller moves on to the next provider only
//! while it holds no acceptance, that is, while no provider can have run the request; once one
//! accepted, a retry goes to that provider alone, which answers from what it remembers.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::frame::{Frame, RequestId};
use super::{
    Action, CallError, CallId, CallOptions, MessagingStats, Policy, Reply, Request, ServeId,
    ServiceError, View,
};
use crate::id::NodeId;

/// How long a provider has to accept a request before the call tries the next one.
///
/// Long enough that a live provider on a lossy link accepts (about ten tries), so that a call
/// practically never moves on from a provider that did receive the request.
const ACCEPT_TIMEOUT: Duration = Duration::from_millis(750);
/// First interval between tries of a request not yet accepted; doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(25);
const MAX_RETRY: Duration = Duration::from_millis(100);
/// Interval between reminders to a provider that runs the request (in case its reply was lost).
const POLL: Duration = Duration::from_millis(250);
/// How long a provider remembers a request beyond the caller's own deadline.
const REMEMBER_EXTRA: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Attempt {
    node: NodeId,
    started: Instant,
    /// The provider run that accepted the request, once it did.
    accepted: Option<u32>,
    /// Whether the provider said it runs the request.
    running: bool,
    retry_at: Instant,
    tries: u32,
    /// Set once this provider answered (calls to every provider keep the attempt).
    done: bool,
}

#[derive(Debug)]
struct Call {
    service: String,
    body: Arc<[u8]>,
    policy: Policy,
    deadline: Instant,
    request: RequestId,
    attempts: Vec<Attempt>,
    /// Providers given up on, for a call to one provider.
    tried: Vec<NodeId>,
    replies: Vec<Reply>,
    saw_provider: bool,
}

impl Call {
    fn fanout(&self) -> bool {
        self.policy == Policy::All
    }
}

/// Where a request being served came from.
#[derive(Debug)]
enum Origin {
    Remote(NodeId, RequestId),
    Local(CallId),
}

#[derive(Debug)]
enum Served {
    /// Accepted, waiting for the caller's [`Frame::Run`].
    Reserved {
        service: String,
        body: Vec<u8>,
    },
    Running,
    Done(Result<Vec<u8>, ServiceError>),
}

/// Calls made and requests served by one node.
pub(crate) struct Rpc {
    own: NodeId,
    epoch: u32,
    next_request: u64,
    next_serve: ServeId,
    calls: HashMap<CallId, Call>,
    by_request: HashMap<RequestId, CallId>,
    /// Round-robin position per service.
    turn: HashMap<String, u64>,
    services: BTreeSet<String>,
    remembered: HashMap<(NodeId, RequestId), Served>,
    forget: VecDeque<(Instant, (NodeId, RequestId))>,
    max_remembered: usize,
    running: HashMap<ServeId, Origin>,
    calls_ok: u64,
    calls_failed: u64,
    served: u64,
    deduplicated: u64,
}

impl Rpc {
    pub(crate) fn new(own: NodeId, epoch: u32, max_remembered: usize) -> Rpc {
        Rpc {
            own,
            epoch,
            next_request: 1,
            next_serve: 1,
            calls: HashMap::new(),
            by_request: HashMap::new(),
            turn: HashMap::new(),
            services: BTreeSet::new(),
            remembered: HashMap::new(),
            forget: VecDeque::new(),
            max_remembered,
            running: HashMap::new(),
            calls_ok: 0,
            calls_failed: 0,
            served: 0,
            deduplicated: 0,
        }
    }

    pub(crate) fn add_stats(&self, stats: &mut MessagingStats) {
        stats.calls = [self.calls_ok, self.calls_failed];
        stats.served = self.served;
        stats.deduplicated = self.deduplicated;
    }

    pub(crate) fn is_busy(&self) -> bool {
        !self.calls.is_empty()
    }

    pub(crate) fn serve(&mut self, service: &str) -> bool {
        self.services.insert(service.to_string())
    }

    pub(crate) fn unserve(&mut self, service: &str) -> bool {
        self.services.remove(service)
    }

    pub(crate) fn services(&self) -> Vec<String> {
        self.services.iter().cloned().collect()
    }

    // ---- the caller's side ----

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn call(
        &mut self,
        view: &View<'_>,
        id: CallId,
        service: &str,
        body: Vec<u8>,
        options: CallOptions,
        actions: &mut VecDeque<Action>,
    ) {
        let request = RequestId {
            epoch: self.epoch,
            n: self.next_request,
        };
        self.next_request += 1;
        self.by_request.insert(request, id);
        self.calls.insert(
            id,
            Call {
                service: service.to_string(),
                body: body.into(),
                policy: options.policy,
                deadline: view.now + options.timeout,
                request,
                attempts: Vec::new(),
                tried: Vec::new(),
                replies: Vec::new(),
                saw_provider: false,
            },
        );
        self.advance(view, id, actions);
    }

    /// The providers a call may use now, in the order to try them.
    fn candidates(&mut self, view: &View<'_>, call: CallId) -> Vec<NodeId> {
        let c = &self.calls[&call];
        let live = |n: NodeId| n == self.own || view.live.contains(&n);
        match c.policy {
            Policy::Node(node) => [node].into_iter().filter(|n| live(*n)).collect(),
            Policy::Leader => view.leader.into_iter().filter(|n| live(*n)).collect(),
            Policy::All => (view.providers)(&c.service),
            Policy::RoundRobin | Policy::LocalFirst => {
                let mut providers = (view.providers)(&c.service);
                if providers.is_empty() {
                    return providers;
                }
                providers.sort_unstable();
                let local_first = c.policy == Policy::LocalFirst && providers.contains(&self.own);
                if local_first {
                    providers.retain(|n| *n != self.own);
                }
                if !providers.is_empty() {
                    let turn = self.turn.entry(c.service.clone()).or_default();
                    let start = (*turn % providers.len() as u64) as usize;
                    providers.rotate_left(start);
                }
                if local_first {
                    providers.insert(0, self.own);
                }
                providers
            }
        }
    }

    /// Starts the next attempt(s) of a call that has none in progress, if it can.
    fn advance(&mut self, view: &View<'_>, id: CallId, actions: &mut VecDeque<Action>) {
        let candidates = self.candidates(view, id);
        let c = self.calls.get_mut(&id).expect("a call");
        if !candidates.is_empty() {
            c.saw_provider = true;
        }
        let picks: Vec<NodeId> = if c.fanout() {
            if !c.attempts.is_empty() {
                return;
            }
            candidates
        } else {
            if c.attempts.iter().any(|a| !a.done) {
                return;
            }
            let mut fresh: Vec<NodeId> = candidates
                .iter()
                .copied()
                .filter(|n| !c.tried.contains(n))
                .collect();
            if fresh.is_empty() && !candidates.is_empty() {
                // Every provider was tried: go round again. Safe, since each one runs a request
                // id at most once.
                c.tried.clear();
                fresh = candidates;
            }
            fresh.into_iter().take(1).collect()
        };
        if picks.is_empty() {
            return;
        }
        if matches!(c.policy, Policy::RoundRobin | Policy::LocalFirst) && c.tried.is_empty() {
            *self.turn.entry(c.service.clone()).or_default() += 1;
        }
        for node in picks {
            self.start_attempt(view, id, node, actions);
        }
    }

    fn start_attempt(
        &mut self,
        view: &View<'_>,
        id: CallId,
        node: NodeId,
        actions: &mut VecDeque<Action>,
    ) {
        let c = self.calls.get_mut(&id).expect("a call");
        let mut attempt = Attempt {
            node,
            started: view.now,
            accepted: None,
            running: false,
            retry_at: view.now + FIRST_RETRY,
            tries: 0,
            done: false,
        };
        if node == self.own {
            if !self.services.contains(&c.service) {
                attempt.done = true;
                c.attempts.push(attempt);
                c.tried.push(node);
                return self.provider_refused(view, id, node, ServiceError::NoSuchService, actions);
            }
            attempt.accepted = Some(self.epoch);
            attempt.running = true;
            let serve = self.next_serve;
            self.next_serve += 1;
            self.served += 1;
            self.running.insert(serve, Origin::Local(id));
            actions.push_back(Action::Serve(Request {
                id: serve,
                from: self.own,
                service: c.service.clone(),
                body: c.body.to_vec(),
            }));
            c.attempts.push(attempt);
            return;
        }
        let frame = request_frame(c.request, &c.service, &c.body, c.deadline, view.now);
        c.attempts.push(attempt);
        actions.push_back(Action::Send(node, frame));
    }

    /// A provider holds the request: confirm it at once.
    pub(crate) fn handle_accepted(
        &mut self,
        now: Instant,
        from: NodeId,
        request: RequestId,
        epoch: u32,
        actions: &mut VecDeque<Action>,
    ) {
        let Some(call) = self.by_request.get(&request) else {
            return;
        };
        let c = self.calls.get_mut(call).expect("indexed");
        if let Some(a) = c.attempts.iter_mut().find(|a| a.node == from && !a.done) {
            if a.accepted.is_none() {
                a.accepted = Some(epoch);
                a.tries = 0;
                a.retry_at = now + FIRST_RETRY;
                actions.push_back(Action::Send(from, Frame::Run { id: request }));
            }
        }
    }

    /// A provider runs the request: from now on only remind it now and then.
    pub(crate) fn handle_started(&mut self, now: Instant, from: NodeId, request: RequestId) {
        let Some(call) = self.by_request.get(&request) else {
            return;
        };
        let c = self.calls.get_mut(call).expect("indexed");
        if let Some(a) = c.attempts.iter_mut().find(|a| a.node == from && !a.done) {
            if a.accepted.is_some() && !a.running {
                a.running = true;
                a.retry_at = now + POLL;
            }
        }
    }

    pub(crate) fn handle_reply(
        &mut self,
        view: &View<'_>,
        from: NodeId,
        request: RequestId,
        result: Result<Vec<u8>, ServiceError>,
        actions: &mut VecDeque<Action>,
    ) {
        let Some(&id) = self.by_request.get(&request) else {
            return;
        };
        self.answered(view, id, from, result, actions);
    }

    /// A provider answered call `id`.
    fn answered(
        &mut self,
        view: &View<'_>,
        id: CallId,
        from: NodeId,
        result: Result<Vec<u8>, ServiceError>,
        actions: &mut VecDeque<Action>,
    ) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(a) = c.attempts.iter_mut().find(|a| a.node == from && !a.done) else {
            return;
        };
        a.done = true;
        let refused = matches!(
            result,
            Err(ServiceError::NoSuchService | ServiceError::Busy)
        );
        if c.fanout() {
            c.replies.push(Reply { from, result });
            if c.attempts.iter().all(|a| a.done) {
                self.finish(id, Ok(()), actions);
            }
        } else if refused {
            c.tried.push(from);
            let error = result.expect_err("refused");
            self.provider_refused(view, id, from, error, actions);
        } else if result == Err(ServiceError::Lost) {
            self.finish(id, Err(CallError::ProviderLost(from)), actions);
        } else {
            c.replies.push(Reply { from, result });
            self.finish(id, Ok(()), actions);
        }
    }

    /// A provider of a one-provider call did not take it (it does not serve, or is busy).
    fn provider_refused(
        &mut self,
        view: &View<'_>,
        id: CallId,
        _from: NodeId,
        _error: ServiceError,
        actions: &mut VecDeque<Action>,
    ) {
        let c = &self.calls[&id];
        if matches!(c.policy, Policy::Node(_) | Policy::Leader) {
            let service = c.service.clone();
            return self.finish(id, Err(CallError::NoProvider(service)), actions);
        }
        let untried = self
            .candidates(view, id)
            .into_iter()
            .any(|n| !self.calls[&id].tried.contains(&n));
        if untried {
            self.advance(view, id, actions);
        }
        // Otherwise wait for the directory to change (or the deadline): the call goes round
        // again at the next tick.
    }

    /// Ends a call: `Ok` with its replies, or the error.
    fn finish(
        &mut self,
        id: CallId,
        result: Result<(), CallError>,
        actions: &mut VecDeque<Action>,
    ) {
        let Some(c) = self.calls.remove(&id) else {
            return;
        };
        self.by_request.remove(&c.request);
        let result = result.map(|()| c.replies);
        if result.is_ok() {
            self.calls_ok += 1;
        } else {
            self.calls_failed += 1;
        }
        actions.push_back(Action::CallDone(id, result));
    }

    /// A peer went away: calls waiting on it move on, or fail if it had accepted.
    pub(crate) fn peer_gone(
        &mut self,
        view: &View<'_>,
        peer: NodeId,
        actions: &mut VecDeque<Action>,
    ) {
        let affected: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, c)| c.attempts.iter().any(|a| a.node == peer && !a.done))
            .map(|(id, _)| *id)
            .collect();
        for id in affected {
            let c = self.calls.get_mut(&id).expect("present");
            let fanout = c.fanout();
            let a = c
                .attempts
                .iter_mut()
                .find(|a| a.node == peer && !a.done)
                .expect("present");
            let accepted = a.accepted.is_some();
            if fanout {
                self.answered(view, id, peer, Err(ServiceError::Lost), actions);
            } else if accepted {
                self.finish(id, Err(CallError::ProviderLost(peer)), actions);
            } else {
                a.done = true;
                c.tried.push(peer);
                self.advance(view, id, actions);
            }
        }
    }

    /// Retries, failovers and deadlines.
    pub(crate) fn tick(&mut self, view: &View<'_>, actions: &mut VecDeque<Action>) {
        let now = view.now;
        self.forget_old(now);
        let ids: Vec<CallId> = self.calls.keys().copied().collect();
        for id in ids {
            let c = self.calls.get_mut(&id).expect("present");
            if now >= c.deadline {
                let pending = c.attempts.iter().find(|a| !a.done);
                let error = match pending {
                    _ if c.fanout() && c.saw_provider => None,
                    Some(a) if a.accepted.is_some() => Some(CallError::Timeout(a.node)),
                    _ if c.saw_provider => Some(CallError::NotAccepted(c.service.clone())),
                    _ => Some(CallError::NoProvider(c.service.clone())),
                };
                if error.is_none() {
                    for a in c.attempts.iter_mut().filter(|a| !a.done) {
                        a.done = true;
                        c.replies.push(Reply {
                            from: a.node,
                            result: Err(ServiceError::Timeout),
                        });
                    }
                }
                self.finish(id, error.map_or(Ok(()), Err), actions);
                continue;
            }
            let mut give_up = Vec::new();
            let fanout = c.fanout();
            let Call {
                attempts,
                request,
                service,
                body,
                deadline,
                ..
            } = c;
            for a in attempts
                .iter_mut()
                .filter(|a| !a.done && a.node != self.own)
            {
                if a.accepted.is_none() && now >= a.started + ACCEPT_TIMEOUT && !fanout {
                    give_up.push(a.node);
                    continue;
                }
                if now >= a.retry_at {
                    a.tries += 1;
                    let backoff = FIRST_RETRY
                        .saturating_mul(1 << a.tries.min(8))
                        .min(MAX_RETRY);
                    let (frame, wait) = match (a.accepted, a.running) {
                        (None, _) => (
                            request_frame(*request, service, body, *deadline, now),
                            backoff,
                        ),
                        (Some(_), false) => (Frame::Run { id: *request }, backoff),
                        (Some(_), true) => (Frame::Run { id: *request }, POLL),
                    };
                    a.retry_at = now + wait;
                    actions.push_back(Action::Send(a.node, frame));
                }
            }
            for node in give_up {
                if let Some(a) = c.attempts.iter_mut().find(|a| a.node == node && !a.done) {
                    a.done = true;
                }
                c.tried.push(node);
            }
            self.advance(view, id, actions);
        }
    }

    // ---- the provider's side ----

    /// A request arrived from `from`: keep it (not run yet) and say so, or answer from what is
    /// remembered of it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn handle_request(
        &mut self,
        now: Instant,
        from: NodeId,
        id: RequestId,
        service: String,
        ttl: Duration,
        body: Vec<u8>,
        actions: &mut VecDeque<Action>,
    ) {
        self.forget_old(now);
        let accepted = Frame::Accepted {
            id,
            epoch: self.epoch,
        };
        match self.remembered.get(&(from, id)) {
            Some(Served::Reserved { .. }) => {
                self.deduplicated += 1;
                return actions.push_back(Action::Send(from, accepted));
            }
            Some(Served::Running) => {
                self.deduplicated += 1;
                return actions.push_back(Action::Send(from, Frame::Started { id }));
            }
            Some(Served::Done(result)) => {
                self.deduplicated += 1;
                let frame = Frame::Reply {
                    id,
                    result: result.clone(),
                };
                return actions.push_back(Action::Send(from, frame));
            }
            None => {}
        }
        let refusal = if !super::valid_service_name(&service) || !self.services.contains(&service) {
            Some(ServiceError::NoSuchService)
        } else if self.remembered.len() >= self.max_remembered {
            Some(ServiceError::Busy)
        } else {
            None
        };
        if let Some(error) = refusal {
            let frame = Frame::Reply {
                id,
                result: Err(error),
            };
            return actions.push_back(Action::Send(from, frame));
        }
        self.remembered
            .insert((from, id), Served::Reserved { service, body });
        self.forget
            .push_back((now + ttl + REMEMBER_EXTRA, (from, id)));
        actions.push_back(Action::Send(from, accepted));
    }

    /// The caller confirmed request `id`: run it if it waits, else answer from what is
    /// remembered. A request not remembered (this run never accepted it, or forgot it) is
    /// answered [`ServiceError::Lost`]: it may have run before, so it must not run now.
    pub(crate) fn handle_run(
        &mut self,
        now: Instant,
        from: NodeId,
        id: RequestId,
        actions: &mut VecDeque<Action>,
    ) {
        self.forget_old(now);
        let entry = self.remembered.get_mut(&(from, id));
        match entry {
            Some(Served::Reserved { .. }) => {
                let Some(Served::Reserved { service, body }) =
                    std::mem::replace(entry.expect("present"), Served::Running).into()
                else {
                    unreachable!("matched above")
                };
                let serve = self.next_serve;
                self.next_serve += 1;
                self.served += 1;
                self.running.insert(serve, Origin::Remote(from, id));
                actions.push_back(Action::Send(from, Frame::Started { id }));
                actions.push_back(Action::Serve(Request {
                    id: serve,
                    from,
                    service,
                    body,
                }));
            }
            Some(Served::Running) => {
                self.deduplicated += 1;
                actions.push_back(Action::Send(from, Frame::Started { id }));
            }
            Some(Served::Done(result)) => {
                self.deduplicated += 1;
                let frame = Frame::Reply {
                    id,
                    result: result.clone(),
                };
                actions.push_back(Action::Send(from, frame));
            }
            None => {
                let frame = Frame::Reply {
                    id,
                    result: Err(ServiceError::Lost),
                };
                actions.push_back(Action::Send(from, frame));
            }
        }
    }

    /// The handler's answer to request `serve`.
    pub(crate) fn respond(
        &mut self,
        view: &View<'_>,
        serve: ServeId,
        result: Result<Vec<u8>, ServiceError>,
        actions: &mut VecDeque<Action>,
    ) -> bool {
        match self.running.remove(&serve) {
            None => false,
            Some(Origin::Local(call)) => {
                let own = self.own;
                self.answered(view, call, own, result, actions);
                true
            }
            Some(Origin::Remote(from, id)) => {
                if let Some(entry) = self.remembered.get_mut(&(from, id)) {
                    *entry = Served::Done(result.clone());
                }
                actions.push_back(Action::Send(from, Frame::Reply { id, result }));
                true
            }
        }
    }

    /// Forgets requests whose callers gave up long ago.
    ///
    /// The queue is in arrival order, and deadlines of later requests may be earlier (a shorter
    /// timeout); each entry is dropped when it reaches the front and is due.
    fn forget_old(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.forget.front() {
            if at > now {
                break;
            }
            self.forget.pop_front();
            self.remembered.remove(&key);
        }
    }
}

fn request_frame(
    id: RequestId,
    service: &str,
    body: &[u8],
    deadline: Instant,
    now: Instant,
) -> Frame {
    let ttl = deadline.saturating_duration_since(now).as_millis();
    Frame::Request {
        id,
        service: service.to_string(),
        ttl_ms: u32::try_from(ttl).unwrap_or(u32::MAX),
        body: body.to_vec(),
    }
}
