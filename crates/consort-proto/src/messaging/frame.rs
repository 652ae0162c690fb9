//! The messaging frames on the wire ([`crate::wire::FrameKind::Message`]), encoded with postcard.

use serde::{Deserialize, Serialize};

use super::{Kind, ServiceError};

/// Where a reliable message sits in its sender's sequence to one receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Seq {
    /// The sender's run: a new run starts a new sequence.
    pub(crate) epoch: u32,
    /// This message's number, from 1.
    pub(crate) n: u64,
    /// Every number below this is acknowledged or abandoned by the sender: nothing below it will
    /// be sent again, so a receiver waiting for one may skip ahead.
    pub(crate) base: u64,
}

/// A request's id, unique per caller across its runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct RequestId {
    /// The caller's run.
    pub(crate) epoch: u32,
    /// The call's number within the run.
    pub(crate) n: u64,
}

/// One messaging frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Frame {
    /// A message; `seq` is set for the reliable class.
    Data {
        kind: Kind,
        seq: Option<Seq>,
        #[serde(with = "serde_bytes_compat")]
        body: Vec<u8>,
    },
    /// "Every message of run `epoch` below `next` arrived, and those marked in `sack`":
    /// bit `i` of word `w` stands for number `next + 1 + 64 * w + i`.
    Ack {
        epoch: u32,
        next: u64,
        sack: Vec<u64>,
    },
    /// Reserve a run of `service` with `body` (it runs only on [`Frame::Run`]); `ttl_ms` is how
    /// long the caller keeps trying.
    Request {
        id: RequestId,
        service: String,
        ttl_ms: u32,
        #[serde(with = "serde_bytes_compat")]
        body: Vec<u8>,
    },
    /// The provider (in run `epoch`) holds the request: the caller may confirm it with
    /// [`Frame::Run`], and must not send it elsewhere once it did.
    Accepted { id: RequestId, epoch: u32 },
    /// Run the request reserved earlier (or, once it runs, send the reply when there is one).
    Run { id: RequestId },
    /// The request is running (or ran).
    Started { id: RequestId },
    /// The outcome of a request.
    Reply {
        id: RequestId,
        result: Result<Vec<u8>, ServiceError>,
    },
}

/// Why a messaging frame could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("malformed messaging frame: {0}")]
pub(crate) struct DecodeError(#[from] postcard::Error);

impl Frame {
    /// Encodes the frame.
    pub(crate) fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("messaging frames always serialize")
    }

    /// Decodes a frame; any trailing byte is an error.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Frame, DecodeError> {
        let (frame, rest) = postcard::take_from_bytes(bytes)?;
        if !rest.is_empty() {
            return Err(DecodeError(postcard::Error::DeserializeUnexpectedEnd));
        }
        Ok(frame)
    }
}

/// Bodies as postcard byte strings (a length and the bytes) rather than sequences of integers.
mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_reject_trailing_bytes() {
        let frames = [
            Frame::Data {
                kind: Kind::Broadcast { term: 7 },
                seq: Some(Seq {
                    epoch: 2,
                    n: 300,
                    base: 290,
                }),
                body: b"{\"on\":true}".to_vec(),
            },
            Frame::Data {
                kind: Kind::Direct,
                seq: None,
                body: Vec::new(),
            },
            Frame::Ack {
                epoch: 2,
                next: 5,
                sack: vec![0b101],
            },
            Frame::Request {
                id: RequestId { epoch: 1, n: 4 },
                service: "light".into(),
                ttl_ms: 2000,
                body: b"{}".to_vec(),
            },
            Frame::Accepted {
                id: RequestId { epoch: 1, n: 4 },
                epoch: 3,
            },
            Frame::Run {
                id: RequestId { epoch: 1, n: 4 },
            },
            Frame::Started {
                id: RequestId { epoch: 1, n: 4 },
            },
            Frame::Reply {
                id: RequestId { epoch: 1, n: 4 },
                result: Err(ServiceError::NoSuchService),
            },
        ];
        for frame in frames {
            let mut bytes = frame.encode();
            assert_eq!(Frame::decode(&bytes).unwrap(), frame);
            bytes.push(0);
            assert!(Frame::decode(&bytes).is_err());
        }
        assert!(Frame::decode(&[]).is_err());
        assert!(Frame::decode(&[0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }

    #[test]
    fn a_small_message_costs_a_few_bytes_of_framing() {
        let frame = Frame::Data {
            kind: Kind::Publish,
            seq: Some(Seq {
                epoch: 3,
                n: 100_000,
                base: 99_000,
            }),
            body: vec![b'x'; 64],
        };
        assert!(frame.encode().len() <= 64 + 12, "{}", frame.encode().len());
    }
}
