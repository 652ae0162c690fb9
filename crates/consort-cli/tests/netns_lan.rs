//! A virtual LAN: three network namespaces on a bridge, discovery by mDNS only (no seeds).
//!
//! Needs root and `ip` (iproute2). Without them the test is skipped with a message, unless
//! `CONSORT_REQUIRE_NETNS=1` (set by CI), where it fails instead. Addresses are in 10.213.0.0/24,
//! inside the namespaces only; every namespace, link and process is removed at the end.

mod common;

use std::path::Path;
use std::time::Duration;

use common::lan::{self, ip, sysctl, Lan};
use common::{secret_file, time_until, SECRET};
use serde_json::Value;

/// What this test does on a [`Lan`]: mDNS-only daemons, asked for their peers.
trait MdnsLan {
    /// Runs `consort up` inside host `i` with mDNS on and no seeds.
    fn start(&mut self, i: usize, root: &Path, secret: &Path);
    /// `GET /v1/peers` of the daemon in host `i`, through the CLI inside the namespace.
    fn peers(&self, i: usize) -> Option<Vec<Value>>;
    /// Whether every host lists every host alive at the expected address.
    fn all_see_all(&self, addrs: &[String]) -> bool;
    /// How long until [`MdnsLan::all_see_all`] holds; panics with `failure` and every host's
    /// peers past `secs` seconds.
    fn wait_all_see_all(&self, addrs: &[String], secs: u64, failure: &str) -> Duration;
}

/// Creates `hosts` namespaces on a bridge without multicast snooping, each routing multicast
/// through `eth0`.
fn create(hosts: usize) -> Result<Lan, String> {
    Lan::create("cs", hosts, &["mcast_snooping", "0"], |ns| {
        ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
        // Removing a primary address then promotes the secondary instead of dropping it.
        sysctl(ns, "net.ipv4.conf.eth0.promote_secondaries=1")
    })
}

impl MdnsLan for Lan {
    fn start(&mut self, i: usize, root: &Path, secret: &Path) {
        let data_dir = root.join(format!("host{i}"));
        let args = [
            "up".to_string(),
            "--data-dir".to_string(),
            data_dir.display().to_string(),
            "--group".to_string(),
            "netns-lan".to_string(),
            "--secret-file".to_string(),
            secret.display().to_string(),
            "--bind".to_string(),
            "0.0.0.0:7470".to_string(),
            "--api".to_string(),
            "127.0.0.1:7471".to_string(),
            "--name".to_string(),
            format!("host{i}"),
        ];
        self.spawn(i, args, None);
    }

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

    fn all_see_all(&self, addrs: &[String]) -> bool {
        (0..self.hosts()).all(|i| {
            let Some(peers) = self.peers(i) else {
                return false;
            };
            let alive: Vec<String> = peers
                .iter()
                .filter(|p| p["state"] == "alive")
                .filter_map(|p| p["addr"].as_str().map(str::to_string))
                .collect();
            peers.len() == self.hosts() && addrs.iter().all(|a| alive.contains(a))
        })
    }

    fn wait_all_see_all(&self, addrs: &[String], secs: u64, failure: &str) -> Duration {
        time_until(Duration::from_secs(secs), || self.all_see_all(addrs)).unwrap_or_else(|| {
            let peers: Vec<_> = (0..self.hosts()).map(|i| self.peers(i)).collect();
            panic!("{failure} within {secs} s: {peers:?}")
        })
    }
}

#[test]
fn mdns_discovery_and_address_change_on_a_virtual_lan() {
    if lan::unavailable("cs", |_| true, "network namespaces", "root and iproute2") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    // Written once: rewriting it while the first daemons read it can hand them an empty file.
    let secret = secret_file(root.path(), "secret.txt", SECRET);
    let mut lan = create(3).expect("create the virtual LAN");
    for i in 0..3 {
        lan.start(i, root.path(), &secret);
    }
    let mut addrs: Vec<String> = (0..3).map(|i| format!("{}:7470", lan.addr(i))).collect();

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
