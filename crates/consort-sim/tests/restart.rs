//! Restart: a crashed node started again from its saved state comes back as one entry, with the
//! same id, `Alive`, under a higher generation.

use std::time::Duration;

use consort_proto::MemberState;
use consort_sim::{Scenario, SeedRun};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

#[test]
fn crashed_node_restarts_as_one_entry_with_higher_generation() {
    SeedRun::new(
        env!("CARGO_CRATE_NAME"),
        "crashed_node_restarts_as_one_entry_with_higher_generation",
    )
    .count(40)
    .run(|seed| {
        let mut pick = StdRng::seed_from_u64(seed);
        let nodes = pick.random_range(3..=10);
        let mut sim = Scenario::new(seed).nodes(nodes).seeded_through(2).build();
        sim.await_convergence(Duration::from_secs(10))
            .map_err(|d| format!("join: {d}"))?;
        let victim = pick.random_range(0..nodes);
        let before = sim
            .engine(victim)
            .map(|e| e.identity().generation)
            .ok_or("not running")?;
        sim.crash(victim);
        // Back before, around, or well after its peers notice.
        sim.run_for(Duration::from_millis(pick.random_range(0..4000)));
        sim.restart(victim);
        sim.await_convergence(Duration::from_secs(10))
            .map_err(|d| format!("after restart: {d}"))?;
        let id = sim.node_id(victim);
        for observer in sim.running().into_iter().filter(|&o| o != victim) {
            let members = sim.members(observer).ok_or("observer not running")?;
            let entries: Vec<_> = members.iter().filter(|m| m.identity.id == id).collect();
            let [entry] = entries[..] else {
                return Err(format!(
                    "n{observer} lists n{victim} {} times",
                    entries.len()
                ));
            };
            if entry.state != MemberState::Alive || entry.identity.generation <= before {
                return Err(format!(
                    "n{observer} sees n{victim} as {entry:?}, was #{before}"
                ));
            }
        }
        Ok(())
    });
}

/// A node that stopped gracefully and comes back is `Alive` again everywhere, not `Left`.
#[test]
fn stopped_node_rejoins_after_restart() {
    SeedRun::new(
        env!("CARGO_CRATE_NAME"),
        "stopped_node_rejoins_after_restart",
    )
    .count(20)
    .run(|seed| {
        let mut sim = Scenario::new(seed).nodes(5).seeded_through(2).build();
        sim.await_convergence(Duration::from_secs(10))
            .map_err(|d| format!("join: {d}"))?;
        let victim = (seed % 5) as usize;
        sim.stop(victim);
        sim.run_for(Duration::from_secs(2));
        sim.restart(victim);
        sim.await_convergence(Duration::from_secs(10))
            .map(|_| ())
            .map_err(|d| format!("after restart: {d}"))
    });
}
