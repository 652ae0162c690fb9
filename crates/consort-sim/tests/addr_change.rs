//! Address change: peers follow a node to its new address, whether it moves while running or
//! comes back from a crash somewhere else.

use std::time::Duration;

use consort_sim::{Scenario, SeedRun, Sim};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Checks that every running peer lists `node` at its current address.
fn peers_see_addr(sim: &Sim, node: usize) -> Result<(), String> {
    let addr = sim.addr(node);
    for observer in sim.running().into_iter().filter(|&o| o != node) {
        let seen = sim.view(observer, node).map(|m| m.identity.addr);
        if seen != Some(addr) {
            return Err(format!("n{observer} sees n{node} at {seen:?}, not {addr}"));
        }
    }
    Ok(())
}

#[test]
fn running_node_moves_and_peers_follow() {
    SeedRun::new(
        env!("CARGO_CRATE_NAME"),
        "running_node_moves_and_peers_follow",
    )
    .count(30)
    .run(|seed| {
        let mut pick = StdRng::seed_from_u64(seed);
        let nodes = pick.random_range(3..=10);
        let mut sim = Scenario::new(seed).nodes(nodes).seeded_through(2).build();
        sim.await_convergence(Duration::from_secs(10))
            .map_err(|d| format!("join: {d}"))?;
        let mover = pick.random_range(0..nodes);
        let addr = sim.fresh_addr();
        sim.set_addr(mover, addr);
        sim.await_convergence(Duration::from_secs(10))
            .map_err(|d| format!("after move: {d}"))?;
        peers_see_addr(&sim, mover)
    });
}

#[test]
fn crashed_node_restarts_at_new_addr() {
    SeedRun::new(
        env!("CARGO_CRATE_NAME"),
        "crashed_node_restarts_at_new_addr",
    )
    .count(30)
    .run(|seed| {
        let mut pick = StdRng::seed_from_u64(seed);
        let nodes = pick.random_range(3..=10);
        let mut sim = Scenario::new(seed).nodes(nodes).seeded_through(2).build();
        sim.await_convergence(Duration::from_secs(10))
            .map_err(|d| format!("join: {d}"))?;
        let mover = pick.random_range(0..nodes);
        sim.crash(mover);
        sim.run_for(Duration::from_millis(pick.random_range(0..3000)));
        let addr = sim.fresh_addr();
        sim.set_addr(mover, addr);
        sim.restart(mover);
        sim.await_convergence(Duration::from_secs(15))
            .map_err(|d| format!("after restart: {d}"))?;
        peers_see_addr(&sim, mover)
    });
}
