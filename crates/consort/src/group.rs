//! The group as an application sees it: peers coming and going, leadership changes and messages,
//! as an ordered stream of [`GroupEvent`]s, and the [`PeerGroup`] trait of callbacks on top of it
//! (info-beamer p2plib's `PeerGroup`, in Rust).
//!
//! # Order
//!
//! A stream starts with the state at the moment of subscribing: a [`GroupEvent::PeerAdded`] for
//! each live peer, then this node's role ([`GroupEvent::PromotedLeader`] or
//! [`GroupEvent::PromotedFollower`]) if it has one. After that, each change comes once, in the
//! order the node saw it. For one change of leadership the order is: the end of the old role
//! (`DemotedLeader` or `DemotedFollower`), `LeaderChanged`, then the new role
//! (`PromotedLeader` or `PromotedFollower`). A peer is added once when it becomes live and
//! removed once when it goes down or leaves; a restart seen without a `down` in between is
//! neither.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use consort_proto::election::{ElectionEvent, Term};
use consort_proto::messaging::{Kind, Message, SendError, SendOptions, Target};
use consort_proto::{Event, Identity, MemberEvent, NodeId};
use tokio::sync::mpsc;

use crate::Node;

/// A peer as the group API shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Peer {
    /// Its node id.
    pub id: NodeId,
    /// Its name.
    pub name: String,
    /// Where it receives datagrams.
    pub addr: SocketAddr,
    /// Round-trip time, once measured.
    pub rtt: Option<Duration>,
    /// Its clock minus ours, in seconds (p2plib's `delta`), once measured.
    pub clock_offset: Option<f64>,
}

impl Peer {
    pub(crate) fn from_identity(identity: &Identity) -> Peer {
        Peer {
            id: identity.id,
            name: identity.name.clone(),
            addr: identity.addr,
            rtt: None,
            clock_offset: None,
        }
    }
}

/// Something that happened in the group, as this node saw it. See the module docs for the
/// order.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum GroupEvent {
    /// A peer became live (p2plib's `on_peer_added`).
    PeerAdded(Peer),
    /// A peer went down or left (p2plib's `on_peer_removed`).
    PeerRemoved(Peer),
    /// This node stopped leading (`demote_leader`).
    DemotedLeader,
    /// This node stopped following `leader` (`demote_follower`).
    DemotedFollower {
        /// The leader it followed.
        leader: NodeId,
    },
    /// The leader or its term changed.
    LeaderChanged {
        /// The new leader, if any.
        leader: Option<NodeId>,
        /// Its term.
        term: Term,
    },
    /// This node became leader (`promote_leader`).
    PromotedLeader,
    /// This node started following `leader` (`promote_follower`).
    PromotedFollower {
        /// The leader.
        leader: NodeId,
    },
    /// The leader's broadcast (`on_leader_message`); a leader receives its own.
    LeaderMessage(Message),
    /// Any other message to this node (`on_peer_message`).
    PeerMessage(Message),
}

/// Turns engine events into group events, keeping the set of live peers so that each peer is
/// added and removed once. Lives in the driver; every subscriber gets the same sequence.
#[derive(Debug, Default)]
pub(crate) struct Translator {
    peers: BTreeMap<NodeId, Peer>,
    subscribers: Vec<mpsc::UnboundedSender<GroupEvent>>,
}

impl Translator {
    /// A new subscriber, primed with the current peers, then `role` (the current leadership
    /// and this node's part in it).
    pub(crate) fn subscribe(&mut self, role: Vec<GroupEvent>) -> GroupEvents {
        let (tx, rx) = mpsc::unbounded_channel();
        for peer in self.peers.values() {
            let _ = tx.send(GroupEvent::PeerAdded(peer.clone()));
        }
        for event in role {
            let _ = tx.send(event);
        }
        self.subscribers.push(tx);
        GroupEvents { rx }
    }

