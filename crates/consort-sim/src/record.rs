//! What the simulator remembers of a run: membership and election events with their virtual
//! time, and summaries of measured durations.

use std::fmt;
use std::time::Duration;

use consort_proto::election::ElectionEvent;
use consort_proto::MemberEvent;

/// A membership event one node emitted, with the virtual time it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Virtual time since the start of the run.
    pub at: Duration,
    /// The node that emitted it.
    pub node: usize,
    /// The event.
    pub event: MemberEvent,
}

/// An election event one node emitted, with the virtual time it happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElectionRecord {
    /// Virtual time since the start of the run.
    pub at: Duration,
    /// The node that emitted it.
    pub node: usize,
    /// Which start of that node it happened in (1 for the first): terms restart with a run.
    pub run: u64,
    /// The event.
    pub event: ElectionEvent,
}

/// Median, 90th percentile and maximum of a set of durations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// How many samples.
    pub count: usize,
    /// The median (the lower middle sample for an even count).
    pub median: Duration,
    /// The 90th percentile (nearest rank).
    pub p90: Duration,
    /// The largest sample.
    pub max: Duration,
}

impl Summary {
    /// Summarises `samples`; `None` if there are none.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let last = sorted.len().checked_sub(1)?;
        let rank =
            |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, last + 1) - 1];
        Some(Summary {
            count: sorted.len(),
            median: sorted[last / 2],
            p90: rank(0.9),
            max: sorted[last],
        })
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "n={} median={:.3}s p90={:.3}s max={:.3}s",
            self.count,
            self.median.as_secs_f64(),
            self.p90.as_secs_f64(),
            self.max.as_secs_f64()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_picks_ranks() {
        let ms = |v: u64| Duration::from_millis(v);
        let samples: Vec<Duration> = (1..=10).rev().map(ms).collect();
        let s = Summary::of(&samples).unwrap();
        assert_eq!(
            (s.count, s.median, s.p90, s.max),
            (10, ms(5), ms(9), ms(10))
        );
        assert_eq!(Summary::of(&[ms(3)]).unwrap().p90, ms(3));
        assert_eq!(Summary::of(&[]), None);
    }
}
