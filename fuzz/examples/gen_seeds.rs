//! Writes seed inputs for the fuzz targets from a short simulated three-node run:
//! `cargo run --example gen_seeds -- [dir]` writes `dir/datagram/*` and `dir/control/*`
//! (default dir: `corpus`, which is gitignored).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use consort_fuzz::{encode, keyring, self_addr, setup, Record, SELF_ID, SENDERS};
use consort_proto::codec::Control;
use consort_proto::messaging::{CallOptions, SendOptions, Target};
use consort_proto::wire::{self, FrameKind};
use consort_proto::{Engine, Keyring, Output};

struct Delivery {
    kind: FrameKind,
    sender: u8,
    payload: Vec<u8>,
    datagram: Vec<u8>,
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    let (dgram_dir, control_dir) = (dir.join("datagram"), dir.join("control"));
    std::fs::create_dir_all(&dgram_dir).unwrap();
    std::fs::create_dir_all(&control_dir).unwrap();

    let t0 = Instant::now();
    let addrs: [SocketAddr; 3] = [
        "10.0.0.1:7470".parse().unwrap(),
        self_addr(),
        "[fd00::3]:7470".parse().unwrap(),
    ];
    let mut nodes = [
        Engine::new(setup(SENDERS[0], "alpha", addrs[0], 1), t0),
        Engine::new(setup(SELF_ID, "under test", addrs[1], 7), t0),
        Engine::new(setup(SENDERS[2], "gamma ✓", addrs[2], 3), t0),
    ];
    nodes[0].add_seed(t0, addrs[1]);
    nodes[2].add_seed(t0, addrs[1]);

    // Every step: deliver what is in flight, then fire timers; log what reaches node 1 (the
    // engine the `datagram` target runs), with the ticks between.
    let mut script: Vec<(Option<Delivery>, u8)> = Vec::new();
    let mut in_flight: VecDeque<(usize, SocketAddr, Vec<u8>)> = VecDeque::new();
    let mut now = t0;
    let step = Duration::from_millis(25);
    for round in 0..160 {
        if round == 120 {
            nodes[0].leave(now);
        }
        // Messages and a service call, so the messaging frames are in the corpus.
        if round == 10 {
            nodes[1].serve(now, "light").unwrap();
        }
        if round == 60 {
            let reliable = SendOptions {
                reliable: true,
                timeout: None,
            };
            let body = br#"{"scene":"evening"}"#.to_vec();
            nodes[0]
                .send(now, Target::Node(SELF_ID), body.clone(), reliable)
                .unwrap();
            nodes[2]
                .send(now, Target::All, body.clone(), SendOptions::default())
                .unwrap();
            nodes[2]
                .call(now, "light", body, CallOptions::default())
                .unwrap();
        }
        for (i, n) in nodes.iter_mut().enumerate() {
            n.handle_timeout(now);
            while let Some(out) = n.poll_output() {
                if let Output::Transmit { to, datagram } = out {
                    in_flight.push_back((i, to, datagram));
                }
            }
        }
        while let Some((from, to, datagram)) = in_flight.pop_front() {
            let Some(j) = addrs.iter().position(|a| *a == to) else {
                continue;
            };
            if j == 1 {
                let o = wire::open(keyring(), &datagram).unwrap();
                let sender = SENDERS.iter().position(|s| *s == o.sender).unwrap() as u8;
                script.push((
                    Some(Delivery {
                        kind: o.kind,
                        sender,
                        payload: o.payload,
                        datagram: datagram.clone(),
                    }),
                    0,
                ));
            }
            nodes[j].handle_datagram(now, addrs[from], &datagram);
            let mut requests = Vec::new();
            while let Some(out) = nodes[j].poll_output() {
                match out {
                    Output::Transmit { to, datagram } => in_flight.push_back((j, to, datagram)),
                    Output::Serve(request) => requests.push(request.id),
                    _ => {}
                }
            }
            for id in requests {
                nodes[j].respond(now, id, Ok(br#"{"done":true}"#.to_vec()));
                while let Some(out) = nodes[j].poll_output() {
                    if let Output::Transmit { to, datagram } = out {
                        in_flight.push_back((j, to, datagram));
                    }
                }
            }
        }
        now += step;
        script.push((None, 1));
    }
    for n in &nodes {
        eprintln!(
            "{:?}: {} members, {:?}",
            n.identity(),
            n.members().len(),
            n.stats()
        );
    }

    // Scripts: the run in windows of records, ticks merged.
    let mut records: Vec<Record<'_>> = Vec::new();
    for (d, ticks) in &script {
        match d {
            Some(d) => records.push(Record::Sealed {
                kind: d.kind,
                sender: d.sender,
                counter: 0,
                extra: 0,
                payload: &d.payload,
            }),
            None => match records.last_mut() {
                Some(Record::Tick(t)) if *t + ticks < 32 => *t += ticks,
                _ => records.push(Record::Tick(*ticks)),
            },
        }
    }
    let mut n = 0;
    let mut write = |sub: &PathBuf, name: String, bytes: &[u8]| {
        std::fs::write(sub.join(name), bytes).unwrap();
        n += 1;
    };
    for (i, window) in records.chunks(consort_fuzz::MAX_RECORDS / 2).enumerate() {
        write(&dgram_dir, format!("script-{i:03}"), &encode(window));
    }
    // One record per distinct datagram, sealed, raw, and as a whole input.
    let deliveries: Vec<&Delivery> = script.iter().filter_map(|(d, _)| d.as_ref()).collect();
    for (i, d) in deliveries.iter().enumerate().take(48) {
        let sealed = Record::Sealed {
            kind: d.kind,
            sender: d.sender,
            counter: 0,
            extra: 0,
            payload: &d.payload,
        };
        write(
            &dgram_dir,
            format!("sealed-{i:03}"),
            &encode(&[sealed.clone(), Record::Tick(8), sealed]),
        );
        write(
            &dgram_dir,
            format!("raw-{i:03}"),
            &encode(&[Record::Raw(&d.datagram), Record::Raw(&d.datagram)]),
        );
        if i < 8 {
            write(&dgram_dir, format!("whole-{i:03}"), &d.datagram);
        }
        if d.kind == FrameKind::Control {
            write(&control_dir, format!("from-run-{i:03}"), &d.payload);
        }
    }
    // A foreign group's datagram.
    let foreign = Keyring::from_secrets(&["some other group's secret"], "fuzz").unwrap();
    let d = wire::seal(
        foreign.primary(),
        SENDERS[0],
        1,
        FrameKind::Swim,
        &deliveries[0].payload,
    );
    write(&dgram_dir, "foreign".into(), &encode(&[Record::Raw(&d)]));

    // Control messages for every identity of the run.
    for (i, node) in nodes.iter().enumerate() {
        let msg = Control::Leave {
            identity: node.identity().clone(),
        };
        write(&control_dir, format!("leave-{i}"), &msg.encode());
        let payload = msg.encode();
        let record = Record::Sealed {
            kind: FrameKind::Control,
            sender: 0,
            counter: 0,
            extra: 0,
            payload: &payload,
        };
        let mut bytes = Vec::new();
        record.encode_into(&mut bytes);
        write(&dgram_dir, format!("leave-{i}"), &bytes);
    }
    eprintln!(
        "{} records delivered to the engine under test; wrote {n} seeds to {}",
        deliveries.len(),
        dir.display()
    );
}
