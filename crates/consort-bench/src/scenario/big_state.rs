//! A group holding 100k keys: `converge_after_partition_s` and `converge_bytes_over_diff`,
//! `bootstrap_100k_s`, `rss_100k_keys_mb`.
//!
//! Three nodes are loaded with the keys once. A partition round stops one node (SIGSTOP: to the
//! others it is cut off), waits until the others list it `down`, writes 1k new keys scattered
//! over the key space on the majority, then lets it run again (SIGCONT) and times until it holds
//! them all; the bytes are every datagram byte the three nodes sent meanwhile (their metrics)
//! plus every byte of the TCP streams between them (the kernel's socket table), over the bytes
//! of the keys and values that differ. A bootstrap round starts a blank node seeded with one of
//! them and times, from its start, until it holds every entry. Memory is the resident size of a
//! loaded node. Mosquitto holds the same keys as retained messages: its bootstrap is a new
//! client subscribing to them all, its memory the broker's.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use super::Bench;
use crate::http::Api;
use crate::mqtt::{Broker, Publisher, Subscriber};
use crate::node::{Cluster, Node};
use crate::procfs;
use crate::report::{Bound, Contender, Figure};
use crate::tcp::TcpBytes;
use crate::wait;

/// Nodes holding the keys.
const NODES: usize = 3;

/// Connections the keys are written through.
const LOADERS: usize = 32;

/// How long replication, bootstrap or convergence may take before the round fails.
const LIMIT: Duration = Duration::from_secs(120);

/// How often the node catching up is asked how many entries it holds.
const POLL: Duration = Duration::from_millis(5);

/// The figures of this group.
struct Figures {
    converge: Figure,
    bytes_ratio: Figure,
    bootstrap: Figure,
    rss: Figure,
}

/// Loads the keys, then runs the rounds; the figures hold what completed.
pub fn run(bench: &mut Bench) -> Vec<Figure> {
    let mut figures = Figures {
        converge: Figure::new("converge_after_partition_s", "s", vec![Bound::Max(1.0)]),
        bytes_ratio: Figure::new("converge_bytes_over_diff", "ratio", vec![Bound::Max(3.0)]),
        bootstrap: Figure::new("bootstrap_100k_s", "s", vec![Bound::Max(2.0)])
            .applies(Contender::Mosquitto),
        rss: Figure::new("rss_100k_keys_mb", "MB", Vec::new()).applies(Contender::Mosquitto),
    };
    if let Err(e) = measure(bench, &mut figures) {
        bench.warn(format!("100k keys: {e:#}"));
    }
    let Figures {
        converge,
        bytes_ratio,
        bootstrap,
        rss,
    } = figures;
    vec![converge, bytes_ratio, bootstrap, rss]
}

/// The key of entry `i` of the loaded state.
fn key(i: usize) -> String {
    format!("big/{i:06}")
}

/// A small JSON value, as a device's state would be.
fn value(i: usize, round: usize) -> String {
    format!(
        r#"{{"i":{i},"name":"device {i}","on":{},"r":{round}}}"#,
        i.is_multiple_of(2)
    )
}

fn measure(bench: &mut Bench, figures: &mut Figures) -> anyhow::Result<()> {
    let n = bench.plan.big_keys;
    let mut cluster = Cluster::start(&bench.consort, NODES, "big")?;
    let loaded = load(&cluster, n)?;
    eprintln!("consort-bench:   {n} keys on {NODES} nodes in {loaded:.1} s");
    let load_s = json!(loaded);
    figures.bootstrap.extra.insert("load_s".into(), load_s);
    let mosquitto = match &bench.mosquitto {
        Some(binary) => Some(RetainedStore::start(binary, n)?),
        None => None,
    };
    for round in 0..bench.plan.rounds {
        for contender in bench.order(round, &[Contender::Consort, Contender::Mosquitto]) {
            match (contender, &mosquitto) {
                (Contender::Consort, _) => {
                    consort_round(&mut cluster, round, bench.plan.partition_keys, figures)?
                }
                (Contender::Mosquitto, Some(store)) => mosquitto_round(store, figures)?,
                _ => {}
            }
        }
    }
    Ok(())
}

