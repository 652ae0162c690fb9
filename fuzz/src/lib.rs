//! The harness shared by the fuzz targets and the seed generator.
//!
//! A `datagram` input is first handed whole, as untrusted bytes, to `wire::open` and to an
//! [`Engine`]. It is then read as a script of records that drive the same engine:
//!
//! ```text
//! record   = head:u8 body
//! head & 3 = 0  raw:     len:u16le bytes      delivered as is
//!            1  swim:    len:u16le payload    sealed with the group key as a Swim frame
//!            2  control: len:u16le payload    sealed with the group key as a Control frame
//! head & 7 = 3  tick:    (no body)            time advances by (head >> 3) * 25 ms, timers fire
//!            7  replica: len:u16le payload    sealed with the group key as a Replica frame
//! swim, control: (head >> 2) & 3 picks the wire sender in SENDERS (1 is the engine itself),
//!                (head >> 4) & 3 its counter: 0 fresh, 1 the last one again (a replay),
//!                2 far behind the last one, 3 u64::MAX - (head >> 6)
//! replica:       (head >> 3) & 3 picks the sender, (head >> 5) & 3 the counter (3: u64::MAX)
//! ```
//!
//! A `len` running past the end takes what is left. Sealing the payload makes the authenticated
//! paths reachable: foca's SWIM packet decoding, `Control::decode` and `ReplicaMessage::decode`.
//!
//! Oracles, checked after every datagram: a datagram `wire::open` rejects increments exactly that
//! reason's counter by one and nothing else; an authentic one from another sender is counted as a
//! replay exactly when a model replay window says so, and otherwise as malformed at most once (for
//! control and replica frames: exactly when their decoder fails); every datagram the engine sends opens
//! under the group key, comes from its own id, uses a counter that grows and lies below the limit
//! it saved earlier.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use consort_proto::codec::Control;
use consort_proto::replica::ReplicaMessage;
use consort_proto::wire::{self, FrameKind, ReplayWindow};
use consort_proto::{Config, Engine, Keyring, NodeId, Output, RejectReason, SavedState, Setup};

/// The group secret every harness engine uses.
pub const SECRET: &str = "consort fuzzing secret (not a real one)";
/// The group name.
pub const GROUP: &str = "fuzz";
/// The id of the engine under test.
pub const SELF_ID: NodeId = NodeId(0xb0b0_b0b0_b0b0_b0b0);
/// Wire senders a sealed record can claim, by index.
pub const SENDERS: [NodeId; 4] = [
    NodeId(0xa11c_e000_0000_0001),
    SELF_ID,
    NodeId(0xca51_0000_0000_0003),
    NodeId(0),
];
/// Most records run per input (keeps every input fast).
pub const MAX_RECORDS: usize = 64;

/// The fixed keyring (derived once).
pub fn keyring() -> &'static Keyring {
    static RING: LazyLock<Keyring> =
        LazyLock::new(|| Keyring::from_secrets(&[SECRET], GROUP).expect("long enough"));
    &RING
}

/// Address of the engine under test.
pub fn self_addr() -> SocketAddr {
    "10.0.0.2:7470".parse().unwrap()
}

/// The address a datagram appears to come from.
pub fn peer_addr() -> SocketAddr {
    "10.0.0.1:7470".parse().unwrap()
}

/// The setup of a harness node.
pub fn setup(id: NodeId, name: &str, addr: SocketAddr, seed: u64) -> Setup {
    Setup {
        id,
        name: name.into(),
        priority: 0,
        addr,
        saved: SavedState::default(),
        keyring: keyring().clone(),
        config: Config::default(),
        seed,
        wall_ms: 0,
        replica: Default::default(),
        entries: Vec::new(),
        meta: Default::default(),
        election: Default::default(),
    }
}

/// One step of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// Bytes delivered as they are.
    Raw(&'a [u8]),
    /// A payload sealed with the group key.
    Sealed {
        /// Frame kind.
        kind: FrameKind,
        /// Index into [`SENDERS`].
        sender: u8,
        /// Counter choice, 0..=3 (see the module docs).
        counter: u8,
        /// Spare bits (used by counter choice 3).
        extra: u8,
        /// The payload (clipped to [`wire::MAX_PAYLOAD`] when sealed).
        payload: &'a [u8],
    },
    /// Time advances by this many 25 ms steps (at most 31) and due timers fire.
    Tick(u8),
}

