//! Reliable delivery between two nodes: numbered messages, cumulative and selective acks,
//! retransmission with backoff until a deadline, in-order delivery of each message once.
//!
//! A [`SendChannel`] numbers its messages from 1 within the sender's run (its `epoch`). Every
//! message carries the lowest number the sender may still send (`base`): everything below it is
//! acknowledged or abandoned, so a receiver may skip what it never got below `base` rather than
//! wait for it forever. A [`RecvChannel`] delivers in order, buffers what arrives early, and acks
//! the numbers it holds. Both are plain data structures; the caller supplies time.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::frame::{Frame, Seq};
use super::{Kind, MessageId};

/// The span of numbers in flight per receiver: a message is first sent only if its number is
/// below the oldest unacknowledged one plus this, so that selective acks always cover the
/// window. Later ones wait their turn.
pub(crate) const WINDOW: u64 = 64 * SACK_WORDS as u64;
/// How far ahead of the next expected number a receiver buffers.
const RECV_WINDOW: u64 = 4096;
/// Bytes a receiver buffers per sender while waiting for a gap to fill.
const RECV_BUFFER_BYTES: usize = 32 << 20;
/// Words of selective-ack bits (64 numbers each) after the cumulative point.
pub(crate) const SACK_WORDS: usize = 16;
/// Bounds of the retransmission timeout.
const MIN_RTO: Duration = Duration::from_millis(15);
const MAX_RTO: Duration = Duration::from_millis(800);
/// Least time between two transmissions of a message for a fast retransmit.
const MIN_GAP: Duration = Duration::from_millis(2);

/// A message numbered for one receiver.
#[derive(Debug)]
struct Queued {
    send: MessageId,
    kind: Kind,
    body: Arc<[u8]>,
    deadline: Instant,
}

#[derive(Debug)]
struct InFlight {
    msg: Queued,
    /// First transmission (for RTT samples).
    sent_at: Instant,
    /// Latest transmission.
    last_sent: Instant,
    retry_at: Instant,
    tries: u32,
}

/// The sending end of one (sender run, receiver) sequence.
#[derive(Debug)]
pub(crate) struct SendChannel {
    epoch: u32,
    /// The next number to hand out.
    next: u64,
    inflight: BTreeMap<u64, InFlight>,
    waiting: VecDeque<(u64, Queued)>,
    /// Smoothed round-trip time from acked first transmissions.
    srtt: Option<Duration>,
}

impl SendChannel {
    pub(crate) fn new(epoch: u32) -> SendChannel {
        SendChannel {
            epoch,
            next: 1,
            inflight: BTreeMap::new(),
            waiting: VecDeque::new(),
            srtt: None,
        }
    }

    /// Messages not yet acknowledged, sent or waiting.
    pub(crate) fn pending(&self) -> usize {
        self.inflight.len() + self.waiting.len()
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.pending() == 0
    }

    /// Numbers a message; [`SendChannel::transmit`] sends it when the window allows.
    pub(crate) fn push(&mut self, send: MessageId, kind: Kind, body: Arc<[u8]>, deadline: Instant) {
        let n = self.next;
        self.next += 1;
        self.waiting.push_back((
            n,
            Queued {
                send,
                kind,
                body,
                deadline,
            },
        ));
    }

    fn base(&self) -> u64 {
        self.inflight
            .keys()
            .next()
            .copied()
            .or_else(|| self.waiting.front().map(|(n, _)| *n))
            .unwrap_or(self.next)
    }

    fn rto(&self, tries: u32) -> Duration {
        let base = self
            .srtt
            .map_or(MIN_RTO, |srtt| (srtt * 3).max(MIN_RTO))
            .min(MAX_RTO);
        base.saturating_mul(1 << tries.min(6)).min(MAX_RTO)
    }

    fn frame(&self, n: u64, msg: &Queued) -> Frame {
        Frame::Data {
            kind: msg.kind,
            seq: Some(Seq {
                epoch: self.epoch,
                n,
                base: self.base(),
            }),
            body: msg.body.to_vec(),
        }
    }

    /// Frames to send now: waiting messages the window admits, then retransmissions due.
    pub(crate) fn transmit(&mut self, now: Instant, out: &mut Vec<Frame>) {
        let base = self.base();
        while let Some((n, msg)) = self.waiting.front() {
            if *n >= base + WINDOW {
                break;
            }
            // The frame is built while the message still counts as pending, so that `base` is
            // at most its own number.
            let frame = self.frame(*n, msg);
            let (n, msg) = self.waiting.pop_front().expect("present");
            out.push(frame);
            let retry_at = now + self.rto(0);
            self.inflight.insert(
                n,
                InFlight {
                    msg,
                    sent_at: now,
                    last_sent: now,
                    retry_at,
                    tries: 0,
                },
            );
        }
    }

