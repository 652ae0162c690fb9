//! `wire_overhead_bytes`: bytes on the wire per datagram beyond the payload.
//!
//! A real node is given a seed address that is a socket of the bench: the datagrams it sends
//! there (its announces to the seed) are caught as they left the node, opened with the group
//! key, and the overhead is the datagram's length less the payload it carried. Neither baseline
//! applies (raw UDP adds nothing by definition; MQTT runs over TCP).

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::Context;
use consort_proto::wire;
use consort_proto::Keyring;
use serde_json::json;

use super::Bench;
use crate::node::{free_ports, Launch, Node, SECRET};
use crate::report::{Bound, Contender, Figure};

/// How long to wait for each datagram (the node announces to a silent seed every second).
const CATCH: Duration = Duration::from_secs(5);

/// Measures the overhead of as many datagrams as the plan has rounds.
pub fn run(bench: &mut Bench) -> Vec<Figure> {
    let mut figure = Figure::new("wire_overhead_bytes", "bytes", vec![Bound::Max(34.0)]);
    if let Err(e) = measure(bench, &mut figure) {
        bench.warn(format!("wire overhead: {e:#}"));
    }
    vec![figure]
}

fn measure(bench: &mut Bench, figure: &mut Figure) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("consort-bench-wire-")
        .tempdir()?;
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n"))?;
    let group = format!("bench-wire-{}", std::process::id());
    let tap = UdpSocket::bind("127.0.0.1:0")?;
    tap.set_read_timeout(Some(CATCH))?;
    let ports = free_ports(2)?;
    let launch = Launch {
        binary: &bench.consort,
        group: &group,
        secret_file: &secret_file,
        seeds: &[tap.local_addr()?],
        name: "wire",
    };
    let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let _node = Node::spawn(
        &launch,
        dir.path().join("node"),
        loopback(ports[0]),
        loopback(ports[1]),
    )?;
    let keyring = Keyring::from_secrets(&[SECRET], &group)?;
    let mut buf = [0u8; 2048];
    let mut sizes = Vec::new();
    for _ in 0..bench.plan.rounds {
        let (len, _) = tap
            .recv_from(&mut buf)
            .context("the node sent nothing to its seed")?;
        let opened = wire::open(&keyring, &buf[..len])
            .map_err(|reason| anyhow::anyhow!("a datagram from the node did not open: {reason}"))?;
        figure.push(Contender::Consort, (len - opened.payload.len()) as f64);
        sizes.push(json!({"datagram": len, "payload": opened.payload.len()}));
    }
    figure.extra.insert("datagrams".into(), json!(sizes));
    figure.extra.insert(
        "how".into(),
        json!("datagrams a real node sent to a seed address held by the bench, opened with the group key"),
    );
    Ok(())
}