impl Record<'_> {
    /// Appends the encoding of this record.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let body = |out: &mut Vec<u8>, head: u8, bytes: &[u8]| {
            out.push(head);
            let len = u16::try_from(bytes.len()).expect("record body under 64 KiB");
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(bytes);
        };
        match *self {
            Record::Raw(bytes) => body(out, 0, bytes),
            Record::Sealed {
                kind,
                sender,
                counter,
                extra,
                payload,
            } => {
                let head = match kind {
                    FrameKind::Swim => {
                        1 | (sender & 3) << 2 | (counter & 3) << 4 | (extra & 3) << 6
                    }
                    FrameKind::Control => {
                        2 | (sender & 3) << 2 | (counter & 3) << 4 | (extra & 3) << 6
                    }
                    FrameKind::Message => 7 | (sender & 3) << 3 | (counter & 3) << 5 | 0x80,
                    _ => 7 | (sender & 3) << 3 | (counter & 3) << 5,
                };
                body(out, head, payload)
            }
            Record::Tick(steps) => out.push(3 | (steps & 0x1f) << 3),
        }
    }
}

/// Encodes a script.
pub fn encode(records: &[Record<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        r.encode_into(&mut out);
    }
    out
}

/// Reads a script; never fails (a short tail becomes a short record).
pub fn parse(mut data: &[u8]) -> Vec<Record<'_>> {
    let mut records = Vec::new();
    while let Some((&head, rest)) = data.split_first() {
        if records.len() == MAX_RECORDS {
            break;
        }
        data = rest;
        if head & 7 == 3 {
            records.push(Record::Tick(head >> 3));
            continue;
        }
        let len = match data {
            [lo, hi, rest @ ..] => {
                data = rest;
                u16::from_le_bytes([*lo, *hi]) as usize
            }
            _ => {
                let n = data.len();
                data = &[];
                n
            }
        };
        let (body, rest) = data.split_at(len.min(data.len()));
        data = rest;
        records.push(match head & 3 {
            0 => Record::Raw(body),
            3 => Record::Sealed {
                kind: if head & 0x80 != 0 {
                    FrameKind::Message
                } else {
                    FrameKind::Replica
                },
                sender: head >> 3 & 3,
                counter: head >> 5 & 3,
                extra: 0,
                payload: body,
            },
            k => Record::Sealed {
                kind: if k == 1 {
                    FrameKind::Swim
                } else {
                    FrameKind::Control
                },
                sender: head >> 2 & 3,
                counter: head >> 4 & 3,
                extra: head >> 6,
                payload: body,
            },
        });
    }
    records
}

/// An engine under test with the oracles' bookkeeping.
pub struct Harness {
    /// The engine under test.
    pub engine: Engine,
    now: Instant,
    /// Next fresh counter per sender index.
    next: [u64; SENDERS.len()],
    /// What the engine's replay windows should say.
    model: HashMap<NodeId, ReplayWindow>,
    /// Latest counter limit the engine saved.
    saved_limit: Option<u64>,
    /// Counter of the last datagram the engine sent.
    last_sent: Option<u64>,
}

impl Harness {
    /// A fresh engine (id [`SELF_ID`]), its first outputs drained.
    pub fn new(now: Instant) -> Harness {
        let engine = Engine::new(setup(SELF_ID, "under test", self_addr(), 7), now);
        let mut h = Harness {
            engine,
            now,
            next: [1; SENDERS.len()],
            model: HashMap::new(),
            saved_limit: None,
            last_sent: None,
        };
        h.drain();
        h
    }

    /// Runs a whole fuzz input: first as one untrusted datagram, then as a script.
    pub fn run_input(data: &[u8]) {
        let mut h = Harness::new(Instant::now());
        h.deliver(data);
        for record in parse(data) {
            h.step(&record);
        }
    }

    /// Runs one record.
    pub fn step(&mut self, record: &Record<'_>) {
        match *record {
            Record::Raw(bytes) => self.deliver(bytes),
            Record::Sealed {
                kind,
                sender,
                counter,
                extra,
                payload,
            } => {
                let s = usize::from(sender & 3);
                let last = self.next[s].saturating_sub(1);
                let counter = match counter & 3 {
                    0 => last.saturating_add(1),
                    1 => last,
                    2 => last.saturating_sub(ReplayWindow::WIDTH - 24),
                    _ => u64::MAX - u64::from(extra & 3),
                };
                self.next[s] = self.next[s].max(counter.saturating_add(1));
                let payload = &payload[..payload.len().min(wire::MAX_PAYLOAD)];
                let d = wire::seal(keyring().primary(), SENDERS[s], counter, kind, payload);
                self.deliver(&d);
            }
            Record::Tick(steps) => {
                self.now += Duration::from_millis(25) * u32::from(steps);
                self.engine.handle_timeout(self.now);
                self.drain();
            }
        }
    }

