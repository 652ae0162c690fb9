//! Encrypted, authenticated framing for TCP streams (bootstrap, entries and messages too large
//! for a datagram).
//!
//! Each side opens with a 42-byte hello, then sends frames:
//!
//! ```text
//! hello   "CNST" ‖ version u8 ‖ key id u8 ‖ node id u64 LE ‖ salt [u8; 28]
//! frame   length u32 LE (of what follows) ‖ XChaCha20-Poly1305 ciphertext ‖ tag
//! ```
//!
//! Session keys come from HKDF-SHA256 over the group's stream key, both salts and both node ids,
//! one key per direction; the nonce is a per-direction frame counter. A fresh salt on each side
//! makes every session's keys new, so a recorded session cannot be replayed, and a peer that does
//! not hold the group key cannot produce a single frame that opens. The node id in the hello is
//! bound into the keys, so it is authenticated by the first frame that opens. Nothing here does
//! I/O: the driver moves the bytes.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;

use crate::id::NodeId;
use crate::wire::{Key, Keyring, TAG_LEN};

/// Bytes of a hello.
pub const HELLO_LEN: usize = 42;
/// Largest frame payload accepted (a snapshot chunk or a large entry fits well within it).
pub const MAX_FRAME: usize = 4 << 20;
const MAGIC: &[u8; 4] = b"CNST";
const VERSION: u8 = 1;

/// Why a stream must be closed. Every error is final for the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The peer's hello is not a Consort stream hello of this version.
    #[error("not a consort stream (bad magic or version)")]
    NotConsort,
    /// The peer's hello names a key this node does not hold.
    #[error("the peer uses a key this node does not hold")]
    UnknownKey,
    /// A frame failed authentication (wrong group key, tampering, or a bug).
    #[error("a stream frame failed authentication")]
    BadFrame,
    /// A frame announced more than [`MAX_FRAME`] bytes.
    #[error("a stream frame of {0} bytes exceeds the limit")]
    FrameTooLarge(usize),
}

/// One side's opening message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Which group key the sender uses.
    pub key_id: u8,
    /// Who the sender claims to be (authenticated once a frame opens).
    pub node: NodeId,
    /// Fresh random bytes from the sender.
    pub salt: [u8; 28],
}

impl Hello {
    /// A hello for `node` under the keyring's primary key; `salt` must be fresh random bytes.
    pub fn new(keyring: &Keyring, node: NodeId, salt: [u8; 28]) -> Hello {
        Hello {
            key_id: keyring.primary().id(),
            node,
            salt,
        }
    }

    /// The hello as sent.
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut out = [0u8; HELLO_LEN];
        out[..4].copy_from_slice(MAGIC);
        out[4] = VERSION;
        out[5] = self.key_id;
        out[6..14].copy_from_slice(&self.node.0.to_le_bytes());
        out[14..].copy_from_slice(&self.salt);
        out
    }

    /// Parses a received hello.
    pub fn decode(bytes: &[u8; HELLO_LEN]) -> Result<Hello, StreamError> {
        if &bytes[..4] != MAGIC || bytes[4] != VERSION {
            return Err(StreamError::NotConsort);
        }
        let mut salt = [0u8; 28];
        salt.copy_from_slice(&bytes[14..]);
        Ok(Hello {
            key_id: bytes[5],
            node: NodeId(u64::from_le_bytes(
                bytes[6..14].try_into().expect("8 bytes"),
            )),
            salt,
        })
    }
}

/// Which end of the connection this side is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Opened the connection.
    Initiator,
    /// Accepted it.
    Responder,
}

/// Seals outgoing frames of one session.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    counter: u64,
}

/// Opens incoming frames of one session.
pub struct Opener {
    cipher: XChaCha20Poly1305,
    counter: u64,
}

/// Derives both directions' keys once both hellos are known.
///
/// The responder answers with the key id the initiator chose, if it holds that key.
pub fn session(
    keyring: &Keyring,
    role: Role,
    ours: &Hello,
    theirs: &Hello,
) -> Result<(Sealer, Opener), StreamError> {
    let (init, resp) = match role {
        Role::Initiator => (ours, theirs),
        Role::Responder => (theirs, ours),
    };
    // Only a key both hold: the initiator's choice, which the responder echoes.
    if init.key_id != resp.key_id {
        return Err(StreamError::UnknownKey);
    }
    let key: &Key = keyring
        .candidates(init.key_id)
        .next()
        .ok_or(StreamError::UnknownKey)?;
    let salt = [init.salt.as_slice(), resp.salt.as_slice()].concat();
    let hk = Hkdf::<Sha256>::new(Some(&salt), key.stream_ikm());
    let derive = |direction: &[u8]| {
        let info = [
            direction,
            &init.node.0.to_le_bytes(),
            &resp.node.0.to_le_bytes(),
        ]
        .concat();
        let mut okm = [0u8; 32];
        hk.expand(&info, &mut okm).expect("32-byte HKDF output");
        XChaCha20Poly1305::new(&okm.into())
    };
    let (to_resp, to_init) = (
        derive(b"consort stream i->r"),
        derive(b"consort stream r->i"),
    );
    let (seal, open) = match role {
        Role::Initiator => (to_resp, to_init),
        Role::Responder => (to_init, to_resp),
    };
    Ok((
        Sealer {
            cipher: seal,
            counter: 0,
        },
        Opener {
            cipher: open,
            counter: 0,
        },
    ))
}

fn nonce(counter: u64) -> XNonce {
    let mut n = [0u8; 24];
    n[..8].copy_from_slice(&counter.to_le_bytes());
    n.into()
}

