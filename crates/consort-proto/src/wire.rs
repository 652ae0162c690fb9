//! Datagram framing: authenticated encryption under the group key, and replay protection.
//!
//! Every datagram is `header ‖ ciphertext ‖ tag`:
//!
//! ```text
//! byte 0      version (high nibble) | frame kind (low nibble)
//! byte 1      key id: first byte of SHA-256 of the sealing key
//! bytes 2..10  sender node id, little endian
//! bytes 10..18 sender counter, little endian; never repeats for a sender, across restarts
//! ciphertext  XChaCha20-Poly1305 of the payload; the 18 header bytes are the associated data
//! tag         16 bytes
//! ```
//!
//! The 24-byte XChaCha nonce is `sender ‖ counter ‖ 0⁸`, so it is never transmitted and never reused
//! as long as node ids are distinct and counters only grow (the counter is reserved on disk in
//! blocks, see [`CounterBlock`]). That keeps the overhead at [`OVERHEAD`] = 34 bytes. Replays are
//! caught by a sliding window per sender ([`ReplayWindow`]), which needs no clock agreement.

use std::fmt;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

use crate::id::NodeId;

/// Largest datagram Consort sends or accepts, in bytes.
pub const MAX_DATAGRAM: usize = 1200;
/// Header bytes before the ciphertext.
pub const HEADER_LEN: usize = 18;
/// Poly1305 tag bytes after the ciphertext.
pub const TAG_LEN: usize = 16;
/// Bytes on the wire per datagram beyond the payload.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Largest payload that fits in one datagram.
pub const MAX_PAYLOAD: usize = MAX_DATAGRAM - OVERHEAD;
/// The wire version this code speaks.
pub const VERSION: u8 = 1;
/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// What a datagram's payload holds; sent in the low nibble of the first header byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameKind {
    /// A SWIM packet produced by foca.
    Swim,
    /// A Consort control message ([`crate::codec::Control`]).
    Control,
    /// A replication message ([`crate::replica::ReplicaMessage`]).
    Replica,
    /// A message between members, or a service call ([`crate::messaging`]).
    Message,
}

impl FrameKind {
    /// The frame kind's number (the low nibble of a datagram's first byte, the first byte of a
    /// stream frame).
    pub fn to_nibble(self) -> u8 {
        match self {
            FrameKind::Swim => 0,
            FrameKind::Control => 1,
            FrameKind::Replica => 2,
            FrameKind::Message => 3,
        }
    }

    /// The frame kind with this number, if any.
    pub fn from_nibble(n: u8) -> Option<FrameKind> {
        match n {
            0 => Some(FrameKind::Swim),
            1 => Some(FrameKind::Control),
            2 => Some(FrameKind::Replica),
            3 => Some(FrameKind::Message),
            _ => None,
        }
    }
}

/// Why a received datagram was dropped. Each reason is counted separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RejectReason {
    /// Longer than [`MAX_DATAGRAM`].
    Oversized,
    /// Too short to hold a header and a tag.
    Truncated,
    /// A wire version or frame kind this node does not speak.
    UnknownVersion,
    /// Sealed with a key that is not in the keyring (another group, or a rotated-out key).
    UnknownKey,
    /// The tag did not verify: forged, corrupted, or a key-id collision with a foreign key.
    BadTag,
    /// A counter already seen, or too old for the sender's window.
    Replay,
    /// Authentic, but the payload does not decode.
    Malformed,
}

impl RejectReason {
    /// Every reason, in a stable order (for metrics and status output).
    pub const ALL: [RejectReason; 7] = [
        RejectReason::Oversized,
        RejectReason::Truncated,
        RejectReason::UnknownVersion,
        RejectReason::UnknownKey,
        RejectReason::BadTag,
        RejectReason::Replay,
        RejectReason::Malformed,
    ];

    /// A short snake_case label.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Oversized => "oversized",
            RejectReason::Truncated => "truncated",
            RejectReason::UnknownVersion => "unknown_version",
            RejectReason::UnknownKey => "unknown_key",
            RejectReason::BadTag => "bad_tag",
            RejectReason::Replay => "replay",
            RejectReason::Malformed => "malformed",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// Fewer than [`MIN_SECRET_LEN`] bytes after trimming whitespace.
    #[error(
        "the group secret is {0} bytes; it needs at least {MIN_SECRET_LEN} (use `consort keygen`)"
    )]
    TooShort(usize),
    /// The keyring was given no secret at all.
    #[error("no group secret given")]
    Empty,
}

