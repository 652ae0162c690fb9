//! A virtual LAN for the end-to-end tests: network namespaces on one bridge, each with `eth0`
//! at 10.213.0.(10+i), and `consort up` daemons run inside them. Everything it creates (daemons,
//! namespaces, links) is removed when the [`Lan`] is dropped, even after a panic.
//!
//! Needs root and `ip` (iproute2); see [`unavailable`] for the skip rule.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::consort_via;

/// `ip ARGS`, with its stderr in the error.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `sysctl -qw SETTING` inside namespace `ns`.
pub fn sysctl(ns: &str, setting: &str) -> Result<(), String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sysctl", "-qw", setting])
        .output()
        .map_err(|e| format!("sysctl: {e}"))?;
    out.status.success().then_some(()).ok_or_else(|| {
        format!(
            "sysctl {setting}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// `nft -f -` with `script`, inside namespace `ns`.
pub fn nft(ns: &str, script: &str) -> Result<(), String> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    let mut stdin = child.stdin.take().expect("stdin piped");
    stdin
        .write_all(script.as_bytes())
        .map_err(|e| format!("nft: {e}"))?;
    drop(stdin);
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    out.status.success().then_some(()).ok_or_else(|| {
        format!(
            "nft in {ns}: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// Whether `nft` works in namespace `probe` (for [`unavailable`]).
pub fn nft_works(probe: &str) -> bool {
    nft(probe, "table inet consort_probe { }\n").is_ok()
}

/// Whether the LAN cannot be built here, so the test should return: a probe namespace
/// `{prefix}probe<pid>` is created, `extra` is run with its name, and it is deleted again. If
/// that fails, the test fails when `CONSORT_REQUIRE_NETNS=1` (set by CI), saying that `what`
/// is required, and is otherwise skipped with a message that network namespaces need `needs`.
pub fn unavailable(
    prefix: &str,
    extra: impl FnOnce(&str) -> bool,
    what: &str,
    needs: &str,
) -> bool {
    let probe = format!("{prefix}probe{}", std::process::id() % 100_000);
    let ok = ip(&["netns", "add", &probe]).is_ok() && extra(&probe);
    let _ = ip(&["netns", "del", &probe]);
    if ok {
        return false;
    }
    assert!(
        std::env::var("CONSORT_REQUIRE_NETNS").as_deref() != Ok("1"),
        "{what} are required (CONSORT_REQUIRE_NETNS=1) but unavailable"
    );
    eprintln!("skipped: network namespaces need {needs}");
    true
}

/// Namespaces, bridge and daemons of one test run; torn down on drop, even after a panic.
pub struct Lan {
    prefix: String,
    hosts: usize,
    created: usize,
    daemons: Vec<Child>,
    logs: Vec<PathBuf>,
}

impl Lan {
    /// Creates `hosts` namespaces `{prefix}<pid>n<i>`, each with `eth0` at [`Lan::addr`]`/24`
    /// on one bridge made with `bridge_options`; `per_host` then finishes each namespace.
    pub fn create(
        prefix: &str,
        hosts: usize,
        bridge_options: &[&str],
        mut per_host: impl FnMut(&str) -> Result<(), String>,
    ) -> Result<Lan, String> {
        let mut lan = Lan {
            prefix: format!("{prefix}{}", std::process::id() % 100_000),
            hosts,
            created: 0,
            daemons: Vec::new(),
            logs: Vec::new(),
        };
        let br = lan.bridge();
        ip(&[&["link", "add", &br, "type", "bridge"], bridge_options].concat())?;
        ip(&["link", "set", &br, "up"])?;
        for i in 0..hosts {
            let ns = lan.ns(i);
            let host_end = format!("{}v{i}", lan.prefix);
            ip(&["netns", "add", &ns])?;
            lan.created = i + 1;
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &host_end, "master", &br, "up"])?;
            let cidr = format!("{}/24", lan.addr(i));
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            per_host(&ns)?;
        }
        Ok(lan)
    }

    /// How many hosts the LAN has.
    pub fn hosts(&self) -> usize {
        self.hosts
    }

    /// The namespace of host `i`.
    pub fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.prefix)
    }

    pub fn bridge(&self) -> String {
        format!("{}br", self.prefix)
    }

    /// The address host `i` starts with.
    pub fn addr(&self, i: usize) -> String {
        format!("10.213.0.{}", 10 + i)
    }

    /// Cuts host `i` off from every other host, both ways, with an nftables table `table` in
    /// its namespace; [`Lan::reconnect`] removes it.
    pub fn cut_off(&self, i: usize, table: &str) -> Result<(), String> {
        let others: Vec<String> = (0..self.hosts)
            .filter(|&j| j != i)
            .map(|j| self.addr(j))
            .collect();
        let others = others.join(", ");
        let rules = format!(
            "table inet {table} {{\n\
             chain input {{ type filter hook input priority 0; policy accept; ip saddr {{ {others} }} drop; }}\n\
             chain output {{ type filter hook output priority 0; policy accept; ip daddr {{ {others} }} drop; }}\n\
             }}\n"
        );
        nft(&self.ns(i), &rules)
    }

    /// Removes the table [`Lan::cut_off`] made in host `i`.
    pub fn reconnect(&self, i: usize, table: &str) -> Result<(), String> {
        nft(&self.ns(i), &format!("delete table inet {table}\n"))
    }

    /// The `consort` binary, run inside host `i`.
    pub fn consort_in(&self, i: usize) -> Command {
        consort_via(&["ip", "netns", "exec", &self.ns(i)])
    }

    /// Runs `consort ARGS` inside host `i` until the LAN is dropped; its stdout is discarded,
    /// its stderr goes to `log` (kept for [`Lan::logs`]) or is discarded too.
    pub fn spawn<I>(&mut self, i: usize, args: I, log: Option<PathBuf>)
    where
        I: IntoIterator,
        I::Item: AsRef<OsStr>,
    {
        let stderr = match &log {
            Some(path) => Stdio::from(File::create(path).expect("log file")),
            None => Stdio::null(),
        };
        let child = self
            .consort_in(i)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn consort up in a namespace");
        self.daemons.push(child);
        self.logs.extend(log);
    }

    /// The last 30 lines of each daemon's log, for a failure message.
    pub fn logs(&self) -> String {
        let tail = |path: &PathBuf| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        let logs = self.logs.iter().enumerate();
        logs.map(|(i, path)| format!("--- host{i} ---\n{}", tail(path)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for child in &mut self.daemons {
            let _ = child.kill();
            let _ = child.wait();
        }
        for i in 0..self.created {
            let _ = ip(&["netns", "del", &self.ns(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}
