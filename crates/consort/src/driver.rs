//! The driver: one task per node that moves datagrams, time and commands into the engine and
//! carries out what comes out. It makes no protocol decision of its own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use consort_proto::{Engine, Event, MemberEvent, Output};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::data_dir::DataDir;
use crate::discovery::{Discovery, Sighting};
use crate::net;
use crate::node::Status;

/// Requests from [`crate::Node`] handles.
pub(crate) enum Command {
    Status(oneshot::Sender<Status>),
    AddSeed(SocketAddr),
    Leave(oneshot::Sender<()>),
}

/// How often a wildcard-bound node checks whether its address changed.
const ADDR_CHECK: Duration = Duration::from_secs(1);

pub(crate) struct Driver {
    engine: Engine,
    socket: UdpSocket,
    bound: SocketAddr,
    seeds: Vec<SocketAddr>,
    data_dir: Arc<DataDir>,
    events: broadcast::Sender<Event>,
    discovery: Option<Discovery>,
    /// Addresses found over mDNS, by instance name, so a removal can be undone.
    discovered: HashMap<String, Vec<SocketAddr>>,
}

impl Driver {
    pub(crate) fn new(
        engine: Engine,
        socket: UdpSocket,
        bound: SocketAddr,
        seeds: Vec<SocketAddr>,
        data_dir: Arc<DataDir>,
        events: broadcast::Sender<Event>,
        discovery: Option<Discovery>,
    ) -> Driver {
        Driver {
            engine,
            socket,
            bound,
            seeds,
            data_dir,
            events,
            discovery,
            discovered: HashMap::new(),
        }
    }

    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut sightings: mpsc::Receiver<Sighting>,
    ) {
        let mut buf = vec![0u8; 2048];
        let mut addr_check = tokio::time::interval(ADDR_CHECK);
        let watch_addr = self.bound.ip().is_unspecified();
        loop {
            if !self.drain().await {
                break;
            }
            let deadline = self.engine.poll_timeout();
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => self.engine.handle_datagram(Instant::now(), from, &buf[..len]),
                    Err(e) => tracing::debug!("receive failed: {e}"),
                },
                () = sleep_until(deadline) => self.engine.handle_timeout(Instant::now()),
                command = commands.recv() => match command {
                    Some(Command::Status(reply)) => {
                        let _ = reply.send(self.status());
                    }
                    Some(Command::AddSeed(addr)) => self.engine.add_seed(Instant::now(), addr),
                    Some(Command::Leave(reply)) => {
                        self.leave().await;
                        let _ = reply.send(());
                        break;
                    }
                    None => {
                        self.leave().await;
                        break;
                    }
                },
                Some(sighting) = sightings.recv() => self.handle_sighting(sighting),
                _ = addr_check.tick(), if watch_addr => {
                    let addr = net::advertised_addr(self.bound, &self.seeds);
                    if let Some(addr) = addr.filter(|a| *a != self.engine.identity().addr) {
                        tracing::info!("address changed to {addr}");
                        self.engine.set_addr(Instant::now(), addr);
                    }
                }
            }
        }
        drop(self.discovery.take());
    }

    fn status(&self) -> Status {
        Status {
            identity: self.engine.identity().clone(),
            members: self.engine.members(),
            stats: self.engine.stats().clone(),
        }
    }

    async fn leave(&mut self) {
        self.engine.leave(Instant::now());
        self.drain().await;
    }

    fn handle_sighting(&mut self, sighting: Sighting) {
        let now = Instant::now();
        match sighting {
            Sighting::Found { id, addrs } => {
                for addr in &addrs {
                    self.engine.add_discovered(now, id, *addr);
                }
                self.discovered.insert(id.to_string(), addrs);
            }
            Sighting::Gone { instance } => {
                for addr in self.discovered.remove(&instance).unwrap_or_default() {
                    self.engine.remove_seed(addr);
                }
            }
        }
    }

    /// Carries out every pending output in order. Returns false if the node must stop.
    async fn drain(&mut self) -> bool {
        while let Some(output) = self.engine.poll_output() {
            match output {
                Output::Transmit { to, datagram } => {
                    if let Err(e) = self.socket.send_to(&datagram, to).await {
                        tracing::debug!("send to {to} failed: {e}");
                    }
                }
                Output::Save(state) => {
                    // Durable before any later datagram: a counter must never be reused.
                    if let Err(e) = self.data_dir.save_state(&state) {
                        tracing::error!("cannot save node state, stopping: {e}");
                        return false;
                    }
                }
                Output::Event(event) => {
                    log_event(&event);
                    let _ = self.events.send(event);
                }
                _ => {}
            }
        }
        true
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn log_event(event: &Event) {
    match event {
        Event::Member(MemberEvent::Up(m)) => {
            tracing::info!(peer = %m.id, addr = %m.addr, name = %m.name, "peer up")
        }
        Event::Member(MemberEvent::Down(m)) => tracing::warn!(peer = %m.id, "peer down"),
        Event::Member(MemberEvent::Left(m)) => tracing::info!(peer = %m.id, "peer left"),
        Event::Member(MemberEvent::Renamed { from, to }) => {
            tracing::info!(peer = %to.id, from = %from.addr, to = %to.addr, "peer renewed")
        }
        Event::Member(MemberEvent::SelfRenewed(me)) => {
            tracing::info!(addr = %me.addr, generation = me.generation, "identity renewed")
        }
        Event::Rejected {
            from,
            reason,
            suppressed,
        } => tracing::warn!(%from, %reason, suppressed, "datagram rejected"),
        _ => {}
    }
}
