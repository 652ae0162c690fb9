//! Join: 5 to 20 nodes seeded through one or two nodes reach full membership.

use std::time::Duration;

use consort_sim::{Scenario, SeedRun, Summary};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

#[test]
fn nodes_seeded_through_one_or_two_converge() {
    let runs = SeedRun::new(
        env!("CARGO_CRATE_NAME"),
        "nodes_seeded_through_one_or_two_converge",
    )
    .count(40)
    .run(|seed| {
        let mut pick = StdRng::seed_from_u64(seed);
        let nodes = pick.random_range(5..=20);
        let through = pick.random_range(1..=2);
        let mut sim = Scenario::new(seed)
            .nodes(nodes)
            .seeded_through(through)
            .build();
        let took = sim
            .await_convergence(Duration::from_secs(20))
            .map_err(|d| format!("{nodes} nodes through {through}: {d}"))?;
        if !sim.false_downs().is_empty() {
            return Err(format!("false downs: {:?}", sim.false_downs()));
        }
        Ok(took)
    });
    let times: Vec<Duration> = runs.iter().map(|(_, t)| *t).collect();
    println!("join time: {}", Summary::of(&times).expect("runs"));
}
