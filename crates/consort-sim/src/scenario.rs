//! A builder for the usual starting point: `n` nodes on one LAN, all seeded through the first few.

use std::time::Duration;

use consort_proto::election::ElectionConfig;
use consort_proto::Config;
use rand::RngExt;

use crate::net::NetConfig;
use crate::sim::Sim;

/// How a simulation starts. [`Scenario::build`] adds the nodes, gives them seeds and starts them,
/// all at virtual time zero unless [`Scenario::stagger`] spreads them out.
///
/// ```
/// use std::time::Duration;
/// use consort_sim::Scenario;
///
/// let mut sim = Scenario::new(7).nodes(5).seeded_through(2).loss(0.05).build();
/// sim.await_convergence(Duration::from_secs(10)).unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct Scenario {
    seed: u64,
    nodes: usize,
    seeded_through: usize,
    stagger: Duration,
    net: NetConfig,
    config: Config,
    max_skew: Duration,
    /// Whether skews are drawn from `-max_skew..=max_skew` rather than `0..=max_skew`.
    signed_skew: bool,
    election: ElectionConfig,
    priorities: Vec<i32>,
}

impl Scenario {
    /// Three nodes seeded through node 0, on a quiet LAN, with default timings.
    pub fn new(seed: u64) -> Scenario {
        Scenario {
            seed,
            nodes: 3,
            seeded_through: 1,
            stagger: Duration::ZERO,
            net: NetConfig::default(),
            config: Config::default(),
            max_skew: Duration::ZERO,
            signed_skew: false,
            election: ElectionConfig::default(),
            priorities: Vec::new(),
        }
    }

    /// How many nodes to start.
    pub fn nodes(mut self, nodes: usize) -> Scenario {
        self.nodes = nodes;
        self
    }

    /// Every node joins through nodes `0..k` (other than itself).
    pub fn seeded_through(mut self, k: usize) -> Scenario {
        self.seeded_through = k;
        self
    }

    /// Starts the nodes one after another, at random gaps that add up to at most `stagger`,
    /// so that their probe cycles are not in step (as they would be if all started at zero).
    pub fn stagger(mut self, stagger: Duration) -> Scenario {
        self.stagger = stagger;
        self
    }

    /// The whole network model.
    pub fn net(mut self, net: NetConfig) -> Scenario {
        self.net = net;
        self
    }

    /// One-way delay: at least `latency`, plus up to `jitter`.
    pub fn latency(mut self, latency: Duration, jitter: Duration) -> Scenario {
        self.net.latency = latency;
        self.net.jitter = jitter;
        self
    }

    /// Probability that a datagram is lost.
    pub fn loss(mut self, loss: f64) -> Scenario {
        self.net.loss = loss;
        self
    }

    /// Probability that a datagram arrives twice.
    pub fn duplicate(mut self, duplicate: f64) -> Scenario {
        self.net.duplicate = duplicate;
        self
    }

    /// Gives every node a wall clock ahead of the simulation's by a random `0..=max_skew`.
    pub fn max_skew(mut self, max_skew: Duration) -> Scenario {
        self.max_skew = max_skew;
        self
    }

    /// Gives every node a wall clock off the simulation's by a random `-max_skew..=max_skew`:
    /// ahead or behind.
    pub fn signed_skew(mut self, max_skew: Duration) -> Scenario {
        self.max_skew = max_skew;
        self.signed_skew = true;
        self
    }

    /// How every node elects its leader.
    pub fn election(mut self, election: ElectionConfig) -> Scenario {
        self.election = election;
        self
    }

    /// Election priorities: node `i` gets `priorities[i]`, nodes past the end 0.
    pub fn priorities(mut self, priorities: &[i32]) -> Scenario {
        self.priorities = priorities.to_vec();
        self
    }

    /// Engine timings.
    pub fn config(mut self, config: Config) -> Scenario {
        self.config = config;
        self
    }

    /// Creates the simulation and starts every node.
    pub fn build(self) -> Sim {
        let mut sim = Sim::new(self.seed, self.net, self.config);
        for _ in 0..self.nodes {
            sim.add_node();
        }
        for node in 0..self.nodes {
            for seed in 0..self.seeded_through.min(self.nodes) {
                sim.add_seed(node, seed);
            }
            sim.set_election(node, self.election);
            sim.set_priority(node, self.priorities.get(node).copied().unwrap_or(0));
        }
        if !self.max_skew.is_zero() {
            let max = self.max_skew.as_millis() as u64;
            let (span, least) = if self.signed_skew {
                (2 * max, -(max as i64))
            } else {
                (max, 0)
            };
            for node in 0..self.nodes {
                // Unsigned draws, as before skews could be negative, so that seeds replay.
                let skew = sim.rng().random_range(0..=span) as i64 + least;
                sim.set_skew_ms(node, skew);
            }
        }
        let gap = self.stagger.as_nanos() as u64 / self.nodes.max(1) as u64;
        for node in 0..self.nodes {
            if gap > 0 {
                let wait = sim.rng().random_range(0..=gap);
                sim.run_for(Duration::from_nanos(wait));
            }
            sim.start(node);
        }
        sim
    }
}
