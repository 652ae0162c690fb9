//! Running a scenario over many seeds, and replaying one.
//!
//! A test hands [`SeedRun::run`] a function from a seed to a result. Seeds run in parallel on all
//! cores (each simulation is single-threaded and independent, so the outcome per seed is the same
//! either way). When [`SEED_ENV`] is set, only that seed runs; when [`RUNS_ENV`] is set, that
//! many seeds run instead of the test's own count. A failure, or a panic inside the
//! scenario, prints the seed and the one-line command that replays it.

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;

/// Environment variable holding the one seed to run, in decimal.
pub const SEED_ENV: &str = "CONSORT_SIM_SEED";

/// Environment variable that overrides how many seeds every [`SeedRun`] runs (for soak runs).
pub const RUNS_ENV: &str = "CONSORT_SIM_RUNS";

/// The seed from [`SEED_ENV`], if set.
///
/// # Panics
///
/// If it is set but not a decimal `u64`: a replay with the wrong seed would be worse than none.
pub fn env_seed() -> Option<u64> {
    env_u64(SEED_ENV)
}

/// The number of seeds from [`RUNS_ENV`], if set.
///
/// # Panics
///
/// If it is set but not a decimal `u64`.
pub fn env_runs() -> Option<u64> {
    env_u64(RUNS_ENV)
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={value:?} is not a decimal u64"),
    }
}

/// One seeded test: which seeds to run, and how to name the test in a replay command.
#[derive(Clone, Debug)]
pub struct SeedRun {
    target: &'static str,
    test: &'static str,
    seeds: Range<u64>,
    threads: usize,
}

impl SeedRun {
    /// A run of the test function `test` in the test file (target) `target`; pass
    /// `env!("CARGO_CRATE_NAME")` as the target from an integration test. Runs seed 0 only until
    /// told otherwise.
    pub fn new(target: &'static str, test: &'static str) -> SeedRun {
        let threads = thread::available_parallelism().map_or(1, |n| n.get());
        SeedRun {
            target,
            test,
            seeds: 0..1,
            threads,
        }
    }

    /// Runs seeds `0..count`.
    pub fn count(self, count: u64) -> SeedRun {
        self.seeds(0..count)
    }

    /// Runs these seeds.
    pub fn seeds(mut self, seeds: Range<u64>) -> SeedRun {
        self.seeds = seeds;
        self
    }

    /// Uses at most this many threads (at least one).
    pub fn threads(mut self, threads: usize) -> SeedRun {
        self.threads = threads.max(1);
        self
    }

    /// The command that replays `seed` alone.
    pub fn replay_command(&self, seed: u64) -> String {
        format!(
            "{SEED_ENV}={seed} cargo test -p consort-sim --release --test {} -- {} --exact --nocapture",
            self.target, self.test
        )
    }

    /// Runs `scenario` for every seed (or only [`SEED_ENV`]'s, or [`RUNS_ENV`] many) and returns
    /// the results by seed.
    ///
    /// # Panics
    ///
    /// If any seed fails or panics: the message names the failing seeds and how to replay the first.
    pub fn run<T, F>(&self, scenario: F) -> Vec<(u64, T)>
    where
        T: Send,
        F: Fn(u64) -> Result<T, String> + Sync,
    {
        let seeds = match (env_seed(), env_runs()) {
            (Some(seed), _) => seed..seed + 1,
            (None, Some(runs)) => self.seeds.start..self.seeds.start + runs,
            (None, None) => self.seeds.clone(),
        };
        let mut results = self.run_all(seeds, &scenario);
        results.sort_by_key(|(seed, _)| *seed);
        let failures: Vec<(u64, &String)> = results
            .iter()
            .filter_map(|(seed, r)| r.as_ref().err().map(|e| (*seed, e)))
            .collect();
        if let Some((first, why)) = failures.first() {
            let listed: Vec<String> = failures
                .iter()
                .take(20)
                .map(|(s, _)| s.to_string())
                .collect();
            let message = format!(
                "{} of {} seeds failed (seeds {}); first, seed {first}:\n{why}\nreplay: {}",
                failures.len(),
                results.len(),
                listed.join(", "),
                self.replay_command(*first)
            );
            eprintln!("{message}");
            panic!("{message}");
        }
        results
            .into_iter()
            .filter_map(|(seed, r)| r.ok().map(|t| (seed, t)))
            .collect()
    }

    fn run_all<T, F>(&self, seeds: Range<u64>, scenario: &F) -> Vec<(u64, Result<T, String>)>
    where
        T: Send,
        F: Fn(u64) -> Result<T, String> + Sync,
    {
        let next = AtomicU64::new(seeds.start);
        let results = Mutex::new(Vec::new());
        let workers = self
            .threads
            .min(seeds.end.saturating_sub(seeds.start).max(1) as usize);
        thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end {
                        break;
                    }
                    let outcome = run_one(seed, scenario);
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((seed, outcome));
                });
            }
        });
        results.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs one seed, turning a panic into an error that names it.
fn run_one<T, F>(seed: u64, scenario: &F) -> Result<T, String>
where
    F: Fn(u64) -> Result<T, String>,
{
    match catch_unwind(AssertUnwindSafe(|| scenario(seed))) {
        Ok(result) => result,
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-text panic".into());
            Err(format!("panicked: {text}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_every_seed_in_order() {
        let run = SeedRun::new("t", "x").count(20).threads(3);
        if env_seed().is_some() || env_runs().is_some() {
            return;
        }
        let seeds: Vec<u64> = run
            .run(|s| Ok(s * 2))
            .into_iter()
            .map(|(s, v)| s + v)
            .collect();
        assert_eq!(seeds, (0..20).map(|s| s * 3).collect::<Vec<_>>());
    }

    #[test]
    fn failure_names_seed_and_replay() {
        let run = SeedRun::new("churn", "many_faults").count(5);
        assert_eq!(
            run.replay_command(3),
            "CONSORT_SIM_SEED=3 cargo test -p consort-sim --release --test churn -- many_faults --exact --nocapture"
        );
        if env_seed().is_some() || env_runs().is_some() {
            return;
        }
        let outcome = catch_unwind(|| run.run(|s| if s == 3 { panic!("boom") } else { Ok(()) }));
        let panic = outcome.unwrap_err();
        let text = panic.downcast_ref::<String>().unwrap();
        assert!(text.contains("seed 3:\npanicked: boom"), "{text}");
        assert!(text.contains("CONSORT_SIM_SEED=3"), "{text}");
    }
}
