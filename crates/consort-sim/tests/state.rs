//! Replicated state under faults: writes, overwrites and deletes from every node on a few keys
//! (so writes conflict), with loss, partitions, crashes and restarts. Once the faults stop, every
//! running node must hold the same entries, and every acknowledged write must have survived
//! (superseded only by a newer version, never lost or rolled back).

use std::time::Duration;

use consort_sim::{NetConfig, NodeStatus, Scenario, SeedRun, Sim};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{RngExt, SeedableRng};

/// Seeds in the default suite.
const RUNS: u64 = 500;
/// Steps per run, each 0.1 to 0.5 virtual seconds of writes, maybe ending in a fault.
const STEPS: usize = 8;
/// Keys written: few, so that writes from different nodes conflict.
const KEYS: usize = 5;
/// How long the group may take to agree on membership once the faults stop.
const SETTLE: Duration = Duration::from_secs(30);
/// How long state may then take to converge.
const STATE_SETTLE: Duration = Duration::from_secs(10);

/// What one run did.
struct Outcome {
    acked: usize,
    faults: usize,
    converged_in: Duration,
}

#[test]
fn writes_converge_after_faults() {
    let outcomes = SeedRun::new(env!("CARGO_CRATE_NAME"), "writes_converge_after_faults")
        .count(RUNS)
        .run(run_one);
    let acked: usize = outcomes.iter().map(|(_, o)| o.acked).sum();
    let faults: usize = outcomes.iter().map(|(_, o)| o.faults).sum();
    let slowest = outcomes
        .iter()
        .max_by_key(|(_, o)| o.converged_in)
        .map(|(s, o)| (*s, o.converged_in));
    println!(
        "state: {} runs, {acked} acknowledged writes, {faults} faults; slowest state convergence \
         after membership: {slowest:?}",
        outcomes.len()
    );
}

fn run_one(seed: u64) -> Result<Outcome, String> {
    let mut pick = StdRng::seed_from_u64(seed);
    let nodes = pick.random_range(3..=8);
    let net = NetConfig {
        latency: Duration::from_micros(pick.random_range(100..=1000)),
        jitter: Duration::from_micros(pick.random_range(0..=2000)),
        loss: 0.0,
        duplicate: if pick.random_bool(0.2) { 0.02 } else { 0.0 },
    };
    let loss = pick.random_range(0.0..=0.2);
    let context = format!("{nodes} nodes, {:.0}% loss", loss * 100.0);
    let mut sim = Scenario::new(seed)
        .nodes(nodes)
        .net(net)
        .max_skew(Duration::from_millis(50))
        .build();
    sim.await_convergence(Duration::from_secs(20))
        .map_err(|d| format!("{context}: join: {d}"))?;
    sim.set_loss(loss);
    let mut faults = Vec::new();
    for _ in 0..STEPS {
        let step = Duration::from_millis(pick.random_range(100..500));
        let writes = pick.random_range(1..=4);
        for _ in 0..writes {
            sim.run_for(step / writes);
            random_write(&mut sim, &mut pick);
        }
        if pick.random_bool(0.6) {
            if let Some(fault) = inject(&mut sim, &mut pick) {
                faults.push(fault);
            }
        }
    }
    // Faults stop: the network is whole and quiet again, and every crashed node restarts.
    sim.heal();
    sim.set_loss(0.0);
    for n in 0..sim.node_count() {
        if sim.status(n) == NodeStatus::Crashed {
            restart(&mut sim, &mut pick, n);
        }
    }
    let context = format!("{context}, faults {faults:?}");
    sim.await_convergence(SETTLE)
        .map_err(|d| format!("{context}: membership: {d}"))?;
    let converged_in = sim
        .await_state(STATE_SETTLE)
        .map_err(|d| format!("{context}: {d}"))?;
    sim.run_for(Duration::from_secs(1));
    sim.state_converged()
        .and_then(|()| sim.acked_writes_survive())
        .and_then(|()| sim.disks_match_memory())
        .map_err(|d| format!("{context}: converged, then: {d}"))?;
    Ok(Outcome {
        acked: sim.acked_writes().len(),
        faults: faults.len(),
        converged_in,
    })
}

