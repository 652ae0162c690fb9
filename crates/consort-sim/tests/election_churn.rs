//! Election under churn: seeded runs of 3 to 9 nodes, `ranked` or `sticky`, some with a quorum,
//! clocks skewed up to an hour either way, through crashes, restarts, partitions (two or three
//! sides), one-way cuts, flapping links and loss. Once the faults stop and membership is stable,
//! every connected part of the network must agree on exactly one leader and its term (no leader
//! in a part below its quorum), keep it, and the election events recorded over the whole run
//! must be sound: terms never go down, nobody follows a leadership its leader never held.

use std::time::Duration;

use consort_proto::election::{ElectionConfig, Mode};
use consort_sim::{Leadership, NodeStatus, Scenario, SeedRun, Sim, Summary};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{RngExt, SeedableRng};

/// Seeds in the default suite.
const RUNS: u64 = 150;
/// Faults drawn per run, one every 0.2 to 2 virtual seconds.
const FAULTS: usize = 8;
/// How long membership may take to agree once the faults stop.
const SETTLE: Duration = Duration::from_secs(30);
/// How long the election may then take.
const ELECT: Duration = Duration::from_secs(2);
/// How long the leaders must then stay exactly as they are.
const STABLE: Duration = Duration::from_secs(2);

/// One disturbance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Crash,
    Restart,
    Partition,
    OneWayCut,
    Flap,
    Heal,
    Loss,
}

const FAULT_KINDS: [Fault; 7] = [
    Fault::Crash,
    Fault::Restart,
    Fault::Partition,
    Fault::OneWayCut,
    Fault::Flap,
    Fault::Heal,
    Fault::Loss,
];

/// What one run measured.
struct Outcome {
    /// From membership agreeing to leaders agreeing.
    elected_in: Duration,
    faults: Vec<Fault>,
}

#[test]
fn one_leader_per_connected_part_once_faults_stop() {
    let outcomes = SeedRun::new(
        env!("CARGO_CRATE_NAME"),
        "one_leader_per_connected_part_once_faults_stop",
    )
    .count(RUNS)
    .run(churn);
    let elected: Vec<Duration> = outcomes.iter().map(|(_, o)| o.elected_in).collect();
    let count = |kind| {
        let faults = outcomes.iter().flat_map(|(_, o)| &o.faults);
        faults.filter(|&&f| f == kind).count()
    };
    println!(
        "election churn: {} runs; leaders agreed after membership: {}",
        outcomes.len(),
        Summary::of(&elected).expect("runs")
    );
    println!(
        "election churn: {} crashes, {} restarts, {} partitions, {} one-way cuts, {} flaps",
        count(Fault::Crash),
        count(Fault::Restart),
        count(Fault::Partition),
        count(Fault::OneWayCut),
        count(Fault::Flap)
    );
}

fn churn(seed: u64) -> Result<Outcome, String> {
    let mut pick = StdRng::seed_from_u64(seed);
    let nodes = pick.random_range(3..=9);
    let mode = *[Mode::Ranked, Mode::Sticky]
        .choose(&mut pick)
        .expect("modes");
    let quorum = pick.random_bool(0.3).then(|| pick.random_range(2..=nodes));
    let priorities: Vec<i32> = (0..nodes).map(|_| pick.random_range(-2..=3)).collect();
    let context = format!("{nodes} nodes, {mode}, quorum {quorum:?}, priorities {priorities:?}");
    let mut sim = Scenario::new(seed)
        .nodes(nodes)
        .seeded_through(2)
        .priorities(&priorities)
        .election(ElectionConfig { mode, quorum })
        .signed_skew(Duration::from_secs(3600))
        .latency(
            Duration::from_micros(pick.random_range(100..=1000)),
            Duration::from_micros(pick.random_range(0..=2000)),
        )
        .build();
    sim.await_convergence(Duration::from_secs(20))
        .map_err(|d| format!("{context}: join: {d}"))?;
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
    let context = format!("{context}, faults {faults:?}");
    let elected_in = settle(&mut sim).map_err(|e| format!("{context}: {e}"))?;
    sim.election_history_sound()
        .map_err(|d| format!("{context}: {d}"))?;
    Ok(Outcome { elected_in, faults })
}

/// Waits for membership, then for one leader per part, then checks that nothing changes for
/// [`STABLE`]; returns how long the leaders took to agree after membership did.
fn settle(sim: &mut Sim) -> Result<Duration, String> {
    sim.await_convergence(SETTLE)
        .map_err(|d| format!("after the faults: {d}"))?;
    let (took, _) = sim
        .await_leaders(ELECT)
        .map_err(|d| format!("membership agreed, then: {d}"))?;
    // A claim not heard while a link was cut one way (the member still live through indirect
    // probes) lapses up to CLAIM_LIFETIME beats (1 s) after it was last heard: a follower can
    // then lead itself for an instant. Judge stability after that.
    sim.run_for(Duration::from_secs(1).saturating_sub(took));
    let agreed = sim
        .leaders_agree()
        .map_err(|d| format!("agreed after {took:?}, then: {d}"))?;
    hold(sim, &agreed, STABLE)?;
    Ok(took)
}