    /// Retransmissions due at `now`.
    pub(crate) fn retransmit(&mut self, now: Instant, out: &mut Vec<Frame>) {
        let due: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.retry_at <= now)
            .map(|(n, _)| *n)
            .collect();
        for n in due {
            let tries = self.inflight[&n].tries + 1;
            let rto = self.rto(tries);
            let frame = self.frame(n, &self.inflight[&n].msg);
            out.push(frame);
            let f = self.inflight.get_mut(&n).expect("present");
            f.tries = tries;
            f.last_sent = now;
            f.retry_at = now + rto;
        }
    }

    /// Drops messages past their deadline; returns their sends.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<MessageId> {
        let mut gone = Vec::new();
        self.inflight.retain(|_, f| {
            let keep = f.msg.deadline > now;
            if !keep {
                gone.push(f.msg.send);
            }
            keep
        });
        self.waiting.retain(|(_, q)| {
            let keep = q.deadline > now;
            if !keep {
                gone.push(q.send);
            }
            keep
        });
        gone
    }

    /// Drops everything (the receiver left for good); returns the sends.
    pub(crate) fn abandon(&mut self) -> Vec<MessageId> {
        let mut gone: Vec<MessageId> = self.inflight.values().map(|f| f.msg.send).collect();
        gone.extend(self.waiting.iter().map(|(_, q)| q.send));
        self.inflight.clear();
        self.waiting.clear();
        gone
    }

    /// Makes every message in flight due now (the receiver just came back).
    pub(crate) fn hurry(&mut self, now: Instant) {
        for f in self.inflight.values_mut() {
            f.retry_at = now;
        }
    }

    /// Handles an ack; returns the sends it completes.
    pub(crate) fn on_ack(
        &mut self,
        now: Instant,
        epoch: u32,
        next: u64,
        sack: &[u64],
    ) -> Vec<MessageId> {
        if epoch != self.epoch {
            return Vec::new();
        }
        let mut done = Vec::new();
        let mut highest = 0;
        while let Some(entry) = self.inflight.first_entry() {
            if *entry.key() >= next {
                break;
            }
            let f = entry.remove();
            self.sample_rtt(now, &f);
            done.push(f.msg.send);
        }
        for (w, word) in sack.iter().take(SACK_WORDS).enumerate() {
            let mut bits = *word;
            while bits != 0 {
                let i = bits.trailing_zeros() as u64;
                bits &= bits - 1;
                let n = next + 1 + 64 * w as u64 + i;
                if let Some(f) = self.inflight.remove(&n) {
                    self.sample_rtt(now, &f);
                    done.push(f.msg.send);
                }
                highest = highest.max(n);
            }
        }
        // Fast retransmit: a number below one the receiver holds, sent more than a round trip
        // ago, was lost; resend it now rather than at its timeout.
        let gap = self
            .srtt
            .map_or(MIN_RTO, |srtt| srtt + srtt / 2)
            .max(MIN_GAP);
        for (n, f) in self.inflight.range_mut(..highest) {
            if now.saturating_duration_since(f.last_sent) >= gap && *n < highest {
                f.retry_at = f.retry_at.min(now);
            }
        }
        done
    }

    fn sample_rtt(&mut self, now: Instant, f: &InFlight) {
        if f.tries == 0 {
            let sample = now.saturating_duration_since(f.sent_at);
            self.srtt = Some(match self.srtt {
                Some(srtt) => (srtt * 7 + sample) / 8,
                None => sample,
            });
        }
    }
}

/// What a receiver does with an arriving reliable message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// Deliver these, in this order.
    Deliver(Vec<(Kind, Vec<u8>)>),
    /// Already delivered (or skipped): ack again, deliver nothing.
    Duplicate,
    /// From an earlier run of the sender: ignore entirely.
    Stale,
}

/// The receiving end of one sender's sequence.
#[derive(Debug)]
pub(crate) struct RecvChannel {
    epoch: u32,
    /// The next number to deliver; everything below was delivered or skipped.
    next: u64,
    buffer: BTreeMap<u64, (Kind, Vec<u8>)>,
    buffered_bytes: usize,
}

