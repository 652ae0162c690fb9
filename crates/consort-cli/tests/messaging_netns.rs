//! Messages under loss on a virtual LAN: three network namespaces on a bridge, nftables
//! dropping 20% of the datagrams between a sender and a receiver (both ways, so acks are lost
//! too). 10,000 reliable messages must all arrive exactly once and in order; 10,000 best-effort
//! ones must never arrive twice.
//!
//! The test talks to the daemons over their WebSocket API from threads that entered each
//! namespace (setns), so that the API stays on the namespace's loopback. Needs root, `ip` and
//! `nft`; skipped without them unless `CONSORT_REQUIRE_NETNS=1` (set by CI). Addresses are in
//! 10.213.0.0/24 inside the namespaces only; everything is removed at the end.

mod common;

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use common::lan::{self, nft, Lan};
use common::{secret_file, time_until, SECRET};
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

const HOSTS: usize = 3;
const SENDER: usize = 0;
const RECEIVER: usize = 1;
const MESSAGES: u64 = 10_000;
const TABLE: &str = "consort_loss";

/// Moves the calling thread into network namespace `ns`.
fn enter(ns: &str) {
    let handle = File::open(format!("/var/run/netns/{ns}")).expect("namespace handle");
    // SAFETY: setns only changes this thread's network namespace; the fd is valid while
    // `handle` lives.
    let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// The WebSocket API of the daemon in the namespace this thread is in.
fn websocket() -> WebSocket<TcpStream> {
    let stream = TcpStream::connect("127.0.0.1:7471").expect("API reachable");
    let (socket, _) = tungstenite::client("ws://127.0.0.1:7471/v1/ws", stream).expect("upgrade");
    socket
}

fn read_json(socket: &mut WebSocket<TcpStream>) -> Value {
    loop {
        match socket.read().expect("the session stays open") {
            Message::Text(text) => return serde_json::from_str(text.as_str()).expect("JSON"),
            Message::Close(_) => panic!("the daemon closed the session"),
            _ => {}
        }
    }
}

fn start(lan: &mut Lan, i: usize, root: &Path, secret: &Path) {
    let mut args: Vec<OsString> = ["up", "--no-mdns", "--group", "netns-messages"]
        .map(OsString::from)
        .to_vec();
    args.extend(["--data-dir".into(), root.join(format!("host{i}")).into()]);
    args.extend(["--secret-file".into(), secret.as_os_str().to_owned()]);
    args.extend(["--bind".into(), format!("{}:7470", lan.addr(i)).into()]);
    args.extend(["--api", "127.0.0.1:7471"].map(OsString::from));
    for j in (0..HOSTS).filter(|&j| j != i) {
        args.extend(["--seed".into(), format!("{}:7470", lan.addr(j)).into()]);
    }
    let log = root.join(format!("host{i}.log"));
    lan.spawn(i, args, Some(log));
}

fn peers(lan: &Lan, i: usize) -> Option<Vec<Value>> {
    let out = lan
        .consort_in(i)
        .args(["peers", "--json", "--api", "http://127.0.0.1:7471"])
        .output()
        .ok()?;
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()?
        .as_array()
        .cloned()
}

#[test]
fn reliable_messages_arrive_once_in_order_and_best_effort_never_twice_at_20_percent_loss() {
    if lan::unavailable(
        "cm",
        lan::nft_works,
        "network namespaces and nftables",
        "root, iproute2 and nft",
    ) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut lan = Lan::create("cm", HOSTS, &[], |_| Ok(())).expect("create the virtual LAN");
    let secret = secret_file(root.path(), "secret.txt", SECRET);
    for i in 0..HOSTS {
        start(&mut lan, i, root.path(), &secret);
    }
    let all_alive = || {
        (0..HOSTS).all(|i| {
            peers(&lan, i)
                .is_some_and(|p| p.len() == HOSTS && p.iter().all(|p| p["state"] == "alive"))
        })
    };
    time_until(Duration::from_secs(15), all_alive)
        .unwrap_or_else(|| panic!("the group did not form:\n{}", lan.logs()));
    let receiver_id = peers(&lan, RECEIVER)
        .unwrap()
        .iter()
        .find(|p| p["is_self"] == true)
        .and_then(|p| p["id"].as_str().map(str::to_string))
        .unwrap();

    // 20% of the datagrams between sender and receiver are dropped, each way.
    let (s, r) = (lan.addr(SENDER), lan.addr(RECEIVER));
    let rules = format!(
        "table inet {TABLE} {{\n\
         chain input {{ type filter hook input priority 0; policy accept; ip saddr {s} meta l4proto udp numgen random mod 100 < 20 drop; }}\n\
         chain output {{ type filter hook output priority 0; policy accept; ip daddr {s} meta l4proto udp numgen random mod 100 < 20 drop; }}\n\
         }}\n"
    );
    nft(&lan.ns(RECEIVER), &rules).expect("loss rules");
    let _ = r;

    // The receiver listens; it stops after the best-effort phase's end marker, sent reliably.
    let receiver_ns = lan.ns(RECEIVER);
    let receiver = std::thread::spawn(move || {
        enter(&receiver_ns);
        let mut socket = websocket();
        socket.send(Message::text(r#"{"op":"listen"}"#)).unwrap();
        let (mut reliable, mut best_effort) = (Vec::new(), Vec::new());
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            assert!(Instant::now() < deadline, "the end marker never came");
            let event = read_json(&mut socket);
            if event["type"] != "peer_message" {
                continue;
            }
            let body = &event["body"];
            if body["end"] == true {
                break;
            }
            let n = body["n"].as_u64().expect("numbered");
            if event["reliable"] == true {
                reliable.push(n);
            } else {
                best_effort.push(n);
            }
        }
        (reliable, best_effort)
    });
    std::thread::sleep(Duration::from_millis(500));

    let sender_ns = lan.ns(SENDER);
    let sender = std::thread::spawn(move || {
        enter(&sender_ns);
        let mut socket = websocket();
        let send = |socket: &mut WebSocket<TcpStream>, n: u64, body: Value, reliable: bool| {
            let frame = json!({
                "op": "send", "to": receiver_id, "reliable": reliable, "body": body,
                "timeout_ms": 120_000, "id": n,
            });
            socket.send(Message::text(frame.to_string())).unwrap();
        };
        let start = Instant::now();
        for n in 0..MESSAGES {
            send(&mut socket, n, json!({ "n": n }), true);
        }
        let mut acked = 0;
        while acked < MESSAGES {
            let out = read_json(&mut socket);
            assert_eq!(out["type"], "sent", "{out}");
            acked += 1;
        }
        let reliable_took = start.elapsed();
        for n in 0..MESSAGES {
            send(&mut socket, MESSAGES + n, json!({ "n": n }), false);
            if n % 500 == 499 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        for _ in 0..MESSAGES {
            assert_eq!(read_json(&mut socket)["type"], "sent");
        }
        std::thread::sleep(Duration::from_millis(500));
        send(&mut socket, 2 * MESSAGES, json!({ "end": true }), true);
        assert_eq!(read_json(&mut socket)["type"], "sent");
        reliable_took
    });
    let reliable_took = sender.join().expect("sender");
    let (reliable, best_effort) = receiver.join().expect("receiver");
    assert_eq!(
        reliable.len() as u64,
        MESSAGES,
        "reliable messages delivered"
    );
    assert!(
        reliable.iter().enumerate().all(|(i, n)| *n == i as u64),
        "reliable messages out of order"
    );
    let unique: HashSet<u64> = best_effort.iter().copied().collect();
    assert_eq!(
        unique.len(),
        best_effort.len(),
        "a best-effort message arrived twice"
    );
    let share = best_effort.len() as f64 / MESSAGES as f64;
    println!(
        "20% loss each way: {MESSAGES} reliable messages delivered exactly once in order, all \
         acknowledged in {reliable_took:.2?}; best-effort: {} of {MESSAGES} delivered ({:.1}%), none twice",
        best_effort.len(),
        share * 100.0
    );
    assert!(share > 0.5 && share < 0.95, "best-effort share {share}");
    nft(&lan.ns(RECEIVER), &format!("delete table inet {TABLE}\n")).expect("remove loss");
}