/// Checks every 100 ms for `time` that the leaders stay exactly `agreed`.
fn hold(sim: &mut Sim, agreed: &[Leadership], time: Duration) -> Result<(), String> {
    let end = sim.now() + time;
    while sim.now() < end {
        sim.run_for(Duration::from_millis(100));
        let now = sim
            .leaders_agree()
            .map_err(|d| format!("agreed on {agreed:?}, then {d}"))?;
        if now != agreed {
            return Err(format!("agreed on {agreed:?}, then changed to {now:?}"));
        }
    }
    Ok(())
}

/// Applies `fault` if it makes sense now; returns whether it did.
fn inject(sim: &mut Sim, pick: &mut StdRng, fault: Fault) -> bool {
    let running = sim.running();
    let down: Vec<usize> = (0..sim.node_count())
        .filter(|&n| sim.status(n) == NodeStatus::Crashed)
        .collect();
    match fault {
        Fault::Crash | Fault::OneWayCut | Fault::Flap if running.len() < 2 => false,
        Fault::Crash => {
            // The leader more often than not: failover is what this is about.
            let leader = running
                .iter()
                .copied()
                .find(|&n| sim.engine(n).is_some_and(|e| e.is_leader()));
            let victim = match leader {
                Some(l) if pick.random_bool(0.6) => l,
                _ => *running.choose(pick).expect("running"),
            };
            sim.crash(victim);
            true
        }
        Fault::Restart => match (down.choose(pick), running.choose(pick)) {
            (Some(&n), Some(&seed)) => {
                // What mDNS gives a real node: a peer that is up now. Its clock may have been
                // stepped while it was down.
                sim.add_seed(n, seed);
                sim.set_skew_ms(n, pick.random_range(-3_600_000..=3_600_000));
                sim.restart(n);
                true
            }
            _ => false,
        },
        Fault::Partition => {
            let mut order: Vec<usize> = (0..sim.node_count()).collect();
            order.shuffle(pick);
            let cut = pick.random_range(1..order.len());
            let (a, b) = order.split_at(cut);
            if b.len() >= 2 && pick.random_bool(0.3) {
                let (b, c) = b.split_at(pick.random_range(1..b.len()));
                sim.partition(&[a, b, c]);
            } else {
                sim.partition(&[a, b]);
            }
            true
        }
        Fault::OneWayCut => match running.sample_array::<_, 2>(pick) {
            Some([from, to]) => {
                sim.cut(from, to);
                true
            }
            None => false,
        },
        Fault::Flap => {
            let time = Duration::from_secs(pick.random_range(1..=4));
            flap(sim, pick, &running, time);
            true
        }
        Fault::Heal => {
            sim.heal();
            true
        }
        Fault::Loss => {
            let loss = *[0.0, 0.05, 0.1, 0.2].choose(pick).expect("losses");
            sim.set_loss(loss);
            true
        }
    }
}

/// For `time`, cuts and restores links between random pairs of `nodes` (both ways, or one
/// way) every 50 to 600 ms: a flaky cable or Wi-Fi. Leaves the last state of each link.
fn flap(sim: &mut Sim, pick: &mut StdRng, nodes: &[usize], time: Duration) {
    let end = sim.now() + time;
    while sim.now() < end {
        if let Some([a, b]) = nodes.sample_array::<_, 2>(pick) {
            let both = pick.random_bool(0.7);
            if pick.random_bool(0.5) {
                sim.cut(a, b);
                if both {
                    sim.cut(b, a);
                }
            } else {
                sim.mend(a, b);
                if both {
                    sim.mend(b, a);
                }
            }
        }
        sim.run_for(Duration::from_millis(pick.random_range(50..600)));
    }
}

/// Links flap between random pairs for a few seconds, with nothing else going on; once they
/// stop (and whatever they left cut is healed), one leader everywhere, within [`ELECT`] of
/// membership agreeing.
#[test]
fn flapping_links_settle_to_one_leader() {
    SeedRun::new(
        env!("CARGO_CRATE_NAME"),
        "flapping_links_settle_to_one_leader",
    )
    .count(100)
    .run(|seed| {
        let mut pick = StdRng::seed_from_u64(seed);
        let nodes = pick.random_range(3..=7);
        let mode = *[Mode::Ranked, Mode::Sticky]
            .choose(&mut pick)
            .expect("modes");
        let priorities: Vec<i32> = (0..nodes).map(|_| pick.random_range(0..=2)).collect();
        let context = format!("{nodes} nodes, {mode}, priorities {priorities:?}");
        let mut sim = Scenario::new(seed)
            .nodes(nodes)
            .seeded_through(2)
            .priorities(&priorities)
            .election(ElectionConfig { mode, quorum: None })
            .build();
        sim.await_convergence(Duration::from_secs(10))
            .map_err(|d| format!("{context}: join: {d}"))?;
        let all: Vec<usize> = (0..nodes).collect();
        let time = Duration::from_secs(pick.random_range(2..=8));
        flap(&mut sim, &mut pick, &all, time);
        sim.heal();
        settle(&mut sim).map_err(|e| format!("{context}: {e}"))?;
        sim.election_history_sound()
            .map_err(|d| format!("{context}: {d}"))
    });
}
