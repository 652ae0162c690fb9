//! The replicated state across a partition and its heal, on a virtual LAN: three network
//! namespaces on a bridge, daemons seeded with each other (no mDNS). An nftables table in one
//! host cuts it off from the other two (2|1); both sides write the same keys (the isolated
//! side some before the majority, some after) and delete some; the table is removed. Then all
//! three must list the same keys, values and versions within 2 s of seeing each other alive
//! again, and each key must hold its last-writer-wins winner: the highest (hlc, origin) among
//! the versions the writes returned.
//!
//! Needs root, `ip` (iproute2) and `nft`. Without them the test is skipped with a message,
//! unless `CONSORT_REQUIRE_NETNS=1` (set by CI), where it fails instead. Addresses are in
//! 10.213.0.0/24, inside the namespaces only; every namespace, link and process is removed at
//! the end, even after a panic.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use common::lan::{self, nft, Lan};
use common::{secret_file, time_until, SECRET};
use serde_json::{json, Value};

/// Hosts on the LAN; the last one is cut off.
const HOSTS: usize = 3;

/// The host the partition isolates.
const ISOLATED: usize = 2;

/// The nftables table that makes the partition.
const TABLE: &str = "consort_partition";

/// How long after all see each other alive again the states must be identical.
const CONVERGE_LIMIT: Duration = Duration::from_secs(2);

/// What this test does on a [`Lan`]: seeded daemons without mDNS, and their client commands.
trait PartitionLan {
    /// Runs `consort up` inside host `i`, seeded with every other host, without mDNS.
    fn start(&mut self, i: usize, root: &Path, secret: &Path);
    /// Runs a client command against the daemon in host `i`; its stdout if it succeeded.
    fn cli(&self, i: usize, args: &[&str]) -> Result<String, String>;
    /// `consort ARGS --json` in host `i`, parsed.
    fn json(&self, i: usize, args: &[&str]) -> Option<Value>;
    /// The state host `i` shows for each node it lists, by id (none if it does not answer).
    fn states(&self, i: usize) -> BTreeMap<String, String>;
    /// Writes `value` (JSON) at `key` in host `i`, or deletes it (`None`): the version
    /// returned.
    fn write(&self, i: usize, key: &str, value: Option<&Value>) -> Version;
    /// `consort ls --json` in host `i`: key to (value, version), or `None` if it failed.
    fn listing(&self, i: usize) -> Option<BTreeMap<String, (Value, String)>>;
}

impl PartitionLan for Lan {
    fn start(&mut self, i: usize, root: &Path, secret: &Path) {
        let data_dir = root.join(format!("host{i}"));
        let log = root.join(format!("host{i}.log"));
        let mut args: Vec<OsString> = ["up", "--no-mdns", "--group", "netns-partition"]
            .map(OsString::from)
            .to_vec();
        args.extend(["--data-dir".into(), data_dir.into_os_string()]);
        args.extend(["--secret-file".into(), secret.as_os_str().to_owned()]);
        args.extend(["--bind".into(), format!("{}:7470", self.addr(i)).into()]);
        args.extend(["--api", "127.0.0.1:7471", "--name"].map(OsString::from));
        args.push(format!("host{i}").into());
        for j in (0..HOSTS).filter(|&j| j != i) {
            args.extend(["--seed".into(), format!("{}:7470", self.addr(j)).into()]);
        }
        self.spawn(i, args, Some(log));
    }

