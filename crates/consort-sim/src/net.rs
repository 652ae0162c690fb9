//! The simulated network: who is at which address, which links are cut, and what happens to each
//! datagram (lost, delayed, duplicated).
//!
//! Every random choice is drawn from the simulator's seeded generator, so a seed fixes the fate of
//! every datagram. Reordering is not a separate knob: two datagrams on the same link swap places
//! whenever the jitter of the second is smaller than the gap between them.

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::RngExt;

/// The port every simulated node listens on.
pub const PORT: u16 = 7470;

/// The `n`th address of the simulated LAN: `10.213.x.y:7470`, never repeating for `n < 62_500`.
pub fn lan_addr(n: usize) -> SocketAddr {
    let n = n % 62_500;
    let (hi, lo) = ((n / 250) as u8, (n % 250) as u8 + 1);
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 213, hi, lo), PORT))
}

/// How datagrams travel. The defaults are a quiet wired LAN: 0.2 ms to 1 ms, no loss.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConfig {
    /// The least one-way delay of a datagram.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` for each datagram; the source of reordering.
    pub jitter: Duration,
    /// Probability that a datagram is lost, from 0 to 1.
    pub loss: f64,
    /// Probability that a delivered datagram arrives twice (each copy with its own delay).
    pub duplicate: f64,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            latency: Duration::from_micros(200),
            jitter: Duration::from_micros(800),
            loss: 0.0,
            duplicate: 0.0,
        }
    }
}

/// Extra delay on one direction of a link, on top of [`NetConfig`]'s: an asymmetric path (a busy
/// uplink, a Wi-Fi hop that queues). Applies to datagrams only, not to stream frames.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkDelay {
    /// Added to every datagram.
    pub latency: Duration,
    /// Up to this much more, drawn uniformly, for each datagram that meets a burst.
    pub jitter: Duration,
    /// Probability that a datagram meets a burst of queueing (and so gets jitter); 1 for all.
    pub burst: f64,
}

/// Counts of what happened to datagrams.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams handed to the network by engines.
    pub sent: u64,
    /// Datagrams given to a running engine (duplicates included).
    pub delivered: u64,
    /// Datagrams dropped by the loss model.
    pub lost: u64,
    /// Datagrams dropped because the link was cut at delivery time.
    pub blocked: u64,
    /// Datagrams to an address where no running node listens.
    pub unreachable: u64,
    /// Extra copies made by the duplication model.
    pub duplicated: u64,
}

/// Addresses, cut links and the datagram model.
#[derive(Debug, Default)]
pub(crate) struct Network {
    pub(crate) config: NetConfig,
    /// Which node listens at each address.
    owners: HashMap<SocketAddr, usize>,
    /// Directed links `(from, to)` that drop everything.
    cut: BTreeSet<(usize, usize)>,
    /// Directed links `(from, to)` slower than the rest.
    slow: HashMap<(usize, usize), LinkDelay>,
    pub(crate) stats: NetStats,
}

impl Network {
    pub(crate) fn new(config: NetConfig) -> Network {
        Network {
            config,
            ..Network::default()
        }
    }

    /// The node listening at `addr`, if any.
    pub(crate) fn owner(&self, addr: SocketAddr) -> Option<usize> {
        self.owners.get(&addr).copied()
    }

    /// Moves `node` from `old` (if any) to `new`.
    pub(crate) fn bind(&mut self, node: usize, old: Option<SocketAddr>, new: SocketAddr) {
        if let Some(old) = old {
            if self.owners.get(&old) == Some(&node) {
                self.owners.remove(&old);
            }
        }
        self.owners.insert(new, node);
    }

    /// Whether datagrams from `from` reach `to`.
    pub(crate) fn is_open(&self, from: usize, to: usize) -> bool {
        !self.cut.contains(&(from, to))
    }

    /// Cuts the directed link `from -> to`.
    pub(crate) fn cut(&mut self, from: usize, to: usize) {
        if from != to {
            self.cut.insert((from, to));
        }
    }

    /// Restores the directed link `from -> to`.
    pub(crate) fn mend(&mut self, from: usize, to: usize) {
        self.cut.remove(&(from, to));
    }

    /// Restores every link.
    pub(crate) fn heal(&mut self) {
        self.cut.clear();
    }

    /// Whether any link is cut.
    pub(crate) fn is_partitioned(&self) -> bool {
        !self.cut.is_empty()
    }

