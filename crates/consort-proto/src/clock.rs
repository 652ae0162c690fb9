//! Clock: round-trip time and clock offset per peer, and the group time that follows the leader.
//!
//! Offsets are estimated as NTP does, from the four timestamps of one exchange: the prober's wall
//! time when it sends a [`Probe`] (t1), the peer's on receipt (t2) and on answering with a
//! [`ProbeReply`] (t3), and the prober's when the reply arrives (t4). Then
//!
//! ```text
//! offset = ((t2 - t1) + (t3 - t4)) / 2      the peer's clock minus ours
//! delay  = (t4 - t1) - (t3 - t2)             the round trip, without the peer's turnaround
//! ```
//!
//! The offset is exact when both directions take equally long; otherwise it is off by half the
//! difference, and never by more than `delay / 2`. So each peer keeps its last few samples and
//! trusts the one with the lowest delay (NTP's clock filter): a fast round trip cannot hide much
//! asymmetry. An older sample also loses trust as the clocks drift apart since it was taken, and
//! is dropped if a newer one contradicts it (offsets farther apart than half of both round
//! trips): the peer's clock stepped, or it restarted on another clock.
//!
//! Wall times are microseconds since the Unix epoch, passed in by the caller, as is the monotonic
//! `now` used to age samples: nothing here reads a clock. The engine sends probes to live peers
//! (say every second), answers probes with [`Probe::reply`], feeds replies to
//! [`GroupClock::handle_reply`], and tells the clock who leads with [`GroupClock::set_leader`].

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::id::NodeId;

/// How offsets are estimated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockConfig {
    /// Samples kept per peer; the filter picks among them (NTP keeps 8).
    pub window: usize,
    /// Assumed worst relative drift of two clocks, in parts per million: a sample's uncertainty
    /// grows by this much per second of age (NTP assumes 15).
    pub drift_ppm: u32,
}

impl Default for ClockConfig {
    fn default() -> Self {
        ClockConfig {
            window: 8,
            drift_ppm: 15,
        }
    }
}

/// A clock probe: "what time is it for you?"
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// The prober's wall time when sending (t1), µs.
    pub origin_us: i64,
}

impl Probe {
    /// The answer, stamped with the wall times at which the probe arrived (t2) and the reply
    /// leaves (t3).
    pub fn reply(&self, receive_us: i64, transmit_us: i64) -> ProbeReply {
        ProbeReply {
            origin_us: self.origin_us,
            receive_us,
            transmit_us,
        }
    }
}

/// The answer to a [`Probe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReply {
    /// The probe's origin time, echoed (t1), µs.
    pub origin_us: i64,
    /// The peer's wall time when the probe arrived (t2), µs.
    pub receive_us: i64,
    /// The peer's wall time when the reply left (t3), µs.
    pub transmit_us: i64,
}

/// One exchange's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The peer's clock minus ours, µs.
    pub offset_us: i64,
    /// The round trip, without the peer's turnaround, µs.
    pub delay_us: u64,
    /// When the reply arrived (monotonic).
    pub at: Instant,
}

impl Sample {
    /// Computes a sample from a reply and the wall time it arrived at (t4).
    ///
    /// Fails if the timestamps cannot come from one exchange: the peer answered before it was
    /// asked, the round trip is negative (a clock stepped), or the numbers overflow.
    pub fn from_reply(
        reply: &ProbeReply,
        destination_us: i64,
        at: Instant,
    ) -> Result<Sample, ReplyError> {
        let [t1, t2, t3, t4] = [
            reply.origin_us,
            reply.receive_us,
            reply.transmit_us,
            destination_us,
        ]
        .map(i128::from);
        let turnaround = t3 - t2;
        let delay = (t4 - t1) - turnaround;
        if turnaround < 0 || delay < 0 {
            return Err(ReplyError::Inconsistent);
        }
        let offset = ((t2 - t1) + (t3 - t4)) / 2;
        Ok(Sample {
            offset_us: i64::try_from(offset).map_err(|_| ReplyError::Inconsistent)?,
            delay_us: u64::try_from(delay).map_err(|_| ReplyError::Inconsistent)?,
            at,
        })
    }

