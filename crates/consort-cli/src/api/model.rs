//! The JSON bodies of the HTTP API, shared by the server (which builds them from the node's
//! [`consort::Status`] and entries) and the client commands (which read them back to print).

use std::collections::BTreeMap;

use consort::{Entry, Member, MemberState, NodeId, RejectReason, Stats, Status};
use consort_proto::replica::Version;
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
    /// Live entries held (tombstones not counted).
    pub entries: usize,
    /// Whether the node is still pulling its state from a peer.
    pub bootstrapping: bool,
    /// The group's time when the status was taken, in microseconds since the Unix epoch: the
    /// leader's clock as estimated here (this node's own clock until it has an estimate).
    pub group_time_us: i64,
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

/// `GET /v1/leader`: the leader's peer entry (null when there is none) and the term.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaderBody {
    /// The leader, as in `/v1/peers`; `null` when there is none (quorum lost, or waiting).
    pub leader: Option<PeerBody>,
    /// The term of the leadership.
    pub term: u64,
    /// Whether the answering node leads.
    pub is_self: bool,
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
            leader: status.leader.map(|id| id.to_string()),
            term: status.term,
            peers: status
                .members
                .iter()
                .filter(|m| !m.is_self && m.state.is_live())
                .count(),
            members: MemberCounts::new(&status.members),
            datagrams: DatagramCounts::new(&status.stats),
            entries: status.entries,
            bootstrapping: status.bootstrapping,
            group_time_us: status.group_time_us,
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
    /// The entry for one member of what the node reports.
    pub fn new(member: &Member, status: &Status) -> PeerBody {
        let who = &member.identity;
        let clock = status
            .clocks
            .iter()
            .find(|(id, _)| *id == who.id)
            .map(|(_, estimate)| estimate);
        PeerBody {
            id: who.id.to_string(),
            name: who.name.clone(),
            addr: who.addr.to_string(),
            state: member.state.as_str().to_string(),
            is_leader: status.leader == Some(who.id),
            rtt_ms: clock.map(|c| c.rtt_us as f64 / 1000.0),
            clock_offset_ms: clock.map(|c| c.offset_us as f64 / 1000.0),
            services: status.services.get(&who.id).cloned().unwrap_or_default(),
            is_self: member.is_self,
            generation: who.generation,
        }
    }
}

/// One entry: `GET /v1/kv/{key}`, and each item of `GET /v1/kv?prefix=P`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryBody {
    /// The key.
    pub key: String,
    /// The value, as JSON.
    pub value: serde_json::Value,
    /// The version, `<hlc>-<origin>`.
    pub version: String,
    /// The node that wrote it (the owner, for owned keys).
    pub origin: String,
}

impl EntryBody {
    /// The body for a live entry (a tombstone shows `null`).
    pub fn new(entry: &Entry) -> EntryBody {
        EntryBody {
            key: entry.key.to_string(),
            value: value_json(entry),
            version: entry.version.to_string(),
            origin: entry.version.origin.to_string(),
        }
    }
}

/// A write made durable: `PUT` and `DELETE /v1/kv/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenBody {
    /// The version written, `<hlc>-<origin>`.
    pub version: String,
    /// The node that applied it (the owner, for owned keys).
    pub origin: String,
}

impl WrittenBody {
    /// The body for a write applied at `version`.
    pub fn new(version: Version) -> WrittenBody {
        WrittenBody {
            version: version.to_string(),
            origin: version.origin.to_string(),
        }
    }
}

/// A write waiting for its owner: `PUT /v1/kv/{key}?queue=true`, answered 202.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedBody {
    /// Always true.
    pub queued: bool,
}

/// The data of an `event: change` of `GET /v1/watch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeBody {
    /// The node's sequence number of the change; resume after it with `?from=SEQ`.
    pub seq: u64,
    /// The key.
    pub key: String,
    /// The new value; `null` for a delete.
    pub value: serde_json::Value,
    /// Whether the change is a delete.
    pub deleted: bool,
    /// The version, `<hlc>-<origin>`.
    pub version: String,
    /// The node that wrote it.
    pub origin: String,
}

impl ChangeBody {
    /// The body for change `seq`, `entry` as stored now.
    pub fn new(seq: u64, entry: &Entry) -> ChangeBody {
        ChangeBody {
            seq,
            key: entry.key.to_string(),
            value: value_json(entry),
            deleted: entry.is_tombstone(),
            version: entry.version.to_string(),
            origin: entry.version.origin.to_string(),
        }
    }
}

/// The data of an `event: pulse` of `GET /v1/watch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PulseBody {
    /// The key.
    pub key: String,
    /// The payload.
    pub value: serde_json::Value,
    /// The node that sent it.
    pub origin: String,
}

impl PulseBody {
    /// The body for a pulse of `value` on `key` from `origin`.
    pub fn new(key: &consort::Key, value: &consort::Value, origin: NodeId) -> PulseBody {
        PulseBody {
            key: key.to_string(),
            value: value.to_json(),
            origin: origin.to_string(),
        }
    }
}

/// The data of an `event: lagged` of `GET /v1/watch`: events were missed; re-read the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaggedBody {
    /// How many events were missed.
    pub missed: u64,
}

/// An entry's value as JSON, `null` for a tombstone.
fn value_json(entry: &Entry) -> serde_json::Value {
    entry
        .value
        .as_ref()
        .map_or(serde_json::Value::Null, consort::Value::to_json)
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
            entries: 3,
            bootstrapping: false,
            leader: None,
            term: 0,
            clocks: Vec::new(),
            group_time_us: 0,
            services: [(NodeId(2), vec!["light".to_string()])].into(),
            messaging: Default::default(),
            telemetry: Default::default(),
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
        assert_eq!(json["entries"], 3);
        assert_eq!(json["bootstrapping"], false);
    }

    #[test]
    fn entries_and_changes_show_version_and_origin() {
        use consort_proto::replica::Hlc;
        let entry = Entry {
            key: consort::Key::new("kitchen/light/on").unwrap(),
            value: Some(consort::Value::parse("true").unwrap()),
            version: Version {
                hlc: Hlc(77),
                origin: NodeId(0xab),
            },
        };
        let json = serde_json::to_value(EntryBody::new(&entry)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"key": "kitchen/light/on", "value": true,
                "version": "77-00000000000000ab", "origin": "00000000000000ab"})
        );
        let deleted = Entry {
            value: None,
            ..entry
        };
        let json = serde_json::to_value(ChangeBody::new(9, &deleted)).unwrap();
        assert_eq!(json["seq"], 9);
        assert!(json["value"].is_null());
        assert_eq!(json["deleted"], true);
    }

    #[test]
    fn peer_json_has_the_contract_fields() {
        let json = serde_json::to_value(PeerBody::new(
            &member(2, MemberState::Left, false),
            &status(),
        ))
        .unwrap();
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
