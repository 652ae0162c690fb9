//! The JSON bodies of the HTTP API, shared by the server (which builds them from the node's
//! [`consort::Status`]) and the client commands (which read them back to print tables).

use std::collections::BTreeMap;

use consort::{Member, MemberState, RejectReason, Stats, Status};
use serde::{Deserialize, Serialize};

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusBody {
    /// This node.
    pub node: NodeBody,
    /// The group name.
    pub group: String,
    /// The leader's id; none until elections exist.
    pub leader: Option<String>,
    /// The leadership term; 0 until elections exist.
    pub term: u64,
    /// Live (alive or suspect) members other than this node.
    pub peers: usize,
    /// Members by state, this node included.
    pub members: MemberCounts,
    /// Datagram traffic.
    pub datagrams: DatagramCounts,
}

/// The node answering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeBody {
    /// Node id, 16 hex digits.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The address peers reach it at.
    pub addr: String,
    /// Its identity generation (grows on restart and address change).
    pub generation: u32,
}

/// How many members are in each state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberCounts {
    /// Answering probes.
    pub alive: usize,
    /// Missed a probe.
    pub suspect: usize,
    /// Failed.
    pub down: usize,
    /// Left on purpose.
    pub left: usize,
}

/// Datagram counters since the node started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatagramCounts {
    /// Datagrams received, accepted or not.
    #[serde(rename = "in")]
    pub received: u64,
    /// Datagrams sent.
    #[serde(rename = "out")]
    pub sent: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Dropped datagrams, by every reason (zeros included).
    pub rejected: BTreeMap<String, u64>,
}

/// One entry of `GET /v1/peers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerBody {
    /// Node id, 16 hex digits.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Where it receives datagrams.
    pub addr: String,
    /// `alive`, `suspect`, `down` or `left`.
    pub state: String,
    /// Whether it leads the group (always false until elections exist).
    pub is_leader: bool,
    /// Round-trip time, once measured.
    pub rtt_ms: Option<f64>,
    /// Its clock minus ours, once measured.
    pub clock_offset_ms: Option<f64>,
    /// Services it provides.
    pub services: Vec<String>,
    /// Whether this entry is the node answering.
    pub is_self: bool,
    /// Its identity generation.
    pub generation: u32,
}

impl StatusBody {
    /// The status body for what the node reports.
    pub fn new(status: &Status, group: &str) -> StatusBody {
        let me = &status.identity;
        StatusBody {
            node: NodeBody {
                id: me.id.to_string(),
                name: me.name.clone(),
                addr: me.addr.to_string(),
                generation: me.generation,
            },
            group: group.to_string(),
            leader: None,
            term: 0,
            peers: status
                .members
                .iter()
                .filter(|m| !m.is_self && m.state.is_live())
                .count(),
            members: MemberCounts::new(&status.members),
            datagrams: DatagramCounts::new(&status.stats),
        }
    }
}

impl MemberCounts {
    /// Counts `members` by state.
    pub fn new(members: &[Member]) -> MemberCounts {
        let mut counts = MemberCounts::default();
        for member in members {
            match member.state {
                MemberState::Alive => counts.alive += 1,
                MemberState::Suspect => counts.suspect += 1,
                MemberState::Down => counts.down += 1,
                MemberState::Left => counts.left += 1,
                _ => {}
            }
        }
        counts
    }

    /// `(state, count)` pairs in a stable order.
    pub fn by_state(&self) -> [(&'static str, usize); 4] {
        [
            ("alive", self.alive),
            ("suspect", self.suspect),
            ("down", self.down),
            ("left", self.left),
        ]
    }
}

impl DatagramCounts {
    /// The counters in `stats`, with every rejection reason listed.
    pub fn new(stats: &Stats) -> DatagramCounts {
        DatagramCounts {
            received: stats.datagrams_in,
            sent: stats.datagrams_out,
            bytes_in: stats.bytes_in,
            bytes_out: stats.bytes_out,
            rejected: RejectReason::ALL
                .iter()
                .map(|r| (r.as_str().to_string(), stats.rejected(*r)))
                .collect(),
        }
    }

    /// All rejected datagrams, whatever the reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

impl PeerBody {
    /// The entry for one member.
    pub fn new(member: &Member) -> PeerBody {
        let who = &member.identity;
        PeerBody {
            id: who.id.to_string(),
            name: who.name.clone(),
            addr: who.addr.to_string(),
            state: member.state.as_str().to_string(),
            is_leader: false,
            rtt_ms: None,
            clock_offset_ms: None,
            services: Vec::new(),
            is_self: member.is_self,
            generation: who.generation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use consort::{Identity, NodeId};

    fn member(id: u64, state: MemberState, is_self: bool) -> Member {
        Member {
            identity: Identity {
                id: NodeId(id),
                addr: "127.0.0.1:7470".parse().unwrap(),
                generation: 1,
                priority: 0,
                name: format!("n{id}"),
            },
            state,
            is_self,
        }
    }

    fn status() -> Status {
        let members = vec![
            member(1, MemberState::Alive, true),
            member(2, MemberState::Alive, false),
            member(3, MemberState::Suspect, false),
            member(4, MemberState::Down, false),
            member(5, MemberState::Left, false),
        ];
        let mut stats = Stats::default();
        stats.rejected.insert(RejectReason::BadTag, 4);
        Status {
            identity: members[0].identity.clone(),
            members,
            stats,
        }
    }

    #[test]
    fn peers_counts_live_members_other_than_self() {
        let body = StatusBody::new(&status(), "home");
        assert_eq!(body.peers, 2);
        assert_eq!(body.members.by_state().map(|(_, n)| n), [2, 1, 1, 1]);
        assert_eq!(body.node.id, "0000000000000001");
    }

    #[test]
    fn status_json_has_the_contract_fields() {
        let json = serde_json::to_value(StatusBody::new(&status(), "home")).unwrap();
        assert!(json["leader"].is_null());
        assert_eq!(json["term"], 0);
        assert_eq!(json["datagrams"]["rejected"]["bad_tag"], 4);
        assert_eq!(json["datagrams"]["rejected"]["unknown_key"], 0);
        assert_eq!(json["datagrams"]["in"], 0);
    }

    #[test]
    fn peer_json_has_the_contract_fields() {
        let json =
            serde_json::to_value(PeerBody::new(&member(2, MemberState::Left, false))).unwrap();
        for key in [
            "id",
            "name",
            "addr",
            "state",
            "is_leader",
            "rtt_ms",
            "clock_offset_ms",
            "services",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        assert_eq!(json["state"], "left");
        assert!(json["rtt_ms"].is_null());
    }
}