impl Sealer {
    /// Seals one frame: length prefix, ciphertext, tag.
    ///
    /// Panics if `payload` exceeds [`MAX_FRAME`]: callers split what they send.
    pub fn seal(&mut self, payload: &[u8]) -> Vec<u8> {
        assert!(
            payload.len() <= MAX_FRAME,
            "frame of {} bytes",
            payload.len()
        );
        let len = (payload.len() + TAG_LEN) as u32;
        let mut out = Vec::with_capacity(4 + len as usize);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(payload);
        let tag = self
            .cipher
            .encrypt_in_place_detached(&nonce(self.counter), &[], &mut out[4..])
            .expect("frame within AEAD limits");
        out.extend_from_slice(&tag);
        self.counter += 1;
        out
    }
}

impl Opener {
    /// Takes one complete frame off the front of `buf`, if there is one, and opens it.
    pub fn open(&mut self, buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, StreamError> {
        let Some(len_bytes) = buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
        if !(TAG_LEN..=MAX_FRAME + TAG_LEN).contains(&len) {
            return Err(StreamError::FrameTooLarge(len));
        }
        if buf.len() < 4 + len {
            return Ok(None);
        }
        let mut payload: Vec<u8> = buf.drain(..4 + len).skip(4).collect();
        let tag_at = payload.len() - TAG_LEN;
        let tag = *Tag::from_slice(&payload[tag_at..]);
        payload.truncate(tag_at);
        self.cipher
            .decrypt_in_place_detached(&nonce(self.counter), &[], &mut payload, &tag)
            .map_err(|_| StreamError::BadFrame)?;
        self.counter += 1;
        Ok(Some(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    type Ends = (Sealer, Opener);

    fn pair(a: &Keyring, b: &Keyring) -> Result<(Ends, Ends), StreamError> {
        let ha = Hello::new(a, NodeId(1), [1; 28]);
        let hb = Hello {
            key_id: ha.key_id,
            ..Hello::new(b, NodeId(2), [2; 28])
        };
        let hb = Hello::decode(&hb.encode())?;
        let ha = Hello::decode(&ha.encode())?;
        Ok((
            session(a, Role::Initiator, &ha, &hb)?,
            session(b, Role::Responder, &hb, &ha)?,
        ))
    }

    #[test]
    fn frames_flow_both_ways_in_order() {
        let ring = Keyring::from_secrets(&[SECRET], "g").unwrap();
        let ((mut a_seal, mut a_open), (mut b_seal, mut b_open)) = pair(&ring, &ring).unwrap();
        let mut wire = Vec::new();
        wire.extend(a_seal.seal(b"one"));
        wire.extend(a_seal.seal(b"two"));
        let partial = wire.split_off(5);
        assert_eq!(b_open.open(&mut wire), Ok(None)); // incomplete: wait for more bytes
        wire.extend(partial);
        assert_eq!(b_open.open(&mut wire).unwrap().unwrap(), b"one");
        assert_eq!(b_open.open(&mut wire).unwrap().unwrap(), b"two");
        assert!(wire.is_empty());
        let mut back = b_seal.seal(b"three");
        assert_eq!(a_open.open(&mut back).unwrap().unwrap(), b"three");
    }

    #[test]
    fn another_group_key_cannot_open_frames() {
        let ours = Keyring::from_secrets(&[SECRET], "g").unwrap();
        let theirs = Keyring::from_secrets(&["some other secret entirely!!"], "g").unwrap();
        // With another key the responder holds no key of that id (or, on a one-byte id
        // collision, the first frame fails to open).
        match pair(&theirs, &ours) {
            Err(e) => assert_eq!(e, StreamError::UnknownKey),
            Ok(((mut seal, _), (_, mut open))) => {
                let mut wire = seal.seal(b"hello");
                assert_eq!(open.open(&mut wire), Err(StreamError::BadFrame));
            }
        }
    }

    #[test]
    fn tampering_replay_and_reordering_are_caught() {
        let ring = Keyring::from_secrets(&[SECRET], "g").unwrap();
        let ((mut seal, _), (_, mut open)) = pair(&ring, &ring).unwrap();
        let first = seal.seal(b"first");
        let second = seal.seal(b"second");
        let mut flipped = first.clone();
        flipped[6] ^= 1;
        assert_eq!(open.open(&mut flipped.clone()), Err(StreamError::BadFrame));
        let ((_, _), (_, mut open)) = pair(&ring, &ring).unwrap();
        assert_eq!(open.open(&mut second.clone()), Err(StreamError::BadFrame));
    }

    #[test]
    fn bad_hellos_and_lengths_are_refused() {
        let mut bytes = [0u8; HELLO_LEN];
        assert_eq!(Hello::decode(&bytes), Err(StreamError::NotConsort));
        bytes[..4].copy_from_slice(MAGIC);
        bytes[4] = 9;
        assert_eq!(Hello::decode(&bytes), Err(StreamError::NotConsort));
        let ring = Keyring::from_secrets(&[SECRET], "g").unwrap();
        let ((_, _), (_, mut open)) = pair(&ring, &ring).unwrap();
        let mut huge = ((MAX_FRAME + 100) as u32).to_le_bytes().to_vec();
        assert!(matches!(
            open.open(&mut huge),
            Err(StreamError::FrameTooLarge(_))
        ));
        let mut tiny = 3u32.to_le_bytes().to_vec();
        assert!(matches!(
            open.open(&mut tiny),
            Err(StreamError::FrameTooLarge(3))
        ));
    }
}
