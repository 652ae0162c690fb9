//! The replicated state over HTTP: entries under `/v1/kv`, pulses under `/v1/pulse`, and
//! changes as server-sent events from `/v1/watch`.
//!
//! Keys are taken from the raw request path and percent-decoded here, so that a key that is not
//! UTF-8 or not valid gets a JSON 400 naming what is wrong. Everything is checked before the node
//! is asked, and the node applies a write whole or not at all.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use consort::watch::WatchEvent;
use consort::{Key, StateError, Value, WriteError, WriteOutcome};
use consort_proto::replica::InvalidData;
use futures_util::stream::{self, Stream};
use percent_encoding::percent_decode_str;
use serde::Deserialize;

use super::model::{ChangeBody, EntryBody, LaggedBody, PulseBody, QueuedBody, WrittenBody};
use super::{ApiError, ApiState};

/// The path entries live under; the key follows.
pub const KV_PATH: &str = "/v1/kv/";
/// The path pulses are sent to; the key follows.
pub const PULSE_PATH: &str = "/v1/pulse/";

/// How often an idle watch stream gets a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// `?queue=true` on a write.
#[derive(Debug, Default, Deserialize)]
pub struct WriteQuery {
    /// If the owner is unreachable, queue the write for it instead of failing.
    #[serde(default)]
    queue: bool,
}

/// `?prefix=P` on a list.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// Only keys at or under this prefix; all keys when empty.
    #[serde(default)]
    prefix: String,
}

/// `?prefix=P&from=SEQ` on a watch.
#[derive(Debug, Default, Deserialize)]
pub struct WatchQuery {
    /// Only keys at or under this prefix; all keys when empty.
    #[serde(default)]
    prefix: String,
    /// Resume after this sequence number.
    from: Option<u64>,
}

/// `GET /v1/kv/{key}`: the entry, or 404.
pub async fn get_entry(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
) -> Result<Json<EntryBody>, ApiError> {
    let key = key_in(&uri, KV_PATH)?;
    match state.node.get(key.as_str()).await {
        Ok(Some(entry)) => Ok(Json(EntryBody::new(&entry))),
        Ok(None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no such key: {key}"),
        )),
        Err(e) => Err(state_error(&state, "read", &key, e).await),
    }
}

/// `GET /v1/kv?prefix=P`: the entries at or under `P`, in key order.
pub async fn list(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<EntryBody>>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let entries = state
        .node
        .list(&query.prefix)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(Json(entries.iter().map(EntryBody::new).collect()))
}

/// `PUT /v1/kv/{key}` with a JSON body: 200 once durable, 202 when queued for its owner.
pub async fn put_entry(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
    query: Result<Query<WriteQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = key_in(&uri, KV_PATH)?;
    let Query(query) = query.map_err(bad_query)?;
    let value = json_body(body)?;
    write(&state, key, Some(value), query.queue).await
}

/// `DELETE /v1/kv/{key}`: a tombstone, even for a key that holds nothing.
pub async fn delete_entry(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
    query: Result<Query<WriteQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let key = key_in(&uri, KV_PATH)?;
    let Query(query) = query.map_err(bad_query)?;
    write(&state, key, None, query.queue).await
}

/// `POST /v1/pulse/{key}` with a JSON body: sent to every watcher, never stored.
pub async fn pulse(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let key = key_in(&uri, PULSE_PATH)?;
    let value = json_body(body)?;
    match state.node.pulse(key.as_str(), value.as_str()).await {
        Ok(()) => Ok(Json(serde_json::json!({}))),
        Err(e) => Err(state_error(&state, "send a pulse on", &key, e).await),
    }
}

