//! Measures failure detection and false downs for a set of timings, to tune `Config` defaults.
//!
//! ```text
//! cargo run -p consort-sim --release --example tune -- [probe_period=MS] [probe_rtt=MS]
//!     [suspect=MS] [gossip=MS] [fanout=N] [indirect=N] [max_tx=N] [trials=N] [minutes=N]
//!     [loss=P] [nodes=N]
//! ```
//!
//! Prints, for 3 and 10 nodes (or `nodes`): crash detection on a quiet LAN (every live peer's
//! first `Down`, over `trials` crashes), crash detection at `loss`, and over `minutes` virtual
//! minutes at `loss`: false `Down` events, and self renewals (a healthy node pushed to rejoin
//! under a new generation). Times are in milliseconds; the LAN has 0.2 to 1 ms latency.

use std::time::Duration;

use consort_proto::{Config, MemberEvent, MemberState};
use consort_sim::{Scenario, SeedRun, Summary};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

struct Knobs {
    config: Config,
    trials: u64,
    minutes: u64,
    loss: f64,
    sizes: Vec<usize>,
}

fn parse() -> Knobs {
    let mut k = Knobs {
        config: Config::default(),
        trials: 200,
        minutes: 100,
        loss: 0.1,
        sizes: vec![3, 10],
    };
    for arg in std::env::args().skip(1) {
        let (key, value) = arg.split_once('=').expect("key=value");
        let n: f64 = value.parse().expect("a number");
        let ms = Duration::from_micros((n * 1000.0) as u64);
        match key {
            "probe_period" => k.config.probe_period = ms,
            "probe_rtt" => k.config.probe_rtt = ms,
            "suspect" => k.config.suspect_timeout = ms,
            "gossip" => k.config.gossip_period = ms,
            "fanout" => k.config.gossip_fanout = n as usize,
            "indirect" => k.config.indirect_probes = n as usize,
            "trials" => k.trials = n as u64,
            "minutes" => k.minutes = n as u64,
            "loss" => k.loss = n,
            "nodes" => k.sizes = vec![n as usize],
            "max_tx" => k.config.max_transmissions = n as u8,
            _ => panic!("unknown knob {key}"),
        }
    }
    k
}

/// Detections slower than this are printed with their seed, to replay.
const SLOW: Duration = Duration::from_secs(4);

/// Detection times of one crash per seed, every live peer counted (20 s if never).
fn detection(k: &Knobs, nodes: usize, loss: f64) -> Summary {
    let runs = SeedRun::new("tune", "detection")
        .count(k.trials)
        .run(|seed| {
            let mut pick = StdRng::seed_from_u64(seed ^ 0xdead);
            let mut sim = Scenario::new(seed)
                .nodes(nodes)
                .seeded_through(2)
                .stagger(Duration::from_secs(1))
                .loss(loss)
                .config(k.config.clone())
                .build();
            sim.await_convergence(Duration::from_secs(30))
                .map_err(|d| d.to_string())?;
            sim.run_for(Duration::from_micros(pick.random_range(0..3_000_000)));
            let victim = pick.random_range(0..nodes);
            sim.crash(victim);
            let at = sim.now();
            sim.run_until(Duration::from_secs(20), |s| {
                s.detections(victim, at, MemberState::Down)
                    .iter()
                    .all(|(_, t)| t.is_some())
            });
            let times = sim.detections(victim, at, MemberState::Down);
            if times.iter().any(|(_, t)| t.is_none_or(|t| t > SLOW)) {
                eprintln!("slow detection: {nodes} nodes, loss {loss}, seed {seed}: {times:?}");
            }
            Ok(times
                .into_iter()
                .map(|(_, t)| t.unwrap_or(Duration::from_secs(20)))
                .collect::<Vec<_>>())
        });
    let all: Vec<Duration> = runs.into_iter().flat_map(|(_, t)| t).collect();
    Summary::of(&all).expect("samples")
}

/// False downs and self renewals over `minutes` virtual minutes, split in runs of two minutes.
fn false_downs(k: &Knobs, nodes: usize) -> (usize, usize, usize) {
    let runs = k.minutes.div_ceil(2);
    let results = SeedRun::new("tune", "false_downs").count(runs).run(|seed| {
        let mut sim = Scenario::new(seed)
            .nodes(nodes)
            .seeded_through(2)
            .stagger(Duration::from_secs(1))
            .loss(k.loss)
            .config(k.config.clone())
            .build();
        sim.run_for(Duration::from_secs(120));
        let renewals = sim
            .records()
            .iter()
            .filter(|r| matches!(r.event, MemberEvent::SelfRenewed(_)))
            .count();
        Ok((sim.false_downs().len(), renewals))
    });
    let downs = results.iter().map(|(_, (d, _))| d).sum();
    let renewals = results.iter().map(|(_, (_, r))| r).sum();
    (downs, renewals, results.len())
}

fn main() {
    let k = parse();
    println!("{:?}", k.config);
    for &nodes in &k.sizes {
        if k.trials > 0 {
            println!(
                "{nodes} nodes, crash detection, no loss: {}",
                detection(&k, nodes, 0.0)
            );
            println!(
                "{nodes} nodes, crash detection, {} loss: {}",
                k.loss,
                detection(&k, nodes, k.loss)
            );
        }
        let (downs, renewals, runs) = false_downs(&k, nodes);
        println!(
            "{nodes} nodes, {} loss: {downs} false downs, {renewals} self renewals in {} virtual minutes",
            k.loss,
            runs * 2
        );
    }
}
