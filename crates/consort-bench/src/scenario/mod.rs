//! The scenarios, one module each, and what they share.
//!
//! A scenario starts its contenders once, then runs them interleaved for every round (the
//! first contender of a round rotates, so none always runs on a machine warmed by another),
//! and returns its figures with whatever rounds completed: an error ends the scenario with a
//! warning, never the whole run.

mod big_state;
mod failure;
mod idle;
mod propagation;
mod throughput;
mod wire;

use std::path::PathBuf;

use crate::plan::Plan;
use crate::plot::PlotData;
use crate::report::{Contender, Figure};
use crate::stats::Rng;

/// What every scenario gets: the plan, the binaries, and where to leave plot data and
/// warnings.
pub struct Bench {
    /// Rounds and sizes.
    pub plan: Plan,
    /// The `consort` binary.
    pub consort: PathBuf,
    /// The `mosquitto` binary, if installed.
    pub mosquitto: Option<PathBuf>,
    /// Data for the plots.
    pub plots: PlotData,
    /// What could not be measured.
    pub warnings: Vec<String>,
    /// Jitter between samples.
    pub rng: Rng,
}

impl Bench {
    /// Records a warning and prints it.
    pub fn warn(&mut self, warning: String) {
        eprintln!("consort-bench: warning: {warning}");
        self.warnings.push(warning);
    }

    /// The contenders of one round, in the order they run: rotated by the round number.
    pub fn order(&self, round: usize, contenders: &[Contender]) -> Vec<Contender> {
        let mut order: Vec<Contender> = contenders
            .iter()
            .copied()
            .filter(|&c| c != Contender::Mosquitto || self.mosquitto.is_some())
            .collect();
        let len = order.len().max(1);
        order.rotate_left(round % len);
        order
    }
}

/// Scenarios that share their contenders, and the figures they produce.
pub struct Group {
    /// A short name for progress messages.
    pub name: &'static str,
    /// The figures it produces, by name.
    pub figures: &'static [&'static str],
    /// Runs it.
    pub run: fn(&mut Bench) -> Vec<Figure>,
}

/// Every group, in the order they run (cheapest first).
pub const GROUPS: [Group; 6] = [
    Group {
        name: "wire overhead",
        figures: &["wire_overhead_bytes"],
        run: wire::run,
    },
    Group {
        name: "propagation",
        figures: &["propagation_p50_us", "propagation_p99_us"],
        run: propagation::run,
    },
    Group {
        name: "throughput",
        figures: &["throughput_updates_per_s"],
        run: throughput::run,
    },
    Group {
        name: "failure detection and failover",
        figures: &["detect_down_p50_s", "failover_p50_s"],
        run: failure::run,
    },
    Group {
        name: "idle nodes",
        figures: &["idle_cpu_pct", "idle_rss_mb"],
        run: idle::run,
    },
    Group {
        name: "100k keys: partition, bootstrap, memory",
        figures: &[
            "converge_after_partition_s",
            "converge_bytes_over_diff",
            "bootstrap_100k_s",
            "rss_100k_keys_mb",
        ],
        run: big_state::run,
    },
];

/// Every figure name, in report order.
pub const FIGURES: [&str; 12] = [
    "propagation_p50_us",
    "propagation_p99_us",
    "throughput_updates_per_s",
    "detect_down_p50_s",
    "failover_p50_s",
    "converge_after_partition_s",
    "converge_bytes_over_diff",
    "bootstrap_100k_s",
    "idle_cpu_pct",
    "idle_rss_mb",
    "rss_100k_keys_mb",
    "wire_overhead_bytes",
];

/// Runs the groups that produce any of `only` (all groups when empty); returns the figures
/// asked for, in report order.
pub fn run(bench: &mut Bench, only: &[String]) -> Vec<Figure> {
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let mut figures = Vec::new();
    for group in GROUPS
        .iter()
        .filter(|g| g.figures.iter().any(|f| wanted(f)))
    {
        eprintln!("consort-bench: {} ...", group.name);
        let started = std::time::Instant::now();
        figures.extend((group.run)(bench).into_iter().filter(|f| wanted(f.name)));
        eprintln!(
            "consort-bench: {} done in {:.1} s",
            group.name,
            started.elapsed().as_secs_f64()
        );
    }
    figures.sort_by_key(|f| FIGURES.iter().position(|&n| n == f.name));
    figures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_figure_comes_from_exactly_one_group() {
        for name in FIGURES {
            let groups = GROUPS.iter().filter(|g| g.figures.contains(&name)).count();
            assert_eq!(groups, 1, "{name}");
        }
        let listed: usize = GROUPS.iter().map(|g| g.figures.len()).sum();
        assert_eq!(listed, FIGURES.len());
    }
}
