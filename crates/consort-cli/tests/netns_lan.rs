//! A virtual LAN: three network namespaces on a bridge, discovery by mDNS only (no seeds).
//!
//! Needs root and `ip` (iproute2). Without them the test is skipped with a message, unless
//! `CONSORT_REQUIRE_NETNS=1` (set by CI), where it fails instead. Addresses are in 10.213.0.0/24,
//! inside the namespaces only; every namespace, link and process is removed at the end.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{consort_via, secret_file, time_until, SECRET};
use serde_json::Value;

/// Namespaces, bridge and daemons of one test run; torn down on drop, even after a panic.
struct Lan {
    prefix: String,
    hosts: usize,
    daemons: Vec<Child>,
}

fn ip(args: &[&str]) -> Result<(), String> {
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

fn sysctl(ns: &str, setting: &str) -> Result<(), String> {
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

impl Lan {
    fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.prefix)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.prefix)
    }

    /// The `consort` binary, run inside host `i`.
    fn consort_in(&self, i: usize) -> Command {
        consort_via(&["ip", "netns", "exec", &self.ns(i)])
    }

    /// Creates `hosts` namespaces, each with `eth0` at 10.213.0.(10+i) on one bridge.
    fn create(hosts: usize) -> Result<Lan, String> {
        let prefix = format!("cs{}", std::process::id() % 100_000);
        let lan = Lan {
            prefix,
            hosts,
            daemons: Vec::new(),
        };
        let br = lan.bridge();
        ip(&["link", "add", &br, "type", "bridge", "mcast_snooping", "0"])?;
        ip(&["link", "set", &br, "up"])?;
        for i in 0..hosts {
            let ns = lan.ns(i);
            let host_end = format!("{}v{i}", lan.prefix);
            let addr = format!("10.213.0.{}/24", 10 + i);
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &host_end, "master", &br, "up"])?;
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
            // Removing a primary address then promotes the secondary instead of dropping it.
            sysctl(&ns, "net.ipv4.conf.eth0.promote_secondaries=1")?;
        }
        Ok(lan)
    }

    /// Runs `consort up` inside host `i` with mDNS on and no seeds.
    fn start(&mut self, i: usize, root: &Path) {
        let data_dir = root.join(format!("host{i}"));
        let secret = secret_file(root, "secret.txt", SECRET);
        let child = self
            .consort_in(i)
            .arg("up")
            .args(["--data-dir", &data_dir.display().to_string()])
            .args([
                "--group",
                "netns-lan",
                "--secret-file",
                &secret.display().to_string(),
            ])
            .args([
                "--bind",
                "0.0.0.0:7470",
                "--api",
                "127.0.0.1:7471",
                "--name",
                &format!("host{i}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn consort up in a namespace");
        self.daemons.push(child);
    }

    /// `GET /v1/peers` of the daemon in host `i`, through the CLI inside the namespace.
    fn peers(&self, i: usize) -> Option<Vec<Value>> {
        let out = self
            .consort_in(i)
            .args(["peers", "--json", "--api", "http://127.0.0.1:7471"])
            .output()
            .ok()?;
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()?
            .as_array()
            .cloned()
    }

    /// Whether every host lists every host alive at the expected address.
    fn all_see_all(&self, addrs: &[String]) -> bool {
        (0..self.hosts).all(|i| {
            let Some(peers) = self.peers(i) else {
                return false;
            };
            let alive: Vec<String> = peers
                .iter()
                .filter(|p| p["state"] == "alive")
                .filter_map(|p| p["addr"].as_str().map(str::to_string))
                .collect();
            peers.len() == self.hosts && addrs.iter().all(|a| alive.contains(a))
        })
    }

    /// How long until [`Lan::all_see_all`] holds; panics with `failure` and every host's peers
    /// past `secs` seconds.
    fn wait_all_see_all(&self, addrs: &[String], secs: u64, failure: &str) -> Duration {
        time_until(Duration::from_secs(secs), || self.all_see_all(addrs)).unwrap_or_else(|| {
            let peers: Vec<_> = (0..self.hosts).map(|i| self.peers(i)).collect();
            panic!("{failure} within {secs} s: {peers:?}")
        })
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for child in &mut self.daemons {
            let _ = child.kill();
            let _ = child.wait();
        }
        for i in 0..self.hosts {
            let _ = ip(&["netns", "del", &self.ns(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

fn netns_available() -> bool {
    let probe = format!("csprobe{}", std::process::id() % 100_000);
    let ok = ip(&["netns", "add", &probe]).is_ok();
    let _ = ip(&["netns", "del", &probe]);
    ok
}

#[test]
fn mdns_discovery_and_address_change_on_a_virtual_lan() {
    if !netns_available() {
        assert!(
            std::env::var("CONSORT_REQUIRE_NETNS").as_deref() != Ok("1"),
            "network namespaces are required (CONSORT_REQUIRE_NETNS=1) but unavailable"
        );
        eprintln!("skipped: network namespaces need root and iproute2");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut lan = Lan::create(3).expect("create the virtual LAN");
    for i in 0..3 {
        lan.start(i, root.path());
    }
    let mut addrs: Vec<String> = (0..3)
        .map(|i| format!("10.213.0.{}:7470", 10 + i))
        .collect();

    // Wait until the three APIs answer, then time discovery from there.
    time_until(Duration::from_secs(10), || {
        (0..3).all(|i| lan.peers(i).is_some())
    })
    .expect("daemons started");
    let found = lan.wait_all_see_all(&addrs, 3, "not all discovered over mDNS");
    println!("mDNS only: all 3 hosts see each other alive after {found:?}");

    // Move host 2 to a new address: add the new one, then drop the old one.
    let ns = lan.ns(2);
    ip(&["-n", &ns, "addr", "add", "10.213.0.42/24", "dev", "eth0"]).unwrap();
    ip(&["-n", &ns, "addr", "del", "10.213.0.12/24", "dev", "eth0"]).unwrap();
    addrs[2] = "10.213.0.42:7470".to_string();
    let moved = lan.wait_all_see_all(&addrs, 5, "new address not seen");
    println!("address change seen by every host after {moved:?}");
}
