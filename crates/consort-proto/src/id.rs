//! Node identity: the persistent random id, and the SWIM identity gossiped for each member.
//!
//! A [`NodeId`] is created once, on first start, and kept in the data dir; it names the node for its
//! whole life. An [`Identity`] is one *incarnation* of that node on the network: the id plus the
//! address it answers on, a generation that grows on every restart or address change, and the
//! static facts peers need at once (name, election priority).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest node name, in bytes, carried in an [`Identity`].
pub const MAX_NAME_LEN: usize = 64;

/// A node's persistent random id, shown as 16 lowercase hex digits.
///
/// 64 bits keep the datagram header small (it is part of every nonce) while making a collision
/// between the devices of one group vanishingly unlikely.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl NodeId {
    /// Reserved: never a real node.
    pub const UNKNOWN: NodeId = NodeId(0);

    /// Draws a fresh id from a random source; never returns [`NodeId::UNKNOWN`].
    pub fn random(rng: &mut impl rand::Rng) -> NodeId {
        loop {
            let id = rng.next_u64();
            if id != 0 {
                return NodeId(id);
            }
        }
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// Why a string is not a [`NodeId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseNodeIdError {
    /// The text is not 1 to 16 hex digits.
    #[error("a node id is 1 to 16 hex digits, got {0:?}")]
    Invalid(String),
    /// Zero is reserved for "unknown".
    #[error("node id 0 is reserved")]
    Zero,
}

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseNodeIdError::Invalid(s.to_string()));
        }
        match u64::from_str_radix(s, 16) {
            Ok(0) => Err(ParseNodeIdError::Zero),
            Ok(id) => Ok(NodeId(id)),
            Err(_) => Err(ParseNodeIdError::Invalid(s.to_string())),
        }
    }
}

/// One incarnation of a node as the membership protocol sees it.
///
/// Two identities with the same `id` are the same node; the one with the higher `generation`
/// replaces the other (restart, address change, rejoin after a false `down`).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// The persistent node id.
    pub id: NodeId,
    /// Where the node receives datagrams.
    pub addr: SocketAddr,
    /// Grows with every restart and identity change; never repeats for one `id`.
    pub generation: u32,
    /// Election priority (higher wins in `ranked` mode).
    pub priority: i32,
    /// Human-readable name, at most [`MAX_NAME_LEN`] bytes.
    pub name: String,
}

impl Identity {
    /// The same node one generation later, at `addr`.
    pub fn next_generation(&self, addr: SocketAddr) -> Identity {
        Identity {
            addr,
            generation: self.generation.wrapping_add(1),
            ..self.clone()
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{}", self.id, self.addr, self.generation)
    }
}

impl foca::Identity for Identity {
    type Addr = NodeId;

    /// A node declared down rejoins by itself with the next generation.
    fn renew(&self) -> Option<Self> {
        Some(self.next_generation(self.addr))
    }

    fn addr(&self) -> NodeId {
        self.id
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.generation, self.addr) > (adversary.generation, adversary.addr)
    }
}

/// Clips a name to [`MAX_NAME_LEN`] bytes on a character boundary.
pub fn clip_name(name: &str) -> String {
    let mut end = name.len().min(MAX_NAME_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_round_trips_through_text() {
        let id = NodeId(0x00ab_cdef_0123_4567);
        assert_eq!(id.to_string(), "00abcdef01234567");
        assert_eq!("00abcdef01234567".parse::<NodeId>(), Ok(id));
        assert_eq!("abcdef01234567".parse::<NodeId>(), Ok(id));
    }

    #[test]
    fn node_id_rejects_bad_text() {
        assert!(matches!(
            "".parse::<NodeId>(),
            Err(ParseNodeIdError::Invalid(_))
        ));
        assert!(matches!(
            "xyz".parse::<NodeId>(),
            Err(ParseNodeIdError::Invalid(_))
        ));
        assert!(matches!(
            "0123456789abcdef0".parse::<NodeId>(),
            Err(ParseNodeIdError::Invalid(_))
        ));
        assert_eq!("0".parse::<NodeId>(), Err(ParseNodeIdError::Zero));
    }

    #[test]
    fn newer_generation_wins_conflict() {
        use foca::Identity as _;
        let a = Identity {
            id: NodeId(7),
            addr: "127.0.0.1:1".parse().unwrap(),
            generation: 3,
            priority: 0,
            name: "a".into(),
        };
        let b = a.next_generation("127.0.0.1:2".parse().unwrap());
        assert!(b.win_addr_conflict(&a));
        assert!(!a.win_addr_conflict(&b));
        assert_eq!(a.addr(), b.addr());
    }

    #[test]
    fn clip_name_respects_char_boundaries() {
        let long = "é".repeat(40);
        let clipped = clip_name(&long);
        assert!(clipped.len() <= MAX_NAME_LEN);
        assert_eq!(clipped, "é".repeat(32));
    }
}
