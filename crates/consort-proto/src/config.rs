//! Protocol timings and limits, tuned for a LAN.

use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use crate::messaging::MessagingConfig;
use crate::wire::MAX_PAYLOAD;

/// How the core behaves on the network. The defaults suit devices on one LAN.
#[derive(Clone, Debug)]
pub struct Config {
    /// How often each node probes one random member.
    pub probe_period: Duration,
    /// How long to wait for a direct ack before asking others to probe indirectly.
    pub probe_rtt: Duration,
    /// How many members are asked to probe indirectly.
    pub indirect_probes: usize,
    /// How long a member stays suspect before it is declared down, unless it refutes.
    pub suspect_timeout: Duration,
    /// How often membership updates are gossiped to a few random members.
    pub gossip_period: Duration,
    /// How many members receive each periodic gossip.
    pub gossip_fanout: usize,
    /// How many times each membership update is piggybacked.
    ///
    /// A suspected member must hear of the suspicion to refute it, and each node spends its
    /// transmissions within a few gossip rounds. At 8, a 10-node group at 10% loss saw a false
    /// `down` about every 90 virtual minutes (consort-sim); at 16, none in 600 minutes, nor at 20%
    /// loss with 20 nodes. Updates are a few dozen bytes, so the cost on a LAN is small.
    pub max_transmissions: u8,
    /// How often seeds and discovered addresses that are not live members are announced to.
    pub announce_period: Duration,
    /// How long a down or left member is remembered (and listed).
    pub remember_down: Duration,
    /// Minimum time between two log events for the same rejection reason.
    pub reject_log_interval: Duration,
    /// Message and service limits.
    pub messaging: MessagingConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            probe_period: Duration::from_millis(300),
            probe_rtt: Duration::from_millis(100),
            indirect_probes: 3,
            suspect_timeout: Duration::from_millis(600),
            gossip_period: Duration::from_millis(100),
            gossip_fanout: 3,
            max_transmissions: 16,
            announce_period: Duration::from_secs(1),
            remember_down: Duration::from_secs(3600),
            reject_log_interval: Duration::from_secs(1),
            messaging: MessagingConfig::default(),
        }
    }
}

impl Config {
    /// The foca configuration these settings stand for.
    pub(crate) fn foca(&self) -> foca::Config {
        let mut c = foca::Config::simple();
        c.probe_period = self.probe_period;
        c.probe_rtt = self.probe_rtt;
        c.num_indirect_probes = NonZeroUsize::new(self.indirect_probes.max(1)).expect("max(1)");
        c.max_transmissions = NonZeroU8::new(self.max_transmissions.max(1)).expect("max(1)");
        c.suspect_to_down_after = self.suspect_timeout;
        c.remove_down_after = Some(self.remember_down);
        c.max_packet_size = NonZeroUsize::new(MAX_PAYLOAD).expect("non-zero");
        c.notify_down_members = true;
        c.periodic_gossip = Some(foca::PeriodicParams {
            frequency: self.gossip_period,
            num_members: NonZeroUsize::new(self.gossip_fanout.max(1)).expect("max(1)"),
        });
        c.periodic_announce = Some(foca::PeriodicParams {
            frequency: Duration::from_secs(10),
            num_members: NonZeroUsize::new(1).expect("non-zero"),
        });
        c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: Duration::from_secs(2),
            num_members: NonZeroUsize::new(2).expect("non-zero"),
        });
        c
    }
}
