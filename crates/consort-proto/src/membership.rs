//! Membership: who is in the group and whether they are alive, through foca's SWIM.
//!
//! foca decides alive, suspect and down. Around it this module adds what foca lacks: a graceful
//! `left` state (a node that says goodbye is not a failure), a view that lists every member once by
//! node id whatever its generation, and events named in Consort's terms.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use foca::{AccumulatingRuntime, Codec, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::id::{Identity, NodeId};

type Swim = Foca<Identity, PostcardCodec, StdRng, NoCustomBroadcast>;

/// The incarnation a goodbye's `down` is gossiped with, so every peer can tell it from a failure.
/// A real incarnation never gets there: foca makes a node rejoin under a new identity first.
const LEFT_INCARNATION: foca::Incarnation = foca::Incarnation::MAX;

/// A member's liveness as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed a probe; declared down unless it refutes in time.
    Suspect,
    /// Failed: stopped answering without saying goodbye.
    Down,
    /// Stopped on purpose.
    Left,
}

impl MemberState {
    /// The lowercase name used in APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Down => "down",
            MemberState::Left => "left",
        }
    }

    /// Alive or suspect: still counted as part of the group.
    pub fn is_live(self) -> bool {
        matches!(self, MemberState::Alive | MemberState::Suspect)
    }
}

/// One entry of the membership view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member's current identity.
    pub identity: Identity,
    /// Its state.
    pub state: MemberState,
    /// Whether this entry is the local node.
    pub is_self: bool,
}

/// A change in the membership view.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberEvent {
    /// A member became alive (joined, restarted, or recovered).
    Up(Identity),
    /// A member was declared down.
    Down(Identity),
    /// A member left gracefully.
    Left(Identity),
    /// A live member appeared with a newer identity (restart or address change).
    Renamed {
        /// The identity it had.
        from: Identity,
        /// The identity it has now.
        to: Identity,
    },
    /// This node took a new identity (address change, or rejoin after being declared down).
    SelfRenewed(Identity),
}

/// The membership state machine: foca plus the `left` overlay.
pub(crate) struct Membership {
    swim: Swim,
    runtime: AccumulatingRuntime<Identity>,
    /// Generation announced as leaving, per node.
    left: HashMap<NodeId, u32>,
    events: VecDeque<MemberEvent>,
    leaving: bool,
    /// Where [`Membership::down_addrs_to_greet`] resumes.
    greet_cursor: usize,
}

impl Membership {
    pub(crate) fn new(identity: Identity, config: &Config, seed: u64) -> Membership {
        Membership {
            swim: Foca::new(
                identity,
                config.foca(),
                StdRng::seed_from_u64(seed),
                PostcardCodec,
            ),
            runtime: AccumulatingRuntime::new(),
            left: HashMap::new(),
            events: VecDeque::new(),
            leaving: false,
            greet_cursor: 0,
        }
    }

    pub(crate) fn identity(&self) -> &Identity {
        self.swim.identity()
    }

    /// Feeds a SWIM packet. An error means the packet was not applied.
    pub(crate) fn handle_packet(&mut self, packet: &[u8]) -> Result<(), foca::Error> {
        self.note_leaves(packet);
        let result = self.swim.handle_data(packet, &mut self.runtime);
        self.collect_notifications();
        result
    }

    pub(crate) fn handle_timer(&mut self, timer: foca::Timer<Identity>) {
        // A timer error only means the timer was stale; foca has already ignored it.
        let _ = self.swim.handle_timer(timer, &mut self.runtime);
        self.collect_notifications();
    }

    /// Asks `identity` (learnt from its hello) to let us in; foca only accepts announces addressed
    /// to the receiver's own node id.
    pub(crate) fn announce_to(&mut self, identity: Identity) {
        if identity.id != self.identity().id && !self.leaving {
            let _ = self.swim.announce(identity, &mut self.runtime);
        }
    }

    /// Whether some live member is reachable at `addr`.
    pub(crate) fn has_live_member_at(&self, addr: SocketAddr) -> bool {
        self.swim.iter_members().any(|m| m.id().addr == addr)
    }

    /// Whether node `id` is a live member (alive or suspect).
    pub(crate) fn is_live(&self, id: NodeId) -> bool {
        self.swim.iter_members().any(|m| m.id().id == id)
    }

    /// Whether node `id` is a member that is down but may return (not one that left).
    pub(crate) fn is_down(&self, id: NodeId) -> bool {
        self.swim
            .iter_membership_state()
            .any(|m| m.id().id == id && m.state() == foca::State::Down && !self.has_left(m.id()))
    }

