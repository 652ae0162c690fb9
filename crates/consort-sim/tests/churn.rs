//! Churn: hundreds of seeded runs of 5 to 20 nodes with 0–20% loss, partitions (both ways and one
//! way), crashes, graceful stops, restarts and address changes. Once the faults stop (loss
//! included), every running node must agree on the membership within a settle time, and keep
//! agreeing.
//!
//! Two stand-ins for mDNS discovery: a restarted node is given one running node as an extra seed,
//! and once the faults stop every node learns the new address of every node that moved.

use std::time::Duration;

use consort_sim::{lan_addr, NetConfig, NodeStatus, Scenario, SeedRun, Sim, Summary};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{RngExt, SeedableRng};

/// Seeds in the default suite.
const RUNS: u64 = 200;
/// Faults drawn per run, one every 0.2 to 2 virtual seconds.
const FAULTS: usize = 8;
/// How long the group may take to agree once the faults stop.
const SETTLE: Duration = Duration::from_secs(30);
/// How long it must then keep agreeing.
const STABLE: Duration = Duration::from_secs(2);

/// One disturbance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Crash,
    Stop,
    Restart,
    Partition,
    OneWayCut,
    Heal,
    Move,
    Nothing,
}

const FAULT_KINDS: [Fault; 8] = [
    Fault::Crash,
    Fault::Stop,
    Fault::Restart,
    Fault::Partition,
    Fault::OneWayCut,
    Fault::Heal,
    Fault::Move,
    Fault::Nothing,
];

/// What one run did and how long the group took to agree.
struct Outcome {
    settled_in: Duration,
    faults: Vec<Fault>,
}

#[test]
fn members_agree_after_faults_stop() {
    let outcomes = SeedRun::new(env!("CARGO_CRATE_NAME"), "members_agree_after_faults_stop")
        .count(RUNS)
        .run(run_one);
    let settle: Vec<Duration> = outcomes.iter().map(|(_, o)| o.settled_in).collect();
    let count = |kind| {
        outcomes
            .iter()
            .flat_map(|(_, o)| &o.faults)
            .filter(|&&f| f == kind)
            .count()
    };
    println!(
        "churn: {} runs; time to agree after faults stop: {}",
        outcomes.len(),
        Summary::of(&settle).expect("runs")
    );
    if let Some((seed, slowest)) = outcomes.iter().max_by_key(|(_, o)| o.settled_in) {
        println!(
            "churn: slowest to agree: seed {seed}, {:?}",
            slowest.settled_in
        );
    }
    println!(
        "churn: faults: {} crashes, {} stops, {} restarts, {} partitions, {} one-way cuts, {} moves",
        count(Fault::Crash),
        count(Fault::Stop),
        count(Fault::Restart),
        count(Fault::Partition),
        count(Fault::OneWayCut),
        count(Fault::Move)
    );
}

fn run_one(seed: u64) -> Result<Outcome, String> {
    let mut pick = StdRng::seed_from_u64(seed);
    let nodes = pick.random_range(5..=20);
    let net = NetConfig {
        latency: Duration::from_micros(pick.random_range(100..=1000)),
        jitter: Duration::from_micros(pick.random_range(0..=2000)),
        loss: 0.0,
        duplicate: if pick.random_bool(0.2) { 0.02 } else { 0.0 },
    };
    let loss = pick.random_range(0.0..=0.2);
    let through = pick.random_range(1..=2);
    let context = format!("{nodes} nodes through {through}, {:.0}% loss", loss * 100.0);
    let mut sim = Scenario::new(seed)
        .nodes(nodes)
        .seeded_through(through)
        .net(net)
        .build();
    sim.await_convergence(Duration::from_secs(20))
        .map_err(|d| format!("{context}: join: {d}"))?;
    sim.set_loss(loss);
    let mut faults = Vec::new();
    for _ in 0..FAULTS {
        sim.run_for(Duration::from_millis(pick.random_range(200..2000)));
        let fault = *FAULT_KINDS.choose(&mut pick).expect("kinds");
        if inject(&mut sim, &mut pick, fault) {
            faults.push(fault);
        }
    }
    sim.heal();
    sim.set_loss(0.0);
    announce_moves(&mut sim);
    let settled_in = sim
        .await_convergence(SETTLE)
        .map_err(|d| format!("{context}, faults {faults:?}: {d}"))?;
    sim.run_for(STABLE);
    sim.membership_converged()
        .map_err(|d| format!("{context}, faults {faults:?}: agreed, then: {d}"))?;
    Ok(Outcome { settled_in, faults })
}

/// What mDNS does once the LAN is whole again: every running node learns the current address
/// of every running node that moved. Without it, a node cut off while it and every node it knew
/// moved cannot find the group again, whatever the protocol does.
fn announce_moves(sim: &mut Sim) {
    let running = sim.running();
    let moved: Vec<usize> = running
        .iter()
        .copied()
        .filter(|&n| sim.addr(n) != lan_addr(n))
        .collect();
    for moved in moved {
        for &node in running.iter().filter(|&&n| n != moved) {
            sim.add_discovered(node, moved);
        }
    }
}

/// Applies `fault` if it makes sense now; returns whether it did.
fn inject(sim: &mut Sim, pick: &mut StdRng, fault: Fault) -> bool {
    let running = sim.running();
    let down: Vec<usize> = (0..sim.node_count())
        .filter(|&n| matches!(sim.status(n), NodeStatus::Crashed | NodeStatus::Stopped))
        .collect();
    let any = |v: &[usize], pick: &mut StdRng| v.choose(pick).copied();
    match fault {
        Fault::Crash | Fault::Stop | Fault::Move | Fault::OneWayCut if running.len() < 3 => false,
        Fault::Crash => any(&running, pick).map(|n| sim.crash(n)).is_some(),
        Fault::Stop => any(&running, pick).map(|n| sim.stop(n)).is_some(),
        Fault::Restart => match (any(&down, pick), any(&running, pick)) {
            (Some(n), Some(seed)) => {
                // What mDNS gives a real node: a peer that is up now. Without it, a node whose
                // seeds all died or moved cannot find the group, whatever the protocol does.
                sim.add_seed(n, seed);
                sim.restart(n);
                true
            }
            _ => false,
        },
        Fault::Move => {
            let addr = sim.fresh_addr();
            any(&running, pick).map(|n| sim.set_addr(n, addr)).is_some()
        }
        Fault::Partition => {
            let mut order: Vec<usize> = (0..sim.node_count()).collect();
            order.shuffle(pick);
            let (a, b) = order.split_at(pick.random_range(1..order.len()));
            sim.partition(&[a, b]);
            true
        }
        Fault::OneWayCut => match running.sample_array::<_, 2>(pick) {
            Some([from, to]) => {
                sim.cut(from, to);
                true
            }
            None => false,
        },
        Fault::Heal => {
            sim.heal();
            true
        }
        Fault::Nothing => false,
    }
}