impl RecvChannel {
    /// A channel that starts where the first message it sees says the sender's sequence is.
    pub(crate) fn new(seq: Seq) -> RecvChannel {
        RecvChannel {
            epoch: seq.epoch,
            next: seq.base.max(1),
            buffer: BTreeMap::new(),
            buffered_bytes: 0,
        }
    }

    /// Takes a message; says what to deliver.
    pub(crate) fn receive(&mut self, seq: Seq, kind: Kind, body: Vec<u8>) -> Received {
        if seq.epoch < self.epoch {
            return Received::Stale;
        }
        if seq.epoch > self.epoch {
            *self = RecvChannel::new(seq);
        }
        let mut out = Vec::new();
        if seq.base > self.next {
            // The sender gave up on what is missing below `base`: deliver what did arrive, in
            // order, and move on.
            let rest = self.buffer.split_off(&seq.base);
            for (_, msg) in std::mem::replace(&mut self.buffer, rest) {
                self.buffered_bytes -= msg.1.len();
                out.push(msg);
            }
            self.next = seq.base;
            while let Some(msg) = self.buffer.remove(&self.next) {
                self.buffered_bytes -= msg.1.len();
                out.push(msg);
                self.next += 1;
            }
        }
        if seq.n < self.next || self.buffer.contains_key(&seq.n) {
            return if out.is_empty() {
                Received::Duplicate
            } else {
                Received::Deliver(out)
            };
        }
        if seq.n == self.next {
            out.push((kind, body));
            self.next += 1;
            while let Some(msg) = self.buffer.remove(&self.next) {
                self.buffered_bytes -= msg.1.len();
                out.push(msg);
                self.next += 1;
            }
        } else if seq.n - self.next <= RECV_WINDOW
            && self.buffered_bytes + body.len() <= RECV_BUFFER_BYTES
        {
            self.buffered_bytes += body.len();
            self.buffer.insert(seq.n, (kind, body));
        }
        // Beyond the window or the buffer budget: dropped unacked; the sender sends it again.
        if out.is_empty() {
            Received::Duplicate
        } else {
            Received::Deliver(out)
        }
    }