    /// Feeds an engine event.
    pub(crate) fn handle(&mut self, event: &Event) {
        let out = match event {
            Event::Member(MemberEvent::Up(identity)) => {
                if self.peers.contains_key(&identity.id) {
                    return;
                }
                let peer = Peer::from_identity(identity);
                self.peers.insert(identity.id, peer.clone());
                GroupEvent::PeerAdded(peer)
            }
            Event::Member(MemberEvent::Renamed { to, .. }) => {
                if let Some(peer) = self.peers.get_mut(&to.id) {
                    *peer = Peer::from_identity(to);
                }
                return;
            }
            Event::Member(MemberEvent::Down(identity) | MemberEvent::Left(identity)) => {
                match self.peers.remove(&identity.id) {
                    Some(peer) => GroupEvent::PeerRemoved(peer),
                    None => return,
                }
            }
            Event::Election(e) => match *e {
                ElectionEvent::Demoted => GroupEvent::DemotedLeader,
                ElectionEvent::StoppedFollowing { leader } => {
                    GroupEvent::DemotedFollower { leader }
                }
                ElectionEvent::LeaderChanged { leader, term } => {
                    GroupEvent::LeaderChanged { leader, term }
                }
                ElectionEvent::Promoted => GroupEvent::PromotedLeader,
                ElectionEvent::BecameFollower { leader } => GroupEvent::PromotedFollower { leader },
                _ => return,
            },
            Event::Message(message) => match message.kind {
                Kind::Broadcast { .. } => GroupEvent::LeaderMessage(message.clone()),
                _ => GroupEvent::PeerMessage(message.clone()),
            },
            _ => return,
        };
        self.subscribers.retain(|tx| tx.send(out.clone()).is_ok());
    }
}

/// A node's group events, in order (see the module docs). Unbounded: consume promptly.
pub struct GroupEvents {
    rx: mpsc::UnboundedReceiver<GroupEvent>,
}

impl GroupEvents {
    /// The next event; `None` once the node has stopped.
    pub async fn next(&mut self) -> Option<GroupEvent> {
        self.rx.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_next(&mut self) -> Option<GroupEvent> {
        self.rx.try_recv().ok()
    }
}

/// What callbacks can see and do: the p2plib properties and the sends.
pub struct Group {
    node: Arc<Node>,
    leader: Option<NodeId>,
    is_leader: bool,
    is_follower: bool,
    peers: BTreeMap<NodeId, Peer>,
}

impl Group {
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.node.id()
    }

    /// Whether this node leads.
    pub fn is_leader(&self) -> bool {
        self.is_leader
    }

    /// Whether this node follows a leader.
    pub fn is_follower(&self) -> bool {
        self.is_follower
    }

    /// The leader, if there is one.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// Live peers, this node excluded.
    pub fn num_peers(&self) -> usize {
        self.peers.len()
    }

    /// Live peers with address, id, round-trip time and clock offset (as last measured).
    pub fn peers(&self) -> Vec<Peer> {
        self.peers.values().cloned().collect()
    }

