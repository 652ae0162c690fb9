//! `propagation_p50_us`, `propagation_p99_us`: one writer, four watchers, 64-byte values; the
//! time from the write call until the last of the four has seen it.
//!
//! Consort: a `PUT` on one node of five, seen on the `/v1/watch` streams of the other four.
//! Mosquitto: a retained QoS 0 publish, seen by four subscribers. UDP floor: half the round
//! trip of a 64-byte ping between two processes. Writes are one at a time, 1 to 3 ms apart.

use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::Bench;
use crate::mqtt::{Broker, Publisher, Subscriber};
use crate::node::Cluster;
use crate::procfs::CpuWindow;
use crate::report::{Bound, Contender, Figure};
use crate::stats::{self, Rng};
use crate::udp;

/// Watching nodes (or subscribers).
const WATCHERS: usize = 4;

/// Size of every value written, in bytes.
pub const VALUE_SIZE: usize = 64;

/// Writes made before each contender's first round and not counted.
const WARM_UP: usize = 20;

/// How long a write may take to reach every watcher before it counts as lost.
const LOST_AFTER: Duration = Duration::from_secs(2);

/// The key (or topic) written.
const KEY: &str = "prop/value";

/// Runs the rounds; the figures hold what completed.
pub fn run(bench: &mut Bench) -> Vec<Figure> {
    let goal50 = vec![
        Bound::MaxTimes(1.0, Contender::Mosquitto),
        Bound::MaxTimes(5.0, Contender::UdpFloor),
    ];
    let mut p50 = Figure::new("propagation_p50_us", "us", goal50)
        .applies(Contender::Mosquitto)
        .applies(Contender::UdpFloor);
    let mut p99 = Figure::new("propagation_p99_us", "us", Vec::new())
        .applies(Contender::Mosquitto)
        .applies(Contender::UdpFloor);
    if let Err(e) = measure(bench, &mut p50, &mut p99) {
        bench.warn(format!("propagation: {e:#}"));
    }
    vec![p50, p99]
}

fn measure(bench: &mut Bench, p50: &mut Figure, p99: &mut Figure) -> anyhow::Result<()> {
    let mut contenders = Contenders::start(bench)?;
    contenders.warm_up(&mut bench.rng)?;
    let samples = bench.plan.propagation_samples;
    let mut lost = serde_json::Map::new();
    let mut cpu = serde_json::Map::new();
    for round in 0..bench.plan.rounds {
        for contender in bench.order(round, &Contender::ALL) {
            let window = CpuWindow::serving(&contenders.servers(contender));
            let latencies = contenders.sample(contender, samples, &mut bench.rng)?;
            cpu.insert(contender.key().into(), window.cost_per(samples as u64));
            add(&mut lost, contender, (samples - latencies.len()) as u64);
            let micros = stats::micros(&latencies);
            if let Some(value) = stats::percentile(&micros, 50.0) {
                p50.push(contender, value);
            }
            if let Some(value) = stats::percentile(&micros, 99.0) {
                p99.push(contender, value);
            }
            let plotted = bench.plots.latencies.entry(contender).or_default();
            plotted.extend(micros);
        }
    }
    // CPU time per write in the last round: the processes serving it, and the bench's own.
    p50.extra.insert("cpu_us_per_write".into(), cpu.into());
    let breakdown = contenders.consort.breakdown.to_json();
    p50.extra.insert("consort_breakdown".into(), breakdown);
    for figure in [p50, p99] {
        figure
            .extra
            .insert("samples_per_round".into(), samples.into());
        figure
            .extra
            .insert("lost".into(), serde_json::Value::Object(lost.clone()));
    }
    Ok(())
}

/// The three contenders, started once for every round.
struct Contenders {
    consort: ConsortWriter,
    mosquitto: Option<MqttWriter>,
    floor: udp::Peer,
}

impl Contenders {
    fn start(bench: &Bench) -> anyhow::Result<Contenders> {
        Ok(Contenders {
            consort: ConsortWriter::start(bench)?,
            mosquitto: match &bench.mosquitto {
                Some(binary) => Some(MqttWriter::start(binary)?),
                None => None,
            },
            floor: udp::Peer::start()?,
        })
    }