    /// Whether one clock can have given both samples: the true offset is within half the round
    /// trip of each sample's offset, give or take the drift since the older one, so the two
    /// offsets are at most the sum of those apart.
    fn agrees_with(&self, newer: &Sample, drift_ppm: u32) -> bool {
        let age_us = newer.at.saturating_duration_since(self.at).as_micros();
        let drift = age_us * u128::from(drift_ppm) / 1_000_000;
        // 2 µs for the rounding of each offset.
        let margin = u128::from(self.delay_us / 2 + newer.delay_us / 2 + 2) + drift;
        u128::from(self.offset_us.abs_diff(newer.offset_us)) <= margin
    }
}

/// Why a reply was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// It answers no probe outstanding to that peer (never sent, already answered, or too old).
    #[error("reply to no outstanding probe")]
    Unsolicited,
    /// Its timestamps cannot come from one exchange.
    #[error("inconsistent probe timestamps")]
    Inconsistent,
}

/// What is known of one peer's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimate {
    /// The peer's clock minus ours, µs, from the most trusted sample.
    pub offset_us: i64,
    /// That sample's round trip, µs: `offset_us` is off by at most half of it.
    pub delay_us: u64,
    /// Smoothed round-trip time over all samples, µs (TCP's SRTT, gain 1/8).
    pub rtt_us: u64,
    /// Samples in the window.
    pub samples: usize,
}

/// Samples and outstanding probes of one peer.
#[derive(Clone, Debug, Default)]
struct PeerClock {
    /// Origin times of probes not answered yet, oldest first.
    pending: VecDeque<i64>,
    samples: VecDeque<Sample>,
    estimate: Option<Estimate>,
}

/// Per-peer offsets and round trips, and the group time.
#[derive(Clone, Debug)]
pub struct GroupClock {
    own: NodeId,
    config: ClockConfig,
    leader: Option<NodeId>,
    peers: HashMap<NodeId, PeerClock>,
}

impl GroupClock {
    /// A clock that knows no peer yet.
    pub fn new(own: NodeId, config: ClockConfig) -> GroupClock {
        GroupClock {
            own,
            config: ClockConfig {
                window: config.window.max(1),
                ..config
            },
            leader: None,
            peers: HashMap::new(),
        }
    }

    /// A probe to send to `peer` now; `local_wall_us` is this node's wall time.
    pub fn probe(&mut self, peer: NodeId, local_wall_us: i64) -> Probe {
        let window = self.config.window;
        let pending = &mut self.peers.entry(peer).or_default().pending;
        if pending.len() >= window {
            pending.pop_front();
        }
        pending.push_back(local_wall_us);
        Probe {
            origin_us: local_wall_us,
        }
    }

    /// Handles a reply from `peer` that arrived at wall time `destination_us` (t4) and monotonic
    /// time `now`; returns the peer's updated estimate.
    pub fn handle_reply(
        &mut self,
        now: Instant,
        peer: NodeId,
        reply: &ProbeReply,
        destination_us: i64,
    ) -> Result<Estimate, ReplyError> {
        let config = self.config;
        let clock = self.peers.get_mut(&peer).ok_or(ReplyError::Unsolicited)?;
        let index = clock
            .pending
            .iter()
            .position(|&t1| t1 == reply.origin_us)
            .ok_or(ReplyError::Unsolicited)?;
        let sample = Sample::from_reply(reply, destination_us, now)?;
        clock.pending.remove(index); // a duplicate of this reply is unsolicited

        // Samples this one contradicts were taken before the peer's clock stepped, or before it
        // restarted on another clock: kept, the filter could trust them for a whole window.
        clock
            .samples
            .retain(|old| old.agrees_with(&sample, config.drift_ppm));
        if clock.samples.len() >= config.window {
            clock.samples.pop_front();
        }
        clock.samples.push_back(sample);
        let estimate = clock.filter(now, &config, sample.delay_us);
        clock.estimate = Some(estimate);
        Ok(estimate)
    }

