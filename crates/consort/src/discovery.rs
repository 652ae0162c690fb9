//! Discovery over mDNS-SD: advertise `_consort._udp.local.` and report peers of the same group.
//!
//! The TXT record carries the node id and a hash of the group name, never the secret. Anything
//! found is only a hint: a peer still has to prove it holds the group key before it becomes a
//! member.

use std::net::{IpAddr, SocketAddr};

use consort_proto::NodeId;
use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// The DNS-SD service type Consort advertises.
pub const SERVICE_TYPE: &str = "_consort._udp.local.";

/// A peer of our group seen on mDNS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Sighting {
    /// Node `id` answers at these addresses.
    Found { id: NodeId, addrs: Vec<SocketAddr> },
    /// The record with this instance name went away.
    Gone { instance: String },
}

/// The hash of a group name published in TXT records (16 hex digits of SHA-256).
pub fn group_hash(group: &str) -> String {
    let digest = Sha256::digest(format!("consort group {group}").as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A running mDNS advertisement and browser; dropping it stops both.
pub(crate) struct Discovery {
    daemon: ServiceDaemon,
}

impl Discovery {
    /// Advertises this node and starts reporting peers of `group` on `sightings`.
    pub(crate) fn start(
        id: NodeId,
        group: &str,
        port: u16,
        sightings: mpsc::Sender<Sighting>,
    ) -> Result<Discovery, mdns_sd::Error> {
        let daemon = ServiceDaemon::new()?;
        let hash = group_hash(group);
        let instance = id.to_string();
        let host = format!("consort-{instance}.local.");
        let id_text = id.to_string();
        let props = [("g", hash.as_str()), ("id", id_text.as_str())];
        let info = ServiceInfo::new(SERVICE_TYPE, &instance, &host, "", port, &props[..])?
            .enable_addr_auto();
        daemon.register(info)?;
        let events = daemon.browse(SERVICE_TYPE)?;
        tokio::spawn(async move {
            while let Ok(event) = events.recv_async().await {
                let Some(sighting) = interpret(event, id, &hash) else {
                    continue;
                };
                if sightings.send(sighting).await.is_err() {
                    break;
                }
            }
        });
        Ok(Discovery { daemon })
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        let _ = self.daemon.shutdown();
    }
}

/// Turns an mDNS event into a sighting of another node of our group, if it is one.
fn interpret(event: ServiceEvent, own: NodeId, hash: &str) -> Option<Sighting> {
    match event {
        ServiceEvent::ServiceResolved(info) => {
            if info.get_property_val_str("g") != Some(hash) {
                return None;
            }
            let id: NodeId = info.get_property_val_str("id")?.parse().ok()?;
            if id == own {
                return None;
            }
            let mut addrs: Vec<SocketAddr> = info
                .get_addresses()
                .iter()
                .map(|ip| ip.to_ip_addr())
                .filter(|ip| matches!(ip, IpAddr::V4(v4) if !v4.is_link_local()))
                .map(|ip| SocketAddr::new(ip, info.get_port()))
                .collect();
            addrs.sort();
            Some(Sighting::Found { id, addrs })
        }
        ServiceEvent::ServiceRemoved(_, fullname) => Some(Sighting::Gone {
            instance: fullname
                .strip_suffix(&format!(".{SERVICE_TYPE}"))
                .unwrap_or(&fullname)
                .to_string(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_hash_is_stable_and_hides_the_name() {
        assert_eq!(group_hash("home"), group_hash("home"));
        assert_ne!(group_hash("home"), group_hash("office"));
        assert_eq!(group_hash("home").len(), 16);
        assert!(!group_hash("home").contains("home"));
    }
}