/// `GET /v1/watch?prefix=P[&from=SEQ]`: changes and pulses as server-sent events. A
/// `Last-Event-ID` header (sent by a reconnecting `EventSource`) wins over `from`.
pub async fn watch(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<WatchQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let from = match headers.get("last-event-id") {
        None => query.from,
        Some(value) => {
            let text = value.to_str().unwrap_or("").trim();
            let seq = text.parse::<u64>().map_err(|_| {
                let message = format!("Last-Event-ID {value:?} is not a sequence number");
                ApiError::new(StatusCode::BAD_REQUEST, message)
            })?;
            Some(seq)
        }
    };
    let watch = state
        .node
        .watch(&query.prefix, from)
        .map_err(|e| ApiError::new(StatusCode::GONE, e.to_string()))?;
    let closing = state.closing.subscribe();
    let events = stream::unfold((watch, closing), |(mut watch, mut closing)| async move {
        let event = tokio::select! {
            event = watch.next() => event?,
            // The daemon is stopping: end the stream so the server can finish.
            _ = closing.wait_for(|closing| *closing) => return None,
        };
        Some((Ok(sse_event(event)), (watch, closing)))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// One watch event as a server-sent event: `change` (with the sequence number as its id),
/// `pulse` or `lagged`.
fn sse_event(event: WatchEvent) -> Event {
    let (name, data) = match event {
        WatchEvent::Changed { seq, entry } => {
            let data = serde_json::to_string(&ChangeBody::new(seq, &entry));
            return Event::default()
                .event("change")
                .id(seq.to_string())
                .data(data.unwrap_or_default());
        }
        WatchEvent::Pulse { key, value, origin } => (
            "pulse",
            serde_json::to_string(&PulseBody::new(&key, &value, origin)),
        ),
        WatchEvent::Lagged(missed) => ("lagged", serde_json::to_string(&LaggedBody { missed })),
        other => return Event::default().comment(format!("unknown event {other:?}")),
    };
    Event::default().event(name).data(data.unwrap_or_default())
}

/// Writes (or deletes, with `value: None`) and answers with the outcome.
async fn write(
    state: &ApiState,
    key: Key,
    value: Option<Value>,
    queue: bool,
) -> Result<Response, ApiError> {
    let outcome = state.node.write(key.as_str(), value, queue).await;
    match outcome {
        Ok(WriteOutcome::Applied(version)) => Ok(Json(WrittenBody::new(version)).into_response()),
        Ok(WriteOutcome::Queued | WriteOutcome::Superseded) => {
            Ok((StatusCode::ACCEPTED, Json(QueuedBody { queued: true })).into_response())
        }
        Ok(other) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected outcome of the write: {other:?}"),
        )),
        Err(e) => Err(state_error(state, "write", &key, e).await),
    }
}

/// The validated key that follows `route` in the request path, percent-decoded.
fn key_in(uri: &Uri, route: &str) -> Result<Key, ApiError> {
    let raw = uri.path().strip_prefix(route).unwrap_or("");
    let text = percent_decode_str(raw).decode_utf8().map_err(|_| {
        let message = format!("the key {raw:?} is not UTF-8 once percent-decoded");
        ApiError::new(StatusCode::BAD_REQUEST, message)
    })?;
    Key::new(&text).map_err(invalid)
}

/// The request body as a JSON value (kept compact).
fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let body = body.map_err(|e| {
        let message = format!("cannot read the body: {}", e.body_text());
        ApiError::new(e.status(), message)
    })?;
    let text = std::str::from_utf8(&body).map_err(|e| {
        let message = format!("the body is not UTF-8: {e}");
        ApiError::new(StatusCode::BAD_REQUEST, message)
    })?;
    Value::parse(text).map_err(invalid)
}

/// A query string that does not parse.
fn bad_query(rejection: QueryRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, rejection.body_text())
}

/// Invalid input: 413 for a value too large, 400 otherwise.
fn invalid(err: InvalidData) -> ApiError {
    let status = match err {
        InvalidData::ValueTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, err.to_string())
}

/// The answer for a failed state operation on `key`; `doing` says what was tried ("write").
async fn state_error(state: &ApiState, doing: &str, key: &Key, err: StateError) -> ApiError {
    let (status, detail) = match err {
        StateError::Invalid(e) | StateError::Write(WriteError::Invalid(e)) => return invalid(e),
        StateError::Write(WriteError::Reserved) => (StatusCode::FORBIDDEN, err.to_string()),
        StateError::Write(WriteError::OwnerUnreachable(owner)) => {
            let name = state
                .node
                .members()
                .await
                .into_iter()
                .find(|m| m.identity.id == owner)
                .map(|m| format!(" ({})", m.identity.name))
                .unwrap_or_default();
            let detail = format!("its owner, node {owner}{name}, is unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, detail)
        }
        StateError::Write(WriteError::Refused { .. }) => (StatusCode::CONFLICT, err.to_string()),
        StateError::Stopped => (StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
        other => (StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    };
    ApiError::new(status, format!("cannot {doing} {key}: {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(path: &str) -> Result<Key, (StatusCode, String)> {
        key_in(&path.parse().unwrap(), KV_PATH).map_err(|e| (e.status, e.message))
    }

    #[test]
    fn keys_come_percent_decoded_from_the_path() {
        assert_eq!(
            key("/v1/kv/kitchen/light").unwrap().as_str(),
            "kitchen/light"
        );
        assert_eq!(key("/v1/kv/a%20b/%C3%A9").unwrap().as_str(), "a b/é");
        let (status, message) = key("/v1/kv/a%FF").unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(message.contains("UTF-8"), "{message}");
        let (status, message) = key("/v1/kv/").unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(message.contains("empty"), "{message}");
        assert!(key("/v1/kv/a//b").unwrap_err().1.contains("empty segment"));
        assert!(key("/v1/kv/a%0Ab").unwrap_err().1.contains("control"));
    }

    #[test]
    fn bodies_must_be_json_within_limits() {
        let ok = json_body(Ok(Bytes::from_static(b" { \"a\" : 1 } "))).unwrap();
        assert_eq!(ok.as_str(), r#"{"a":1}"#);
        let err = json_body(Ok(Bytes::from_static(b"{nope"))).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(err.message.contains("not JSON"), "{}", err.message);
        let err = json_body(Ok(Bytes::from_static(b"\"\xff\""))).unwrap_err();
        assert!(err.message.contains("UTF-8"), "{}", err.message);
        let too_large = invalid(InvalidData::ValueTooLarge { size: 9, max: 8 });
        assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
