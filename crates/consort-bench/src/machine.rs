//! What machine the figures came from: cores, CPU model, memory, kernel, baseline versions.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

/// A description of the machine and the software measured.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Logical CPUs available to the bench.
    pub cpus: usize,
    /// The CPU model, from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Total memory, in MiB.
    pub memory_mib: u64,
    /// The kernel release.
    pub kernel: String,
    /// The Mosquitto version measured, if any.
    pub mosquitto: Option<String>,
    /// The commit of the Consort tree measured, if known.
    pub commit: Option<String>,
}

impl Machine {
    /// Reads the machine's description; `mosquitto` is the broker binary, if found.
    pub fn describe(mosquitto: Option<&Path>) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = field(&cpuinfo, "model name")
            .unwrap_or("unknown")
            .to_string();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: u64 = field(&meminfo, "MemTotal")
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| k.trim().to_string())
            .unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory_mib: memory_kib / 1024,
            kernel,
            mosquitto: mosquitto.and_then(mosquitto_version),
            commit: commit(),
        }
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        format!(
            "{} logical CPUs ({}), {} MiB RAM, Linux {}",
            self.cpus, self.cpu_model, self.memory_mib, self.kernel
        )
    }

    /// The JSON object in the report.
    pub fn to_json(&self) -> Value {
        json!({
            "cpus": self.cpus,
            "cpu_model": self.cpu_model,
            "memory_mib": self.memory_mib,
            "kernel": self.kernel,
            "mosquitto": self.mosquitto,
            "commit": self.commit,
        })
    }
}

/// The load averages over 1, 5 and 15 minutes (`/proc/loadavg`): other work on the machine
/// shows in the figures, and here.
pub fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The value of the first `name : value` line of a `/proc` file.
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim())
    })
}

/// `mosquitto -h` prints its version on its first line (and exits non-zero).
fn mosquitto_version(binary: &Path) -> Option<String> {
    let line = first_line(Command::new(binary).arg("-h"))?;
    line.strip_prefix("mosquitto version ")
        .map(str::to_string)
        .or(Some(line))
}

/// The commit checked out, `-dirty` when the tree has changes (the binaries are built from
/// the tree, not from the commit).
fn commit() -> Option<String> {
    let git = || {
        let mut git = Command::new("git");
        git.arg("-C")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        git
    };
    let head = first_line(git().args(["rev-parse", "--short", "HEAD"]))?;
    let changes = first_line(git().args(["status", "--porcelain", "--", "crates"]));
    Some(match changes {
        Some(_) => format!("{head}-dirty"),
        None => head,
    })
}

/// The first line a command prints on stdout, whatever its exit status.
fn first_line(command: &mut Command) -> Option<String> {
    let output = command.output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_string())
}