/// Writes keys `0..n` on the first node; seconds until every node held them.
fn load(cluster: &Cluster, n: usize) -> anyhow::Result<f64> {
    let entries: Vec<(String, String)> = (0..n).map(|i| (key(i), value(i, 0))).collect();
    let started = Instant::now();
    write_all(&cluster.nodes[0].api, Arc::new(entries))?;
    let target = entries_of(&cluster.nodes[0])?;
    for node in &cluster.nodes[1..] {
        wait::until(LIMIT, || (node.api.entries()? >= target).then_some(()))
            .context("the keys did not reach every node")?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// One partition, one bootstrap, and the memory of the first node.
fn consort_round(
    cluster: &mut Cluster,
    round: usize,
    keys: usize,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    let partition = partition_round(cluster, round + 1, keys)?;
    figures.converge.push(Contender::Consort, partition.seconds);
    figures
        .bytes_ratio
        .push(Contender::Consort, partition.ratio());
    record(&mut figures.bytes_ratio, &partition);
    let seconds = bootstrap_round(cluster)?;
    figures.bootstrap.push(Contender::Consort, seconds);
    let pid = cluster.nodes[0].pid().context("node 0 runs")?;
    let rss = procfs::rss_mb(pid).context("RSS of node 0")?;
    figures.rss.push(Contender::Consort, rss);
    Ok(())
}

/// One bootstrap of a new subscriber, and the memory of the broker.
fn mosquitto_round(store: &RetainedStore, figures: &mut Figures) -> anyhow::Result<()> {
    let seconds = store.bootstrap()?;
    figures.bootstrap.push(Contender::Mosquitto, seconds);
    let rss = procfs::rss_mb(store.broker.pid()).context("RSS of mosquitto")?;
    figures.rss.push(Contender::Mosquitto, rss);
    Ok(())
}

/// Writes every `(key, value)` through [`LOADERS`] connections.
fn write_all(api: &Api, entries: Arc<Vec<(String, String)>>) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..LOADERS)
        .map(|_| {
            let (api, entries, next) = (api.clone(), entries.clone(), next.clone());
            thread::spawn(move || -> anyhow::Result<()> {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((key, value)) = entries.get(i) else {
                        return Ok(());
                    };
                    api.put(key, value)?;
                }
            })
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("a loader panicked"))??;
    }
    Ok(())
}

fn entries_of(node: &Node) -> anyhow::Result<u64> {
    node.api.entries().context("a node's entry count")
}

/// What one partition round measured.
struct Partition {
    /// From SIGCONT until the node held every entry.
    seconds: f64,
    /// What each node sent meanwhile, in node order (the healed node last).
    sent_by_node: Vec<Sent>,
    /// TCP stream bytes between them meanwhile, if `ss` could tell.
    stream_bytes: Option<u64>,
    /// Bytes of the keys and values written on the majority side.
    diff_bytes: usize,
}

impl Partition {
    fn ratio(&self) -> f64 {
        let datagrams: f64 = self.sent_by_node.iter().map(|s| s.datagrams).sum();
        (datagrams + self.stream_bytes.unwrap_or(0) as f64) / self.diff_bytes as f64
    }
}

/// Keeps the byte counts of each partition round beside the ratio.
fn record(figure: &mut Figure, partition: &Partition) {
    let sent = &partition.sent_by_node;
    let counts = json!({
        "datagram_bytes_by_node": sent.iter().map(|s| s.datagrams).collect::<Vec<_>>(),
        "anti_entropy_bytes_by_node": sent.iter().map(|s| s.reconciliation).collect::<Vec<_>>(),
        "stream_bytes": partition.stream_bytes,
        "diff_bytes": partition.diff_bytes,
    });
    let rounds = figure
        .extra
        .entry("bytes_per_round")
        .or_insert_with(|| json!([]));
    if let Some(rounds) = rounds.as_array_mut() {
        rounds.push(counts);
    }
}

/// Bytes a node sent so far, from its `/metrics`.
#[derive(Debug, Clone, Copy)]
struct Sent {
    /// Every datagram byte.
    datagrams: f64,
    /// The part that was anti-entropy (reconciliation) messages, where the node counts it.
    reconciliation: Option<f64>,
}

impl Sent {
    /// Reads the counters (either name the daemon has used for the datagram bytes).
    fn of(node: &Node) -> anyhow::Result<Sent> {
        let metrics = node.api.metrics()?;
        let datagrams = [
            "consort_datagrams_sent_bytes_total",
            "consort_sent_bytes_total",
        ]
        .iter()
        .find_map(|name| metrics.get(*name))
        .context("no count of datagram bytes sent in /metrics")?;
        Ok(Sent {
            datagrams: *datagrams,
            reconciliation: metrics
                .get("consort_anti_entropy_sent_bytes_total")
                .copied(),
        })
    }

    /// What was sent since `before`.
    fn since(self, before: Sent) -> Sent {
        Sent {
            datagrams: self.datagrams - before.datagrams,
            reconciliation: self
                .reconciliation
                .zip(before.reconciliation)
                .map(|(a, b)| a - b),
        }
    }
}

/// Cuts the last node off, writes `keys` new keys on the others, heals, and measures.
fn partition_round(cluster: &Cluster, round: usize, keys: usize) -> anyhow::Result<Partition> {
    let cut = &cluster.nodes[NODES - 1];
    let cut_sent = Sent::of(cut)?;
    cut.pause()?;
    let result = partitioned(cluster, round, keys, cut_sent);
    // Whatever happened, the node must run again (a paused process would hold the next
    // rounds); on success it already does, and a second SIGCONT does nothing.
    let resumed = cut.resume();
    let partition = result?;
    resumed?;
    cluster.wait_all_alive()?;
    Ok(partition)
}

