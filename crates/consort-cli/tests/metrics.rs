//! `GET /metrics` on real daemons: the exposition follows Prometheus conventions, and each
//! metric moves with what the nodes do (writes, deletes, a joining node's snapshot, anti-entropy,
//! the election, messages, calls, datagrams, API requests). Refused datagrams and requests are
//! logged with their reason, at most once a second, in JSON with `--log-format json`.

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{
    http_delete, http_get, http_post, http_put, poll, secret_file, unique_group, Daemon, UpArgs,
};
use serde_json::Value;

/// How long the group may take to converge on anything here.
const CONVERGE: Duration = Duration::from_secs(15);

/// Every sample of a scrape, by series (`name{labels}` as written).
type Samples = BTreeMap<String, f64>;

/// Scrapes `/metrics` and checks the format: every sample belongs to a family announced with
/// `# HELP` and `# TYPE`, names carry the `consort_` prefix, counters end in `_total`, and
/// histogram buckets grow up to `+Inf`, which equals `_count`.
fn scrape(api: SocketAddr) -> Samples {
    let (code, text) = http_get(api, "/metrics", None).expect("API answers");
    assert_eq!(code, 200, "{text}");
    let mut samples = Samples::new();
    let mut helped = Vec::new();
    let mut family: Option<(String, String)> = None;
    let mut last_bucket: Option<f64> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.push(rest.split(' ').next().unwrap().to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert_eq!(
                helped.last().map(String::as_str),
                Some(name),
                "HELP before {line}"
            );
            assert!(name.starts_with("consort_"), "{name}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
            family = Some((name.to_string(), kind.to_string()));
            last_bucket = None;
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        let (name, kind) = family
            .as_ref()
            .unwrap_or_else(|| panic!("no TYPE before {line}"));
        let sample_name = series.split('{').next().unwrap();
        match kind.as_str() {
            "histogram" => {
                let suffix = sample_name.strip_prefix(name.as_str()).expect(series);
                assert!(["_bucket", "_sum", "_count"].contains(&suffix), "{line}");
                if suffix == "_bucket" {
                    assert!(
                        last_bucket.is_none_or(|b| b <= value),
                        "buckets shrink: {line}"
                    );
                    last_bucket = Some(value);
                }
                if suffix == "_count" {
                    assert_eq!(last_bucket, Some(value), "+Inf bucket != count: {line}");
                }
            }
            _ => assert_eq!(sample_name, name, "{line}"),
        }
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "twice: {series}"
        );
    }
    samples
}

/// The value of `series`, which must be exposed.
fn value(samples: &Samples, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("{series} missing from {samples:#?}"))
}

/// Polls `node`'s metrics until `check` holds; panics with the last scrape otherwise.
fn wait_metrics(node: &Daemon, what: &str, check: impl Fn(&Samples) -> bool) -> Samples {
    let api = node.api_addr();
    if let Some(samples) = poll(CONVERGE, || Some(scrape(api)).filter(|s| check(s))) {
        return samples;
    }
    panic!("{what}: not within {CONVERGE:?}: {:#?}", scrape(api));
}

/// The JSON log lines of `node` whose message is `message`.
fn log_lines(node: &Daemon, message: &str) -> Vec<Value> {
    node.stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["message"] == message)
        .collect()
}