    /// The node, for everything else (state, services).
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Broadcasts to every member, this node included, best-effort (p2plib's
    /// `broadcast_to_all`); only the leader may. Does not wait.
    pub fn broadcast_to_all(&self, body: impl Into<Vec<u8>>) -> Result<(), SendError> {
        if !self.is_leader {
            return Err(SendError::NotLeader);
        }
        self.node
            .send_now(Target::Broadcast, body.into(), SendOptions::default())
    }

    /// Sends to the leader, best-effort (p2plib's `send_to_leader`). Does not wait.
    pub fn send_to_leader(&self, body: impl Into<Vec<u8>>) -> Result<(), SendError> {
        if self.leader.is_none() {
            return Err(SendError::NoLeader);
        }
        self.node
            .send_now(Target::Leader, body.into(), SendOptions::default())
    }

    /// Sends to one node, best-effort. Does not wait.
    pub fn send_to(&self, node: NodeId, body: impl Into<Vec<u8>>) -> Result<(), SendError> {
        self.node
            .send_now(Target::Node(node), body.into(), SendOptions::default())
    }

    async fn refresh_peers(&mut self) {
        let Some(status) = self.node.status().await else {
            return;
        };
        for (id, estimate) in status.clocks {
            if let Some(peer) = self.peers.get_mut(&id) {
                peer.rtt = Some(Duration::from_micros(estimate.rtt_us));
                peer.clock_offset = Some(estimate.offset_us as f64 / 1e6);
            }
        }
    }

    fn apply(&mut self, event: &GroupEvent) {
        match event {
            GroupEvent::PeerAdded(peer) => {
                self.peers.insert(peer.id, peer.clone());
            }
            GroupEvent::PeerRemoved(peer) => {
                self.peers.remove(&peer.id);
            }
            GroupEvent::DemotedLeader => self.is_leader = false,
            GroupEvent::DemotedFollower { .. } => self.is_follower = false,
            GroupEvent::LeaderChanged { leader, .. } => self.leader = *leader,
            GroupEvent::PromotedLeader => self.is_leader = true,
            GroupEvent::PromotedFollower { .. } => self.is_follower = true,
            _ => {}
        }
    }
}

/// info-beamer p2plib's `PeerGroup` callbacks. Implement the ones you need and run the group
/// with [`run`]; every callback runs on one task, in the order of [`GroupEvent`]s, once per
/// change. The properties (`is_leader`, `is_follower`, `num_peers`, `peers`) are on the
/// [`Group`] each callback receives, already updated for the change being reported.
#[allow(unused_variables)]
pub trait PeerGroup: Send + 'static {
    /// Once, before any other callback.
    fn setup_peer(&mut self, group: &Group) {}
    /// This node became leader.
    fn promote_leader(&mut self, group: &Group) {}
    /// This node stopped leading.
    fn demote_leader(&mut self, group: &Group) {}
    /// This node started following `leader`.
    fn promote_follower(&mut self, group: &Group, leader: NodeId) {}
    /// This node stopped following `leader`.
    fn demote_follower(&mut self, group: &Group, leader: NodeId) {}
    /// A peer became live.
    fn on_peer_added(&mut self, group: &Group, peer: &Peer) {}
    /// A peer went down or left.
    fn on_peer_removed(&mut self, group: &Group, peer: &Peer) {}
    /// The leader's broadcast arrived (a leader gets its own).
    fn on_leader_message(&mut self, group: &Group, message: &Message) {}
    /// Another message arrived.
    fn on_peer_message(&mut self, group: &Group, message: &Message) {}
}

/// Runs `handler`'s callbacks for `node`'s group events until the node stops.
pub async fn run<G: PeerGroup>(node: Arc<Node>, mut handler: G) {
    let Some(mut events) = node.group_events().await else {
        return;
    };
    let mut group = Group {
        node,
        leader: None,
        is_leader: false,
        is_follower: false,
        peers: BTreeMap::new(),
    };
    handler.setup_peer(&group);
    while let Some(event) = events.next().await {
        group.apply(&event);
        if matches!(event, GroupEvent::PeerAdded(_)) {
            group.refresh_peers().await;
        }
        match &event {
            GroupEvent::PeerAdded(peer) => {
                let peer = group.peers.get(&peer.id).cloned().unwrap_or(peer.clone());
                handler.on_peer_added(&group, &peer);
            }
            GroupEvent::PeerRemoved(peer) => handler.on_peer_removed(&group, peer),
            GroupEvent::DemotedLeader => handler.demote_leader(&group),
            GroupEvent::DemotedFollower { leader } => handler.demote_follower(&group, *leader),
            GroupEvent::PromotedLeader => handler.promote_leader(&group),
            GroupEvent::PromotedFollower { leader } => handler.promote_follower(&group, *leader),
            GroupEvent::LeaderMessage(m) => handler.on_leader_message(&group, m),
            GroupEvent::PeerMessage(m) => handler.on_peer_message(&group, m),
            GroupEvent::LeaderChanged { .. } => {}
        }
    }
}