    /// Slows the directed link `from -> to` by `delay` from now on (replacing any earlier one).
    pub(crate) fn slow_down(&mut self, from: usize, to: usize, delay: LinkDelay) {
        self.slow.insert((from, to), delay);
    }

    /// Gives every link the network's delay again.
    pub(crate) fn clear_delays(&mut self) {
        self.slow.clear();
    }

    /// The delays after which copies of one datagram from `from` to `to` (if anyone listens
    /// there) arrive: none if lost, two if duplicated.
    pub(crate) fn fate(
        &mut self,
        rng: &mut StdRng,
        from: usize,
        to: Option<usize>,
    ) -> Vec<Duration> {
        self.stats.sent += 1;
        if self.config.loss > 0.0 && rng.random_bool(self.config.loss.min(1.0)) {
            self.stats.lost += 1;
            return Vec::new();
        }
        let link = to.and_then(|to| self.slow.get(&(from, to)).copied());
        let mut delays = vec![self.delay(rng, link)];
        if self.config.duplicate > 0.0 && rng.random_bool(self.config.duplicate.min(1.0)) {
            self.stats.duplicated += 1;
            delays.push(self.delay(rng, link));
        }
        delays
    }

    /// One datagram's delay. Draws nothing more from `rng` for a link that is not slowed, so
    /// that seeds replay as they did before link delays existed.
    fn delay(&self, rng: &mut StdRng, link: Option<LinkDelay>) -> Duration {
        let mut delay = self.config.latency + uniform(rng, self.config.jitter);
        if let Some(link) = link {
            delay += link.latency;
            if link.burst > 0.0 && rng.random_bool(link.burst.min(1.0)) {
                delay += uniform(rng, link.jitter);
            }
        }
        delay
    }
}

/// A duration drawn uniformly from `0..=max` (nothing drawn when `max` is zero).
fn uniform(rng: &mut StdRng, max: Duration) -> Duration {
    let max = max.as_nanos() as u64;
    if max == 0 {
        Duration::ZERO
    } else {
        Duration::from_nanos(rng.random_range(0..=max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn lan_addresses_are_distinct_and_start_at_one() {
        assert_eq!(lan_addr(0), "10.213.0.1:7470".parse().unwrap());
        assert_eq!(lan_addr(249), "10.213.0.250:7470".parse().unwrap());
        assert_eq!(lan_addr(250), "10.213.1.1:7470".parse().unwrap());
    }

    #[test]
    fn fate_follows_loss_and_latency_bounds() {
        let mut net = Network::new(NetConfig {
            loss: 0.5,
            ..NetConfig::default()
        });
        let mut rng = StdRng::seed_from_u64(7);
        let mut arrived = 0;
        for _ in 0..1000 {
            for d in net.fate(&mut rng, 0, Some(1)) {
                assert!(d >= Duration::from_micros(200) && d <= Duration::from_millis(1));
                arrived += 1;
            }
        }
        assert!((400..600).contains(&arrived), "{arrived}");
        assert_eq!(net.stats.lost + arrived, 1000);
    }

    #[test]
    fn slow_links_are_directional_and_bursty() {
        let mut net = Network::default();
        let delay = LinkDelay {
            latency: Duration::from_millis(2),
            jitter: Duration::from_millis(10),
            burst: 0.25,
        };
        net.slow_down(1, 2, delay);
        let mut rng = StdRng::seed_from_u64(7);
        let (mut bursts, floor) = (0, Duration::from_micros(2200));
        for _ in 0..1000 {
            let d = net.fate(&mut rng, 1, Some(2))[0];
            assert!(
                d >= floor && d <= floor + Duration::from_micros(10_800),
                "{d:?}"
            );
            bursts += usize::from(d > floor + Duration::from_micros(800));
            let back = net.fate(&mut rng, 2, Some(1))[0];
            assert!(back <= Duration::from_millis(1), "{back:?}");
        }
        assert!((150..330).contains(&bursts), "{bursts}");
        net.clear_delays();
        assert!(net.fate(&mut rng, 1, Some(2))[0] <= Duration::from_millis(1));
    }

    #[test]
    fn cut_links_are_directional() {
        let mut net = Network::default();
        net.cut(1, 2);
        assert!(!net.is_open(1, 2));
        assert!(net.is_open(2, 1));
        net.heal();
        assert!(net.is_open(1, 2));
    }
}
