//! Failure detection on real processes: kill -9 is `down` fast, SIGTERM is `left`, a restart
//! with the same data dir comes back as the same node.

mod common;

use std::time::{Duration, Instant};

use common::{cluster, median_secs, time_until, Daemon};

fn all_show(observers: &[&Daemon], id: &str, state: &str) -> bool {
    observers
        .iter()
        .all(|o| o.state_of(id).as_deref() == Some(state))
}

fn wait_all_alive(nodes: &[Daemon], limit: Duration) -> Duration {
    let all: Vec<&Daemon> = nodes.iter().collect();
    time_until(limit, || {
        nodes.iter().all(|n| all_show(&all, &n.id(), "alive"))
    })
    .unwrap_or_else(|| panic!("not all alive within {limit:?}"))
}

#[test]
fn kill_9_is_detected_and_restart_returns_the_same_node() {
    let root = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut nodes = cluster(root.path(), 3, "failures-kill");
    wait_all_alive(&nodes, Duration::from_secs(3));
    println!(
        "3 nodes started and all alive after {:?}",
        started.elapsed()
    );

    let mut detect = Vec::new();
    let mut rejoin = Vec::new();
    for trial in 0..10 {
        let victim = trial % 3;
        let id = nodes[victim].id();
        nodes[victim].kill9();
        let observers: Vec<&Daemon> = nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != victim)
            .map(|(_, n)| n)
            .collect();
        let took = time_until(Duration::from_secs(5), || all_show(&observers, &id, "down"))
            .unwrap_or_else(|| panic!("trial {trial}: {id} not down everywhere within 5 s"));
        detect.push(took);

        // Timed from the process start, which includes its start-up before the API answers.
        let restarted = Instant::now();
        nodes[victim].respawn();
        assert_eq!(nodes[victim].id(), id, "restart keeps the node id");
        let observers: Vec<&Daemon> = nodes.iter().collect();
        time_until(Duration::from_secs(2), || {
            all_show(&observers, &id, "alive")
        })
        .unwrap_or_else(|| panic!("trial {trial}: {id} not back within 2 s"));
        let back = restarted.elapsed();
        assert!(
            back <= Duration::from_secs(2),
            "trial {trial}: back after {back:?}"
        );
        rejoin.push(back);
        for n in &nodes {
            let peers = n.get("/v1/peers");
            let entries = peers
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["id"] == id.as_str())
                .count();
            assert_eq!(entries, 1, "one entry per node");
        }
    }
    let fmt = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.3}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("kill -9 to down on every peer (s): {}", fmt(&detect));
    println!("restart to alive on every peer (s): {}", fmt(&rejoin));
    let median = median_secs(&detect);
    println!(
        "median detection {median:.3} s, median rejoin {:.3} s",
        median_secs(&rejoin)
    );
    assert!(median <= 1.5, "median detection {median:.3} s > 1.5 s");
}

#[test]
fn sigterm_is_shown_as_left() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 3, "failures-term");
    wait_all_alive(&nodes, Duration::from_secs(3));
    let id = nodes[2].id();
    nodes[2].sigterm();
    let (first, rest) = nodes.split_at_mut(2);
    let observers: Vec<&Daemon> = first.iter().collect();
    let took = time_until(Duration::from_secs(1), || all_show(&observers, &id, "left"))
        .expect("SIGTERM shown as left on every peer within 1 s");
    println!("SIGTERM to left on every peer: {took:?}");
    assert_eq!(
        rest[0].wait_exit(Duration::from_secs(5)),
        Some(0),
        "exit code after SIGTERM"
    );
    // Still `left` a while later: a graceful stop never turns into `down`.
    std::thread::sleep(Duration::from_secs(2));
    assert!(all_show(&observers, &id, "left"));
}
