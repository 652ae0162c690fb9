//! `idle_cpu_pct`, `idle_rss_mb`: five idle nodes (no writes, no API requests during the window),
//! each one's CPU use over the window and resident memory at its end; the figure is the median
//! node. Mosquitto: the broker with five idle clients connected, over its own window.

use std::thread;
use std::time::Duration;

use serde_json::json;

use super::Bench;
use crate::mqtt::{Broker, Subscriber};
use crate::node::Cluster;
use crate::procfs::{self, CpuWindow};
use crate::report::{Bound, Contender, Figure};
use crate::stats;

/// Nodes in the group (and idle MQTT clients).
const NODES: usize = 5;

/// Time the group gets to settle after its start.
const SETTLE: Duration = Duration::from_secs(3);

/// Runs the rounds; the figures hold what completed.
pub fn run(bench: &mut Bench) -> Vec<Figure> {
    let mut cpu = Figure::new("idle_cpu_pct", "% of a core", vec![Bound::Max(1.0)])
        .applies(Contender::Mosquitto);
    let mut rss =
        Figure::new("idle_rss_mb", "MB", vec![Bound::Max(16.0)]).applies(Contender::Mosquitto);
    if let Err(e) = measure(bench, &mut cpu, &mut rss) {
        bench.warn(format!("idle: {e:#}"));
    }
    vec![cpu, rss]
}

fn measure(bench: &mut Bench, cpu: &mut Figure, rss: &mut Figure) -> anyhow::Result<()> {
    let cluster = Cluster::start(&bench.consort, NODES, "idle")?;
    let mosquitto = match &bench.mosquitto {
        Some(binary) => {
            let broker = Broker::start(binary)?;
            let clients = (0..NODES)
                .map(|i| Subscriber::start(&broker, &format!("idle-{i}"), "idle/#", |_, _| {}))
                .collect::<anyhow::Result<Vec<_>>>()?;
            Some((broker, clients))
        }
        None => None,
    };
    thread::sleep(SETTLE);
    let mut busiest: f64 = 0.0;
    let window = bench.plan.idle_window;
    for round in 0..bench.plan.rounds {
        for contender in bench.order(round, &[Contender::Consort, Contender::Mosquitto]) {
            let pids = match (contender, &mosquitto) {
                (Contender::Consort, _) => cluster.pids(),
                (Contender::Mosquitto, Some((broker, _))) => vec![broker.pid()],
                _ => continue,
            };
            let measured = CpuWindow::start(&pids);
            thread::sleep(window);
            let percents = measured.percent();
            let resident: Vec<f64> = pids.iter().filter_map(|&p| procfs::rss_mb(p)).collect();
            if contender == Contender::Consort {
                busiest = percents.iter().copied().fold(busiest, f64::max);
            }
            if let Some(median) = stats::median(&percents) {
                cpu.push(contender, median);
            }
            if let Some(median) = stats::median(&resident) {
                rss.push(contender, median);
            }
        }
    }
    cpu.extra.insert("busiest_node_pct".into(), json!(busiest));
    cpu.extra
        .insert("window_s".into(), json!(window.as_secs_f64()));
    Ok(())
}
