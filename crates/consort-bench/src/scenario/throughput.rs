//! `throughput_updates_per_s`: sustained updates per second reaching every one of 4 peers,
//! with 64-byte values; also measured at the other fan-outs of the plan, for the plot.
//!
//! Consort: writers `PUT` distinct keys on one node (encrypted datagrams, durable storage on
//! every node, each `PUT` answered after its durable commit) for a fixed window; the rate is the
//! writes made over the time until every peer holds them all. Mosquitto: one publisher sends
//! retained QoS 0 messages for the same window; the rate is the messages over the time until
//! every subscriber received them all. UDP floor: one process sends a 64-byte datagram to each
//! peer process in turn; the rate is what the least-served peer received.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use super::propagation::{value, VALUE_SIZE};
use super::Bench;
use crate::mqtt::{Broker, Publisher, Subscriber};
use crate::node::Cluster;
use crate::procfs::CpuWindow;
use crate::report::{Bound, Contender, Figure};
use crate::{stats, udp, wait};

/// The fan-out the figure is reported at.
const FANOUT: usize = 4;

/// Concurrent `PUT` connections to the writing node: each waits for its durable commit, so
/// several keep the group commit busy.
const WRITERS: usize = 32;

/// Distinct topics the publisher cycles through (retained messages replace each other).
const TOPICS: u64 = 10_000;

/// How long every peer may take to catch up after the writers stop.
const CATCH_UP: Duration = Duration::from_secs(60);

/// Runs every fan-out of the plan; the figure is the one at [`FANOUT`].
pub fn run(bench: &mut Bench) -> Vec<Figure> {
    let goal = vec![Bound::MinTimes(2.0, Contender::Mosquitto)];
    let mut figure = Figure::new("throughput_updates_per_s", "updates/s", goal)
        .applies(Contender::Mosquitto)
        .applies(Contender::UdpFloor);
    let mut by_fanout = serde_json::Map::new();
    for &fanout in bench.plan.fanouts {
        let (rounds, cpu) = match at_fanout(bench, fanout) {
            Ok(measured) => measured,
            Err(e) => {
                bench.warn(format!("throughput at fan-out {fanout}: {e:#}"));
                continue;
            }
        };
        let mut medians = serde_json::Map::new();
        for (&contender, values) in &rounds {
            let Some(median) = stats::median(values) else {
                continue;
            };
            medians.insert(contender.key().into(), json!(median.round()));
            let line = bench.plots.throughput.entry(contender).or_default();
            line.push((fanout, median));
            if fanout == FANOUT {
                for &v in values {
                    figure.push(contender, v);
                }
            }
        }
        medians.insert("cpu_us_per_update".into(), cpu.into());
        by_fanout.insert(fanout.to_string(), serde_json::Value::Object(medians));
    }
    figure
        .extra
        .insert("by_fanout".into(), serde_json::Value::Object(by_fanout));
    figure.extra.insert("fanout".into(), json!(FANOUT));
    vec![figure]
}

/// Updates that reached every peer, and how long they took.
pub struct Delivered {
    /// Updates every peer received.
    pub updates: u64,
    /// From the first write until the last peer had them all.
    pub elapsed: Duration,
}

impl Delivered {
    fn per_second(&self) -> f64 {
        self.updates as f64 / self.elapsed.as_secs_f64()
    }
}

/// Rates of every contender at `fanout` peers, per round; and the CPU time per update of the
/// last round, of the processes serving it and of the bench itself.
type AtFanout = (
    BTreeMap<Contender, Vec<f64>>,
    serde_json::Map<String, serde_json::Value>,
);

/// Measures every contender at `fanout` peers.
fn at_fanout(bench: &mut Bench, fanout: usize) -> anyhow::Result<AtFanout> {
    eprintln!("consort-bench:   fan-out {fanout}");
    let contenders = Contenders::start(bench, fanout)?;
    let window = bench.plan.throughput_window;
    let mut rounds: BTreeMap<Contender, Vec<f64>> = BTreeMap::new();
    let mut cpu = serde_json::Map::new();
    for round in 0..bench.plan.rounds {
        for contender in bench.order(round, &Contender::ALL) {
            let used = CpuWindow::serving(&contenders.servers(contender));
            let Some(delivered) = contenders.round(contender, window, round)? else {
                continue;
            };
            cpu.insert(contender.key().into(), used.cost_per(delivered.updates));
            let rate = delivered.per_second();
            rounds.entry(contender).or_default().push(rate);
        }
    }
    Ok((rounds, cpu))
}

/// The contenders at one fan-out, started once for every round.
struct Contenders {
    cluster: Cluster,
    mosquitto: Option<MqttFanout>,
    peers: Vec<udp::Peer>,
}

impl Contenders {
    fn start(bench: &Bench, fanout: usize) -> anyhow::Result<Contenders> {
        Ok(Contenders {
            cluster: Cluster::start(&bench.consort, fanout + 1, "tp")?,
            mosquitto: match &bench.mosquitto {
                Some(binary) => Some(MqttFanout::start(binary, fanout)?),
                None => None,
            },
            peers: (0..fanout)
                .map(|_| udp::Peer::start())
                .collect::<anyhow::Result<_>>()?,
        })
    }