/// One datagram key, derived from a group secret and the group name.
#[derive(Clone)]
pub struct Key {
    id: u8,
    cipher: XChaCha20Poly1305,
    /// Input keying material for stream session keys (see [`crate::stream`]).
    stream_ikm: [u8; 32],
}

impl Key {
    /// Derives the datagram key for `group` from `secret` (HKDF-SHA256); surrounding whitespace is ignored.
    pub fn derive(secret: &[u8], group: &str) -> Result<Key, SecretError> {
        let secret = secret.trim_ascii();
        if secret.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort(secret.len()));
        }
        let hk = Hkdf::<Sha256>::new(Some(b"consort v1"), secret);
        let mut okm = [0u8; 32];
        let info = [b"datagram key for group ".as_slice(), group.as_bytes()].concat();
        hk.expand(&info, &mut okm)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let id = Sha256::digest(okm)[0];
        let mut stream_ikm = [0u8; 32];
        let info = [b"stream key for group ".as_slice(), group.as_bytes()].concat();
        hk.expand(&info, &mut stream_ikm)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Ok(Key {
            id,
            cipher: XChaCha20Poly1305::new(&okm.into()),
            stream_ikm,
        })
    }

    /// The key id carried in each datagram header.
    pub fn id(&self) -> u8 {
        self.id
    }

    pub(crate) fn stream_ikm(&self) -> &[u8; 32] {
        &self.stream_ikm
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(id={:02x})", self.id)
    }
}

/// The group keys a node accepts; the first one seals what it sends.
///
/// Several keys at once let a group rotate its secret live: add the new secret everywhere as an
/// accepted key, then make it primary everywhere, then drop the old one.
#[derive(Clone, Debug)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl Keyring {
    /// A keyring from secrets, the first being primary.
    pub fn from_secrets<S: AsRef<[u8]>>(
        secrets: &[S],
        group: &str,
    ) -> Result<Keyring, SecretError> {
        let keys = secrets
            .iter()
            .map(|s| Key::derive(s.as_ref(), group))
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Keyring { keys })
    }

    /// The key that seals outgoing datagrams.
    pub fn primary(&self) -> &Key {
        &self.keys[0]
    }

    /// Every key with this id (usually one; ids are a byte, so collisions are possible).
    pub(crate) fn candidates(&self, id: u8) -> impl Iterator<Item = &Key> {
        self.keys.iter().filter(move |k| k.id == id)
    }
}

fn nonce(sender: NodeId, counter: u64) -> XNonce {
    let mut n = [0u8; 24];
    n[..8].copy_from_slice(&sender.0.to_le_bytes());
    n[8..16].copy_from_slice(&counter.to_le_bytes());
    n.into()
}

/// Seals `payload` into a datagram. The caller guarantees `(sender, counter)` was never used before.
///
/// Panics if the payload exceeds [`MAX_PAYLOAD`]: that is a bug in the caller, not bad input.
pub fn seal(key: &Key, sender: NodeId, counter: u64, kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    assert!(
        payload.len() <= MAX_PAYLOAD,
        "payload of {} bytes",
        payload.len()
    );
    let mut out = Vec::with_capacity(OVERHEAD + payload.len());
    out.push(VERSION << 4 | kind.to_nibble());
    out.push(key.id);
    out.extend_from_slice(&sender.0.to_le_bytes());
    out.extend_from_slice(&counter.to_le_bytes());
    out.extend_from_slice(payload);
    let (header, body) = out.split_at_mut(HEADER_LEN);
    let tag = key
        .cipher
        .encrypt_in_place_detached(&nonce(sender, counter), header, body)
        .expect("payload length is within XChaCha20-Poly1305 limits");
    out.extend_from_slice(&tag);
    out
}

/// An authenticated datagram, not yet checked against the replay window.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    /// Who sealed it.
    pub sender: NodeId,
    /// The sender's counter for it.
    pub counter: u64,
    /// What the payload holds.
    pub kind: FrameKind,
    /// The decrypted payload.
    pub payload: Vec<u8>,
}

