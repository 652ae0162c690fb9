//! `GET /v1/ws`: one WebSocket carrying group events, messages and state changes to the client,
//! and sends, calls and service answers from it. Every frame is a JSON text.
//!
//! From the client (`op`):
//! - `{"op":"listen"}`: group events and messages from now on, starting with the current peers
//!   and role (`peer_added`, `leader_changed`, `promote_leader`...).
//! - `{"op":"watch","prefix":P,"from":SEQ}`: state changes and pulses (`changed`, `pulse`).
//! - `{"op":"send","to":T,"body":J,"reliable":B,"timeout_ms":N,"id":X}` → `sent` or `error`.
//! - `{"op":"call","service":S,"body":J,"timeout_ms":N,"policy":P,"id":X}` → `reply` or `error`.
//! - `{"op":"serve","service":S}` → `serving`; then `request` frames `{"id","from","service",
//!   "body"}`, each answered with `{"op":"respond","id":N,"body":J}` or `{...,"error":"..."}`.
//!
//! To the client (`type`): the above, and `peer_added`, `peer_removed`, `promote_leader`,
//! `demote_leader`, `promote_follower`, `demote_follower` (with `leader`), `leader_changed`
//! (`leader`, `term`), `leader_message` and `peer_message` (`from`, `kind`, `term`,
//! `reliable`, `body`). A bad frame gets an `error` and the session goes on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use consort::watch::WatchEvent;
use consort::{CallOptions, GroupEvent, Kind, Peer, PendingSend, Policy, SendOptions};
use serde_json::{json, Value as Json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::messages::{body_json, message_error, parse_policy, parse_target, timeout};
use super::model::{ChangeBody, PulseBody};
use super::ApiState;

/// Frames a client may send, at most, in bytes.
const MAX_FRAME: usize = 2 << 20;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// `GET /v1/ws`.
pub async fn upgrade(State(state): State<Arc<ApiState>>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_FRAME)
        .on_upgrade(move |socket| session(state, socket))
}

async fn session(state: Arc<ApiState>, mut socket: WebSocket) {
    let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::unbounded_channel::<Json>();
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    let mut closing = state.closing.subscribe();
    loop {
        tokio::select! {
            frame = socket.recv() => {
                let text = match frame {
                    Some(Ok(WsMessage::Text(text))) => text,
                    Some(Ok(WsMessage::Binary(_))) => {
                        let _ = tx.send(error(None, "frames must be JSON text"));
                        continue;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => break,
                };
                handle(&state, conn, &tx, &mut tasks, text.as_str()).await;
            }
            Some(out) = rx.recv() => {
                if socket.send(WsMessage::Text(out.to_string().into())).await.is_err() {
                    break;
                }
            }
            _ = closing.changed() => break,
        }
    }
    for task in tasks {
        task.abort();
    }
    state.dispatcher.detach(conn).await;
}

fn error(id: Option<&Json>, message: impl Into<String>) -> Json {
    json!({ "type": "error", "id": id, "error": message.into() })
}

/// Carries out one client frame.
async fn handle(
    state: &Arc<ApiState>,
    conn: u64,
    tx: &mpsc::UnboundedSender<Json>,
    tasks: &mut Vec<JoinHandle<()>>,
    text: &str,
) {
    let frame: Json = match serde_json::from_str(text) {
        Ok(frame @ Json::Object(_)) => frame,
        _ => {
            let _ = tx.send(error(None, "a frame must be a JSON object with an \"op\""));
            return;
        }
    };
    let id = frame.get("id").cloned();
    let op = frame.get("op").and_then(Json::as_str).unwrap_or_default();
    let reply = match op {
        "listen" => listen(state, tx, tasks).await,
        "watch" => watch(state, &frame, tx, tasks),
        "send" => match start_send(state, &frame).await {
            // Handed to the node in frame order; the outcome is awaited on the side.
            Ok(pending) => {
                let tx = tx.clone();
                tasks.retain(|t| !t.is_finished());
                tasks.push(tokio::spawn(async move {
                    let out = match pending.outcome().await {
                        Ok(()) => json!({ "type": "sent", "id": frame.get("id") }),
                        Err(e) => error(frame.get("id"), message_error(&e).message),
                    };
                    let _ = tx.send(out);
                }));
                Ok(None)
            }
            Err(e) => Err(e),
        },
        "call" => {
            let state = state.clone();
            let tx = tx.clone();
            tasks.retain(|t| !t.is_finished());
            tasks.push(tokio::spawn(async move {
                let out = call(&state, &frame)
                    .await
                    .unwrap_or_else(|e| error(frame.get("id"), e));
                let _ = tx.send(out);
            }));
            Ok(None)
        }
        "serve" => match frame.get("service").and_then(Json::as_str) {
            Some(service) => state
                .dispatcher
                .attach(service, conn, tx.clone())
                .await
                .map(|()| Some(json!({ "type": "serving", "service": service }))),
            None => Err("serve needs a \"service\" name".to_string()),
        },
        "respond" => respond(state, conn, &frame).await.map(|()| None),
        "" => Err("a frame must have an \"op\"".to_string()),
        other => Err(format!(
            "unknown op {other:?}: listen, watch, send, call, serve or respond"
        )),
    };
    match reply {
        Ok(Some(out)) => {
            let _ = tx.send(out);
        }
        Ok(None) => {}
        Err(message) => {
            let _ = tx.send(error(id.as_ref(), message));
        }
    }
}

async fn listen(
    state: &ApiState,
    tx: &mpsc::UnboundedSender<Json>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<Option<Json>, String> {
    let mut events = state
        .node
        .group_events()
        .await
        .ok_or("the node has stopped")?;
    let tx = tx.clone();
    tasks.push(tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if tx.send(group_event_json(&event)).is_err() {
                break;
            }
        }
    }));
    Ok(None)
}