    /// Node ids of the live members (alive or suspect), this node excluded.
    pub(crate) fn live_ids(&self) -> Vec<NodeId> {
        self.swim.iter_members().map(|m| m.id().id).collect()
    }

    /// The address of live member `id`.
    pub(crate) fn live_addr(&self, id: NodeId) -> Option<SocketAddr> {
        self.swim
            .iter_members()
            .find(|m| m.id().id == id)
            .map(|m| m.id().addr)
    }

    /// Addresses of the live members (alive or suspect).
    pub(crate) fn known_addrs(&self) -> Vec<SocketAddr> {
        self.swim.iter_members().map(|m| m.id().addr).collect()
    }

    /// Up to `n` addresses of down members to say hello to, rotating through them call after
    /// call, but only while no member is live.
    ///
    /// foca announces to down members only while it has a live one, so a node cut off from
    /// everyone (say it moved while partitioned, and so did its seeds) would never rejoin: the
    /// others still greet its old address.
    pub(crate) fn down_addrs_to_greet(&mut self, n: usize) -> Vec<SocketAddr> {
        if self.leaving || self.swim.num_members() > 0 {
            return Vec::new();
        }
        let mut down: Vec<SocketAddr> = self
            .swim
            .iter_membership_state()
            .filter(|m| m.state() == foca::State::Down)
            .map(|m| m.id().addr)
            .collect();
        down.sort_unstable();
        down.dedup();
        if down.is_empty() {
            return down;
        }
        let start = self.greet_cursor % down.len();
        self.greet_cursor = start + n;
        let take = n.min(down.len());
        down.into_iter().cycle().skip(start).take(take).collect()
    }

    /// Takes a new identity at `addr` and tells the group.
    pub(crate) fn change_addr(&mut self, addr: SocketAddr) -> Identity {
        let next = self.identity().next_generation(addr);
        let _ = self.swim.change_identity(next.clone(), &mut self.runtime);
        self.collect_notifications();
        self.resume_probing();
        self.events
            .push_back(MemberEvent::SelfRenewed(next.clone()));
        next
    }

    /// Declares this node gone; returns the live members that should hear it directly.
    ///
    /// foca's own leave gossip ("I am down") is dropped: a peer could get it before the goodbye
    /// and report a `down`, and peers would relay it without the [`LEFT_INCARNATION`] mark.
    pub(crate) fn leave(&mut self) -> Vec<Identity> {
        let live: Vec<Identity> = self.swim.iter_members().map(|m| m.id().clone()).collect();
        self.leaving = true;
        let _ = self.swim.leave_cluster(&mut self.runtime);
        while self.runtime.to_send().is_some() {}
        self.collect_notifications();
        live
    }

    pub(crate) fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// Applies a member's goodbye: it is shown as `left`, and foca marks it down at once and
    /// gossips that, marked with [`LEFT_INCARNATION`], so peers that missed the goodbye show
    /// `left` too.
    pub(crate) fn handle_leave(&mut self, identity: Identity) {
        if !self.mark_left(&identity) {
            return;
        }
        let down = foca::Member::new(identity, LEFT_INCARNATION, foca::State::Down);
        let _ = self
            .swim
            .apply_many(std::iter::once(down), true, &mut self.runtime);
        // foca reports MemberDown, which `collect_notifications` turns into Left.
        self.collect_notifications();
    }

    /// Remembers that `identity` left; false if it is this node or already known.
    fn mark_left(&mut self, identity: &Identity) -> bool {
        let stale = self
            .left
            .get(&identity.id)
            .is_some_and(|&g| g >= identity.generation);
        if identity.id == self.identity().id || stale {
            return false;
        }
        self.left.insert(identity.id, identity.generation);
        true
    }

    /// Marks as left every member `packet` gossips as down with [`LEFT_INCARNATION`], before
    /// foca applies the packet, so that its `MemberDown` is reported as `Left`.
    fn note_leaves(&mut self, packet: &[u8]) {
        let mut buf = packet;
        let mut codec = PostcardCodec;
        let Ok(header) = Codec::<Identity>::decode_header(&mut codec, &mut buf) else {
            return;
        };
        if header.message == foca::Message::Broadcast || buf.len() < 2 {
            return;
        }
        let count = u16::from_be_bytes([buf[0], buf[1]]);
        buf = &buf[2..];
        for _ in 0..count {
            let Ok(member) = Codec::<Identity>::decode_member(&mut codec, &mut buf) else {
                return;
            };
            if member.state() == foca::State::Down && member.incarnation() == LEFT_INCARNATION {
                self.mark_left(member.id());
            }
        }
    }