    /// What is known of `peer`'s clock.
    pub fn estimate(&self, peer: NodeId) -> Option<Estimate> {
        self.peers.get(&peer)?.estimate
    }

    /// Smoothed round-trip time to `peer`.
    pub fn rtt(&self, peer: NodeId) -> Option<Duration> {
        self.estimate(peer).map(|e| Duration::from_micros(e.rtt_us))
    }

    /// `peer`'s clock minus ours, µs.
    pub fn offset_us(&self, peer: NodeId) -> Option<i64> {
        self.estimate(peer).map(|e| e.offset_us)
    }

    /// Forgets a peer that left the group.
    pub fn forget(&mut self, peer: NodeId) {
        self.peers.remove(&peer);
    }

    /// Sets whose clock the group time follows.
    pub fn set_leader(&mut self, leader: Option<NodeId>) {
        self.leader = leader;
    }

    /// The leader's clock minus ours, µs: 0 if this node leads, `None` if there is no leader or
    /// its offset is not estimated yet.
    pub fn group_offset_us(&self) -> Option<i64> {
        match self.leader? {
            leader if leader == self.own => Some(0),
            leader => self.offset_us(leader),
        }
    }

    /// The leader's wall time as estimated here, µs, given this node's wall time: what devices
    /// use to act together at a future instant. Falls back to the local time while
    /// [`GroupClock::group_offset_us`] is `None`.
    ///
    /// It jumps when the leader changes or a better sample arrives; schedule with margins of a
    /// few milliseconds.
    pub fn group_time(&self, local_wall_us: i64) -> i64 {
        local_wall_us.saturating_add(self.group_offset_us().unwrap_or(0))
    }
}