fn watch(
    state: &ApiState,
    frame: &Json,
    tx: &mpsc::UnboundedSender<Json>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<Option<Json>, String> {
    let prefix = frame.get("prefix").and_then(Json::as_str).unwrap_or("");
    let from = match frame.get("from") {
        None | Some(Json::Null) => None,
        Some(v) => Some(v.as_u64().ok_or("\"from\" must be a sequence number")?),
    };
    let mut watch = state.node.watch(prefix, from).map_err(|e| e.to_string())?;
    let tx = tx.clone();
    tasks.push(tokio::spawn(async move {
        while let Some(event) = watch.next().await {
            let out = match event {
                WatchEvent::Changed { seq, entry } => {
                    let mut body =
                        serde_json::to_value(ChangeBody::new(seq, &entry)).expect("serializes");
                    body["type"] = json!("changed");
                    body
                }
                WatchEvent::Pulse { key, value, origin } => {
                    let mut body = serde_json::to_value(PulseBody::new(&key, &value, origin))
                        .expect("serializes");
                    body["type"] = json!("pulse");
                    body
                }
                WatchEvent::Lagged(missed) => json!({ "type": "lagged", "missed": missed }),
                _ => continue,
            };
            if tx.send(out).is_err() {
                break;
            }
        }
    }));
    Ok(None)
}

async fn start_send(state: &ApiState, frame: &Json) -> Result<PendingSend, String> {
    let to = frame
        .get("to")
        .and_then(Json::as_str)
        .ok_or("send needs \"to\": broadcast, leader, all or a node id")?;
    let target = parse_target(to)?;
    let body = frame.get("body").ok_or("send needs a \"body\"")?;
    let reliable = frame
        .get("reliable")
        .map(|v| v.as_bool().ok_or("\"reliable\" must be true or false"))
        .transpose()?
        .unwrap_or(false);
    let timeout_ms = optional_u64(frame, "timeout_ms")?;
    let options = SendOptions {
        reliable,
        timeout: timeout_ms
            .map(|ms| timeout(Some(ms), Duration::ZERO))
            .transpose()?,
    };
    let bytes = serde_json::to_vec(body).expect("JSON values serialize");
    state
        .node
        .start_send(target, bytes, options)
        .await
        .map_err(|e| message_error(&e).message)
}

async fn call(state: &ApiState, frame: &Json) -> Result<Json, String> {
    let service = frame
        .get("service")
        .and_then(Json::as_str)
        .ok_or("call needs a \"service\"")?;
    let body = frame.get("body").cloned().unwrap_or(Json::Null);
    let policy = match frame.get("policy").and_then(Json::as_str) {
        Some(p) => parse_policy(p)?,
        None => Policy::RoundRobin,
    };
    let timeout_ms = optional_u64(frame, "timeout_ms")?;
    let options = CallOptions {
        policy,
        timeout: timeout(timeout_ms, CallOptions::default().timeout)?,
    };
    let bytes = serde_json::to_vec(&body).expect("JSON values serialize");
    let replies = state
        .node
        .call_all(service, bytes, options)
        .await
        .map_err(|e| message_error(&e).message)?;
    let replies: Vec<Json> = replies
        .iter()
        .map(|r| match &r.result {
            Ok(body) => json!({ "from": r.from.to_string(), "body": body_json(body) }),
            Err(e) => json!({ "from": r.from.to_string(), "error": e.to_string() }),
        })
        .collect();
    if policy == Policy::All {
        return Ok(json!({ "type": "reply", "id": frame.get("id"), "replies": replies }));
    }
    let mut reply = replies.into_iter().next().unwrap_or(Json::Null);
    if let Some(e) = reply.get("error").and_then(Json::as_str) {
        return Err(format!("the provider answered with an error: {e}"));
    }
    reply["type"] = json!("reply");
    reply["id"] = frame.get("id").cloned().unwrap_or(Json::Null);
    Ok(reply)
}

async fn respond(state: &ApiState, conn: u64, frame: &Json) -> Result<(), String> {
    let id = frame
        .get("id")
        .and_then(Json::as_u64)
        .ok_or("respond needs the request's \"id\"")?;
    let result = match (frame.get("body"), frame.get("error")) {
        (_, Some(e)) => Err(e.as_str().map_or_else(|| e.to_string(), str::to_string)),
        (Some(body), None) => Ok(serde_json::to_vec(body).expect("JSON values serialize")),
        (None, None) => Ok(b"null".to_vec()),
    };
    if state.dispatcher.respond(conn, id, result).await {
        Ok(())
    } else {
        Err(format!(
            "no request {id} is waiting for this session's answer"
        ))
    }
}

fn optional_u64(frame: &Json, field: &str) -> Result<Option<u64>, String> {
    match frame.get(field) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("\"{field}\" must be a whole number")),
    }
}

