//! Encoding of Consort's own control messages, behind one module so the format can evolve.
//!
//! SWIM packets are foca's own encoding and travel as [`crate::wire::FrameKind::Swim`]; everything
//! Consort adds around membership is a [`Control`] message encoded with postcard.

use serde::{Deserialize, Serialize};

use crate::clock::{Probe, ProbeReply};
use crate::election::{Ack, Claim};
use crate::id::Identity;

/// A Consort control message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Control {
    /// "Let me in": sent to a seed or discovered address whose node id is not known yet. The
    /// receiver answers with a SWIM announce to the sender's identity, which foca accepts.
    Hello {
        /// The sender's identity.
        identity: Identity,
    },
    /// "I lead at this term", from a leader to every live member.
    Claim(Claim),
    /// The answer to a claim.
    Ack(Ack),
    /// A clock probe (t1).
    Probe(Probe),
    /// The answer to a clock probe (t1, t2, t3).
    ProbeReply(ProbeReply),
    /// The sender is stopping on purpose: peers show it as `left`, not `down`.
    Leave {
        /// The identity that is leaving (its generation matters: a later one may already be back).
        identity: Identity,
    },
}

/// Why a control payload could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("malformed control message: {0}")]
pub struct DecodeError(#[from] postcard::Error);

impl Control {
    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("control messages always serialize")
    }

    /// Decodes a message; any trailing byte is an error.
    pub fn decode(bytes: &[u8]) -> Result<Control, DecodeError> {
        let (msg, rest) = postcard::take_from_bytes(bytes)?;
        if !rest.is_empty() {
            return Err(DecodeError(postcard::Error::DeserializeUnexpectedEnd));
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::NodeId;

    #[test]
    fn leave_round_trips_and_rejects_trailing_bytes() {
        let msg = Control::Leave {
            identity: Identity {
                id: NodeId(3),
                addr: "10.0.0.1:7470".parse().unwrap(),
                generation: 4,
                priority: -2,
                name: "kitchen".into(),
            },
        };
        let mut bytes = msg.encode();
        assert_eq!(Control::decode(&bytes).unwrap(), msg);
        bytes.push(0);
        assert!(Control::decode(&bytes).is_err());
        assert!(Control::decode(&[]).is_err());
        assert!(Control::decode(&[9, 9, 9]).is_err());
    }
}