    /// Writes that are not counted: connections, caches and the nodes' first pushes.
    fn warm_up(&mut self, rng: &mut Rng) -> anyhow::Result<()> {
        self.consort.sample(WARM_UP, rng)?;
        self.consort.breakdown = Breakdown::default();
        if let Some(mqtt) = &mut self.mosquitto {
            mqtt.sample(WARM_UP, rng)?;
        }
        Ok(())
    }

    /// The processes serving `contender`.
    fn servers(&self, contender: Contender) -> Vec<u32> {
        match contender {
            Contender::Consort => self.consort.cluster.pids(),
            Contender::Mosquitto => self.mosquitto.iter().map(|m| m.broker.pid()).collect(),
            Contender::UdpFloor => vec![self.floor.pid()],
        }
    }

    /// Latencies of `n` writes of `contender` (lost ones left out).
    fn sample(
        &mut self,
        contender: Contender,
        n: usize,
        rng: &mut Rng,
    ) -> anyhow::Result<Vec<Duration>> {
        match (contender, &mut self.mosquitto) {
            (Contender::Consort, _) => self.consort.sample(n, rng),
            (Contender::Mosquitto, Some(mqtt)) => mqtt.sample(n, rng),
            (Contender::Mosquitto, None) => Ok(Vec::new()),
            (Contender::UdpFloor, _) => {
                udp::ping_pong(&self.floor, n, VALUE_SIZE, || udp::sample_gap(rng))
            }
        }
    }
}

/// Adds `n` to the count of `contender` in `counts`.
fn add(counts: &mut serde_json::Map<String, serde_json::Value>, contender: Contender, n: u64) {
    let so_far = counts
        .get(contender.key())
        .and_then(serde_json::Value::as_u64);
    counts.insert(contender.key().into(), (so_far.unwrap_or(0) + n).into());
}

/// A 64-byte JSON value carrying the sample number: `{"i":N,"p":"xx..."}`.
pub fn value(i: u64) -> String {
    let head = format!(r#"{{"i":{i},"p":""#);
    let pad = VALUE_SIZE.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

/// The sample number in a value made by [`value`].
pub fn sample_number(json: &[u8]) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(json).ok()?;
    value["i"].as_u64()
}

/// Sightings of sample numbers: (watcher, sample, when). Watchers `0..WATCHERS` are the
/// remote ones; [`LOCAL`] watches the writing node itself.
type Sighting = (usize, u64, Instant);

/// The watcher on the writing node (Consort only).
const LOCAL: usize = WATCHERS;

/// When the watchers saw one write.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// The first remote watcher.
    first: Instant,
    /// The last remote watcher: the end of the propagation.
    last: Instant,
    /// The writing node's own watch, if one was asked for.
    local: Option<Instant>,
}

/// Waits until every remote watcher (and the local one, if `local`) saw sample `i`.
fn seen_by_all(sightings: &Receiver<Sighting>, i: u64, local: bool) -> Option<Seen> {
    let deadline = Instant::now() + LOST_AFTER;
    let mut at = [None::<Instant>; WATCHERS + 1];
    let wanted = if local { WATCHERS + 1 } else { WATCHERS };
    while at[..wanted].iter().any(Option::is_none) {
        let left = deadline.checked_duration_since(Instant::now())?;
        let (watcher, sample, when) = sightings.recv_timeout(left).ok()?;
        if sample == i && watcher < wanted {
            at[watcher].get_or_insert(when);
        }
    }
    let remote = at[..WATCHERS].iter().flatten();
    Some(Seen {
        first: *remote.clone().min()?,
        last: *remote.max()?,
        local: at[LOCAL],
    })
}

/// Five consort nodes: writes on the first, watches on the other four.
struct ConsortWriter {
    cluster: Cluster,
    sightings: Receiver<Sighting>,
    next: u64,
    /// Where the time goes, over every counted write.
    breakdown: Breakdown,
}

/// Parts of Consort's propagation latency, in microseconds.
#[derive(Debug, Default)]
struct Breakdown {
    /// Until the `PUT` was answered (after the writer's durable commit).
    answered: Vec<f64>,
    /// Until the writing node's own watch saw it.
    local: Vec<f64>,
    /// Until the first remote watcher saw it.
    first: Vec<f64>,
}

