//! False downs: a healthy group on a lossy LAN never declares a live member down, and still
//! detects a real crash (kill -9) quickly.
//!
//! Each seed runs 3 nodes at 10% loss for 120 virtual seconds, then kills one node. Over the 60
//! seeds that is 120 virtual minutes of lossy operation.

use std::time::Duration;

use consort_proto::{MemberEvent, MemberState};
use consort_sim::{Scenario, SeedRun, Summary};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const LOSS: f64 = 0.10;
const QUIET_RUN: Duration = Duration::from_secs(120);
const DETECTION_GOAL: Duration = Duration::from_millis(1500);

#[test]
fn no_false_down_at_ten_percent_loss_and_crash_detected_fast() {
    let runs = SeedRun::new(
        env!("CARGO_CRATE_NAME"),
        "no_false_down_at_ten_percent_loss_and_crash_detected_fast",
    )
    .count(60)
    .run(|seed| {
        let mut pick = StdRng::seed_from_u64(seed);
        let mut sim = Scenario::new(seed)
            .nodes(3)
            .seeded_through(2)
            .stagger(Duration::from_secs(1))
            .loss(LOSS)
            .build();
        sim.run_for(QUIET_RUN);
        if let Some(record) = sim.false_downs().first() {
            return Err(format!("false down: {record:?}"));
        }
        let renewals = sim
            .records()
            .iter()
            .filter(|r| matches!(r.event, MemberEvent::SelfRenewed(_)))
            .count();
        if renewals > 0 {
            return Err(format!("{renewals} healthy nodes were pushed to rejoin"));
        }
        // Under loss some peer may be suspect at any instant, so "converged" means "soon".
        sim.await_convergence(Duration::from_secs(5))
            .map_err(|d| d.to_string())?;
        // Crash at a random point of the probe cycles, which all started at zero.
        sim.run_for(Duration::from_micros(pick.random_range(0..1_000_000)));
        let victim = pick.random_range(0..3);
        sim.crash(victim);
        let crashed_at = sim.now();
        sim.run_until(Duration::from_secs(10), |s| {
            s.detections(victim, crashed_at, MemberState::Down)
                .iter()
                .all(|(_, t)| t.is_some())
        });
        let mut times = Vec::new();
        for (observer, took) in sim.detections(victim, crashed_at, MemberState::Down) {
            times.push(took.ok_or(format!("n{observer} never saw n{victim} down"))?);
        }
        Ok(times)
    });
    let times: Vec<Duration> = runs.into_iter().flat_map(|(_, t)| t).collect();
    let summary = Summary::of(&times).expect("samples");
    println!(
        "kill -9 detection, 3 nodes, {:.0}% loss: {summary}",
        LOSS * 100.0
    );
    assert!(summary.median <= DETECTION_GOAL, "{summary}");
}
