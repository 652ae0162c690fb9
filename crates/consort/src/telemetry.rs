//! Counters for monitoring that the engine's [`crate::Stats`] do not hold: kept by the driver
//! from the events it carries out, reported in [`crate::Status::telemetry`].

use std::time::{SystemTime, UNIX_EPOCH};

use consort_proto::election::ElectionEvent;
use consort_proto::replica::Change;
use consort_proto::{Event, NodeId};

/// Upper bounds of the propagation-lag buckets, in seconds.
pub const LAG_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// What a node counts for monitoring, besides [`crate::Stats`] and the messaging counters.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Telemetry {
    /// Deletes remembered (tombstones) in the state.
    pub tombstones: usize,
    /// Times the leader or its term changed, as this node saw it.
    pub leader_changes: u64,
    /// Anti-entropy rounds this node started.
    pub anti_entropy_started: u64,
    /// Anti-entropy rounds this node completed.
    pub anti_entropy_completed: u64,
    /// The latest snapshot transfer: entries received so far and entries in the snapshot.
    pub bootstrap: Option<(u64, u64)>,
    /// How long changes written elsewhere took to be applied here.
    pub propagation_lag: LagHistogram,
}

/// A histogram of propagation lags over [`LAG_BUCKETS`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LagHistogram {
    /// Samples at or below each bound of [`LAG_BUCKETS`] (not cumulative).
    pub buckets: [u64; LAG_BUCKETS.len()],
    /// Every sample, including those above the last bound.
    pub count: u64,
    /// Sum of the samples, in seconds.
    pub sum: f64,
}

impl LagHistogram {
    /// Adds one sample, in seconds.
    pub fn observe(&mut self, seconds: f64) {
        if let Some(i) = LAG_BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// What the driver keeps between events.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    pub(crate) telemetry: Telemetry,
    /// Lags of this pass, kept back until it ends: a pass that carries snapshot parts holds
    /// old entries, whose age is not a propagation lag.
    lags: Vec<f64>,
    snapshot_in_pass: bool,
}

impl Recorder {
    /// Notes what `event` tells. `offset_us` gives a peer's clock minus ours, when measured.
    pub(crate) fn event(
        &mut self,
        event: &Event,
        own: NodeId,
        bootstrapping: bool,
        offset_us: impl Fn(NodeId) -> Option<i64>,
    ) {
        match event {
            Event::Election(ElectionEvent::LeaderChanged { .. }) => {
                self.telemetry.leader_changes += 1
            }
            Event::Bootstrap(progress) => {
                self.telemetry.bootstrap = Some((progress.received, progress.total));
                self.snapshot_in_pass = true;
            }
            Event::Changed(Change { entry, .. })
                if entry.version.origin != own && !bootstrapping =>
            {
                let origin = entry.version.origin;
                // The writer's wall time, on our clock.
                let written_ms =
                    entry.version.hlc.millis() as i64 - offset_us(origin).unwrap_or(0) / 1000;
                let lag_ms = (now_ms() - written_ms).max(0);
                self.lags.push(lag_ms as f64 / 1000.0);
            }
            _ => {}
        }
    }

    /// The pass of outputs ended.
    pub(crate) fn end_pass(&mut self) {
        if !std::mem::take(&mut self.snapshot_in_pass) {
            for lag in &self.lags {
                self.telemetry.propagation_lag.observe(*lag);
            }
        }
        self.lags.clear();
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lags_fall_in_the_first_bucket_that_holds_them() {
        let mut h = LagHistogram::default();
        h.observe(0.004);
        h.observe(0.005);
        h.observe(0.3);
        h.observe(100.0);
        assert_eq!(h.buckets[0], 2);
        assert_eq!(h.buckets[6], 1);
        assert_eq!(h.buckets.iter().sum::<u64>(), 3);
        assert_eq!(h.count, 4);
        assert!((h.sum - 100.309).abs() < 1e-9);
    }
}
