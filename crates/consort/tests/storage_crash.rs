//! Crash safety of the state store: SIGKILL during a burst of acknowledged writes.
//!
//! The test re-runs its own binary as the writer: `crash_writer` is ignored, so it runs only when
//! asked for by exact name, and only does something when the parent sets `CONSORT_CRASH_DIR`. It
//! commits seeded batches of 1 to 50 entries and prints `ack <n>` after each commit returns. The
//! parent kills it with SIGKILL at a seeded random moment, reopens the store and checks that it
//! opens cleanly and holds exactly the acknowledged commits, plus perhaps, whole, the one that was
//! in flight (a kill loses nothing already written, so a commit killed during its fsync is all
//! there). All trials crash the same store one after the other, so
//! the later ones also recover a file with history. `CONSORT_CRASH_SEED=<n>` replays a run.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use consort::storage::Storage;
use consort_proto::replica::{Entry, Hlc, Key, Value, Version};
use consort_proto::NodeId;

const TRIALS: u64 = 20;
/// The writer is killed after reading up to this many acks (0: while it opens the store).
const MAX_ACKS_BEFORE_KILL: u64 = 40;
const DEFAULT_SEED: u64 = 0x00c0_5027_0000_0001;
const DIR_VAR: &str = "CONSORT_CRASH_DIR";
const SEED_VAR: &str = "CONSORT_CRASH_SEED";
const TRIAL_VAR: &str = "CONSORT_CRASH_TRIAL";

/// The store's state as a map, for exact comparison.
type State = BTreeMap<String, Entry>;

/// SplitMix64: small, seedable, and the same in the parent and the writer.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Commit `n` of writer run `trial`: 1 to 50 entries over 300 keys, some tombstones, some large
/// values, and versions from overlapping windows so that some writes lose to earlier ones.
fn batch(seed: u64, trial: u64, n: u64) -> Vec<Entry> {
    let mut rng = Rng(seed ^ trial.wrapping_mul(0x1000_0000_01b3) ^ n.wrapping_mul(0x5bd1_e995));
    let size = 1 + rng.below(50);
    (0..size)
        .map(|i| {
            let key = Key::new(&format!("crash/{}/k{}", rng.below(7), rng.below(300))).unwrap();
            let value = match rng.below(100) {
                0..=9 => None,
                10 => Some(format!(r#"{{"big":"{}"}}"#, "x".repeat(6000))),
                _ => Some(format!(r#"{{"trial":{trial},"n":{n},"i":{i}}}"#)),
            };
            Entry {
                key,
                value: value.map(|v| Value::parse(&v).unwrap()),
                version: Version {
                    hlc: Hlc(((trial * 1_000_000 + n) << 6) + rng.below(256)),
                    origin: NodeId(1 + rng.below(3)),
                },
            }
        })
        .collect()
}

/// Last writer wins, as the store applies it.
fn apply(state: &mut State, entries: &[Entry]) {
    for entry in entries {
        let key = entry.key.as_str().to_string();
        if state.get(&key).is_none_or(|old| entry.supersedes(old)) {
            state.insert(key, entry.clone());
        }
    }
}

fn load(dir: &Path) -> State {
    let storage = Storage::open(dir).unwrap_or_else(|e| panic!("store must reopen: {e}"));
    let entries = storage
        .load()
        .unwrap_or_else(|e| panic!("store must load: {e}"));
    entries
        .into_iter()
        .map(|e| (e.key.as_str().to_string(), e))
        .collect()
}

/// The writer side. Runs only as the parent's child process.
#[test]
#[ignore = "the child process of kill_during_acknowledged_writes"]
fn crash_writer() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    let var = |name| std::env::var(name).unwrap().parse::<u64>().unwrap();
    let (seed, trial) = (var(SEED_VAR), var(TRIAL_VAR));
    let storage = Storage::open(Path::new(&dir)).unwrap();
    let mut out = std::io::stdout().lock();
    for n in 0.. {
        storage.commit(&batch(seed, trial, n)).unwrap();
        writeln!(out, "ack {n}").unwrap();
        out.flush().unwrap();
    }
}

fn spawn_writer(dir: &Path, seed: u64, trial: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["crash_writer", "--exact", "--ignored", "--nocapture"])
        .args(["--test-threads=1", "--quiet"])
        .env(DIR_VAR, dir)
        .env(SEED_VAR, seed.to_string())
        .env(TRIAL_VAR, trial.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the test binary re-runs itself")
}

/// The number in an `ack <n>` line.
fn ack(line: &str) -> Option<u64> {
    line.strip_prefix("ack ")?.trim().parse().ok()
}

/// Runs one writer, kills it after `acks_wanted` acks and `delay`; returns how many commits it
/// acknowledged.
fn run_and_kill(dir: &Path, seed: u64, trial: u64, acks_wanted: u64, delay: Duration) -> u64 {
    let mut child = spawn_writer(dir, seed, trial);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = 0;
    while acked < acks_wanted {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("trial {trial}: the writer stopped before being killed"))
            .unwrap();
        if let Some(n) = ack(&line) {
            assert_eq!(n, acked, "acks come in order");
            acked += 1;
        }
    }
    std::thread::sleep(delay);
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "trial {trial}: the writer ended by itself"
    );
    // Acks the writer printed before it died still count.
    for line in lines {
        if let Some(n) = ack(&line.unwrap()) {
            assert_eq!(n, acked, "acks come in order");
            acked += 1;
        }
    }
    acked
}

#[test]
fn kill_during_acknowledged_writes() {
    let seed = std::env::var(SEED_VAR)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    println!("seed {seed} (replay with {SEED_VAR}={seed})");
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed);
    let mut state = State::new();
    let started = Instant::now();
    let (mut total_acks, mut in_flight) = (0, 0);
    for trial in 0..TRIALS {
        let acks_wanted = rng.below(MAX_ACKS_BEFORE_KILL + 1);
        let delay = Duration::from_micros(rng.below(if acks_wanted == 0 { 30_000 } else { 5_000 }));
        let acked = run_and_kill(tmp.path(), seed, trial, acks_wanted, delay);

        let mut expected = state.clone();
        for n in 0..acked {
            apply(&mut expected, &batch(seed, trial, n));
        }
        let mut with_next = expected.clone();
        apply(&mut with_next, &batch(seed, trial, acked));

        let reopened = Instant::now();
        let stored = load(tmp.path());
        let reopen_time = reopened.elapsed();
        let next_durable = stored == with_next && stored != expected;
        assert!(
            stored == expected || next_durable,
            "trial {trial} (seed {seed}): after {acked} acks the store differs from them"
        );
        println!(
            "trial {trial:2}: killed after {acked:2} acks{}, {} keys, reopen + load {reopen_time:?}",
            if next_durable {
                " + the commit in flight"
            } else {
                ""
            },
            stored.len()
        );
        total_acks += acked;
        in_flight += u64::from(next_durable);
        state = stored;
    }
    println!(
        "{TRIALS} kills, {total_acks} acknowledged commits all present; the commit in flight was \
         applied whole in {in_flight} trials and not at all in the others; {:?} in all",
        started.elapsed()
    );
}
