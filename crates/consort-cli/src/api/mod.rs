//! The HTTP API the daemon serves (axum): JSON under `/v1`, Prometheus text under `/metrics`.
//!
//! Every error is a status code with `{"error": "..."}`. When a token is set, every request,
//! unknown routes included, must carry `Authorization: Bearer TOKEN` (or `?token=TOKEN`, for
//! browsers, which cannot set headers on a WebSocket); only the dashboard's files (`/` and
//! `/dashboard/`, see `crate::dashboard`) are served without it. The replicated state
//! (`/v1/kv`, `/v1/pulse`, `/v1/watch`) is served by `state`.

mod dispatch;
mod messages;
mod metrics;
pub mod model;
mod openapi;
mod state;
mod ws;

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use consort::Node;
use tokio::net::TcpListener;
use tokio::sync::watch;

use self::model::{LeaderBody, PeerBody, StatusBody};

/// What the handlers share: the node and how to guard it.
pub struct ApiState {
    node: Arc<Node>,
    group: String,
    token: Option<String>,
    /// Turns true when the server begins to stop, which ends the open watch streams.
    closing: watch::Sender<bool>,
    /// Services served here and their WebSocket handlers.
    dispatcher: dispatch::Dispatcher,
    /// API requests by route and status, for `/metrics`.
    requests: metrics::ApiRequests,
}

impl ApiState {
    /// The API of `node` in `group`, guarded by `token` when set.
    pub fn new(node: Arc<Node>, group: String, token: Option<String>) -> ApiState {
        ApiState {
            dispatcher: dispatch::Dispatcher::new(node.clone()),
            node,
            group,
            token,
            closing: watch::Sender::new(false),
            requests: metrics::ApiRequests::default(),
        }
    }

    /// Advertises `service` from this node (`--service`); requests are answered by WebSocket
    /// clients that attach to it (`consort serve`), or with an error while none is.
    pub async fn advertise(&self, service: &str) -> Result<(), String> {
        self.dispatcher.pin(service).await
    }
}

/// Serves the API on `listener` until `shutdown` completes; then ends the watch streams and
/// lets the other open requests finish.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = Arc::new(state);
    let closing = state.closing.clone();
    let shutdown = async move {
        shutdown.await;
        closing.send_replace(true);
    };
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The routes, the JSON fallbacks and the token check.
fn router(state: Arc<ApiState>) -> Router {
    // `{*key}` never matches an empty key; the bare paths are routed too, so that an empty key
    // is answered "the key is empty" rather than "no such route".
    let entry = || {
        get(state::get_entry)
            .put(state::put_entry)
            .delete(state::delete_entry)
    };
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/peers", get(peers))
        .route("/v1/leader", get(leader))
        .route("/v1/kv", get(state::list))
        .route(state::KV_PATH, entry())
        .route(&format!("{}{{*key}}", state::KV_PATH), entry())
        .route(state::PULSE_PATH, post(state::pulse))
        .route(
            &format!("{}{{*key}}", state::PULSE_PATH),
            post(state::pulse),
        )
        .route("/v1/watch", get(state::watch))
        .route("/v1/ws", get(ws::upgrade))
        .route("/v1/messages", post(messages::send))
        .route("/v1/services", get(messages::list))
        .route("/v1/services/{name}/call", post(messages::call))
        .route("/v1/openapi.json", get(openapi::serve))
        .route("/metrics", get(prometheus))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state.clone())
        // Added after the token check, so outside it: the dashboard's files hold no data.
        .merge(crate::dashboard::routes())
        // Layers run after routing (so the route matched is known); this one outside the token
        // check, so it counts and logs 401s too.
        .layer(middleware::from_fn_with_state(state, metrics::observe))
}

/// An error response: a status and `{"error": message}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.message }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = HeaderValue::from_static("Bearer");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

/// Lets a request through only with the right bearer token, when one is set.
async fn require_token(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &state.token {
        let given = given_token(&request);
        if !given.is_some_and(|g| same_secret(g.trim().as_bytes(), token.as_bytes())) {
            let message = "missing or wrong API token (send Authorization: Bearer TOKEN)";
            return ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
        }
    }
    next.run(request).await
}

/// The token a request carries: `Authorization: Bearer TOKEN`, else `?token=TOKEN`.
fn given_token(request: &Request) -> Option<String> {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(token) = header {
        return Some(token.to_string());
    }
    let query = request.uri().query()?;
    let token = query.split('&').find_map(|p| p.strip_prefix("token="))?;
    Some(
        percent_encoding::percent_decode_str(token)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// Compares two secrets in time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The node's status, or 503 once it has stopped.
async fn node_status(state: &ApiState) -> Result<consort::Status, ApiError> {
    let stopped = || ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the node has stopped");
    state.node.status().await.ok_or_else(stopped)
}

/// `GET /v1/status`.
async fn status(State(state): State<Arc<ApiState>>) -> Result<Json<StatusBody>, ApiError> {
    let status = node_status(&state).await?;
    Ok(Json(StatusBody::new(&status, &state.group)))
}

/// `GET /v1/peers`: every member, this node included.
async fn peers(State(state): State<Arc<ApiState>>) -> Result<Json<Vec<PeerBody>>, ApiError> {
    let status = node_status(&state).await?;
    Ok(Json(
        status
            .members
            .iter()
            .map(|m| PeerBody::new(m, &status))
            .collect(),
    ))
}

/// `GET /v1/leader`: the leader as this node sees it (its peer entry), and the term.
async fn leader(State(state): State<Arc<ApiState>>) -> Result<Json<LeaderBody>, ApiError> {
    let status = node_status(&state).await?;
    let member = status
        .members
        .iter()
        .find(|m| Some(m.identity.id) == status.leader)
        .map(|m| PeerBody::new(m, &status));
    Ok(Json(LeaderBody {
        leader: member,
        term: status.term,
        is_self: status.leader == Some(status.identity.id),
    }))
}

/// `GET /metrics`.
async fn prometheus(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let status = node_status(&state).await?;
    let text = metrics::render(&status, &state.requests.counts());
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response())
}

/// Any route not listed.
async fn not_found(request: Request) -> ApiError {
    let message = format!(
        "no such route: {} {}",
        request.method(),
        request.uri().path()
    );
    ApiError::new(StatusCode::NOT_FOUND, message)
}

/// A listed route asked with the wrong method.
async fn method_not_allowed(request: Request) -> ApiError {
    let message = format!(
        "{} is not allowed on {}",
        request.method(),
        request.uri().path()
    );
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"token", b"token"));
        assert!(!same_secret(b"token", b"tokem"));
        assert!(!same_secret(b"token", b"token2"));
        assert!(!same_secret(b"", b"x"));
    }
}