/// Authenticates and decrypts a datagram. Never panics, whatever the bytes.
pub fn open(keyring: &Keyring, datagram: &[u8]) -> Result<Opened, RejectReason> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(RejectReason::Oversized);
    }
    if datagram.len() < OVERHEAD {
        return Err(RejectReason::Truncated);
    }
    let (header, rest) = datagram.split_at(HEADER_LEN);
    let kind = match (header[0] >> 4, FrameKind::from_nibble(header[0] & 0x0f)) {
        (VERSION, Some(kind)) => kind,
        _ => return Err(RejectReason::UnknownVersion),
    };
    let sender = NodeId(u64::from_le_bytes(
        header[2..10].try_into().expect("8 bytes"),
    ));
    let counter = u64::from_le_bytes(header[10..18].try_into().expect("8 bytes"));
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let mut found_key = false;
    for key in keyring.candidates(header[1]) {
        found_key = true;
        let mut payload = ciphertext.to_vec();
        let ok = key.cipher.decrypt_in_place_detached(
            &nonce(sender, counter),
            header,
            &mut payload,
            Tag::from_slice(tag),
        );
        if ok.is_ok() {
            return Ok(Opened {
                sender,
                counter,
                kind,
                payload,
            });
        }
    }
    Err(if found_key {
        RejectReason::BadTag
    } else {
        RejectReason::UnknownKey
    })
}

/// Counters a node may use before it must reserve more on disk.
///
/// A node persists `limit` before sending with any counter below it; after a crash it restarts
/// from the persisted limit, so no counter is ever used twice, at the cost of skipping at most one
/// block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterBlock {
    /// The next counter to use.
    pub next: u64,
    /// The first counter not yet reserved on disk.
    pub limit: u64,
}

impl CounterBlock {
    /// Counters reserved per disk write.
    pub const SIZE: u64 = 1 << 20;
}

/// Remembers which counters of one sender were seen, in a window of [`ReplayWindow::WIDTH`].
#[derive(Clone, Debug, Default)]
pub struct ReplayWindow {
    /// Highest counter accepted so far, plus one (0: none yet).
    top: u64,
    /// Bit `i` set: counter `top - 1 - i` was seen.
    seen: [u64; Self::WORDS],
}

impl ReplayWindow {
    const WORDS: usize = 16;
    /// How far behind the highest counter a datagram may arrive and still be accepted.
    pub const WIDTH: u64 = 64 * Self::WORDS as u64;

    /// Records `counter`; returns false if it was seen before or is too old.
    pub fn accept(&mut self, counter: u64) -> bool {
        let Some(next) = counter.checked_add(1) else {
            return false;
        };
        if next > self.top {
            self.shift(next - self.top);
            self.top = next;
            self.seen[0] |= 1;
            return true;
        }
        let age = self.top - next;
        if age >= Self::WIDTH {
            return false;
        }
        let (word, bit) = ((age / 64) as usize, age % 64);
        let mask = 1u64 << bit;
        if self.seen[word] & mask != 0 {
            return false;
        }
        self.seen[word] |= mask;
        true
    }

