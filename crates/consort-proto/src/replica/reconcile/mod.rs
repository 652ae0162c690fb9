//! Anti-entropy: two stores find the entries on which they differ and exchange exactly those, at
//! a cost that grows with the difference, not with the state.
//!
//! # Design
//!
//! A Merkle scheme over hash buckets. Each key has a 64-bit position hash (SHA-256 of the key);
//! the 16-ary tree over its nibbles has the same shape on every node whatever it stores, and a
//! node's [`Fingerprint`] is the XOR of the item hashes (key and version) under it, with their
//! count. The [`Store`] updates the fingerprints of the top levels in place
//! on every apply and collection (O(depth), no rehash), and finds deeper ones by scanning the few
//! entries under a node.
//!
//! A round is driven by its initiator ([`Session`]); the responder ([`Store::answer`]) keeps no
//! state, so a lost message is sent again or the round dropped, and nothing can get stuck:
//!
//! 1. [`Probe::Root`]: the root fingerprint. Equal stores end here: one request, one reply.
//!    Otherwise the reply carries the responder's 16 child fingerprints.
//! 2. For each differing node, the initiator sends [`Probe::Children`] (its 16 child fingerprints,
//!    4 bytes each) and gets back a 16-bit mask of the children that differ, or, once it holds at
//!    most 16 entries there, [`Probe::Items`]: a 4-byte tag per entry (16 bits of key, 16 of
//!    version). The responder sends the entries the initiator did not list, says which listed
//!    keys it lacks (the initiator sends those), and gives its version where both hold a key at
//!    different versions; the initiator then sends its entry or pulls the responder's
//!    ([`Probe::Pull`]), whichever is newer. Both sides learn what they lack in one round.
//! 3. Probes are packed into requests of at most [`MAX_MESSAGE`] bytes, 8 requests in flight;
//!    replies answer as many probes as fit, and the initiator asks the rest again.
//!
//! Shortened fingerprints and tags are salted with the round number, so a chance collision hides
//! a difference for that round only; the full 64-bit sums are what must collide to hide it for
//! good. Every action is a last-writer-wins apply, so a collision or a lost message can delay
//! convergence, never corrupt a store.
//!
//! Range-based set reconciliation (Meyer) costs about the same per difference, but needs
//! fingerprints of arbitrary key ranges, hence an augmented search tree the standard library does
//! not have; fixed buckets need one array, and a request names a node in 2 to 4 bytes.
//!
//! # Cost, measured
//!
//! `tests/replica_laws.rs`, 100 000 entries (27-byte keys, 62-byte values, 105-byte entries
//! encoded), 100 differing (25 only on each side, 25 newer on each side, a fifth of them
//! deletes), one round: 6 round trips, 34 requests (15 980 B), 34 replies (2 289 B), 100 entries
//! (10 520 B): 28 789 B in all, 2.74 times the entries alone (about 3.0 with the 34-byte datagram
//! overhead). Listing at 8, 16, 24 or 32 entries gives 2.74, 2.74, 2.76, 2.90; 3-byte
//! fingerprints would give 2.43, at a 2^-24 (rather than 2^-32) chance per differing node of
//! leaving a difference to a later round. Identical stores: one request of 16 to 20 bytes, one
//! reply of 9 to 13.
//!
//! # Driving it
//!
//! Every 100 to 200 ms, start a round with a random peer; send each request as a datagram (encode
//! as a [`Message`]), feed replies to the session, and ship the entries both sides name. After a
//! timeout, [`Session::resend`] a few times, then drop the session.
//!
//! ```
//! use consort_proto::replica::reconcile::Message;
//! use consort_proto::replica::{Session, Store};
//!
//! let (mine, theirs) = (Store::new(), Store::new());
//! let (mut session, first) = Session::start(&mine, 0x5eed); // a random round number
//! let mut outbox = vec![first];
//! while let Some(request) = outbox.pop() {
//!     let datagram = Message::Request(request).encode();
//!     // The peer:
//!     let Ok(Message::Request(request)) = Message::decode(&datagram) else { panic!() };
//!     let response = theirs.answer(&request).unwrap(); // and it ships `response.push`
//!     // Back here:
//!     let step = session.handle(&mine, &response.reply); // ship `step.push`
//!     outbox.extend(step.send);
//! }
//! assert!(session.is_done());
//! ```

mod message;
mod respond;
mod session;
pub(crate) mod tree;

pub use message::{
    Answer, DecodeError, Message, Probe, Reply, Request, Summary, VersionAt, FINGERPRINT_LEN,
    MAX_MESSAGE, TAG_LEN,
};
pub use respond::{BadRequest, Response};
pub use session::{Session, Step};
pub use tree::{Fingerprint, Node, ARITY, MAX_LEVEL};

#[cfg(doc)]
use crate::replica::Store;
use tree::mix;

/// A differing node with at most this many entries on the initiator's side is listed rather than
/// split: listing costs 4 bytes an entry, splitting 64 bytes and a round trip.
pub(crate) const LEAF_MAX: usize = 16;

/// The responder answers [`Answer::Split`] to a listing of a node under which it holds more
/// entries than this, which bounds the work and the entries sent for one probe.
pub(crate) const SPLIT_ABOVE: usize = 64;

/// Most entries one [`Probe::Items`] lists.
pub(crate) const LISTED_MAX: usize = 256;

/// The salt of a round.
fn salt(round: u32) -> u64 {
    mix(u64::from(round) ^ 0x2545_f491_4f6c_dd1d)
}

/// The mask of the children whose fingerprints differ between two lists of 16 (bit `i` for
/// child `i`). Both lists are [`ARITY`] × [`FINGERPRINT_LEN`] bytes long.
fn differing(mine: &[u8], theirs: &[u8]) -> u16 {
    let pairs = mine
        .chunks_exact(FINGERPRINT_LEN)
        .zip(theirs.chunks_exact(FINGERPRINT_LEN));
    pairs
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .fold(0, |mask, (i, _)| mask | 1 << i)
}

/// An entry as listed in a [`Probe::Items`]: 16 salted bits of its key, 16 of its version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ItemTag {
    key: u16,
    version: u16,
}

impl ItemTag {
    fn new(kid: u64, item: u64, salt: u64) -> ItemTag {
        ItemTag {
            key: (mix(kid ^ salt) >> 48) as u16,
            version: (mix(item ^ salt.rotate_left(32)) >> 48) as u16,
        }
    }

    fn to_bytes(self) -> [u8; 4] {
        let [a, b] = self.key.to_be_bytes();
        let [c, d] = self.version.to_be_bytes();
        [a, b, c, d]
    }

    fn from_bytes(bytes: &[u8]) -> ItemTag {
        ItemTag {
            key: u16::from_be_bytes([bytes[0], bytes[1]]),
            version: u16::from_be_bytes([bytes[2], bytes[3]]),
        }
    }
}
