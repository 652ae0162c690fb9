//! The physical floor: raw UDP on loopback between this process and peer processes (the bench
//! binary run again as `consort-bench udp-peer`), with no encryption, storage or protocol.
//!
//! A peer echoes ping datagrams (latency is half the round trip), counts blast datagrams
//! (throughput is what every peer received), and reports its count when asked.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::stats::Rng;

/// First byte of a datagram the peer echoes.
const PING: u8 = b'P';
/// First byte of a datagram the peer counts.
const BLAST: u8 = b'B';
/// First byte of a request for the count (answered with 8 bytes, little endian; then reset).
const REPORT: u8 = b'R';

/// How long a ping or a report may take before it counts as lost.
const ANSWER: Duration = Duration::from_secs(1);

/// Runs a peer: binds a loopback port, prints it on stdout, then serves until killed.
pub fn serve_peer() -> anyhow::Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", socket.local_addr()?.port())?;
    out.flush()?;
    drop(out);
    let mut count: u64 = 0;
    let mut buf = [0u8; 2048];
    loop {
        let (len, from) = socket.recv_from(&mut buf)?;
        match buf.first() {
            Some(&PING) => {
                socket.send_to(&buf[..len], from)?;
            }
            Some(&BLAST) => count += 1,
            Some(&REPORT) => {
                socket.send_to(&count.to_le_bytes(), from)?;
                count = 0;
            }
            _ => {}
        }
    }
}

/// A peer process, killed when dropped.
pub struct Peer {
    child: Child,
    addr: SocketAddr,
}

impl Peer {
    /// Starts a peer (this binary, `udp-peer`) and reads its port.
    pub fn start() -> anyhow::Result<Peer> {
        let exe = std::env::current_exe().context("cannot find the bench binary")?;
        let mut child = Command::new(exe)
            .arg("udp-peer")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start a UDP peer")?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("the peer's stdout")?;
        BufReader::new(stdout).read_line(&mut line)?;
        let port: u16 = match line.trim().parse() {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                bail!("the UDP peer printed {line:?} instead of its port");
            }
        };
        Ok(Peer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A socket of this process to talk to peers from.
fn local_socket() -> anyhow::Result<UdpSocket> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(ANSWER))?;
    Ok(socket)
}

/// One-way latencies (half the round trip) of `samples` pings of `size` bytes, spaced by
/// `gap` (drawn from a range, as the other contenders' writes are).
pub fn ping_pong(
    peer: &Peer,
    samples: usize,
    size: usize,
    mut gap: impl FnMut() -> Duration,
) -> anyhow::Result<Vec<Duration>> {
    let socket = local_socket()?;
    let mut datagram = vec![0u8; size.max(9)];
    datagram[0] = PING;
    let mut answer = [0u8; 2048];
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples as u64 {
        datagram[1..9].copy_from_slice(&i.to_le_bytes());
        let sent = Instant::now();
        socket.send_to(&datagram, peer.addr)?;
        // No answer within a second: lost, no sample.
        while let Ok((len, _)) = socket.recv_from(&mut answer) {
            if len == datagram.len() && answer[1..9] == datagram[1..9] {
                latencies.push(sent.elapsed() / 2);
                break;
            }
        }
        std::thread::sleep(gap());
    }
    Ok(latencies)
}

/// Sends `size`-byte datagrams to every peer in turn for `window`; returns the updates that
/// reached every peer (the least any peer counted) and the time they were sent over.
pub fn blast(peers: &[Peer], size: usize, window: Duration) -> anyhow::Result<(u64, Duration)> {
    let socket = local_socket()?;
    report(&socket, peers)?; // reset the counts
    let mut datagram = vec![0u8; size.max(1)];
    datagram[0] = BLAST;
    let start = Instant::now();
    while start.elapsed() < window {
        for _ in 0..64 {
            for peer in peers {
                // A full socket buffer drops the datagram, as the network would.
                let _ = socket.send_to(&datagram, peer.addr);
            }
        }
    }
    let elapsed = start.elapsed();
    std::thread::sleep(Duration::from_millis(50));
    let least = report(&socket, peers)?.into_iter().min().unwrap_or(0);
    Ok((least, elapsed))
}

/// Asks every peer for its count (resetting it).
fn report(socket: &UdpSocket, peers: &[Peer]) -> anyhow::Result<Vec<u64>> {
    let mut counts = Vec::with_capacity(peers.len());
    let mut answer = [0u8; 64];
    for peer in peers {
        let mut count = None;
        for _ in 0..5 {
            socket.send_to(&[REPORT], peer.addr)?;
            match socket.recv_from(&mut answer) {
                Ok((8, from)) if from == peer.addr => {
                    count = Some(u64::from_le_bytes(answer[..8].try_into()?));
                    break;
                }
                _ => continue,
            }
        }
        counts.push(count.context("a UDP peer did not report its count")?);
    }
    Ok(counts)
}

/// The gap between samples: 1 to 3 ms, so that samples do not fall in step with any timer.
pub fn sample_gap(rng: &mut Rng) -> Duration {
    rng.between(Duration::from_millis(1), Duration::from_millis(3))
}
