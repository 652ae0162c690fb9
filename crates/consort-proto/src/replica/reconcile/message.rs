//! The reconciliation messages, as they travel (postcard, one datagram each).

use serde::{Deserialize, Serialize};

use super::tree::Node;
use crate::replica::entry::{Hlc, Key, Version};

/// Largest encoded [`Message`], in bytes: fits a datagram payload with room for the engine's framing.
pub const MAX_MESSAGE: usize = 1100;

/// Bytes of a child fingerprint in [`Probe::Children`] and [`Answer::Root`].
pub const FINGERPRINT_LEN: usize = 4;

/// Bytes of an item tag in [`Probe::Items`]: a 2-byte key tag, then a 2-byte version tag.
pub const TAG_LEN: usize = 4;

/// Bytes of one [`Message`] the encoder may add around a request's or reply's probes or answers:
/// the message tag, round, sequence number and list length, at their largest.
pub(crate) const HEADER_LEN: usize = 1 + 5 + 5 + 3;

/// A reconciliation message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// From the initiator of a round.
    Request(Request),
    /// From the responder, for one request.
    Reply(Reply),
}

/// Questions from the initiator, each self-contained: the responder keeps no state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The round, chosen at random by the initiator; it salts every fingerprint and tag.
    pub round: u32,
    /// Numbers the requests of a round, so that replies find theirs.
    pub seq: u32,
    /// The questions, answered in order.
    pub probes: Vec<Probe>,
}

/// One question about one part of the key space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Probe {
    /// "Here is my whole-store fingerprint; do we differ?" Opens every round.
    Root {
        /// The initiator's size and GC horizon.
        summary: Summary,
        /// The root fingerprint, salted, all 8 bytes.
        fingerprint: [u8; 8],
    },
    /// "Here are my fingerprints of the 16 children of `node`; which differ?"
    Children {
        /// The node, above the last level.
        node: Node,
        /// 16 salted fingerprints of [`FINGERPRINT_LEN`] bytes, child 0 first.
        fingerprints: Vec<u8>,
    },
    /// "Here are my entries under `node`; compare them with yours."
    Items {
        /// The node.
        node: Node,
        /// One salted tag of [`TAG_LEN`] bytes per entry: key tag, then version tag.
        tags: Vec<u8>,
    },
    /// "Send me these entries": keys where the responder's version was found newer.
    Pull {
        /// The keys.
        keys: Vec<Key>,
    },
}

/// The answers to one [`Request`], in the order of its probes. There may be fewer answers than
/// probes when they did not fit one datagram; the initiator asks the rest again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The request's round.
    pub round: u32,
    /// The request's sequence number.
    pub seq: u32,
    /// The answers.
    pub answers: Vec<Answer>,
}

/// The answer to one [`Probe`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Answer {
    /// To [`Probe::Root`].
    Root {
        /// The responder's size and GC horizon.
        summary: Summary,
        /// `None` when the stores are the same; else the responder's 16 salted child
        /// fingerprints, so the initiator compares them at once.
        children: Option<Vec<u8>>,
    },
    /// To [`Probe::Children`]: bit `i` is set when child `i` differs.
    Children {
        /// The differing children.
        differ: u16,
    },
    /// To [`Probe::Items`]. The responder sends, on its own, the entries whose key the
    /// initiator did not list.
    Items {
        /// Bit `i` (byte `i / 8`, bit `i % 8`) is set when the responder lacks listed entry `i`'s
        /// key: the initiator should send it.
        want: Vec<u8>,
        /// The responder's version where it holds listed entry `index`'s key at another version;
        /// the initiator sends its entry or pulls the responder's, whichever is newer.
        differ: Vec<VersionAt>,
    },
    /// To [`Probe::Items`]: the responder holds too many entries under the node to compare them
    /// in one answer; ask about its children.
    Split,
    /// To [`Probe::Pull`]: the entries are on their way.
    Pulled,
}

/// The responder's version of the entry listed at `index` in a [`Probe::Items`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionAt {
    /// Position in the probe's list.
    pub index: u16,
    /// The responder's version.
    pub version: Version,
}

/// What each side tells the other about its store when a round opens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Entries, tombstones included.
    pub len: u64,
    /// The store's GC horizon ([`crate::replica::Store::gc_horizon`]): a node whose last
    /// reconciliation is older than a peer's horizon must resync from it, not merge.
    pub horizon: Hlc,
}

/// Why bytes are not a reconciliation message.
#[derive(Debug, thiserror::Error)]
#[error("malformed reconciliation message: {0}")]
pub struct DecodeError(#[from] postcard::Error);

impl Message {
    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("reconciliation messages always serialize")
    }

    /// Decodes a message; any trailing byte is an error.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let (message, rest) = postcard::take_from_bytes(bytes)?;
        if !rest.is_empty() {
            return Err(DecodeError(postcard::Error::DeserializeUnexpectedEnd));
        }
        Ok(message)
    }

    /// Size of the encoded message, in bytes.
    pub fn encoded_len(&self) -> usize {
        encoded_len(self)
    }
}

/// Size of `value` encoded with postcard.
pub(crate) fn encoded_len<T: Serialize>(value: &T) -> usize {
    postcard::experimental::serialized_size(value)
        .expect("reconciliation messages always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::NodeId;

    #[test]
    fn messages_round_trip_and_reject_trailing_bytes() {
        let request = Message::Request(Request {
            round: u32::MAX,
            seq: 3,
            probes: vec![
                Probe::Children {
                    node: Node::ROOT,
                    fingerprints: vec![7; 64],
                },
                Probe::Pull {
                    keys: vec![Key::new("a/b").unwrap()],
                },
            ],
        });
        let reply = Message::Reply(Reply {
            round: 1,
            seq: 3,
            answers: vec![Answer::Items {
                want: vec![1],
                differ: vec![VersionAt {
                    index: 0,
                    version: Version {
                        hlc: Hlc(u64::MAX),
                        origin: NodeId(u64::MAX),
                    },
                }],
            }],
        });
        for message in [request, reply] {
            let mut bytes = message.encode();
            assert_eq!(bytes.len(), message.encoded_len());
            assert_eq!(Message::decode(&bytes).unwrap(), message);
            bytes.push(0);
            assert!(Message::decode(&bytes).is_err());
        }
        assert!(Message::decode(&[]).is_err());
        assert!(Message::decode(&[0, 1, 1, 1, 1, 200]).is_err());
    }

    #[test]
    fn the_header_allowance_covers_the_largest_header() {
        let empty = Message::Reply(Reply {
            round: u32::MAX,
            seq: u32::MAX,
            answers: Vec::new(),
        });
        // The list length takes 1 byte here and at most 3 for any list that fits a datagram.
        assert_eq!(empty.encoded_len() + 2, HEADER_LEN);
    }
}