/// A write, overwrite or delete of a random key through a random running node.
fn random_write(sim: &mut Sim, pick: &mut StdRng) {
    let Some(&node) = sim.running().choose(pick) else {
        return;
    };
    let key = format!("k{}", pick.random_range(0..KEYS));
    let value = if pick.random_bool(0.2) {
        None
    } else {
        Some(format!("{{\"n\":{node},\"t\":{}}}", sim.now().as_millis()))
    };
    sim.write(node, &key, value.as_deref())
        .unwrap_or_else(|e| panic!("write of {key} through n{node} refused: {e}"));
}

/// Restarts `node` with a running node as an extra seed (what mDNS would give it).
fn restart(sim: &mut Sim, pick: &mut StdRng, node: usize) {
    if let Some(&seed) = sim.running().choose(pick) {
        sim.add_seed(node, seed);
    }
    sim.restart(node);
}

/// A random partition, heal, crash or restart; returns what it did, if anything.
fn inject(sim: &mut Sim, pick: &mut StdRng) -> Option<&'static str> {
    let running = sim.running();
    let crashed: Vec<usize> = (0..sim.node_count())
        .filter(|&n| sim.status(n) == NodeStatus::Crashed)
        .collect();
    match pick.random_range(0..4) {
        0 => {
            let mut order: Vec<usize> = (0..sim.node_count()).collect();
            order.shuffle(pick);
            let (a, b) = order.split_at(pick.random_range(1..order.len()));
            sim.partition(&[a, b]);
            Some("partition")
        }
        1 => {
            sim.heal();
            Some("heal")
        }
        2 if running.len() > 2 => {
            let node = *running.choose(pick)?;
            sim.crash(node);
            Some("crash")
        }
        3 => {
            let node = *crashed.choose(pick)?;
            restart(sim, pick, node);
            Some("restart")
        }
        _ => None,
    }
}

/// Writes to every key from both sides of a 2|1 partition; after the heal, every node holds the
/// last writer's value of every key within 2 virtual seconds of agreeing on membership.
#[test]
fn partition_both_sides_write_then_heal() {
    SeedRun::new(
        env!("CARGO_CRATE_NAME"),
        "partition_both_sides_write_then_heal",
    )
    .count(20)
    .run(|seed| {
        let mut sim = Scenario::new(seed).nodes(3).build();
        sim.await_convergence(Duration::from_secs(10))
            .map_err(|d| d.to_string())?;
        for k in 0..4 {
            sim.write(0, &format!("k{k}"), Some("\"before\""))
                .map_err(|e| e.to_string())?;
        }
        sim.run_for(Duration::from_secs(1));
        sim.partition(&[&[0, 1], &[2]]);
        sim.run_for(Duration::from_secs(3));
        for round in 0..3 {
            for k in 0..4 {
                let key = format!("k{k}");
                let side_a = if (k + round) % 2 == 0 { 0 } else { 1 };
                sim.write(side_a, &key, Some(&format!("\"a{round}\"")))
                    .map_err(|e| e.to_string())?;
                sim.run_for(Duration::from_millis(37));
                let value = (k != 3).then(|| format!("\"b{round}\""));
                sim.write(2, &key, value.as_deref())
                    .map_err(|e| e.to_string())?;
                sim.run_for(Duration::from_millis(53));
            }
        }
        sim.run_for(Duration::from_secs(1));
        sim.heal();
        sim.await_convergence(Duration::from_secs(30))
            .map_err(|d| format!("membership after heal: {d}"))?;
        sim.run_until(Duration::from_secs(2), |s| s.state_converged().is_ok())
            .ok_or_else(|| {
                format!(
                    "not converged 2s after membership: {}",
                    sim.state_converged().unwrap_err()
                )
            })?;
        sim.acked_writes_survive().map_err(|d| d.to_string())?;
        let winners = sim.lww_winners();
        if winners.len() != 4 || sim.acked_writes().len() != 28 {
            return Err(format!("acked {:?}", sim.acked_writes()));
        }
        for n in 0..3 {
            for (key, w) in &winners {
                let have = sim.entry(n, key.as_str());
                let ok = have
                    .as_ref()
                    .is_some_and(|e| e.version == w.version && e.value == w.value)
                    || (have.is_none() && w.value.is_none());
                if !ok {
                    return Err(format!("n{n} has {have:?}, winner {w:?}"));
                }
            }
        }
        Ok(())
    });
}