impl Breakdown {
    /// Medians, for the report.
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "put_answered_p50_us": stats::percentile(&self.answered, 50.0),
            "local_watch_p50_us": stats::percentile(&self.local, 50.0),
            "first_remote_watcher_p50_us": stats::percentile(&self.first, 50.0),
        })
    }
}

impl ConsortWriter {
    fn start(bench: &Bench) -> anyhow::Result<ConsortWriter> {
        let cluster = Cluster::start(&bench.consort, WATCHERS + 1, "prop")?;
        let (tx, sightings) = mpsc::channel();
        // The remote watchers first, then the writer's own (index LOCAL).
        let watched = cluster.nodes[1..].iter().chain(&cluster.nodes[..1]);
        for (watcher, node) in watched.enumerate() {
            let mut watch = node.api.watch("prop")?;
            let tx: Sender<Sighting> = tx.clone();
            thread::Builder::new()
                .name(format!("watch-{watcher}"))
                .spawn(move || {
                    while let Some(change) = watch.next_change() {
                        let Some(i) = sample_number(change.value.as_bytes()) else {
                            continue;
                        };
                        if tx.send((watcher, i, change.at)).is_err() {
                            return;
                        }
                    }
                })?;
        }
        Ok(ConsortWriter {
            cluster,
            sightings,
            next: 0,
            breakdown: Breakdown::default(),
        })
    }

    /// Latencies of `n` writes (lost ones left out).
    fn sample(&mut self, n: usize, rng: &mut Rng) -> anyhow::Result<Vec<Duration>> {
        let writer = &self.cluster.nodes[0].api;
        let mut latencies = Vec::with_capacity(n);
        for _ in 0..n {
            self.next += 1;
            let value = value(self.next);
            let start = Instant::now();
            writer.put(KEY, &value).context("write on the first node")?;
            let answered = start.elapsed();
            if let Some(seen) = seen_by_all(&self.sightings, self.next, true) {
                latencies.push(seen.last - start);
                let micros = |d: Duration| d.as_secs_f64() * 1e6;
                self.breakdown.answered.push(micros(answered));
                self.breakdown.first.push(micros(seen.first - start));
                if let Some(local) = seen.local {
                    self.breakdown.local.push(micros(local - start));
                }
            }
            thread::sleep(udp::sample_gap(rng));
        }
        Ok(latencies)
    }
}

/// A broker with one publisher and four subscribers.
struct MqttWriter {
    publisher: Publisher,
    sightings: Receiver<Sighting>,
    next: u64,
    _subscribers: Vec<Subscriber>,
    broker: Broker,
}

impl MqttWriter {
    fn start(binary: &std::path::Path) -> anyhow::Result<MqttWriter> {
        let broker = Broker::start(binary)?;
        let (tx, sightings) = mpsc::channel();
        let mut subscribers = Vec::new();
        for watcher in 0..WATCHERS {
            let tx: Sender<Sighting> = tx.clone();
            let subscriber = Subscriber::start(
                &broker,
                &format!("prop-sub-{watcher}"),
                "prop/#",
                move |publish, at| {
                    if let Some(i) = sample_number(&publish.payload) {
                        let _ = tx.send((watcher, i, at));
                    }
                },
            )?;
            subscribers.push(subscriber);
        }
        let publisher = Publisher::connect(&broker, "prop-pub")?;
        Ok(MqttWriter {
            publisher,
            sightings,
            next: 0,
            _subscribers: subscribers,
            broker,
        })
    }

    /// Latencies of `n` publishes (lost ones left out).
    fn sample(&mut self, n: usize, rng: &mut Rng) -> anyhow::Result<Vec<Duration>> {
        let mut latencies = Vec::with_capacity(n);
        for _ in 0..n {
            self.next += 1;
            let payload = value(self.next).into_bytes();
            let start = Instant::now();
            self.publisher.publish(KEY.to_string(), payload)?;
            if let Some(seen) = seen_by_all(&self.sightings, self.next, false) {
                latencies.push(seen.last - start);
            }
            thread::sleep(udp::sample_gap(rng));
        }
        Ok(latencies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_64_bytes_of_json_carrying_their_number() {
        for i in [0, 7, 123_456, u64::from(u32::MAX)] {
            let v = value(i);
            assert_eq!(v.len(), VALUE_SIZE, "{v}");
            assert_eq!(sample_number(v.as_bytes()), Some(i));
        }
    }
}
