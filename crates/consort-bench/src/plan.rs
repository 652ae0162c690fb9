//! How much each scenario measures: a quick plan for CI-sized runs, a full one for stable
//! medians.

use std::time::Duration;

/// Rounds, sample counts and durations for one invocation.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `quick` or `full`.
    pub mode: &'static str,
    /// Rounds per scenario; every contender runs once per round, interleaved.
    pub rounds: usize,
    /// Writes timed per round for propagation.
    pub propagation_samples: usize,
    /// How long writers run per round for throughput.
    pub throughput_window: Duration,
    /// Peer counts throughput is measured at (the figure is the one at 4).
    pub fanouts: &'static [usize],
    /// How long idle nodes are watched per round.
    pub idle_window: Duration,
    /// Keys the group holds for convergence, bootstrap and memory.
    pub big_keys: usize,
    /// Keys written on one side of a partition.
    pub partition_keys: usize,
}

impl Plan {
    /// A run that finishes in a few minutes on two cores.
    pub fn quick() -> Plan {
        Plan {
            mode: "quick",
            rounds: 3,
            propagation_samples: 200,
            throughput_window: Duration::from_secs(2),
            fanouts: &[1, 2, 4],
            idle_window: Duration::from_secs(5),
            big_keys: 100_000,
            partition_keys: 1_000,
        }
    }

    /// A run long enough for stable medians.
    pub fn full() -> Plan {
        Plan {
            mode: "full",
            rounds: 7,
            propagation_samples: 1_000,
            throughput_window: Duration::from_secs(4),
            fanouts: &[1, 2, 4, 8],
            idle_window: Duration::from_secs(15),
            big_keys: 100_000,
            partition_keys: 1_000,
        }
    }
}
