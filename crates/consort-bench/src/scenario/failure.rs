//! `detect_down_p50_s`, `failover_p50_s`: five nodes; `kill -9` of a follower (of the leader),
//! timed until every survivor lists it `down` (agrees on a new leader). The node is restarted
//! with its data dir, and the group settles, before the next round. Consort only: Mosquitto is
//! one broker with nothing to fail over to, and raw UDP knows no membership.

use std::time::{Duration, Instant};

use anyhow::Context;

use super::Bench;
use crate::node::Cluster;
use crate::report::{Bound, Contender, Figure};
use crate::wait;

/// Nodes in the group.
const NODES: usize = 5;

/// How long the survivors may take before the round counts as failed.
const LIMIT: Duration = Duration::from_secs(15);

/// How often the survivors are asked.
const POLL: Duration = Duration::from_millis(5);

/// Pause after the group settled, so that the next round starts from a quiet group.
const SETTLE: Duration = Duration::from_secs(1);

/// What the survivors must all show after the kill.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// The victim `down`.
    Down,
    /// One leader, not the victim.
    NewLeader,
}

/// Runs the rounds; the figures hold what completed.
pub fn run(bench: &mut Bench) -> Vec<Figure> {
    let mut detect = Figure::new("detect_down_p50_s", "s", vec![Bound::Max(1.5)]);
    let mut failover = Figure::new("failover_p50_s", "s", vec![Bound::Max(2.0)]);
    if let Err(e) = measure(bench, &mut detect, &mut failover) {
        bench.warn(format!("failure detection: {e:#}"));
    }
    vec![detect, failover]
}

fn measure(bench: &mut Bench, detect: &mut Figure, failover: &mut Figure) -> anyhow::Result<()> {
    let mut cluster = Cluster::start(&bench.consort, NODES, "fail")?;
    wait_one_leader(&cluster)?;
    for round in 0..bench.plan.rounds {
        let leader = leader_index(&cluster)?;
        // Followers take turns as the victim.
        let follower = (0..NODES)
            .cycle()
            .skip(round)
            .find(|&i| i != leader)
            .context("no follower")?;
        let seconds = kill_and_time(&mut cluster, follower, Outcome::Down)?;
        detect.push(Contender::Consort, seconds);
        restore(&mut cluster, follower)?;
        let leader = leader_index(&cluster)?;
        let seconds = kill_and_time(&mut cluster, leader, Outcome::NewLeader)?;
        failover.push(Contender::Consort, seconds);
        restore(&mut cluster, leader)?;
    }
    Ok(())
}

/// Kills node `victim`; seconds until every survivor shows `outcome`.
fn kill_and_time(cluster: &mut Cluster, victim: usize, outcome: Outcome) -> anyhow::Result<f64> {
    let id = cluster.nodes[victim].id().to_string();
    let start = Instant::now();
    cluster.nodes[victim].kill9();
    let survivors: Vec<_> = (0..NODES).filter(|&i| i != victim).collect();
    let shown = wait::time_from(start, LIMIT, POLL, || match outcome {
        Outcome::Down => survivors
            .iter()
            .all(|&i| cluster.nodes[i].api.state_of(&id).as_deref() == Some("down")),
        Outcome::NewLeader => {
            let leaders: Vec<Option<String>> = survivors
                .iter()
                .map(|&i| cluster.nodes[i].api.leader())
                .collect();
            leaders[0].as_ref().is_some_and(|l| *l != id)
                && leaders.iter().all(|l| *l == leaders[0])
        }
    });
    let elapsed = shown.with_context(|| format!("{outcome:?} not shown within {LIMIT:?}"))?;
    Ok(elapsed.as_secs_f64())
}

/// Restarts node `victim` and waits until the group is whole, with one leader, and quiet.
fn restore(cluster: &mut Cluster, victim: usize) -> anyhow::Result<()> {
    cluster.nodes[victim].respawn()?;
    cluster.wait_all_alive()?;
    wait_one_leader(cluster)?;
    std::thread::sleep(SETTLE);
    Ok(())
}

/// Waits until every node names the same leader.
fn wait_one_leader(cluster: &Cluster) -> anyhow::Result<()> {
    let agreed = wait::until(LIMIT, || {
        let leaders: Vec<Option<String>> = cluster.nodes.iter().map(|n| n.api.leader()).collect();
        (leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0])).then_some(())
    });
    agreed.context("the nodes do not agree on a leader")
}

/// The index of the node every node names leader.
fn leader_index(cluster: &Cluster) -> anyhow::Result<usize> {
    let leader = cluster.nodes[0].api.leader().context("no leader")?;
    cluster
        .nodes
        .iter()
        .position(|n| n.id() == leader)
        .context("the leader is not one of the nodes")
}
