//! The engine's side of leader election and group time: heartbeats carrying claims, acks, clock
//! probes, and the view of live members the election is derived from.

use std::time::Instant;

use super::{Engine, Event};
use crate::clock::{Estimate, Probe, ProbeReply};
use crate::codec::Control;
use crate::election::{Ack, Claim, ElectionEvent, Term};
use crate::id::NodeId;
use crate::membership::MemberState;
use crate::wire::FrameKind;

impl Engine {
    /// The leader, as this node sees it.
    pub fn leader(&self) -> Option<NodeId> {
        self.election.leader()
    }

    /// The term of the current leadership (the last one when there is no leader).
    pub fn term(&self) -> Term {
        self.election.term()
    }

    /// Whether this node leads.
    pub fn is_leader(&self) -> bool {
        self.election.is_leader()
    }

    /// Whether this node follows a leader.
    pub fn is_follower(&self) -> bool {
        self.election.is_follower()
    }

    /// Round-trip time and clock offset to `peer`, once probes have answered.
    pub fn clock_estimate(&self, peer: NodeId) -> Option<Estimate> {
        self.clock.estimate(peer)
    }

    /// The group's time at `now`, in microseconds since the Unix epoch: the leader's clock as
    /// estimated here (this node's own clock until an estimate exists).
    pub fn group_time_us(&self, now: Instant) -> i64 {
        self.clock.group_time(self.wall_us(now))
    }

    /// Whether a message stamped by `from` with `term` comes from the current leadership.
    pub fn accepts_leader_message(&self, from: NodeId, term: Term) -> bool {
        self.election.accept_leader_message(from, term)
    }

    /// Wall time at `now` in microseconds.
    pub(super) fn wall_us(&self, now: Instant) -> i64 {
        let (start, base_ms) = self.wall_base;
        (base_ms as i64) * 1000 + now.saturating_duration_since(start).as_micros() as i64
    }

    /// Feeds the live view (this node included while it is not leaving) to the election.
    pub(super) fn update_election_view(&mut self) {
        let view: Vec<(NodeId, i32)> = self
            .membership
            .members()
            .into_iter()
            .filter(|m| m.state.is_live() || (m.is_self && m.state == MemberState::Alive))
            .map(|m| (m.identity.id, m.identity.priority))
            .collect();
        self.election.update_view(&view);
    }

    /// The heartbeat: the leader's periodic claim.
    pub(super) fn heartbeat(&mut self) {
        if let Some(claim) = self.election.tick() {
            self.claim_to_all(claim);
        }
    }

    /// Probes every live peer's clock.
    pub(super) fn probe_clocks(&mut self, now: Instant) {
        let wall = self.wall_us(now);
        for peer in self.live_peers() {
            let probe = self.clock.probe(peer, wall);
            self.send_control(peer, &Control::Probe(probe));
        }
    }

    pub(super) fn handle_claim(&mut self, from: NodeId, claim: Claim) {
        let ack: Ack = self.election.handle_claim(from, claim);
        self.send_control(from, &Control::Ack(ack));
    }

    pub(super) fn handle_ack(&mut self, from: NodeId, ack: Ack) {
        self.election.handle_ack(from, ack);
    }

    pub(super) fn handle_probe(&mut self, now: Instant, from: NodeId, probe: Probe) {
        let at = self.wall_us(now);
        self.send_control(from, &Control::ProbeReply(probe.reply(at, at)));
    }

    pub(super) fn handle_probe_reply(&mut self, now: Instant, from: NodeId, reply: ProbeReply) {
        let at = self.wall_us(now);
        // An unsolicited or inconsistent reply changes nothing.
        let _ = self.clock.handle_reply(now, from, &reply, at);
    }

    /// Sends the election's pending claim and turns its events into outputs.
    pub(super) fn run_election(&mut self) {
        if let Some(claim) = self.election.poll_claim() {
            self.claim_to_all(claim);
        }
        while let Some(event) = self.election.poll_event() {
            if let ElectionEvent::LeaderChanged { leader, .. } = event {
                self.clock.set_leader(leader);
            }
            self.outputs
                .push_back(super::Output::Event(Event::Election(event)));
        }
    }

    fn claim_to_all(&mut self, claim: Claim) {
        for peer in self.live_peers() {
            self.send_control(peer, &Control::Claim(claim));
        }
    }

    fn send_control(&mut self, to: NodeId, control: &Control) {
        if let Some(addr) = self.addr_of(to) {
            self.transmit(addr, FrameKind::Control, &control.encode());
        }
    }
}
