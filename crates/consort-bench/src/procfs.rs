//! CPU time and resident memory of a process, read from `/proc`.

use std::time::{Duration, Instant};

/// Clock ticks per second of `utime` and `stime` in `/proc/PID/stat`; 100 on every Linux
/// configuration this runs on (`getconf CLK_TCK`).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time a process used so far, user and system together.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields count from after it.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the whole line (utime, stime) are 11 and 12 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(ticks as f64 / TICKS_PER_SECOND))
}

/// Resident memory (`VmRSS`), in MB (millions of bytes).
pub fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0 / 1e6)
}

/// CPU use of several processes over one window.
pub struct CpuWindow {
    start: Instant,
    used: Vec<(u32, Duration)>,
}

impl CpuWindow {
    /// Starts watching `pids`.
    pub fn start(pids: &[u32]) -> CpuWindow {
        let used = pids
            .iter()
            .map(|&pid| (pid, cpu_time(pid).unwrap_or_default()))
            .collect();
        CpuWindow {
            start: Instant::now(),
            used,
        }
    }

    /// CPU time each process used since the start, in the order given.
    pub fn used(&self) -> Vec<Duration> {
        self.used
            .iter()
            .map(|&(pid, before)| cpu_time(pid).unwrap_or(before).saturating_sub(before))
            .collect()
    }

    /// Starts watching the processes serving a contender, and this one (the bench, the
    /// contender's client), last.
    pub fn serving(servers: &[u32]) -> CpuWindow {
        CpuWindow::start(&[servers, &[std::process::id()]].concat())
    }

    /// For a window started by [`CpuWindow::serving`]: the CPU time per operation, in
    /// microseconds, of the servers together and of the bench.
    pub fn cost_per(&self, operations: u64) -> serde_json::Value {
        let used = self.used();
        let (bench, servers) = used.split_last().unwrap_or((&Duration::ZERO, &[]));
        let per = |d: Duration| (d.as_secs_f64() * 1e6 / operations.max(1) as f64).round();
        serde_json::json!({"servers": per(servers.iter().sum()), "bench": per(*bench)})
    }

    /// Percent of one core each process used since the start, in the order given.
    pub fn percent(&self) -> Vec<f64> {
        let elapsed = self.start.elapsed().as_secs_f64();
        self.used()
            .iter()
            .map(|used| used.as_secs_f64() / elapsed * 100.0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(cpu_time(me).is_some());
        let rss = rss_mb(me).expect("VmRSS");
        assert!(rss > 0.1 && rss < 4096.0, "{rss}");
    }
}