/// A blank node joining a group that holds a few thousand keys pulls them all (the snapshot
/// travels over the modelled stream).
#[test]
fn blank_node_bootstraps_thousands_of_keys() {
    SeedRun::new(
        env!("CARGO_CRATE_NAME"),
        "blank_node_bootstraps_thousands_of_keys",
    )
    .count(2)
    .run(|seed| {
        const COUNT: usize = 4500;
        let mut sim = Scenario::new(seed).nodes(3).build();
        sim.await_convergence(Duration::from_secs(10))
            .map_err(|d| d.to_string())?;
        for i in 0..COUNT {
            let value = format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 64));
            sim.write(i % 3, &format!("dir{}/key{i}", i % 7), Some(&value))
                .map_err(|e| e.to_string())?;
            if i % 50 == 0 {
                sim.run_for(Duration::from_millis(10));
            }
        }
        sim.await_state(Duration::from_secs(10))
            .map_err(|d| format!("group before join: {d}"))?;
        let blank = sim.add_node();
        sim.add_seed(blank, 0);
        sim.start(blank);
        sim.await_convergence(Duration::from_secs(10))
            .map_err(|d| format!("join: {d}"))?;
        let took = sim
            .await_state(Duration::from_secs(10))
            .map_err(|d| format!("bootstrap: {d}"))?;
        let live = sim
            .store(blank)
            .expect("running")
            .iter()
            .filter(|e| !e.is_tombstone() && !e.key.as_str().starts_with("@consort"))
            .count();
        if live != COUNT {
            return Err(format!("blank node holds {live} of {COUNT} keys"));
        }
        sim.disks_match_memory().map_err(|d| d.to_string())?;
        if sim.frames_delivered() == 0 {
            return Err("the snapshot did not travel over a stream".into());
        }
        if sim.engine(blank).expect("running").is_bootstrapping() {
            return Err("still bootstrapping".into());
        }
        println!(
            "seed {seed}: bootstrapped {COUNT} keys {took:?} after joining, {} frames",
            sim.frames_delivered()
        );
        Ok(())
    });
}

/// Crashing every node at once loses no committed write: each restarts from its disk.
#[test]
fn whole_group_crash_keeps_committed_writes() {
    SeedRun::new(
        env!("CARGO_CRATE_NAME"),
        "whole_group_crash_keeps_committed_writes",
    )
    .count(20)
    .run(|seed| {
        let mut sim = Scenario::new(seed).nodes(3).build();
        sim.await_convergence(Duration::from_secs(10))
            .map_err(|d| d.to_string())?;
        for i in 0..30 {
            let value = (i % 7 != 0).then(|| format!("{i}"));
            sim.write(i % 3, &format!("k{}", i % 10), value.as_deref())
                .map_err(|e| e.to_string())?;
            sim.run_for(Duration::from_millis(20));
        }
        sim.run_for(Duration::from_secs(1));
        for n in 0..3 {
            sim.crash(n);
        }
        sim.run_for(Duration::from_secs(1));
        for n in 0..3 {
            sim.restart(n);
        }
        sim.acked_writes_survive()
            .map_err(|d| format!("at restart: {d}"))?;
        sim.await_convergence(Duration::from_secs(10))
            .map_err(|d| d.to_string())?;
        sim.await_state(Duration::from_secs(5))
            .map_err(|d| d.to_string())?;
        Ok(())
    });
}
