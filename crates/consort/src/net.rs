//! Sockets: binding with a free-port fallback, and finding the address peers reach us at.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::net::UdpSocket;

/// The mDNS multicast group: a route to it names the LAN interface even with no seed.
const MDNS_V4: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(224, 0, 0, 251)), 5353);

/// Socket buffer asked for: bursts of writes arrive faster than one task drains them, and a
/// datagram the kernel drops is only repaired later by anti-entropy. The kernel caps it at
/// `net.core.rmem_max`/`wmem_max`.
const SOCKET_BUFFER: usize = 4 << 20;

/// Binds UDP at `addr`; if the port is taken and `fallback` is set, binds a free port instead.
pub(crate) async fn bind_udp(addr: SocketAddr, fallback: bool) -> io::Result<UdpSocket> {
    let socket = match UdpSocket::bind(addr).await {
        Err(e) if fallback && e.kind() == io::ErrorKind::AddrInUse => {
            UdpSocket::bind(SocketAddr::new(addr.ip(), 0)).await
        }
        other => other,
    }?;
    let sock = socket2::SockRef::from(&socket);
    // Best effort: a smaller buffer only means more repairs under load.
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    Ok(socket)
}

/// The address to advertise for a socket bound at `bound`, or `None` if no interface routes
/// anywhere useful (no address yet, cable out).
///
/// A specific bind IP is used as is. For a wildcard bind, the kernel's choice of source IP
/// towards the first hint (a seed), else towards the mDNS group, names the interface peers reach;
/// UDP `connect` only consults the routing table, it sends nothing.
pub(crate) fn advertised_addr(bound: SocketAddr, hints: &[SocketAddr]) -> Option<SocketAddr> {
    if !bound.ip().is_unspecified() {
        return Some(bound);
    }
    hints
        .iter()
        .copied()
        .chain([MDNS_V4])
        .filter(|h| h.is_ipv4() == bound.is_ipv4())
        .find_map(source_ip_towards)
        .map(|ip| SocketAddr::new(ip, bound.port()))
}

fn source_ip_towards(target: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = std::net::UdpSocket::bind(any).ok()?;
    socket.connect(target).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specific_bind_is_advertised_as_is() {
        let bound: SocketAddr = "127.0.0.1:7470".parse().unwrap();
        assert_eq!(advertised_addr(bound, &[]), Some(bound));
    }

    #[test]
    fn wildcard_bind_uses_the_route_to_the_seed() {
        let bound: SocketAddr = "0.0.0.0:7470".parse().unwrap();
        let seed: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(
            advertised_addr(bound, &[seed]),
            Some("127.0.0.1:7470".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn busy_port_falls_back_only_when_allowed() {
        let first = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let taken = first.local_addr().unwrap();
        let err = bind_udp(taken, false).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        let other = bind_udp(taken, true).await.unwrap();
        assert_ne!(other.local_addr().unwrap().port(), taken.port());
    }
}