    /// The processes serving `contender`.
    fn servers(&self, contender: Contender) -> Vec<u32> {
        match contender {
            Contender::Consort => self.cluster.pids(),
            Contender::Mosquitto => self.mosquitto.iter().map(|m| m.broker.pid()).collect(),
            Contender::UdpFloor => self.peers.iter().map(udp::Peer::pid).collect(),
        }
    }

    /// One round of `contender`; `None` if it is not installed.
    fn round(
        &self,
        contender: Contender,
        window: Duration,
        round: usize,
    ) -> anyhow::Result<Option<Delivered>> {
        Ok(Some(match (contender, &self.mosquitto) {
            (Contender::Consort, _) => consort_round(&self.cluster, window, round)?,
            (Contender::Mosquitto, Some(mqtt)) => mqtt.round(window)?,
            (Contender::Mosquitto, None) => return Ok(None),
            (Contender::UdpFloor, _) => {
                let (updates, elapsed) = udp::blast(&self.peers, VALUE_SIZE, window)?;
                Delivered { updates, elapsed }
            }
        }))
    }
}

/// Writes on the first node for `window`, until every peer held them.
fn consort_round(cluster: &Cluster, window: Duration, round: usize) -> anyhow::Result<Delivered> {
    let peers = &cluster.nodes[1..];
    let held = |i: usize| peers[i].api.entries();
    let before: Vec<u64> = (0..peers.len())
        .map(|i| held(i).context("a peer's entry count"))
        .collect::<anyhow::Result<_>>()?;
    let start = Instant::now();
    let threads: Vec<_> = (0..WRITERS)
        .map(|t| {
            let api = cluster.nodes[0].api.clone();
            thread::spawn(move || -> anyhow::Result<u64> {
                let mut written = 0;
                while start.elapsed() < window {
                    let key = format!("tp/{round}/{t}/{written}");
                    api.put(&key, &value(written))?;
                    written += 1;
                }
                Ok(written)
            })
        })
        .collect();
    let mut written = 0;
    for thread in threads {
        written += thread
            .join()
            .map_err(|_| anyhow::anyhow!("a writer panicked"))??;
    }
    let all_held = wait::time_from(start, CATCH_UP, Duration::from_millis(5), || {
        (0..peers.len()).all(|i| held(i).is_some_and(|n| n >= before[i] + written))
    });
    match all_held {
        Some(elapsed) => Ok(Delivered {
            updates: written,
            elapsed,
        }),
        None => bail!("the peers did not hold all {written} writes {CATCH_UP:?} after the start"),
    }
}

/// A broker, one publisher and `fanout` subscribers that count what they receive.
struct MqttFanout {
    publisher: Publisher,
    received: Arc<Vec<AtomicU64>>,
    /// When each subscriber received its last message, in nanoseconds since `epoch`.
    last: Arc<Vec<AtomicU64>>,
    epoch: Instant,
    /// Set while a round runs: messages outside a round are not counted.
    counting: Arc<AtomicBool>,
    _subscribers: Vec<Subscriber>,
    broker: Broker,
}

impl MqttFanout {
    fn start(binary: &std::path::Path, fanout: usize) -> anyhow::Result<MqttFanout> {
        let broker = Broker::start(binary)?;
        let received: Arc<Vec<AtomicU64>> = Arc::new((0..fanout).map(|_| 0.into()).collect());
        let last: Arc<Vec<AtomicU64>> = Arc::new((0..fanout).map(|_| 0.into()).collect());
        let counting = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let mut subscribers = Vec::new();
        for s in 0..fanout {
            let (received, last, counting) = (received.clone(), last.clone(), counting.clone());
            let on_publish = move |_: &rumqttc::Publish, at: Instant| {
                if counting.load(Ordering::Relaxed) {
                    received[s].fetch_add(1, Ordering::Relaxed);
                    last[s].store((at - epoch).as_nanos() as u64, Ordering::Relaxed);
                }
            };
            let id = format!("tp-sub-{s}");
            subscribers.push(Subscriber::start(&broker, &id, "tp/#", on_publish)?);
        }
        let publisher = Publisher::connect(&broker, "tp-pub")?;
        Ok(MqttFanout {
            publisher,
            received,
            last,
            epoch,
            counting,
            _subscribers: subscribers,
            broker,
        })
    }

    /// Publishes for `window`, until every subscriber had them all.
    fn round(&self, window: Duration) -> anyhow::Result<Delivered> {
        for counter in self.received.iter().chain(self.last.iter()) {
            counter.store(0, Ordering::Relaxed);
        }
        self.counting.store(true, Ordering::Relaxed);
        let start = Instant::now();
        let mut published = 0;
        while start.elapsed() < window {
            let payload = value(published).into_bytes();
            self.publisher
                .publish(format!("tp/{}", published % TOPICS), payload)?;
            published += 1;
        }
        let all = wait::until_every(CATCH_UP, Duration::from_millis(5), || {
            let done = self
                .received
                .iter()
                .all(|r| r.load(Ordering::Relaxed) >= published);
            done.then_some(())
        });
        self.counting.store(false, Ordering::Relaxed);
        if all.is_none() {
            let least = self
                .received
                .iter()
                .map(|r| r.load(Ordering::Relaxed))
                .min();
            bail!("a subscriber received {least:?} of {published} messages");
        }
        let last = self.last.iter().map(|l| l.load(Ordering::Relaxed)).max();
        let done = self.epoch + Duration::from_nanos(last.unwrap_or(0));
        Ok(Delivered {
            updates: published,
            elapsed: done - start,
        })
    }
}