/// The part of [`partition_round`] while the node is stopped, up to its catching up.
fn partitioned(
    cluster: &Cluster,
    round: usize,
    keys: usize,
    cut_sent: Sent,
) -> anyhow::Result<Partition> {
    let majority = &cluster.nodes[..NODES - 1];
    let cut = &cluster.nodes[NODES - 1];
    let down = wait::until(LIMIT, || {
        majority
            .iter()
            .all(|n| n.api.state_of(cut.id()).as_deref() == Some("down"))
            .then_some(())
    });
    down.context("the majority did not see the stopped node down")?;

    // New keys spread evenly over the key space, so that no range is left untouched.
    let total = entries_of(&majority[0])? as usize;
    let stride = (total / keys).max(1);
    let diff: Vec<(String, String)> = (0..keys)
        .map(|j| {
            let i = j * stride;
            (format!("{}.p{round}", key(i)), value(i, round))
        })
        .collect();
    let diff_bytes = diff.iter().map(|(k, v)| k.len() + v.len()).sum();
    write_all(&majority[0].api, Arc::new(diff))?;
    let target = entries_of(&majority[0])?;
    for node in &majority[1..] {
        wait::until(LIMIT, || (node.api.entries()? >= target).then_some(()))
            .context("the majority did not replicate the new keys")?;
    }

    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.group_addr.port()).collect();
    let streams_before = TcpBytes::snapshot(&ports);
    let majority_sent: Vec<Sent> = majority
        .iter()
        .map(Sent::of)
        .collect::<anyhow::Result<_>>()?;
    let start = Instant::now();
    cut.resume()?;
    let caught_up = wait::time_from(start, LIMIT, POLL, || {
        cut.api.entries().is_some_and(|n| n >= target)
    });
    let Some(elapsed) = caught_up else {
        bail!("the healed node did not catch up within {LIMIT:?}");
    };
    let streams_after = TcpBytes::snapshot(&ports);
    let all_sent: Vec<Sent> = cluster
        .nodes
        .iter()
        .map(Sent::of)
        .collect::<anyhow::Result<_>>()?;
    let before = majority_sent.into_iter().chain([cut_sent]);
    Ok(Partition {
        seconds: elapsed.as_secs_f64(),
        sent_by_node: all_sent
            .into_iter()
            .zip(before)
            .map(|(a, b)| a.since(b))
            .collect(),
        stream_bytes: streams_before
            .zip(streams_after)
            .map(|(before, after)| after.sent_since(&before)),
        diff_bytes,
    })
}

/// Starts a blank node seeded with the first; seconds from its start until it holds every
/// entry. It then leaves the group.
fn bootstrap_round(cluster: &mut Cluster) -> anyhow::Result<f64> {
    let target = entries_of(&cluster.nodes[0])?;
    let start = Instant::now();
    let mut blank = cluster.spawn_blank()?;
    let held = wait::time_from(start, LIMIT, POLL, || {
        blank.api.entries().is_some_and(|n| n >= target)
    });
    blank.terminate()?;
    let _ = std::fs::remove_dir_all(&blank.data_dir);
    let held = held.with_context(|| format!("a blank node did not hold {target} entries"))?;
    Ok(held.as_secs_f64())
}

/// A broker holding the keys as retained messages.
struct RetainedStore {
    broker: Broker,
    keys: u64,
    clients: AtomicU64,
}

impl RetainedStore {
    /// Starts a broker, publishes every key retained, and waits until a subscriber gets them.
    fn start(binary: &std::path::Path, n: usize) -> anyhow::Result<RetainedStore> {
        let broker = Broker::start(binary)?;
        let publisher = Publisher::connect(&broker, "big-pub")?;
        for i in 0..n {
            publisher.publish(key(i), value(i, 0).into_bytes())?;
        }
        let store = RetainedStore {
            broker,
            keys: n as u64,
            clients: AtomicU64::new(0),
        };
        store.bootstrap().context("loading mosquitto")?;
        Ok(store)
    }

    /// Seconds from a new client's connect until it received every retained message.
    fn bootstrap(&self) -> anyhow::Result<f64> {
        let received = Arc::new(AtomicU64::new(0));
        let last = Arc::new(std::sync::Mutex::new(None::<Instant>));
        let (count, at) = (received.clone(), last.clone());
        let id = format!("big-sub-{}", self.clients.fetch_add(1, Ordering::Relaxed));
        let start = Instant::now();
        let subscriber = Subscriber::start(&self.broker, &id, "big/#", move |_, when| {
            count.fetch_add(1, Ordering::Relaxed);
            *at.lock().unwrap_or_else(|e| e.into_inner()) = Some(when);
        })?;
        let all = wait::until_every(LIMIT, POLL, || {
            (received.load(Ordering::Relaxed) >= self.keys).then_some(())
        });
        drop(subscriber);
        all.with_context(|| format!("a subscriber did not get {} retained messages", self.keys))?;
        let last = last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .context("no message")?;
        Ok((last - start).as_secs_f64())
    }
}
