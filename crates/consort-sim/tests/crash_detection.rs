//! Crash detection: a node killed without a goodbye is marked `Down` by every live peer.

use std::time::Duration;

use consort_proto::MemberState;
use consort_sim::{Scenario, SeedRun, Summary};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Longest a live peer may take to report a crash before the run counts as failed.
const DETECTION_LIMIT: Duration = Duration::from_secs(10);

#[test]
fn crashed_node_is_marked_down_by_every_peer() {
    let runs = SeedRun::new(
        env!("CARGO_CRATE_NAME"),
        "crashed_node_is_marked_down_by_every_peer",
    )
    .count(60)
    .run(|seed| {
        let mut pick = StdRng::seed_from_u64(seed);
        let nodes = pick.random_range(3..=12);
        let mut sim = Scenario::new(seed)
            .nodes(nodes)
            .seeded_through(2)
            .stagger(Duration::from_secs(1))
            .build();
        sim.await_convergence(Duration::from_secs(10))
            .map_err(|d| format!("join: {d}"))?;
        // Crash at a random point of the probe cycle.
        sim.run_for(Duration::from_micros(pick.random_range(0..2_000_000)));
        let victim = pick.random_range(0..nodes);
        sim.crash(victim);
        let crashed_at = sim.now();
        sim.run_until(DETECTION_LIMIT, |s| {
            s.detections(victim, crashed_at, MemberState::Down)
                .iter()
                .all(|(_, t)| t.is_some())
        });
        let mut times = Vec::new();
        for (observer, took) in sim.detections(victim, crashed_at, MemberState::Down) {
            times.push(took.ok_or(format!("n{observer} never saw n{victim} down"))?);
        }
        sim.membership_converged().map_err(|d| d.to_string())?;
        if let Some(fd) = sim.false_downs().first() {
            return Err(format!("false down: {fd:?}"));
        }
        Ok(times)
    });
    let times: Vec<Duration> = runs.into_iter().flat_map(|(_, t)| t).collect();
    let summary = Summary::of(&times).expect("samples");
    println!("crash detection, 3 to 12 nodes, no loss: {summary}");
    assert!(summary.median <= Duration::from_millis(1500), "{summary}");
}