    fn cli(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let out = self
            .consort_in(i)
            .args(args)
            .args(["--api", "http://127.0.0.1:7471"])
            .output()
            .map_err(|e| format!("consort: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "consort {} in host{i}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn json(&self, i: usize, args: &[&str]) -> Option<Value> {
        let mut args = args.to_vec();
        args.push("--json");
        serde_json::from_str(&self.cli(i, &args).ok()?).ok()
    }

    fn states(&self, i: usize) -> BTreeMap<String, String> {
        let peers = self.json(i, &["peers"]);
        let peers = peers
            .as_ref()
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        let state = |p: &Value| Some((p["id"].as_str()?.into(), p["state"].as_str()?.into()));
        peers.filter_map(state).collect()
    }

    fn write(&self, i: usize, key: &str, value: Option<&Value>) -> Version {
        let out = match value {
            Some(v) => self.cli(i, &["set", key, &v.to_string(), "--json"]),
            None => self.cli(i, &["del", key, "--json"]),
        };
        let out = out.unwrap_or_else(|e| panic!("{e}"));
        let written: Value = serde_json::from_str(&out).expect("the write prints JSON");
        Version::parse(written["version"].as_str().expect("a version"))
    }

    fn listing(&self, i: usize) -> Option<BTreeMap<String, (Value, String)>> {
        let list = self.json(i, &["ls"])?;
        let entries = list.as_array()?.iter().map(|e| {
            let key = e["key"].as_str().unwrap_or_default().to_string();
            let version = e["version"].as_str().unwrap_or_default().to_string();
            (key, (e["value"].clone(), version))
        });
        Some(entries.collect())
    }
}

/// A write's version, `<hlc>-<origin>`, in the order last-writer-wins uses: HLC, then origin.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Version {
    hlc: u64,
    origin: u64,
    text: String,
}

impl Version {
    fn parse(text: &str) -> Version {
        let (hlc, origin) = text.split_once('-').expect("<hlc>-<origin>");
        Version {
            hlc: hlc.parse().expect("hlc"),
            origin: u64::from_str_radix(origin, 16).expect("origin"),
            text: text.to_string(),
        }
    }
}

/// Every write made to one key: what, where, at which version.
#[derive(Default)]
struct History(BTreeMap<String, Vec<(Version, Option<Value>, String)>>);

impl History {
    fn record(&mut self, lan: &Lan, host: usize, key: &str, value: Option<Value>, what: &str) {
        let version = lan.write(host, key, value.as_ref());
        let entry = self.0.entry(key.to_string()).or_default();
        entry.push((version, value, format!("{what} on host{host}")));
    }

    /// The last-writer-wins winners: key to (value, version) for those not deleted.
    fn winners(&self) -> BTreeMap<String, (Value, String)> {
        let winner = |writes: &Vec<(Version, Option<Value>, String)>| {
            let (version, value, _) = writes.iter().max_by(|a, b| a.0.cmp(&b.0))?;
            Some((value.clone()?, version.text.clone()))
        };
        let winners = self
            .0
            .iter()
            .filter_map(|(k, w)| Some((k.clone(), winner(w)?)));
        winners.collect()
    }
}

fn key(i: usize) -> String {
    format!("part/k{i:02}")
}

#[test]
fn both_sides_of_a_partition_write_and_converge_to_lww_winners_after_heal() {
    let nft_works = |probe: &str| nft(probe, &format!("table inet {TABLE} {{ }}\n")).is_ok();
    let what = "network namespaces and nftables";
    if lan::unavailable("cq", nft_works, what, "root, iproute2 and nft") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut lan = Lan::create("cq", HOSTS, &[], |_| Ok(())).expect("create the virtual LAN");
    // Written once: a daemon reading it while it is rewritten would find no secret.
    let secret = secret_file(root.path(), "secret.txt", SECRET);
    for i in 0..HOSTS {
        lan.start(i, root.path(), &secret);
    }
    let answered = time_until(Duration::from_secs(10), || {
        (0..HOSTS).all(|i| lan.json(i, &["status"]).is_some())
    });
    answered.unwrap_or_else(|| panic!("daemons did not answer:\n{}", lan.logs()));
    let ids: Vec<String> = (0..HOSTS)
        .map(|i| {
            lan.json(i, &["status"]).unwrap()["node"]["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let sees = |i: usize, j: usize, state: &str| {
        lan.states(i).get(&ids[j]).map(String::as_str) == Some(state)
    };
    let all_alive = || {
        (0..HOSTS).all(|i| {
            let states = lan.states(i);
            ids.iter()
                .all(|id| states.get(id).map(String::as_str) == Some("alive"))
        })
    };
    let joined = time_until(Duration::from_secs(10), all_alive);
    let joined = joined.unwrap_or_else(|| panic!("not all alive:\n{}", lan.logs()));
    println!("3 hosts see each other alive {joined:.2?} after their APIs answered");

    // Before the partition: every key holds a value everyone has.
    let mut history = History::default();
    for k in 0..60 {
        history.record(&lan, k % 2, &key(k), Some(json!({"base": k})), "base");
    }
    let same = time_until(Duration::from_secs(5), || {
        let first = lan.listing(0);
        first.is_some() && (1..HOSTS).all(|i| lan.listing(i) == first)
    });
    same.unwrap_or_else(|| panic!("the base writes did not reach everyone:\n{}", lan.logs()));
    assert_eq!(lan.listing(0).unwrap(), history.winners());

    // Cut host 2 off from the other two, both ways.
    let others: Vec<String> = (0..HOSTS)
        .filter(|&j| j != ISOLATED)
        .map(|j| lan.addr(j))
        .collect();
    let others = others.join(", ");
    let rules = format!(
        "table inet {TABLE} {{\n\
         chain input {{ type filter hook input priority 0; policy accept; ip saddr {{ {others} }} drop; }}\n\
         chain output {{ type filter hook output priority 0; policy accept; ip daddr {{ {others} }} drop; }}\n\
         }}\n"
    );
    nft(&lan.ns(ISOLATED), &rules).expect("partition");
    let majority = [0, 1];
    let split = time_until(Duration::from_secs(10), || {
        majority
            .iter()
            .all(|&i| sees(i, ISOLATED, "down") && sees(ISOLATED, i, "down"))
    });
    let split = split.unwrap_or_else(|| panic!("the sides never saw each other down"));
    println!("partition 2|1: each side sees the other down after {split:.2?}");

    // Both sides write the same keys. The isolated side first (keys 0..25 and deletes of
    // 50..55), then the majority (all of 0..50, deletes of 10..15 and 55..58, writes of
    // 50..53), then the isolated side again (25..50, a write of 55, deletes of 30..33).
    let value =
        |side: &str, phase: &str, k: usize| Some(json!({"side": side, "phase": phase, "k": k}));
    for k in 0..25 {
        history.record(
            &lan,
            ISOLATED,
            &key(k),
            value("isolated", "early", k),
            "early",
        );
    }
    for k in 50..55 {
        history.record(&lan, ISOLATED, &key(k), None, "early delete");
    }
    for k in 0..50 {
        let host = majority[k % 2];
        history.record(
            &lan,
            host,
            &key(k),
            value("majority", "middle", k),
            "middle",
        );
    }
    for k in 50..53 {
        history.record(&lan, 0, &key(k), value("majority", "middle", k), "middle");
    }
    for k in (10..15).chain(55..58) {
        history.record(&lan, 1, &key(k), None, "middle delete");
    }
    for k in (25..50).chain(55..56) {
        history.record(
            &lan,
            ISOLATED,
            &key(k),
            value("isolated", "late", k),
            "late",
        );
    }
    for k in 30..33 {
        history.record(&lan, ISOLATED, &key(k), None, "late delete");
    }
    let expected = history.winners();
    let won_by = |side: &str| {
        let by_side = expected.values().filter(|(v, _)| v["side"] == side);
        by_side.count()
    };
    println!(
        "expected after heal: {} keys ({} from the isolated side, {} from the majority, {} \
         untouched), {} deleted",
        expected.len(),
        won_by("isolated"),
        won_by("majority"),
        expected
            .values()
            .filter(|(v, _)| v.get("base").is_some())
            .count(),
        60 - expected.len()
    );

    // The partition held: neither side has seen a write of the other.
    let leaked = |host: usize, other_side: &str| {
        let listing = lan.listing(host).expect("a listing");
        let seen = listing.values().filter(|(v, _)| v["side"] == other_side);
        seen.count()
    };
    assert_eq!(
        leaked(0, "isolated"),
        0,
        "host0 got writes through the partition"
    );
    assert_eq!(
        leaked(ISOLATED, "majority"),
        0,
        "host2 got writes through the partition"
    );

    // Heal, and time membership, then the state.
    let healed = Instant::now();
    nft(&lan.ns(ISOLATED), &format!("delete table inet {TABLE}\n")).expect("heal");
    let rejoined = time_until(Duration::from_secs(15), all_alive);
    let rejoined = rejoined.unwrap_or_else(|| panic!("no rejoin after heal:\n{}", lan.logs()));
    let alive_at = Instant::now();
    let mut last: Vec<Option<BTreeMap<String, (Value, String)>>> = Vec::new();
    let converged = time_until(Duration::from_secs(10), || {
        last = (0..HOSTS).map(|i| lan.listing(i)).collect();
        last[0].is_some() && last.iter().all(|l| *l == last[0])
    });
    let since_alive = alive_at.elapsed();
    println!(
        "heal: all alive again {rejoined:.2?} after the heal; identical state {} after that \
         ({:.2?} after the heal)",
        converged.map_or("never (10 s)".to_string(), |t| format!("{t:.2?}")),
        healed.elapsed()
    );
    for (i, listing) in last.iter().enumerate() {
        let listing = listing.as_ref().expect("a listing");
        let wrong: Vec<String> = expected
            .keys()
            .chain(listing.keys())
            .filter(|k| listing.get(*k) != expected.get(*k))
            .map(|k| {
                let writes = &history.0[k];
                format!(
                    "{k}: holds {:?}, expected {:?}; writes: {writes:?}",
                    listing.get(k),
                    expected.get(k)
                )
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "host{i} does not hold the last-writer-wins winners ({} keys wrong):\n{}",
            wrong.len(),
            wrong.join("\n")
        );
    }
    let converged = converged.expect("identical state");
    assert!(
        converged <= CONVERGE_LIMIT,
        "identical state only {converged:?} after all were alive again (limit \
         {CONVERGE_LIMIT:?}; {since_alive:?} measured)"
    );
}
