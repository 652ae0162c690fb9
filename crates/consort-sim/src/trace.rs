//! Datagrams in words, for `CONSORT_SIM_TRACE=2`: each delivered datagram is opened with the
//! group key and shown as its SWIM message and the membership updates it carries, with nodes
//! named `n<index>`. Debugging a replayed seed usually starts here.

use consort_proto::codec::Control;
use consort_proto::wire::{self, FrameKind};
use consort_proto::{Identity, Keyring, NodeId};
use foca::{Codec, Message, PostcardCodec};

/// Describes one sealed datagram; `name` turns a node id into a short name.
pub(crate) fn describe(
    keyring: &Keyring,
    name: &dyn Fn(NodeId) -> String,
    datagram: &[u8],
) -> String {
    let opened = match wire::open(keyring, datagram) {
        Ok(opened) => opened,
        Err(reason) => return format!("unreadable ({reason})"),
    };
    match opened.kind {
        FrameKind::Swim => describe_swim(name, &opened.payload),
        FrameKind::Control => match Control::decode(&opened.payload) {
            Ok(control) => format!("{control:?}"),
            Err(e) => format!("control: {e}"),
        },
        other => format!("{other:?} frame, {} bytes", opened.payload.len()),
    }
}

/// A SWIM packet: sender, message, then `[member#generation state incarnation, ...]`.
fn describe_swim(name: &dyn Fn(NodeId) -> String, payload: &[u8]) -> String {
    let mut buf = payload;
    let Ok(header) = Codec::<Identity>::decode_header(&mut PostcardCodec, &mut buf) else {
        return "swim: bad header".into();
    };
    let who = |id: &Identity| format!("{}#{}", name(id.id), id.generation);
    let message = match &header.message {
        Message::PingReq {
            target,
            probe_number,
        } => format!("PingReq({}, {probe_number})", who(target)),
        Message::IndirectPing {
            origin,
            probe_number,
        } => {
            format!("IndirectPing({}, {probe_number})", who(origin))
        }
        Message::IndirectAck {
            target,
            probe_number,
        } => {
            format!("IndirectAck({}, {probe_number})", who(target))
        }
        Message::ForwardedAck {
            origin,
            probe_number,
        } => {
            format!("ForwardedAck({}, {probe_number})", who(origin))
        }
        other => format!("{other:?}"),
    };
    let mut updates = Vec::new();
    if buf.len() >= 2 {
        let count = u16::from_be_bytes([buf[0], buf[1]]);
        buf = &buf[2..];
        for _ in 0..count {
            let Ok(m) = Codec::<Identity>::decode_member(&mut PostcardCodec, &mut buf) else {
                break;
            };
            updates.push(format!(
                "{} {:?} {}",
                who(m.id()),
                m.state(),
                m.incarnation()
            ));
        }
    }
    format!(
        "{message} from {} (inc {}) to {} [{}]",
        who(&header.src),
        header.src_incarnation,
        who(&header.dst),
        updates.join(", ")
    )
}