#[test]
fn metrics_follow_what_the_nodes_do() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = secret_file(tmp.path(), "secret", &"m".repeat(32));
    let group = unique_group("metrics");
    let a = Daemon::start(UpArgs {
        group: &group,
        secret_file: Some(&secret),
        seeds: vec![],
        extra: vec!["--name".into(), "a".into()],
    });
    let api_a = a.api_addr();
    for (key, value) in [("m/one", "1"), ("m/two", "2")] {
        let (code, body) = http_put(api_a, &format!("/v1/kv/{key}"), value.as_bytes()).unwrap();
        assert_eq!(code, 200, "{body}");
    }
    let (code, body) = http_delete(api_a, "/v1/kv/m/two").unwrap();
    assert_eq!(code, 200, "{body}");
    let before = scrape(api_a);
    assert_eq!(value(&before, "consort_tombstones"), 1.0);
    assert_eq!(value(&before, "consort_is_leader"), 1.0, "alone, it leads");

    // A blank node joins: it pulls a snapshot, then gets changes as they are written.
    let b = Daemon::start(UpArgs {
        group: &group,
        secret_file: Some(&secret),
        seeds: vec![a.group_addr()],
        extra: ["--name", "b", "--log-format", "json"]
            .map(String::from)
            .to_vec(),
    });
    let api_b = b.api_addr();
    let joined = wait_metrics(&b, "b pulls the snapshot", |s| {
        s.get("consort_bootstrapping") == Some(&0.0)
            && s.get("consort_tombstones") == Some(&1.0)
            && s.get("consort_members{state=\"alive\"}") == Some(&2.0)
    });
    let snapshot = value(&joined, "consort_bootstrap_snapshot_entries");
    assert!(snapshot >= 3.0, "two entries and a node record: {snapshot}");
    assert_eq!(
        value(&joined, "consort_bootstrap_received_entries"),
        snapshot
    );
    let (code, body) = http_put(api_a, "/v1/kv/m/three", b"3").unwrap();
    assert_eq!(code, 200, "{body}");
    let b_now = wait_metrics(&b, "b applies a later write", |s| {
        s.get("consort_propagation_lag_seconds_count")
            .is_some_and(|n| *n >= 1.0)
    });
    let lag = value(&b_now, "consort_propagation_lag_seconds_sum")
        / value(&b_now, "consort_propagation_lag_seconds_count");
    assert!(
        (0.0..5.0).contains(&lag),
        "mean lag on loopback: {lag} s (the snapshot's old entries must not count)"
    );
    let entries = |api| -> f64 {
        let status: Value = serde_json::from_str(&http_get(api, "/v1/status", None).unwrap().1)
            .expect("status JSON");
        status["entries"].as_f64().expect("entries")
    };
    let b_now = wait_metrics(&b, "b holds what /v1/status says", |s| {
        s.get("consort_entries") == Some(&entries(api_b))
    });
    assert!(
        value(&b_now, "consort_entries") >= 4.0,
        "three entries, two node records"
    );
    assert_eq!(value(&b_now, "consort_tombstones"), 1.0);

    // Anti-entropy runs every 150 ms between the two.
    for node in [&a, &b] {
        wait_metrics(node, "anti-entropy rounds", |s| {
            s.get("consort_anti_entropy_rounds_completed_total")
                .is_some_and(|n| *n >= 1.0)
                && s.get("consort_anti_entropy_sent_bytes_total")
                    .is_some_and(|n| *n > 0.0)
                && s.get("consort_anti_entropy_received_bytes_total")
                    .is_some_and(|n| *n > 0.0)
        });
    }

    // One leader, one term, as /v1/leader says.
    let views: Vec<Samples> = [&a, &b]
        .iter()
        .map(|n| {
            wait_metrics(n, "one leader", |s| {
                s.get("consort_members{state=\"alive\"}") == Some(&2.0)
            })
        })
        .collect();
    let leader: Value =
        serde_json::from_str(&http_get(api_a, "/v1/leader", None).unwrap().1).expect("leader JSON");
    let term = leader["term"].as_f64().expect("term");
    let leaders: f64 = views.iter().map(|s| value(s, "consort_is_leader")).sum();
    assert_eq!(leaders, 1.0);
    for samples in &views {
        assert_eq!(value(samples, "consort_leader_term"), term);
        assert!(value(samples, "consort_leader_changes_total") >= 1.0);
        assert!(value(samples, "consort_datagrams_sent_total") > 0.0);
        assert!(value(samples, "consort_datagrams_received_bytes_total") > 0.0);
    }

    // Messages by class, calls by outcome.
    let (code, body) = http_post(api_a, "/v1/messages", br#"{"to":"all","body":{"n":1}}"#).unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, body) = http_post(
        api_a,
        "/v1/services/nobody/call",
        br#"{"body":null,"timeout_ms":100}"#,
    )
    .unwrap();
    assert_eq!(code, 503, "{body}");
    let a_now = scrape(api_a);
    assert!(value(&a_now, "consort_messages_sent_total{class=\"best_effort\"}") >= 1.0);
    assert_eq!(
        value(&a_now, "consort_messages_sent_total{class=\"reliable\"}"),
        0.0
    );
    assert_eq!(
        value(&a_now, "consort_service_calls_total{outcome=\"failed\"}"),
        1.0
    );
    assert_eq!(
        value(&a_now, "consort_service_calls_total{outcome=\"ok\"}"),
        0.0
    );
    wait_metrics(&b, "b gets the message", |s| {
        s.get("consort_messages_delivered_total{class=\"best_effort\"}")
            .is_some_and(|n| *n >= 1.0)
    });

    // API requests by route template (not path), method and status.
    let put = "consort_api_requests_total{route=\"/v1/kv/{*key}\",method=\"PUT\",status=\"200\"}";
    assert_eq!(value(&a_now, put), 3.0);
    let deleted =
        "consort_api_requests_total{route=\"/v1/kv/{*key}\",method=\"DELETE\",status=\"200\"}";
    assert_eq!(value(&a_now, deleted), 1.0);
    let call =
        "consort_api_requests_total{route=\"/v1/services/{name}/call\",method=\"POST\",status=\"503\"}";
    assert_eq!(value(&a_now, call), 1.0);

    // Refused requests: counted each, logged once a second per route and status, each line
    // with the number left out since the previous one. A burst well within a second gives one
    // line; the next refusal, a second later, gives the second, which counts the rest.
    let burst = Instant::now();
    for _ in 0..5 {
        let (code, _) = http_get(api_b, "/v1/no/such/route", None).unwrap();
        assert_eq!(code, 404);
    }
    let quick = burst.elapsed() < Duration::from_millis(800);
    let unmatched = "consort_api_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"}";
    assert_eq!(value(&scrape(api_b), unmatched), 5.0);
    let refused = log_lines(&b, "request refused");
    let line = &refused.first().expect("a refusal is logged")["fields"];
    assert_eq!(line["route"], "unmatched");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/v1/no/such/route");
    assert_eq!(line["status"], 404);
    assert_eq!(line["suppressed"], 0);
    let reason = line["reason"].as_str().unwrap();
    assert!(reason.contains("no such route"), "{line}");
    std::thread::sleep(Duration::from_millis(1100));
    let (code, _) = http_get(api_b, "/v1/no/such/route", None).unwrap();
    assert_eq!(code, 404);
    let refused = log_lines(&b, "request refused");
    assert_eq!(logged_and_left_out(&refused), 6, "{refused:#?}");
    if quick {
        assert_eq!(refused.len(), 2, "{refused:#?}");
        assert_eq!(refused[1]["fields"]["suppressed"], 4);
    }

    // Refused datagrams: counted by reason, logged once a second per reason (by the engine).
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let burst = Instant::now();
    for _ in 0..20 {
        socket.send_to(b"junk", b.group_addr()).unwrap();
    }
    let rejected = wait_metrics(&b, "junk is rejected", |s| {
        s.iter()
            .filter(|(k, _)| k.starts_with("consort_datagrams_rejected_total{"))
            .any(|(_, v)| *v == 20.0)
    });
    let quick = burst.elapsed() < Duration::from_millis(800);
    let (series, _) = rejected
        .iter()
        .find(|(k, v)| k.starts_with("consort_datagrams_rejected_total{") && **v == 20.0)
        .unwrap();
    let reason = series.split('"').nth(1).unwrap().to_string();
    let lines = |node: &Daemon| -> Vec<Value> {
        log_lines(node, "datagram rejected")
            .into_iter()
            .filter(|l| l["fields"]["reason"] == reason.as_str())
            .collect()
    };
    let first = lines(&b);
    assert!(!first.is_empty(), "a rejection is logged");
    assert!(first[0]["fields"]["from"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    std::thread::sleep(Duration::from_millis(1100));
    socket.send_to(b"junk", b.group_addr()).unwrap();
    let logged = poll(Duration::from_secs(5), || {
        Some(lines(&b)).filter(|l| l.len() > first.len())
    })
    .unwrap_or_else(|| panic!("no line a second later: {:#?}", lines(&b)));
    assert_eq!(logged_and_left_out(&logged), 21, "{logged:#?}");
    if quick {
        assert_eq!(logged.len(), 2, "{logged:#?}");
        assert_eq!(logged[1]["fields"]["suppressed"], 19, "{logged:#?}");
    }
}

/// How many events `lines` stand for: each line, and those it says were left out before it.
fn logged_and_left_out(lines: &[Value]) -> u64 {
    lines
        .iter()
        .map(|l| 1 + l["fields"]["suppressed"].as_u64().expect("suppressed"))
        .sum()
}
