//! Messages and service calls over HTTP: `POST /v1/messages`, `POST /v1/services/{name}/call`,
//! `GET /v1/services`.
//!
//! Bodies are JSON on the API and bytes in the group: a body is sent as its compact JSON text,
//! and a received body that is not JSON is shown as a JSON string of its text.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use consort::{
    CallError, CallOptions, MessageError, NodeId, Policy, SendError, SendOptions, ServiceError,
    Target,
};
use serde::Deserialize;
use serde_json::{json, Value as Json_};

use super::{ApiError, ApiState};

/// The longest timeout a request may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// `POST /v1/messages` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    /// `broadcast` (the leader's), `leader`, `all`, or a node id.
    pub to: String,
    /// Any JSON value.
    pub body: Json_,
    /// Acked, retried, exactly once in order.
    #[serde(default)]
    pub reliable: bool,
    /// How long a reliable message is retried, in ms (default 30 s).
    #[serde(default, deserialize_with = "whole_ms")]
    pub timeout_ms: Option<u64>,
}

/// `POST /v1/services/{name}/call` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallBody {
    /// Any JSON value.
    #[serde(default)]
    pub body: Json_,
    /// How long the call may take, in ms (default 5000).
    #[serde(default, deserialize_with = "whole_ms")]
    pub timeout_ms: Option<u64>,
    /// `round_robin` (default), `local_first`, `leader`, `all`, or `node:ID`.
    pub policy: Option<String>,
}

/// A `timeout_ms`: a whole number, written `2000` or `2000.0` (JSON does not tell them apart),
/// or null.
fn whole_ms<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    match (n.as_u64(), n.as_f64()) {
        (Some(ms), _) => Ok(Some(ms)),
        (None, Some(f)) if f >= 0.0 && f.fract() == 0.0 => Ok(Some(f as u64)),
        _ => Err(serde::de::Error::custom(format!(
            "timeout_ms must be a whole number of milliseconds, got {n}"
        ))),
    }
}

/// Parses a message target as the API and CLI write it.
pub fn parse_target(to: &str) -> Result<Target, String> {
    match to {
        "broadcast" => Ok(Target::Broadcast),
        "leader" => Ok(Target::Leader),
        "all" => Ok(Target::All),
        id => id.parse::<NodeId>().map(Target::Node).map_err(|_| {
            format!(
                "\"to\" must be broadcast, leader, all or a node id (16 hex digits), got {id:?}"
            )
        }),
    }
}

/// Parses a call policy.
pub fn parse_policy(text: &str) -> Result<Policy, String> {
    if let Some(id) = text.strip_prefix("node:") {
        return id
            .parse::<NodeId>()
            .map(Policy::Node)
            .map_err(|_| format!("invalid node id in policy {text:?}"));
    }
    Policy::parse(text).ok_or_else(|| {
        format!("policy must be round_robin, local_first, leader, all or node:ID, got {text:?}")
    })
}

/// A timeout from milliseconds, checked.
pub fn timeout(ms: Option<u64>, default: Duration) -> Result<Duration, String> {
    match ms {
        None => Ok(default),
        Some(0) => Err("timeout_ms must be at least 1".into()),
        Some(ms) if Duration::from_millis(ms) > MAX_TIMEOUT => Err(format!(
            "timeout_ms must be at most {}",
            MAX_TIMEOUT.as_millis()
        )),
        Some(ms) => Ok(Duration::from_millis(ms)),
    }
}

/// A body as the API shows it: its JSON, or its text as a JSON string.
pub fn body_json(bytes: &[u8]) -> Json_ {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Json_::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// The status and message for a failed send or call.
pub fn message_error(error: &MessageError) -> ApiError {
    let status = match error {
        MessageError::Send(SendError::NotLeader) => StatusCode::CONFLICT,
        MessageError::Send(SendError::NoLeader) => StatusCode::SERVICE_UNAVAILABLE,
        MessageError::Send(SendError::UnknownNode(_)) => StatusCode::NOT_FOUND,
        MessageError::Send(SendError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
        MessageError::Send(SendError::QueueFull(_)) => StatusCode::SERVICE_UNAVAILABLE,
        MessageError::Send(SendError::Undelivered(_)) => StatusCode::GATEWAY_TIMEOUT,
        MessageError::Call(CallError::NoProvider(_)) => StatusCode::SERVICE_UNAVAILABLE,
        MessageError::Call(CallError::Timeout(_) | CallError::NotAccepted(_)) => {
            StatusCode::GATEWAY_TIMEOUT
        }
        MessageError::Call(CallError::ProviderLost(_)) => StatusCode::BAD_GATEWAY,
        MessageError::Call(CallError::InvalidService(_)) => StatusCode::BAD_REQUEST,
        MessageError::Call(CallError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
        MessageError::Service { .. } => StatusCode::BAD_GATEWAY,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError::new(status, error.to_string())
}

fn parse_json<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the request body is not valid: {e}"),
        )
    })
}