    /// Delivers one datagram and checks the reject counters.
    pub fn deliver(&mut self, datagram: &[u8]) {
        let before = self.engine.stats().clone();
        let opened = wire::open(keyring(), datagram);
        self.engine.handle_datagram(self.now, peer_addr(), datagram);
        let after = self.engine.stats().clone();
        assert_eq!(after.datagrams_in, before.datagrams_in + 1);
        assert_eq!(after.bytes_in, before.bytes_in + datagram.len() as u64);
        let grew = grown(&before.rejected, &after.rejected);
        match opened {
            Err(reason) => assert_eq!(grew, [reason], "{datagram:02x?}"),
            Ok(o) if o.sender == SELF_ID => assert_eq!(grew, [], "own datagram"),
            Ok(o) => {
                let fresh = self.model.entry(o.sender).or_default().accept(o.counter);
                if !fresh {
                    assert_eq!(grew, [RejectReason::Replay]);
                } else if o.kind == FrameKind::Control {
                    let expect: &[RejectReason] = match Control::decode(&o.payload) {
                        Ok(c) => {
                            assert_eq!(Control::decode(&c.encode()).unwrap(), c);
                            &[]
                        }
                        Err(_) => &[RejectReason::Malformed],
                    };
                    assert_eq!(grew, expect);
                } else if o.kind == FrameKind::Replica {
                    let expect: &[RejectReason] = match ReplicaMessage::decode(&o.payload) {
                        Some(_) => &[],
                        None => &[RejectReason::Malformed],
                    };
                    assert_eq!(grew, expect);
                } else {
                    // Some foca errors (a packet claiming to come from us, trailing custom
                    // broadcasts) are dropped without a counter; none may count twice.
                    assert!(
                        grew.is_empty() || grew == [RejectReason::Malformed],
                        "{grew:?}"
                    );
                }
            }
        }
        self.drain();
    }

    /// Drains the outputs, checking every datagram sent.
    pub fn drain(&mut self) {
        while let Some(out) = self.engine.poll_output() {
            match out {
                Output::Save(state) => {
                    if let Some(prev) = self.saved_limit {
                        assert!(state.counter_limit >= prev, "counter limit went back");
                    }
                    self.saved_limit = Some(state.counter_limit);
                }
                Output::Transmit { datagram, .. } => {
                    assert!(datagram.len() <= wire::MAX_DATAGRAM);
                    let o = wire::open(keyring(), &datagram).expect("own datagram opens");
                    assert_eq!(o.sender, self.engine.identity().id);
                    assert!(
                        self.last_sent.is_none_or(|c| o.counter > c),
                        "counter reused"
                    );
                    assert!(o.counter < self.saved_limit.expect("saved before sending"));
                    self.last_sent = Some(o.counter);
                    match o.kind {
                        FrameKind::Control => {
                            Control::decode(&o.payload).expect("own control message decodes");
                        }
                        FrameKind::Replica => {
                            ReplicaMessage::decode(&o.payload)
                                .expect("own replica message decodes");
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    }
}

/// The reasons whose counters grew, once per increment.
fn grown(
    before: &BTreeMap<RejectReason, u64>,
    after: &BTreeMap<RejectReason, u64>,
) -> Vec<RejectReason> {
    let mut grew = Vec::new();
    for reason in RejectReason::ALL {
        let b = before.get(&reason).copied().unwrap_or(0);
        let a = after.get(&reason).copied().unwrap_or(0);
        assert!(a >= b, "{reason} counter went back");
        grew.extend(std::iter::repeat_n(reason, (a - b) as usize));
    }
    grew
}

/// The `control` target: decoding arbitrary bytes never panics, and whatever decodes re-encodes
/// to something that decodes to the same message.
pub fn run_control(data: &[u8]) {
    if let Ok(msg) = Control::decode(data) {
        let again = Control::decode(&msg.encode()).expect("re-encoded message decodes");
        assert_eq!(again, msg);
    }
}