impl PeerClock {
    /// The clock filter: the sample whose offset is the least uncertain (half its delay, plus
    /// the drift possible since it was taken), and the smoothed round trip after `delay_us`.
    fn filter(&self, now: Instant, config: &ClockConfig, delay_us: u64) -> Estimate {
        let uncertainty = |s: &Sample| {
            let age_us = now.saturating_duration_since(s.at).as_micros();
            u128::from(s.delay_us) + 2 * age_us * u128::from(config.drift_ppm) / 1_000_000
        };
        let best = self
            .samples
            .iter()
            .min_by_key(|s| uncertainty(s))
            .expect("called after a sample was added");
        let rtt_us = match self.estimate {
            Some(e) => {
                let (srtt, delay) = (i128::from(e.rtt_us), i128::from(delay_us));
                u64::try_from(srtt + (delay - srtt) / 8).unwrap_or(u64::MAX)
            }
            None => delay_us,
        };
        Estimate {
            offset_us: best.offset_us,
            delay_us: best.delay_us,
            rtt_us,
            samples: self.samples.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;

    /// Some wall time in 2025, µs since the Unix epoch.
    const EPOCH_US: i64 = 1_750_000_000_000_000;
    const HOUR_US: i64 = 3_600_000_000;
    const PEER: NodeId = NodeId(2);

    /// How long a datagram takes from the prober to the peer.
    #[derive(Clone, Copy)]
    enum Forward {
        /// Like a LAN or Wi-Fi: mostly near the floor, with bursts of queueing up to 5 ms.
        Bursty,
        /// Uniform over 0.1-5 ms: fast trips are rare, the worst case for the filter.
        Uniform,
    }

    /// A prober (A) and a peer (B) with skewed, possibly drifting clocks on a lossy link, in
    /// simulated time `t` (µs since the start).
    struct Pair {
        rng: StdRng,
        clock: GroupClock,
        start: Instant,
        skew_a: i64,
        skew_b: i64,
        drift_ppm_b: i64,
        forward: Forward,
        loss: f64,
    }

    /// What one exchange gave.
    struct Outcome {
        estimate: Estimate,
        /// The true offset when the reply arrived.
        truth: i64,
        /// The true round trip of this exchange, µs.
        delay: u64,
    }

    impl Pair {
        fn new(seed: u64, config: ClockConfig, forward: Forward) -> Pair {
            let mut rng = StdRng::seed_from_u64(seed);
            Pair {
                skew_a: rng.random_range(-HOUR_US..=HOUR_US),
                skew_b: rng.random_range(-HOUR_US..=HOUR_US),
                rng,
                clock: GroupClock::new(NodeId(1), config),
                start: Instant::now(),
                drift_ppm_b: 0,
                forward,
                loss: 0.15,
            }
        }

        fn wall_a(&self, t: i64) -> i64 {
            EPOCH_US + self.skew_a + t
        }

        fn wall_b(&self, t: i64) -> i64 {
            EPOCH_US + self.skew_b + t + t * self.drift_ppm_b / 1_000_000
        }

        fn forward_us(&mut self) -> i64 {
            match self.forward {
                Forward::Bursty if self.rng.random_bool(0.8) => self.rng.random_range(100..=300),
                Forward::Bursty => self.rng.random_range(300..=5_000),
                Forward::Uniform => self.rng.random_range(100..=5_000),
            }
        }

        /// Probes at `t`; `None` if the probe or the reply was lost.
        fn exchange(&mut self, t: i64) -> Option<Outcome> {
            let probe = self.clock.probe(PEER, self.wall_a(t));
            let there = t + self.forward_us();
            let turnaround = self.rng.random_range(10..=200);
            let back = self.rng.random_range(100..=500);
            if self.rng.random_bool(self.loss) {
                return None;
            }
            let reply = probe.reply(self.wall_b(there), self.wall_b(there + turnaround));
            let arrival = there + turnaround + back;
            let now = self.start + Duration::from_micros(arrival as u64);
            let estimate = self
                .clock
                .handle_reply(now, PEER, &reply, self.wall_a(arrival))
                .unwrap();
            Some(Outcome {
                estimate,
                truth: self.wall_b(arrival) - self.wall_a(arrival),
                delay: (arrival - t - turnaround) as u64,
            })
        }

        /// Probes once a second for `count` seconds; returns what each answered probe gave.
        fn run(&mut self, count: i64) -> Vec<Outcome> {
            (0..count)
                .filter_map(|n| self.exchange(n * 1_000_000))
                .collect()
        }
    }

    fn error(o: &Outcome) -> u64 {
        o.estimate.offset_us.abs_diff(o.truth)
    }

    #[test]
    fn symmetric_exchange_gives_exact_offset_and_delay() {
        let mut clock = GroupClock::new(NodeId(1), ClockConfig::default());
        let probe = clock.probe(PEER, 1_000);
        // The peer is 50 000 µs ahead; 300 µs each way; it answers in 40 µs.
        let reply = probe.reply(51_300, 51_340);
        let estimate = clock
            .handle_reply(Instant::now(), PEER, &reply, 1_640)
            .unwrap();
        assert_eq!(
            estimate,
            Estimate {
                offset_us: 50_000,
                delay_us: 600,
                rtt_us: 600,
                samples: 1,
            }
        );
        assert_eq!(clock.rtt(PEER), Some(Duration::from_micros(600)));
    }

    /// Skews up to an hour either way; the way out jitters from 0.1 to 5 ms but is mostly fast,
    /// the way back from 0.1 to 0.5 ms; 15% of exchanges lost. The filter's pick is off by half
    /// the difference of its two one-way times: small once the window holds a fast trip.
    #[test]
    fn offset_error_stays_under_a_millisecond_despite_skew_jitter_and_loss() {
        for seed in 0..50 {
            let mut pair = Pair::new(seed, ClockConfig::default(), Forward::Bursty);
            let outcomes = pair.run(120);
            assert!(outcomes.len() > 80, "seed {seed}: too few replies");
            for o in &outcomes {
                assert!(
                    error(o) <= o.estimate.delay_us / 2 + 1,
                    "seed {seed}: beyond theory"
                );
            }
            for o in &outcomes[8..] {
                assert!(error(o) < 1_000, "seed {seed}: off by {} µs", error(o));
            }
        }
    }

    /// When fast trips are rare (uniform jitter) the error can exceed a millisecond, but never
    /// half the chosen sample's delay, and the filter still beats averaging.
    #[test]
    fn uniform_jitter_error_stays_within_half_the_delay() {
        let (mut filtered, mut averaged) = (0u64, 0u64);
        for seed in 0..50 {
            let mut pair = Pair::new(seed, ClockConfig::default(), Forward::Uniform);
            let outcomes = pair.run(120);
            for o in &outcomes {
                assert!(error(o) <= o.estimate.delay_us / 2 + 1, "seed {seed}");
            }
            let last = outcomes.last().unwrap();
            filtered += error(last);
            let window = &pair.clock.peers[&PEER].samples;
            let mean = window.iter().map(|s| s.offset_us).sum::<i64>() / window.len() as i64;
            averaged += mean.abs_diff(last.truth);
        }
        assert!(
            filtered * 2 < averaged,
            "filter {filtered} vs mean {averaged}"
        );
    }

    /// The peer's clock runs 50 ppm fast (a cheap crystal): old samples lose trust with age.
    #[test]
    fn offset_follows_a_drifting_clock() {
        for seed in 0..20 {
            let mut pair = Pair::new(seed, ClockConfig::default(), Forward::Bursty);
            pair.drift_ppm_b = 50;
            let outcomes = pair.run(300);
            for o in &outcomes[8..] {
                assert!(error(o) < 1_000, "seed {seed}: off by {} µs", error(o));
            }
        }
    }

    /// The peer's clock steps by half an hour (set by hand, or it restarted on another clock):
    /// the first sample after the step contradicts the ones before, which are dropped at once.
    #[test]
    fn offset_follows_a_stepped_clock_at_once() {
        for seed in 0..20 {
            let mut pair = Pair::new(seed, ClockConfig::default(), Forward::Bursty);
            pair.loss = 0.0;
            pair.run(20);
            pair.skew_b += if seed % 2 == 0 {
                HOUR_US / 2
            } else {
                -HOUR_US / 2
            };
            let o = pair.exchange(20_000_000).expect("nothing lost");
            assert!(
                error(&o) <= o.estimate.delay_us / 2 + 1,
                "seed {seed}: off by {} µs",
                error(&o)
            );
            assert_eq!(o.estimate.samples, 1, "seed {seed}");
        }
    }

    #[test]
    fn rtt_estimate_is_within_the_jitter_bounds() {
        let config = ClockConfig {
            window: 8,
            drift_ppm: 0,
        };
        for seed in 0..20 {
            let mut pair = Pair::new(seed, config, Forward::Bursty);
            let outcomes = pair.run(100);
            for (i, o) in outcomes.iter().enumerate() {
                // Each trip takes 0.1-5 ms out and 0.1-0.5 ms back.
                assert!((200..=5_500).contains(&o.estimate.rtt_us), "seed {seed}");
                let window = &outcomes[i.saturating_sub(7)..=i];
                let fastest = window.iter().map(|o| o.delay).min().unwrap();
                assert_eq!(o.estimate.delay_us, fastest, "seed {seed}: delay is exact");
            }
            let mean = outcomes.iter().map(|o| o.delay).sum::<u64>() / outcomes.len() as u64;
            let srtt = outcomes.last().unwrap().estimate.rtt_us;
            assert!(
                srtt.abs_diff(mean) < 1_000,
                "seed {seed}: srtt {srtt} vs mean {mean}"
            );
        }
    }

    #[test]
    fn replies_must_answer_an_outstanding_probe() {
        let now = Instant::now();
        let mut clock = GroupClock::new(NodeId(1), ClockConfig::default());
        let stray = Probe { origin_us: 5 }.reply(10, 11);
        assert_eq!(
            clock.handle_reply(now, PEER, &stray, 20),
            Err(ReplyError::Unsolicited)
        );
        let probe = clock.probe(PEER, 100);
        let reply = probe.reply(150, 160);
        assert!(clock.handle_reply(now, PEER, &reply, 200).is_ok());
        assert_eq!(
            clock.handle_reply(now, PEER, &reply, 200),
            Err(ReplyError::Unsolicited),
            "a duplicate"
        );
        // Answered before it was asked, or a round trip shorter than the turnaround.
        let probe = clock.probe(PEER, 300);
        for (t2, t3, t4) in [(400, 390, 500), (400, 450, 320)] {
            assert_eq!(
                clock.handle_reply(now, PEER, &probe.reply(t2, t3), t4),
                Err(ReplyError::Inconsistent)
            );
        }
        // Hostile numbers are refused or absorbed, never a panic.
        for (t1, t2, t3, t4) in [
            (i64::MIN, i64::MAX, i64::MAX, i64::MAX),
            (i64::MAX, i64::MIN, i64::MIN, i64::MAX),
            (0, i64::MIN, i64::MAX, i64::MAX),
        ] {
            let probe = clock.probe(PEER, t1);
            let _ = clock.handle_reply(now, PEER, &probe.reply(t2, t3), t4);
        }
        let _ = clock.group_time(i64::MAX);
        // Old probes make room for new ones: only `window` are outstanding.
        let first = clock.probe(NodeId(3), 0);
        for n in 1..=8 {
            clock.probe(NodeId(3), n);
        }
        assert_eq!(
            clock.handle_reply(now, NodeId(3), &first.reply(5, 5), 10),
            Err(ReplyError::Unsolicited)
        );
    }

    #[test]
    fn group_time_follows_the_leader() {
        let mut clock = GroupClock::new(NodeId(1), ClockConfig::default());
        assert_eq!(
            (clock.group_offset_us(), clock.group_time(1_000)),
            (None, 1_000)
        );
        clock.set_leader(Some(NodeId(1)));
        assert_eq!(
            (clock.group_offset_us(), clock.group_time(1_000)),
            (Some(0), 1_000)
        );
        clock.set_leader(Some(PEER));
        assert_eq!(clock.group_offset_us(), None, "not estimated yet");
        assert_eq!(clock.group_time(1_000), 1_000);
        let probe = clock.probe(PEER, 1_000);
        let reply = probe.reply(8_100, 8_100);
        clock
            .handle_reply(Instant::now(), PEER, &reply, 1_200)
            .unwrap();
        assert_eq!(clock.group_offset_us(), Some(7_000));
        assert_eq!(clock.group_time(2_000), 9_000);
        clock.forget(PEER);
        assert_eq!(clock.group_offset_us(), None);
    }

    #[test]
    fn messages_round_trip_through_postcard() {
        let reply = Probe { origin_us: -7 }.reply(i64::MAX, 3);
        let bytes = postcard::to_stdvec(&reply).unwrap();
        assert_eq!(postcard::from_bytes::<ProbeReply>(&bytes).unwrap(), reply);
        let probe = Probe {
            origin_us: EPOCH_US,
        };
        let bytes = postcard::to_stdvec(&probe).unwrap();
        assert_eq!(postcard::from_bytes::<Probe>(&bytes).unwrap(), probe);
    }
}
