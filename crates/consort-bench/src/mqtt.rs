//! The Mosquitto baseline: the broker from Debian on a free loopback port with a config of our
//! own, and publishers and subscribers on rumqttc's blocking client (QoS 0, retained).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rumqttc::{Client, Connection, Event, MqttOptions, NetworkOptions, Packet, QoS};
use tempfile::TempDir;

use crate::node::free_ports;
use crate::wait;

/// Requests a client may queue before `publish` blocks.
const QUEUE: usize = 10_000;

/// How long connecting and subscribing may take.
const CONNECT: Duration = Duration::from_secs(5);

/// The `mosquitto` binary on `PATH`, or where Debian installs it (`/usr/sbin`, often not on a
/// user's `PATH`).
pub fn find_broker() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("mosquitto"))
        .find(|candidate| candidate.is_file())
}

/// A Mosquitto process, killed when dropped.
pub struct Broker {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Broker {
    /// Starts `binary` on a free loopback port, in memory only, with Nagle off (as the clients
    /// have it) and no limit on queued messages; waits until it accepts connections.
    pub fn start(binary: &Path) -> anyhow::Result<Broker> {
        let dir = tempfile::Builder::new()
            .prefix("consort-bench-mosquitto-")
            .tempdir()?;
        let port = free_ports(1)?[0];
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 set_tcp_nodelay true\nmax_queued_messages 0\nmax_inflight_messages 0\n\
                 log_dest stderr\nlog_type error\nlog_type warning\n"
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("mosquitto.log"))?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot run {}", binary.display()))?;
        let mut broker = Broker {
            child,
            port,
            _dir: dir,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let up = wait::until(CONNECT, || {
            if let Ok(Some(exit)) = broker.child.try_wait() {
                return Some(Err(exit));
            }
            TcpStream::connect(addr).ok().map(|_| Ok(()))
        });
        match up {
            Some(Ok(())) => Ok(broker),
            Some(Err(exit)) => bail!("mosquitto exited with {exit}"),
            None => {
                let _ = broker.child.kill();
                bail!("mosquitto did not accept connections within {CONNECT:?}")
            }
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client connection to it, named `id`.
    fn options(&self, id: &str) -> MqttOptions {
        let mut options = MqttOptions::new(id, "127.0.0.1", self.port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_request_channel_capacity(QUEUE);
        options.set_max_packet_size(1 << 20, 1 << 20);
        options
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A connected client and the thread that drives its connection.
fn connect(
    broker: &Broker,
    id: &str,
    mut on_publish: impl FnMut(&rumqttc::Publish, Instant) + Send + 'static,
) -> anyhow::Result<(Client, mpsc::Receiver<Packet>)> {
    let (client, mut connection) = Client::new(broker.options(id), QUEUE);
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    connection.eventloop.set_network_options(network);
    let (acks, acked) = mpsc::channel();
    thread::Builder::new()
        .name(format!("mqtt-{id}"))
        .spawn(move || drive(&mut connection, &acks, &mut on_publish))?;
    match acked.recv_timeout(CONNECT) {
        Ok(Packet::ConnAck(_)) => Ok((client, acked)),
        Ok(other) => bail!("mosquitto answered {other:?} to a connect"),
        Err(_) => bail!("mosquitto did not accept the client {id} within {CONNECT:?}"),
    }
}

/// Polls the connection until the client is dropped or the connection fails; publishes go to
/// `on_publish`, acknowledgements to `acks`.
fn drive(
    connection: &mut Connection,
    acks: &mpsc::Sender<Packet>,
    on_publish: &mut impl FnMut(&rumqttc::Publish, Instant),
) {
    for event in connection.iter() {
        match event {
            Ok(Event::Incoming(Packet::Publish(publish))) => on_publish(&publish, Instant::now()),
            Ok(Event::Incoming(ack @ (Packet::ConnAck(_) | Packet::SubAck(_)))) => {
                let _ = acks.send(ack);
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// A client that publishes retained QoS 0 messages.
pub struct Publisher {
    client: Client,
}

impl Publisher {
    /// Connects as `id`.
    pub fn connect(broker: &Broker, id: &str) -> anyhow::Result<Publisher> {
        let (client, _acks) = connect(broker, id, |_, _| {})?;
        Ok(Publisher { client })
    }

    /// Publishes `payload` on `topic` (QoS 0, retained); blocks only while the queue is full.
    pub fn publish(&self, topic: String, payload: Vec<u8>) -> anyhow::Result<()> {
        self.client
            .publish(topic, QoS::AtMostOnce, true, payload)
            .context("the MQTT client stopped")
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.client.disconnect();
    }
}

/// A client subscribed to a topic filter; every message goes to its handler, on the client's
/// own thread.
pub struct Subscriber {
    client: Client,
}

impl Subscriber {
    /// Connects as `id`, subscribes to `filter` and waits for the broker's acknowledgement.
    pub fn start(
        broker: &Broker,
        id: &str,
        filter: &str,
        on_publish: impl FnMut(&rumqttc::Publish, Instant) + Send + 'static,
    ) -> anyhow::Result<Subscriber> {
        let (client, acks) = connect(broker, id, on_publish)?;
        client
            .subscribe(filter, QoS::AtMostOnce)
            .context("the MQTT client stopped")?;
        match acks.recv_timeout(CONNECT) {
            Ok(Packet::SubAck(_)) => Ok(Subscriber { client }),
            _ => bail!("mosquitto did not acknowledge the subscription of {id} to {filter}"),
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.client.disconnect();
    }
}
