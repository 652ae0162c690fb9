//! Bytes sent over the TCP streams between nodes, read from the kernel's socket table
//! (`ss -tin`): the nodes' metrics count datagrams only, and a stream carries what does not fit
//! in one.

use std::collections::HashMap;
use std::process::Command;

/// Bytes sent so far on each established connection touching one of some ports.
#[derive(Debug, Default, Clone)]
pub struct TcpBytes(HashMap<(String, String), u64>);

impl TcpBytes {
    /// Reads the socket table; `None` if `ss` is not available.
    pub fn snapshot(ports: &[u16]) -> Option<TcpBytes> {
        let output = Command::new("ss")
            .args(["-tinH", "state", "established"])
            .output()
            .ok()
            .filter(|o| o.status.success())?;
        Some(parse(&String::from_utf8_lossy(&output.stdout), ports))
    }

    /// Bytes sent since `earlier`, over both ends of every connection (connections opened in
    /// between count whole).
    pub fn sent_since(&self, earlier: &TcpBytes) -> u64 {
        self.0
            .iter()
            .map(|(conn, &now)| now.saturating_sub(earlier.0.get(conn).copied().unwrap_or(0)))
            .sum()
    }
}

/// `ss -tinH state established` output: a line `RECV-Q SEND-Q LOCAL PEER` per socket, then an
/// indented line of details holding `bytes_sent:N` once anything was sent.
fn parse(text: &str, ports: &[u16]) -> TcpBytes {
    let port_of = |addr: &str| addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
    let mut bytes = HashMap::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            current = match fields.as_slice() {
                [_, _, local, peer, ..] => {
                    let ours = [local, peer]
                        .iter()
                        .any(|a| port_of(a).is_some_and(|p| ports.contains(&p)));
                    ours.then(|| (local.to_string(), peer.to_string()))
                }
                _ => None,
            };
            continue;
        }
        let Some(conn) = current.take() else { continue };
        let sent = line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("bytes_sent:"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        bytes.insert(conn, sent);
    }
    TcpBytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "0      0      127.0.0.1:7470 127.0.0.1:47832\n\
        \t bbr wscale:10,10 rto:200 bytes_sent:1000 bytes_acked:1001 segs_out:3\n\
        0      0      127.0.0.1:47832 127.0.0.1:7470\n\
        \t bbr wscale:10,10 rto:200 bytes_received:1000 segs_in:3\n\
        0      0      127.0.0.1:9999 127.0.0.1:40000\n\
        \t bbr bytes_sent:555\n";

    #[test]
    fn counts_connections_on_the_given_ports() {
        let before = TcpBytes::default();
        let now = parse(SAMPLE, &[7470]);
        assert_eq!(now.0.len(), 2);
        assert_eq!(now.sent_since(&before), 1000);
        let later = parse(
            &SAMPLE.replace("bytes_sent:1000", "bytes_sent:1500"),
            &[7470],
        );
        assert_eq!(later.sent_since(&now), 500);
    }
}