fn peer_json(peer: &Peer) -> Json {
    json!({
        "id": peer.id.to_string(),
        "name": peer.name,
        "addr": peer.addr.to_string(),
    })
}

/// A group event as the WebSocket, `consort listen` and the Python client show it.
pub fn group_event_json(event: &GroupEvent) -> Json {
    match event {
        GroupEvent::PeerAdded(p) => json!({ "type": "peer_added", "peer": peer_json(p) }),
        GroupEvent::PeerRemoved(p) => json!({ "type": "peer_removed", "peer": peer_json(p) }),
        GroupEvent::DemotedLeader => json!({ "type": "demote_leader" }),
        GroupEvent::DemotedFollower { leader } => {
            json!({ "type": "demote_follower", "leader": leader.to_string() })
        }
        GroupEvent::LeaderChanged { leader, term } => json!({
            "type": "leader_changed",
            "leader": leader.map(|l| l.to_string()),
            "term": term,
        }),
        GroupEvent::PromotedLeader => json!({ "type": "promote_leader" }),
        GroupEvent::PromotedFollower { leader } => {
            json!({ "type": "promote_follower", "leader": leader.to_string() })
        }
        GroupEvent::LeaderMessage(m) | GroupEvent::PeerMessage(m) => {
            let (kind, term) = match m.kind {
                Kind::Broadcast { term } => ("leader_message", Some(term)),
                _ => ("peer_message", None),
            };
            json!({
                "type": kind,
                "from": m.from.to_string(),
                "kind": m.kind.as_str(),
                "term": term,
                "reliable": m.reliable,
                "body": body_json(&m.body),
            })
        }
        _ => json!({ "type": "unknown" }),
    }
}