    /// The ack describing what this channel holds.
    pub(crate) fn ack(&self) -> Frame {
        let mut sack = vec![0u64; SACK_WORDS];
        for &n in self.buffer.keys() {
            let offset = n - self.next - 1;
            let (w, i) = ((offset / 64) as usize, offset % 64);
            if w >= SACK_WORDS {
                break;
            }
            sack[w] |= 1 << i;
        }
        while sack.last() == Some(&0) {
            sack.pop();
        }
        Frame::Ack {
            epoch: self.epoch,
            next: self.next,
            sack,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn data(frame: &Frame) -> (Seq, Kind, Vec<u8>) {
        match frame {
            Frame::Data {
                seq: Some(seq),
                kind,
                body,
            } => (*seq, *kind, body.clone()),
            other => panic!("not reliable data: {other:?}"),
        }
    }

    fn ack_parts(frame: &Frame) -> (u32, u64, Vec<u64>) {
        match frame {
            Frame::Ack { epoch, next, sack } => (*epoch, *next, sack.clone()),
            other => panic!("not an ack: {other:?}"),
        }
    }

    /// Drives a sender and a receiver over a link losing `loss` of frames both ways, with
    /// reordering; returns what was delivered and which sends completed.
    fn run(seed: u64, loss: f64, count: u64) -> (Vec<u64>, Vec<MessageId>, u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let t0 = Instant::now();
        let mut now = t0;
        let far = t0 + Duration::from_secs(3600);
        let mut tx = SendChannel::new(1);
        for i in 0..count {
            tx.push(i, Kind::Publish, i.to_be_bytes().to_vec().into(), far);
        }
        let mut rx: Option<RecvChannel> = None;
        let mut delivered = Vec::new();
        let mut done = Vec::new();
        let mut frames = Vec::new();
        let mut sent = 0;
        while !tx.is_idle() {
            frames.clear();
            tx.transmit(now, &mut frames);
            tx.retransmit(now, &mut frames);
            sent += frames.len() as u64;
            // Reorder: shuffle each burst.
            for i in (1..frames.len()).rev() {
                frames.swap(i, rng.random_range(0..=i));
            }
            let mut acks = Vec::new();
            for frame in frames.drain(..) {
                if rng.random_bool(loss) {
                    continue;
                }
                let (seq, kind, body) = data(&frame);
                let rx = rx.get_or_insert_with(|| RecvChannel::new(seq));
                if let Received::Deliver(msgs) = rx.receive(seq, kind, body) {
                    for (_, body) in msgs {
                        delivered.push(u64::from_be_bytes(body.try_into().unwrap()));
                    }
                }
                acks.push(rx.ack());
            }
            now += Duration::from_millis(5);
            for ack in acks {
                if rng.random_bool(loss) {
                    continue;
                }
                let (epoch, next, sack) = ack_parts(&ack);
                done.extend(tx.on_ack(now, epoch, next, &sack));
            }
            assert!(now < t0 + Duration::from_secs(600), "no progress");
        }
        (delivered, done, sent)
    }

    #[test]
    fn everything_arrives_once_in_order_under_loss_and_reordering() {
        for seed in 0..20 {
            let (delivered, mut done, sent) = run(seed, 0.2, 3000);
            assert_eq!(delivered, (0..3000).collect::<Vec<_>>(), "seed {seed}");
            done.sort_unstable();
            assert_eq!(done, (0..3000).collect::<Vec<_>>(), "seed {seed}");
            assert!(sent < 3000 * 17 / 10, "seed {seed}: {sent} transmissions");
        }
    }

    #[test]
    fn without_loss_nothing_is_sent_twice() {
        let (delivered, _, sent) = run(1, 0.0, 5000);
        assert_eq!(delivered.len(), 5000);
        assert_eq!(sent, 5000);
    }

    #[test]
    fn abandoned_messages_are_skipped_and_later_ones_still_delivered() {
        let t0 = Instant::now();
        let mut tx = SendChannel::new(4);
        tx.push(
            1,
            Kind::Publish,
            b"a".to_vec().into(),
            t0 + Duration::from_millis(10),
        );
        tx.push(
            2,
            Kind::Publish,
            b"b".to_vec().into(),
            t0 + Duration::from_secs(60),
        );
        let mut out = Vec::new();
        tx.transmit(t0, &mut out);
        assert_eq!(out.len(), 2);
        // The first is lost; the receiver holds the second and waits.
        let (seq, kind, body) = data(&out[1]);
        let mut rx = RecvChannel::new(seq);
        assert_eq!(rx.receive(seq, kind, body), Received::Duplicate);
        // The first expires at the sender; the next retransmission says so.
        assert_eq!(tx.expire(t0 + Duration::from_millis(20)), vec![1]);
        out.clear();
        tx.retransmit(t0 + Duration::from_secs(1), &mut out);
        let (seq, kind, body) = data(&out[0]);
        assert_eq!(seq.base, 2);
        assert_eq!(
            rx.receive(seq, kind, body),
            Received::Deliver(vec![(Kind::Publish, b"b".to_vec())])
        );
        let (_, next, _) = ack_parts(&rx.ack());
        assert_eq!(tx.on_ack(t0, 4, next, &[]), vec![2]);
        assert!(tx.is_idle());
    }

    #[test]
    fn a_new_run_of_the_sender_restarts_the_sequence_and_old_runs_are_ignored() {
        let seq = |epoch, n, base| Seq { epoch, n, base };
        let mut rx = RecvChannel::new(seq(1, 1, 1));
        assert!(matches!(
            rx.receive(seq(1, 1, 1), Kind::Publish, vec![1]),
            Received::Deliver(_)
        ));
        assert!(matches!(
            rx.receive(seq(1, 2, 1), Kind::Publish, vec![2]),
            Received::Deliver(_)
        ));
        assert_eq!(
            rx.receive(seq(1, 2, 1), Kind::Publish, vec![2]),
            Received::Duplicate
        );
        assert!(matches!(
            rx.receive(seq(2, 1, 1), Kind::Publish, vec![3]),
            Received::Deliver(_)
        ));
        assert_eq!(
            rx.receive(seq(1, 3, 1), Kind::Publish, vec![4]),
            Received::Stale
        );
    }

    #[test]
    fn the_receiver_buffers_only_within_its_window() {
        let seq = |n| Seq {
            epoch: 1,
            n,
            base: 1,
        };
        let mut rx = RecvChannel::new(seq(1));
        assert_eq!(
            rx.receive(seq(RECV_WINDOW + 2), Kind::Publish, vec![0]),
            Received::Duplicate
        );
        assert!(rx.buffer.is_empty());
        assert_eq!(
            rx.receive(seq(3), Kind::Publish, vec![0]),
            Received::Duplicate
        );
        assert_eq!(ack_parts(&rx.ack()), (1, 1, vec![0b10]));
    }
}
