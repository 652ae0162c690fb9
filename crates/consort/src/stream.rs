//! TCP streams between nodes: one outbound connection per peer for what this node sends, and
//! accepted connections for what peers send. Frames are sealed by `consort_proto::stream`; this
//! module only moves bytes and reports opened frames to the driver.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use consort_proto::stream::{self, Hello, Role, HELLO_LEN};
use consort_proto::{Keyring, NodeId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How long connecting and the hello exchange may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Frames queued per outbound connection before the sender waits.
const QUEUE: usize = 1024;

/// A frame that opened, from an authenticated peer.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) from: NodeId,
    pub(crate) payload: Vec<u8>,
}

/// Outbound connections by peer, and the accept loop.
pub(crate) struct Streams {
    own: NodeId,
    keyring: Arc<Keyring>,
    outbound: HashMap<NodeId, (SocketAddr, mpsc::Sender<Vec<u8>>)>,
}

impl Streams {
    /// Starts accepting on `listener`; opened frames go to `received`.
    pub(crate) fn start(
        own: NodeId,
        keyring: Arc<Keyring>,
        listener: TcpListener,
        received: mpsc::Sender<Received>,
    ) -> Streams {
        tokio::spawn(accept_loop(own, keyring.clone(), listener, received));
        Streams {
            own,
            keyring,
            outbound: HashMap::new(),
        }
    }

    /// Queues `payload` for `node` at `addr`, connecting first if needed. A broken connection is
    /// replaced on the next send; what was queued on it is lost (the protocol retries).
    pub(crate) async fn send(&mut self, node: NodeId, addr: SocketAddr, payload: Vec<u8>) {
        let live = self
            .outbound
            .get(&node)
            .is_some_and(|(a, tx)| *a == addr && !tx.is_closed());
        if !live {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(outbound(self.own, self.keyring.clone(), addr, rx));
            self.outbound.insert(node, (addr, tx));
        }
        let (_, tx) = &self.outbound[&node];
        if tx.send(payload).await.is_err() {
            self.outbound.remove(&node);
        }
    }

    /// Drops the connection to a node that left or failed.
    pub(crate) fn forget(&mut self, node: NodeId) {
        self.outbound.remove(&node);
    }
}

async fn accept_loop(
    own: NodeId,
    keyring: Arc<Keyring>,
    listener: TcpListener,
    received: mpsc::Sender<Received>,
) {
    loop {
        let Ok((socket, peer)) = listener.accept().await else {
            continue;
        };
        if received.is_closed() {
            break;
        }
        let (keyring, received) = (keyring.clone(), received.clone());
        tokio::spawn(async move {
            if let Err(e) = inbound(own, &keyring, socket, received).await {
                tracing::debug!(%peer, "inbound stream closed: {e}");
            }
        });
    }
}

/// Exchanges hellos and derives the session. Both sides send first, then read.
async fn handshake(
    own: NodeId,
    keyring: &Keyring,
    socket: &mut TcpStream,
    role: Role,
) -> Result<(stream::Sealer, stream::Opener, NodeId), String> {
    let mut salt = [0u8; 28];
    rand::fill(&mut salt);
    let mut ours = Hello::new(keyring, own, salt);
    let exchange = async {
        let mut buf = [0u8; HELLO_LEN];
        if role == Role::Initiator {
            socket.write_all(&ours.encode()).await?;
            socket.read_exact(&mut buf).await?;
        } else {
            socket.read_exact(&mut buf).await?;
        }
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange)
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let theirs = Hello::decode(&buf).map_err(|e| e.to_string())?;
    if role == Role::Responder {
        // Answer with the initiator's key id, so both use a key both hold.
        ours.key_id = theirs.key_id;
        socket
            .write_all(&ours.encode())
            .await
            .map_err(|e| e.to_string())?;
    }
    let (sealer, opener) =
        stream::session(keyring, role, &ours, &theirs).map_err(|e| e.to_string())?;
    Ok((sealer, opener, theirs.node))
}

async fn inbound(
    own: NodeId,
    keyring: &Keyring,
    mut socket: TcpStream,
    received: mpsc::Sender<Received>,
) -> Result<(), String> {
    let (_, mut opener, from) = handshake(own, keyring, &mut socket, Role::Responder).await?;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while let Some(payload) = opener.open(&mut buf).map_err(|e| e.to_string())? {
            if received.send(Received { from, payload }).await.is_err() {
                return Ok(());
            }
        }
        let n = socket.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn outbound(
    own: NodeId,
    keyring: Arc<Keyring>,
    addr: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    let connect = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr)).await;
    let mut socket = match connect {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return tracing::debug!(%addr, "stream connect failed: {e}"),
        Err(_) => return tracing::debug!(%addr, "stream connect timed out"),
    };
    let _ = socket.set_nodelay(true);
    let mut sealer = match handshake(own, &keyring, &mut socket, Role::Initiator).await {
        Ok((sealer, _, _)) => sealer,
        Err(e) => return tracing::debug!(%addr, "stream handshake failed: {e}"),
    };
    while let Some(payload) = rx.recv().await {
        let mut frames = sealer.seal(&payload);
        // Coalesce what is already queued into one write.
        while let Ok(more) = rx.try_recv() {
            frames.extend(sealer.seal(&more));
        }
        if let Err(e) = socket.write_all(&frames).await {
            return tracing::debug!(%addr, "stream write failed: {e}");
        }
    }
}
