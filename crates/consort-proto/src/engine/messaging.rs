//! The engine's side of messaging and services: the user-facing calls, frames in and out, and
//! membership and timer hooks.

use std::time::Instant;

use super::{Engine, Event, Output};
use crate::id::NodeId;
use crate::messaging::frame::Frame;
use crate::messaging::{
    valid_service_name, Action, CallError, CallId, CallOptions, MessageId, MessagingStats,
    SendError, SendOptions, ServeId, Target, View,
};
use crate::wire::{FrameKind, MAX_PAYLOAD};

/// Builds the [`View`] messaging needs from the engine's fields and runs `$body` with it.
///
/// A macro rather than a method so that the view borrows only the fields it reads, while
/// `self.messaging` is borrowed mutably.
macro_rules! with_view {
    ($engine:ident, $now:expr, |$messaging:ident, $view:ident| $body:expr) => {{
        let own = $engine.membership.identity().id;
        let live = $engine.membership.live_ids();
        let membership = &$engine.membership;
        let election = &$engine.election;
        let replicator = &$engine.replicator;
        let leaving = membership.is_leaving();
        let may_return = |node: NodeId| membership.is_down(node);
        let accepts = |from: NodeId, term| election.accept_leader_message(from, term);
        let providers = |service: &str| -> Vec<NodeId> {
            replicator
                .providers(service)
                .iter()
                .copied()
                .filter(|n| (*n == own && !leaving) || live.contains(n))
                .collect()
        };
        let $view = View {
            now: $now,
            leader: election.leader(),
            term: election.term(),
            is_leader: election.is_leader(),
            live: &live,
            may_return: &may_return,
            accepts: &accepts,
            providers: &providers,
        };
        let $messaging = &mut $engine.messaging;
        $body
    }};
}

impl Engine {
    /// Sends a message. Best-effort sends are done when this returns; a reliable one ends with
    /// an [`Output::SendDone`] carrying the returned id. Local deliveries (a leader's own
    /// broadcast, a message to itself) come out as [`Event::Message`] right away.
    pub fn send(
        &mut self,
        now: Instant,
        target: Target,
        body: Vec<u8>,
        options: SendOptions,
    ) -> Result<MessageId, SendError> {
        let result = with_view!(self, now, |messaging, view| messaging
            .send(&view, target, body, options));
        self.flush(now);
        result
    }

    /// Calls a service. The outcome arrives as [`Output::CallDone`] with the returned id.
    pub fn call(
        &mut self,
        now: Instant,
        service: &str,
        body: Vec<u8>,
        options: CallOptions,
    ) -> Result<CallId, CallError> {
        let result = with_view!(self, now, |messaging, view| messaging
            .call(&view, service, body, options));
        self.flush(now);
        result
    }

    /// Advertises `service` from this node; requests for it come out as [`Output::Serve`].
    /// Returns `false` if it was advertised already.
    pub fn serve(&mut self, now: Instant, service: &str) -> Result<bool, CallError> {
        if !valid_service_name(service) {
            return Err(CallError::InvalidService(service.to_string()));
        }
        let added = self.messaging.serve(service);
        if added {
            self.publish_services(now);
        }
        Ok(added)
    }

    /// Stops advertising `service`; requests already running still get their answers. Returns
    /// `false` if it was not advertised.
    pub fn unserve(&mut self, now: Instant, service: &str) -> bool {
        let removed = self.messaging.unserve(service);
        if removed {
            self.publish_services(now);
        }
        removed
    }

    fn publish_services(&mut self, now: Instant) {
        let wall = self.wall_ms(now);
        self.replicator
            .set_services(self.messaging.services(), wall);
        self.flush(now);
    }

    /// The services this node advertises.
    pub fn services(&self) -> Vec<String> {
        self.messaging.services()
    }

    /// The services node `node` advertises (from its replicated metadata).
    pub fn services_of(&self, node: NodeId) -> Vec<String> {
        self.replicator.services_of(node)
    }

    /// Live providers of `service`, this node included, by id.
    pub fn providers(&self, service: &str) -> Vec<NodeId> {
        let own = self.identity().id;
        let live = self.live_peers();
        self.replicator
            .providers(service)
            .iter()
            .copied()
            .filter(|n| (*n == own && !self.is_leaving()) || live.contains(n))
            .collect()
    }

    /// Answers request `id` (from [`Output::Serve`]): a reply body, or an error message.
    /// Returns `false` if no request with this id is waiting.
    pub fn respond(&mut self, now: Instant, id: ServeId, result: Result<Vec<u8>, String>) -> bool {
        let done = with_view!(self, now, |messaging, view| messaging
            .respond(&view, id, result));
        self.flush(now);
        done
    }

    /// Message and service counters.
    pub fn messaging_stats(&self) -> MessagingStats {
        self.messaging.stats()
    }

    /// Handles a messaging frame from `from`; `false` if it does not decode.
    pub(super) fn handle_message(&mut self, now: Instant, from: NodeId, body: &[u8]) -> bool {
        with_view!(self, now, |messaging, view| messaging
            .handle(&view, from, body))
    }

    /// Messaging's timers, if due.
    pub(super) fn messaging_tick(&mut self, now: Instant) {
        if self.messaging.poll_deadline().is_some_and(|at| at <= now) {
            with_view!(self, now, |messaging, view| messaging.tick(&view));
        }
    }

    /// A peer came up or returned.
    pub(super) fn messaging_peer_up(&mut self, now: Instant, peer: NodeId) {
        self.messaging.peer_up(now, peer);
    }

    /// A peer went down (`left`: for good, in this run).
    pub(super) fn messaging_peer_gone(&mut self, now: Instant, peer: NodeId, left: bool) {
        with_view!(self, now, |messaging, view| messaging
            .peer_gone(&view, peer, left));
    }

    /// Carries out what messaging asked for.
    pub(super) fn run_messaging_actions(&mut self) {
        while let Some(action) = self.messaging.poll_action() {
            match action {
                Action::Send(to, frame) => self.send_message_frame(to, &frame),
                Action::Deliver(message) => self
                    .outputs
                    .push_back(Output::Event(Event::Message(message))),
                Action::SendDone(id, result) => {
                    self.outputs.push_back(Output::SendDone { id, result })
                }
                Action::CallDone(id, result) => {
                    self.outputs.push_back(Output::CallDone { id, result })
                }
                Action::Serve(request) => self.outputs.push_back(Output::Serve(request)),
            }
        }
    }

    /// Sends a messaging frame to a live peer: in a datagram if it fits, else over a stream.
    fn send_message_frame(&mut self, to: NodeId, frame: &Frame) {
        let Some(addr) = self.addr_of(to) else {
            return; // not live: reliable messages are retried when it returns
        };
        let body = frame.encode();
        if body.len() <= MAX_PAYLOAD {
            self.transmit(addr, FrameKind::Message, &body);
        } else {
            let mut frame = Vec::with_capacity(body.len() + 1);
            frame.push(FrameKind::Message.to_nibble());
            frame.extend_from_slice(&body);
            self.outputs.push_back(Output::Stream { to, addr, frame });
        }
    }

    /// Messaging's next deadline.
    pub(super) fn messaging_deadline(&self) -> Option<Instant> {
        self.messaging.poll_deadline()
    }

    /// Whether `target` names a node that is not a member (for APIs that check early).
    pub fn is_member(&self, node: NodeId) -> bool {
        node == self.identity().id || self.membership.is_live(node) || self.membership.is_down(node)
    }
}
