//! Services this daemon provides, answered by WebSocket clients (`consort serve`, the Python
//! client's `@serve`): requests go to the attached clients in turn; with none attached, the
//! caller gets a clear error.

use std::collections::HashMap;
use std::sync::Arc;

use consort::{IncomingRequest, Node};
use serde_json::{json, Value as Json};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;

use super::messages::body_json;

/// One WebSocket session, as the dispatcher knows it.
pub type ConnId = u64;

struct Entry {
    handlers: Vec<(ConnId, mpsc::UnboundedSender<Json>)>,
    turn: usize,
    /// Advertised from the command line: stays while no client is attached.
    pinned: bool,
    pump: JoinHandle<()>,
}

#[derive(Default)]
struct Inner {
    services: HashMap<String, Entry>,
    pending: HashMap<u64, (ConnId, IncomingRequest)>,
    next_request: u64,
}

/// The services served here and their handlers.
pub struct Dispatcher {
    node: Arc<Node>,
    inner: Arc<Mutex<Inner>>,
}

impl Dispatcher {
    pub fn new(node: Arc<Node>) -> Dispatcher {
        Dispatcher {
            node,
            inner: Arc::default(),
        }
    }

    /// Advertises `service` from the command line.
    pub async fn pin(&self, service: &str) -> Result<(), String> {
        let mut inner = self.inner.lock().await;
        self.ensure(&mut inner, service).await?;
        inner.services.get_mut(service).expect("ensured").pinned = true;
        Ok(())
    }

    /// Attaches a session's handler for `service` (advertising it if needed).
    pub async fn attach(
        &self,
        service: &str,
        conn: ConnId,
        tx: mpsc::UnboundedSender<Json>,
    ) -> Result<(), String> {
        let mut inner = self.inner.lock().await;
        self.ensure(&mut inner, service).await?;
        let entry = inner.services.get_mut(service).expect("ensured");
        if !entry.handlers.iter().any(|(c, _)| *c == conn) {
            entry.handlers.push((conn, tx));
        }
        Ok(())
    }

    async fn ensure(&self, inner: &mut Inner, service: &str) -> Result<(), String> {
        if inner.services.contains_key(service) {
            return Ok(());
        }
        let mut handle = self.node.serve(service).await.map_err(|e| e.to_string())?;
        let shared = self.inner.clone();
        let name = service.to_string();
        let pump = tokio::spawn(async move {
            while let Some(request) = handle.next().await {
                dispatch(&shared, &name, request).await;
            }
        });
        inner.services.insert(
            service.to_string(),
            Entry {
                handlers: Vec::new(),
                turn: 0,
                pinned: false,
                pump,
            },
        );
        Ok(())
    }

    /// A session answered request `id`.
    pub async fn respond(&self, conn: ConnId, id: u64, result: Result<Vec<u8>, String>) -> bool {
        let mut inner = self.inner.lock().await;
        match inner.pending.remove(&id) {
            Some((owner, request)) if owner == conn => {
                request.respond(result);
                true
            }
            Some(other) => {
                inner.pending.insert(id, other);
                false
            }
            None => false,
        }
    }

    /// A session ended: its handlers go, its unanswered requests fail, and services nobody
    /// handles any more stop being advertised (unless pinned).
    pub async fn detach(&self, conn: ConnId) {
        let mut inner = self.inner.lock().await;
        inner.pending.retain(|_, (owner, _)| *owner != conn);
        let mut unused = Vec::new();
        for (name, entry) in inner.services.iter_mut() {
            entry.handlers.retain(|(c, _)| *c != conn);
            if entry.handlers.is_empty() && !entry.pinned {
                unused.push(name.clone());
            }
        }
        for name in unused {
            if let Some(entry) = inner.services.remove(&name) {
                // Dropping the service handle in the task stops advertising it.
                entry.pump.abort();
            }
        }
    }
}

/// Hands a request to the next attached handler, or answers it with an error.
async fn dispatch(inner: &Mutex<Inner>, service: &str, request: IncomingRequest) {
    let mut inner = inner.lock().await;
    inner.next_request += 1;
    let id = inner.next_request;
    let message = json!({
        "type": "request",
        "id": id,
        "from": request.from().to_string(),
        "service": service,
        "body": body_json(request.body()),
    });
    let Some(entry) = inner.services.get_mut(service) else {
        return request.respond(Err(format!("service {service:?} is no longer served here")));
    };
    entry.handlers.retain(|(_, tx)| !tx.is_closed());
    if entry.handlers.is_empty() {
        let error = format!("no handler is attached to service {service:?} on this node");
        return request.respond(Err(error));
    }
    let (conn, tx) = entry.handlers[entry.turn % entry.handlers.len()].clone();
    entry.turn = entry.turn.wrapping_add(1);
    if tx.send(message).is_ok() {
        inner.pending.insert(id, (conn, request));
    }
}