    /// Ages every bit by `by` positions.
    fn shift(&mut self, by: u64) {
        if by >= Self::WIDTH {
            self.seen = [0; Self::WORDS];
            return;
        }
        let (words, bits) = ((by / 64) as usize, (by % 64) as u32);
        for i in (0..Self::WORDS).rev() {
            let src = i.checked_sub(words);
            let hi = src.map_or(0, |s| self.seen[s]);
            let lo = src
                .and_then(|s| s.checked_sub(1))
                .map_or(0, |s| self.seen[s]);
            self.seen[i] = if bits == 0 {
                hi
            } else {
                hi << bits | lo >> (64 - bits)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(secret: &str) -> Keyring {
        Keyring::from_secrets(&[secret], "home").unwrap()
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn overhead_is_34_bytes() {
        let ring = keyring(SECRET);
        for len in [0, 1, 100, MAX_PAYLOAD] {
            let payload = vec![7u8; len];
            let d = seal(ring.primary(), NodeId(9), 1, FrameKind::Swim, &payload);
            assert_eq!(d.len() - len, 34);
            assert!(d.len() <= MAX_DATAGRAM);
        }
        assert_eq!(OVERHEAD, 34);
    }

    #[test]
    fn seal_then_open_round_trips() {
        let ring = keyring(SECRET);
        let d = seal(ring.primary(), NodeId(9), 42, FrameKind::Control, b"hello");
        let opened = open(&ring, &d).unwrap();
        assert_eq!(
            opened,
            Opened {
                sender: NodeId(9),
                counter: 42,
                kind: FrameKind::Control,
                payload: b"hello".to_vec()
            }
        );
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let ring = keyring(SECRET);
        let d = seal(
            ring.primary(),
            NodeId(9),
            42,
            FrameKind::Swim,
            b"payload bytes",
        );
        for i in 0..d.len() * 8 {
            let mut forged = d.clone();
            forged[i / 8] ^= 1 << (i % 8);
            let err = open(&ring, &forged).unwrap_err();
            assert!(
                matches!(
                    err,
                    RejectReason::BadTag | RejectReason::UnknownKey | RejectReason::UnknownVersion
                ),
                "bit {i}: {err:?}"
            );
        }
    }

    #[test]
    fn foreign_group_key_is_unknown_or_bad() {
        let ours = keyring(SECRET);
        let theirs = keyring("another secret, another group!!");
        let d = seal(theirs.primary(), NodeId(9), 1, FrameKind::Swim, b"x");
        let err = open(&ours, &d).unwrap_err();
        assert!(matches!(
            err,
            RejectReason::UnknownKey | RejectReason::BadTag
        ));
        // The same secret under another group name is another key too.
        let other_group = Keyring::from_secrets(&[SECRET], "garage").unwrap();
        let d = seal(other_group.primary(), NodeId(9), 1, FrameKind::Swim, b"x");
        assert!(open(&ours, &d).is_err());
    }

    #[test]
    fn truncated_oversized_and_unknown_version() {
        let ring = keyring(SECRET);
        let d = seal(ring.primary(), NodeId(9), 1, FrameKind::Swim, b"abc");
        for len in 0..OVERHEAD {
            assert_eq!(open(&ring, &d[..len]), Err(RejectReason::Truncated));
        }
        assert_eq!(
            open(&ring, &vec![0x10; MAX_DATAGRAM + 1]),
            Err(RejectReason::Oversized)
        );
        let mut v2 = d.clone();
        v2[0] = 2 << 4;
        assert_eq!(open(&ring, &v2), Err(RejectReason::UnknownVersion));
        let mut bad_kind = d;
        bad_kind[0] = VERSION << 4 | 0x0f;
        assert_eq!(open(&ring, &bad_kind), Err(RejectReason::UnknownVersion));
    }

    #[test]
    fn keyring_accepts_secondary_keys() {
        let old = keyring(SECRET);
        let rotated =
            Keyring::from_secrets(&["the brand new secret for home!", SECRET], "home").unwrap();
        let d = seal(old.primary(), NodeId(1), 5, FrameKind::Swim, b"x");
        assert!(open(&rotated, &d).is_ok());
        let d = seal(rotated.primary(), NodeId(1), 6, FrameKind::Swim, b"x");
        assert!(open(&old, &d).is_err());
    }

    #[test]
    fn short_secrets_are_refused() {
        assert_eq!(
            Key::derive(b"  short  ", "g").unwrap_err(),
            SecretError::TooShort(5)
        );
        assert_eq!(
            Keyring::from_secrets::<&str>(&[], "g").unwrap_err(),
            SecretError::Empty
        );
    }

    #[test]
    fn replay_window_accepts_each_counter_once() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(0));
        assert!(!w.accept(0));
        assert!(w.accept(5));
        assert!(w.accept(3));
        assert!(!w.accept(3));
        assert!(!w.accept(5));
        assert!(w.accept(1000));
        assert!(w.accept(4)); // 996 behind: inside the window, unseen
        assert!(!w.accept(4));
        assert!(w.accept(2000));
        assert!(!w.accept(900)); // 1100 behind: outside the window
        assert!(!w.accept(u64::MAX));
    }

    #[test]
    fn replay_window_matches_a_set_model() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut w = ReplayWindow::default();
        let mut seen = std::collections::BTreeSet::new();
        let mut top = 0u64;
        for _ in 0..20_000 {
            let c = if rng.random_bool(0.3) {
                top + rng.random_range(0..200)
            } else {
                top.saturating_sub(rng.random_range(0..1200))
            };
            // Accepted exactly when unseen and no more than WIDTH - 1 behind the highest seen.
            let in_window = c + ReplayWindow::WIDTH >= top;
            let got = w.accept(c);
            assert_eq!(
                got,
                !seen.contains(&c) && in_window,
                "counter {c}, top {top}"
            );
            if got {
                seen.insert(c);
                top = top.max(c + 1);
            }
        }
    }
}