/// `POST /v1/messages`: `{"to", "body", "reliable", "timeout_ms"}` → `{"sent": true}` once
/// handed to the network (best-effort) or acknowledged by every receiver (reliable).
pub async fn send(
    State(state): State<Arc<ApiState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Json_>, ApiError> {
    let request: SendBody = parse_json(body)?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    let target = parse_target(&request.to).map_err(bad)?;
    let options = SendOptions {
        reliable: request.reliable,
        timeout: request
            .timeout_ms
            .map(|ms| timeout(Some(ms), Duration::ZERO))
            .transpose()
            .map_err(bad)?,
    };
    let bytes = serde_json::to_vec(&request.body).expect("JSON values serialize");
    state
        .node
        .send(target, bytes, options)
        .await
        .map_err(|e| message_error(&e))?;
    Ok(Json(json!({ "sent": true })))
}

/// `POST /v1/services/{name}/call`: `{"body", "timeout_ms", "policy"}` → `{"from", "body"}`,
/// or for the `all` policy `{"replies": [{"from", "body"} | {"from", "error"}]}`.
pub async fn call(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Json_>, ApiError> {
    let request: CallBody = parse_json(body)?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    let policy = match &request.policy {
        Some(p) => parse_policy(p).map_err(bad)?,
        None => Policy::RoundRobin,
    };
    let options = CallOptions {
        policy,
        timeout: timeout(request.timeout_ms, CallOptions::default().timeout).map_err(bad)?,
    };
    let bytes = serde_json::to_vec(&request.body).expect("JSON values serialize");
    let replies = state
        .node
        .call_all(&name, bytes, options)
        .await
        .map_err(|e| message_error(&e))?;
    if policy == Policy::All {
        let replies: Vec<Json_> = replies
            .iter()
            .map(|r| match &r.result {
                Ok(body) => json!({ "from": r.from.to_string(), "body": body_json(body) }),
                Err(e) => json!({ "from": r.from.to_string(), "error": e.to_string() }),
            })
            .collect();
        return Ok(Json(json!({ "replies": replies })));
    }
    let Some(reply) = replies.into_iter().next() else {
        return Err(message_error(&MessageError::Call(CallError::NoProvider(
            name,
        ))));
    };
    match reply.result {
        Ok(body) => Ok(Json(json!({
            "from": reply.from.to_string(),
            "body": body_json(&body),
        }))),
        Err(error) => Err(service_error(reply.from, error)),
    }
}

fn service_error(from: NodeId, error: ServiceError) -> ApiError {
    message_error(&MessageError::Service { from, error })
}

/// `GET /v1/services`: each service with its live providers.
pub async fn list(State(state): State<Arc<ApiState>>) -> Result<Json<Json_>, ApiError> {
    let status = super::node_status(&state).await?;
    let live: Vec<NodeId> = status
        .members
        .iter()
        .filter(|m| m.state.is_live())
        .map(|m| m.identity.id)
        .collect();
    let mut services: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (node, names) in &status.services {
        if !live.contains(node) {
            continue;
        }
        for name in names {
            services
                .entry(name.clone())
                .or_default()
                .push(node.to_string());
        }
    }
    Ok(Json(json!(services)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_policies_parse_or_say_why_not() {
        assert_eq!(parse_target("broadcast"), Ok(Target::Broadcast));
        assert_eq!(parse_target("all"), Ok(Target::All));
        assert_eq!(
            parse_target("00000000000000ff"),
            Ok(Target::Node(NodeId(255)))
        );
        assert!(parse_target("kitchen").unwrap_err().contains("node id"));
        assert_eq!(parse_policy("local_first"), Ok(Policy::LocalFirst));
        assert_eq!(
            parse_policy("node:00000000000000ff"),
            Ok(Policy::Node(NodeId(255)))
        );
        assert!(parse_policy("random").is_err());
        assert!(timeout(Some(0), Duration::ZERO).is_err());
        assert!(timeout(Some(10_000_000), Duration::ZERO).is_err());
    }

    #[test]
    fn timeouts_are_whole_milliseconds_however_written() {
        let parse = |t: &str| {
            serde_json::from_str::<CallBody>(&format!("{{\"timeout_ms\":{t}}}"))
                .map(|b| b.timeout_ms)
                .map_err(|e| e.to_string())
        };
        assert_eq!(parse("2000"), Ok(Some(2000)));
        assert_eq!(parse("2000.0"), Ok(Some(2000)));
        assert_eq!(parse("null"), Ok(None));
        assert!(parse("1.5").unwrap_err().contains("whole number"));
        assert!(parse("-3").unwrap_err().contains("whole number"));
        assert!(parse("\"9\"").is_err());
    }

    #[test]
    fn bodies_show_as_json_or_as_text() {
        assert_eq!(body_json(br#"{"on":true}"#), json!({"on": true}));
        assert_eq!(body_json(b"plain"), json!("plain"));
    }
}
