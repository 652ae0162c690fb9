//! Partition and heal: while split, each side sees the other as down; once healed, everyone
//! converges on one membership again.

use std::time::Duration;

use consort_sim::{Scenario, SeedRun, Sim};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

/// Whether every running node in `side` holds every node of `other` as not live.
fn side_sees_other_gone(sim: &Sim, side: &[usize], other: &[usize]) -> bool {
    side.iter().all(|&o| {
        other
            .iter()
            .all(|&s| sim.view(o, s).is_none_or(|m| !m.state.is_live()))
    })
}

/// Whether every node of `side` holds every other node of `side` as live.
fn side_is_whole(sim: &Sim, side: &[usize]) -> bool {
    side.iter().all(|&o| {
        side.iter()
            .all(|&s| sim.view(o, s).is_some_and(|m| m.state.is_live()))
    })
}

#[test]
fn split_sides_see_each_other_down_then_converge_after_heal() {
    SeedRun::new(
        env!("CARGO_CRATE_NAME"),
        "split_sides_see_each_other_down_then_converge_after_heal",
    )
    .count(40)
    .run(|seed| {
        let mut pick = StdRng::seed_from_u64(seed);
        let nodes = pick.random_range(4..=12);
        let mut sim = Scenario::new(seed).nodes(nodes).seeded_through(2).build();
        sim.await_convergence(Duration::from_secs(10))
            .map_err(|d| format!("join: {d}"))?;
        let mut order: Vec<usize> = (0..nodes).collect();
        order.shuffle(&mut pick);
        let (a, b) = order.split_at(pick.random_range(1..nodes));
        sim.partition(&[a, b]);
        let split = sim.run_until(Duration::from_secs(15), |s| {
            side_sees_other_gone(s, a, b) && side_sees_other_gone(s, b, a)
        });
        split.ok_or(format!(
            "sides {a:?} and {b:?} still see each other after 15 s"
        ))?;
        if !(side_is_whole(&sim, a) && side_is_whole(&sim, b)) {
            return Err(format!("a side lost its own members: {a:?} {b:?}"));
        }
        sim.heal();
        sim.await_convergence(Duration::from_secs(20))
            .map(|_| ())
            .map_err(|d| format!("after heal: {d}"))
    });
}

/// A one-way cut (A hears B, B does not hear A) heals like a full one.
#[test]
fn one_way_cut_heals() {
    SeedRun::new(env!("CARGO_CRATE_NAME"), "one_way_cut_heals")
        .count(20)
        .run(|seed| {
            let mut pick = StdRng::seed_from_u64(seed);
            let nodes = pick.random_range(3..=8);
            let mut sim = Scenario::new(seed).nodes(nodes).seeded_through(2).build();
            sim.await_convergence(Duration::from_secs(10))
                .map_err(|d| format!("join: {d}"))?;
            let deaf = pick.random_range(0..nodes);
            for other in (0..nodes).filter(|&o| o != deaf) {
                sim.cut(other, deaf);
            }
            sim.run_for(Duration::from_secs(pick.random_range(1..8)));
            sim.heal();
            sim.await_convergence(Duration::from_secs(20))
                .map(|_| ())
                .map_err(|d| format!("after heal: {d}"))
        });
}

/// A node cut off from everyone moves, and so does the seed it joined through: after the heal
/// nobody knows where it is, and the only address it has for its seed is stale. It must find
/// the group again through the addresses of the members it holds as down.
#[test]
fn isolated_node_that_moved_finds_the_group_again() {
    SeedRun::new(
        env!("CARGO_CRATE_NAME"),
        "isolated_node_that_moved_finds_the_group_again",
    )
    .count(20)
    .run(|seed| {
        let mut sim = Scenario::new(seed).nodes(5).seeded_through(1).build();
        sim.await_convergence(Duration::from_secs(10))
            .map_err(|d| format!("join: {d}"))?;
        let lonely = 1 + (seed % 4) as usize;
        sim.isolate(lonely);
        sim.run_for(Duration::from_secs(5));
        let (seed_addr, lonely_addr) = (sim.fresh_addr(), sim.fresh_addr());
        sim.set_addr(0, seed_addr);
        sim.set_addr(lonely, lonely_addr);
        sim.run_for(Duration::from_secs(1));
        sim.heal();
        sim.await_convergence(Duration::from_secs(20))
            .map(|_| ())
            .map_err(|d| format!("after heal: {d}"))
    });
}