    /// Every member once by node id (self included), with its latest identity.
    pub(crate) fn members(&self) -> Vec<Member> {
        let mut by_id: HashMap<NodeId, Member> = HashMap::new();
        for m in self.swim.iter_membership_state() {
            let identity = m.id().clone();
            let state = self.state_of(&identity, m.state());
            let entry = Member {
                identity,
                state,
                is_self: false,
            };
            match by_id.get(&entry.identity.id) {
                Some(existing) if existing.identity.generation >= entry.identity.generation => {}
                _ => {
                    by_id.insert(entry.identity.id, entry);
                }
            }
        }
        let me = self.identity().clone();
        by_id.insert(
            me.id,
            Member {
                identity: me,
                state: if self.leaving {
                    MemberState::Left
                } else {
                    MemberState::Alive
                },
                is_self: true,
            },
        );
        let mut members: Vec<Member> = by_id.into_values().collect();
        members.sort_by_key(|m| m.identity.id);
        members
    }

    fn state_of(&self, identity: &Identity, state: foca::State) -> MemberState {
        match state {
            foca::State::Alive => MemberState::Alive,
            foca::State::Suspect => MemberState::Suspect,
            foca::State::Down if self.has_left(identity) => MemberState::Left,
            foca::State::Down => MemberState::Down,
        }
    }

    fn has_left(&self, identity: &Identity) -> bool {
        self.left.get(&identity.id) == Some(&identity.generation)
    }

    /// Next SWIM packet to send.
    pub(crate) fn poll_send(&mut self) -> Option<(Identity, Bytes)> {
        while let Some((to, packet)) = self.runtime.to_send() {
            if !self.is_spurious_turn_undead(&to, &packet) {
                return Some((to, packet));
            }
        }
        None
    }

    /// Whether `packet` is a `TurnUndead` to a member this node holds as live.
    ///
    /// foca 2.0 sends `TurnUndead` when a suspicion times out even if the member refuted it in
    /// time (`ChangeSuspectToDown` ignores the failed incarnation check for that courtesy
    /// message). The healthy member would then rejoin under a new generation, resetting its probe
    /// cycle. A real `TurnUndead` goes to a member this node holds as down, so those still go.
    fn is_spurious_turn_undead(&self, to: &Identity, packet: &[u8]) -> bool {
        let mut buf = packet;
        let Ok(header) = Codec::<Identity>::decode_header(&mut PostcardCodec, &mut buf) else {
            return false;
        };
        header.message == foca::Message::TurnUndead
            && self.swim.iter_members().any(|m| m.id() == to)
    }

    /// Next timer foca wants, as a delay from now.
    pub(crate) fn poll_timer(&mut self) -> Option<(Duration, foca::Timer<Identity>)> {
        self.runtime.to_schedule()
    }

    pub(crate) fn poll_event(&mut self) -> Option<MemberEvent> {
        self.events.pop_front()
    }

    fn collect_notifications(&mut self) {
        let mut renewed = false;
        while let Some(n) = self.runtime.to_notify() {
            let event = match n {
                OwnedNotification::MemberUp(id) => MemberEvent::Up(id),
                OwnedNotification::MemberDown(id) if self.has_left(&id) => MemberEvent::Left(id),
                OwnedNotification::MemberDown(id) => MemberEvent::Down(id),
                OwnedNotification::Rename(from, to) => MemberEvent::Renamed { from, to },
                OwnedNotification::Rejoin(id) => {
                    renewed = true;
                    MemberEvent::SelfRenewed(id)
                }
                _ => continue,
            };
            self.events.push_back(event);
        }
        if renewed {
            self.resume_probing();
        }
    }

    /// Makes foca probe and gossip again after this node took a new identity.
    ///
    /// foca's `change_identity` leaves it disconnected, with its timers cancelled, until a packet
    /// for the new identity arrives; peers still address the old one, which foca drops, so under
    /// loss or a partition that may never happen. The cancelled timers include those that turn
    /// suspects into downs, and a suspect that answers probes stays suspect until it happens to
    /// refute, which may be never. So suspicions are dropped (each suspect is taken as alive at
    /// the next incarnation, here only): a member that is really gone fails its next probe and is
    /// suspected again, with a timer. Applying them also makes foca reconnect if any member is
    /// live.
    fn resume_probing(&mut self) {
        let forgiven: Vec<foca::Member<Identity>> = self
            .swim
            .iter_membership_state()
            .filter(|m| m.state() == foca::State::Suspect)
            .map(|m| {
                let incarnation = m.incarnation().saturating_add(1);
                foca::Member::new(m.id().clone(), incarnation, foca::State::Alive)
            })
            .collect();
        let _ = self
            .swim
            .apply_many(forgiven.into_iter(), false, &mut self.runtime);
        self.collect_notifications();
    }
}
