//! Polling until something holds, and timing how long it took.

use std::time::{Duration, Instant};

/// How often [`until`] asks again.
const EVERY: Duration = Duration::from_millis(10);

/// Asks `probe` every 10 ms until it returns `Some` or `limit` passes.
pub fn until<T>(limit: Duration, probe: impl FnMut() -> Option<T>) -> Option<T> {
    until_every(limit, EVERY, probe)
}

/// Asks `probe` every `every` until it returns `Some` or `limit` passes.
pub fn until_every<T>(
    limit: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Polls `check` every `every` from `start` on; the time from `start` until it first held, or
/// `None` past `limit`.
pub fn time_from(
    start: Instant,
    limit: Duration,
    every: Duration,
    mut check: impl FnMut() -> bool,
) -> Option<Duration> {
    until_every(limit, every, || check().then(|| start.elapsed()))
}
