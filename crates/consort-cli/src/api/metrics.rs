//! `GET /metrics`: the node's counters in the Prometheus text exposition format, and the
//! middleware that counts API requests by route and status and logs the refused ones.
//!
//! Names follow Prometheus conventions: a `consort_` prefix, `_total` on counters, base units
//! (`_seconds`, `_bytes`), and one label per dimension (`state`, `reason`, `class`,
//! `outcome`, `route`, `method`, `status`).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use consort::telemetry::LAG_BUCKETS;
use consort::{RejectReason, Status};

use super::model::MemberCounts;
use super::ApiState;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `route` label of a request that matched no route (bounded, unlike its path).
pub const UNMATCHED: &str = "unmatched";

/// At most one log line per route and status in this interval; the others are counted.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Largest error body read back to log its reason.
const MAX_ERROR_BODY: usize = 64 << 10;

/// One API request, as counted: route template, method, status code.
type RequestKey = (String, &'static str, u16);

/// API requests served, by route template, method and status.
#[derive(Debug, Default)]
pub struct ApiRequests {
    counts: Mutex<BTreeMap<RequestKey, u64>>,
    /// Per route and status: when a refusal was last logged, and how many were not since.
    refusals: Mutex<HashMap<(String, u16), (Instant, u64)>>,
}

impl ApiRequests {
    /// Counts one request.
    pub fn record(&self, route: &str, method: &Method, status: StatusCode) {
        let key = (route.to_string(), method_label(method), status.as_u16());
        *self
            .counts
            .lock()
            .expect("counts lock")
            .entry(key)
            .or_default() += 1;
    }

    /// Every count so far, in label order.
    pub fn counts(&self) -> Vec<(RequestKey, u64)> {
        let counts = self.counts.lock().expect("counts lock");
        counts.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Whether a refusal on `route` with `status` is logged now; if so, how many were not
    /// logged since the last line.
    fn refusal_due(&self, route: &str, status: StatusCode, now: Instant) -> Option<u64> {
        let mut refusals = self.refusals.lock().expect("refusals lock");
        let key = (route.to_string(), status.as_u16());
        match refusals.get_mut(&key) {
            Some((last, suppressed)) if now.duration_since(*last) < REFUSAL_LOG_INTERVAL => {
                *suppressed += 1;
                None
            }
            Some((last, suppressed)) => {
                *last = now;
                Some(std::mem::take(suppressed))
            }
            None => {
                refusals.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

/// A bounded label for a request method.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    const NAMES: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .iter()
        .position(|m| m == method)
        .map_or("other", |i| NAMES[i])
}

/// Middleware (innermost of the API's, so that it sees the route matched): counts the request
/// by route template and status, logs a refused one with its reason (at most once a second per
/// route and status), and makes sure every error answer is `{"error": "..."}` JSON, whatever
/// produced it.
pub async fn observe(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED.to_string(), |p| p.as_str().to_string());
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let status = response.status();
    state.requests.record(&route, &method, status);
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (response, reason) = json_error(response).await;
    if let Some(suppressed) = state.requests.refusal_due(&route, status, Instant::now()) {
        let status = status.as_u16();
        if status >= 500 {
            tracing::warn!(%route, %method, %path, status, suppressed, %reason, "request failed");
        } else {
            tracing::info!(%route, %method, %path, status, suppressed, %reason, "request refused");
        }
    }
    response
}

/// The error answer as `{"error": "..."}` JSON (kept as is when it already is), and its reason.
async fn json_error(response: Response) -> (Response, String) {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let given = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .filter(|_| is_json)
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string));
    if let Some(reason) = given {
        return (Response::from_parts(parts, Body::from(bytes)), reason);
    }
    // An answer produced outside the handlers (an extractor's rejection): plain text, or none.
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    let reason = if text.is_empty() {
        parts
            .status
            .canonical_reason()
            .unwrap_or("error")
            .to_lowercase()
    } else {
        text
    };
    let body = serde_json::json!({ "error": reason }).to_string();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    (Response::from_parts(parts, Body::from(body)), reason)
}

/// Renders every metric of the node's `status` and the API's request counts.
pub fn render(status: &Status, requests: &[(RequestKey, u64)]) -> String {
    let mut out = Metrics(String::new());
    let telemetry = &status.telemetry;
    let stats = &status.stats;
    let messaging = &status.messaging;

    out.header(
        "consort_members",
        "gauge",
        "Members by state, this node included.",
    );
    for (state, count) in MemberCounts::new(&status.members).by_state() {
        out.sample("consort_members", &[("state", state)], count);
    }
    out.single(
        "consort_leader_term",
        "gauge",
        "The term of the current leadership (0 before any).",
        status.term,
    );
    out.single(
        "consort_is_leader",
        "gauge",
        "1 while this node leads the group.",
        u64::from(status.leader == Some(status.identity.id)),
    );
    out.single(
        "consort_leader_changes_total",
        "counter",
        "Times the leader or its term changed, as this node saw it.",
        telemetry.leader_changes,
    );

    out.single(
        "consort_datagrams_received_total",
        "counter",
        "Datagrams received, accepted or not.",
        stats.datagrams_in,
    );
    out.single(
        "consort_datagrams_sent_total",
        "counter",
        "Datagrams sent.",
        stats.datagrams_out,
    );
    out.single(
        "consort_datagrams_received_bytes_total",
        "counter",
        "Bytes of datagrams received.",
        stats.bytes_in,
    );
    out.single(
        "consort_datagrams_sent_bytes_total",
        "counter",
        "Bytes of datagrams sent.",
        stats.bytes_out,
    );
    let rejected = "consort_datagrams_rejected_total";
    out.header(rejected, "counter", "Datagrams dropped, by reason.");
    for reason in RejectReason::ALL {
        out.sample(
            rejected,
            &[("reason", reason.as_str())],
            stats.rejected(reason),
        );
    }

    out.single(
        "consort_entries",
        "gauge",
        "Live entries held (tombstones not counted).",
        status.entries,
    );
    out.single(
        "consort_tombstones",
        "gauge",
        "Deletes remembered (tombstones) until they expire.",
        telemetry.tombstones,
    );
    let lag = "consort_propagation_lag_seconds";
    out.header(
        lag,
        "histogram",
        "Time from a write elsewhere to its change applied here (writer's clock corrected by \
         the measured offset).",
    );
    let histogram = &telemetry.propagation_lag;
    let mut cumulative = 0;
    for (bound, count) in LAG_BUCKETS.iter().zip(histogram.buckets) {
        cumulative += count;
        let le = bound.to_string();
        out.sample(&format!("{lag}_bucket"), &[("le", &le)], cumulative);
    }
    out.sample(&format!("{lag}_bucket"), &[("le", "+Inf")], histogram.count);
    out.sample(&format!("{lag}_sum"), &[], histogram.sum);
    out.sample(&format!("{lag}_count"), &[], histogram.count);

    out.single(
        "consort_anti_entropy_rounds_started_total",
        "counter",
        "Anti-entropy (reconciliation) rounds this node started.",
        telemetry.anti_entropy_started,
    );
    out.single(
        "consort_anti_entropy_rounds_completed_total",
        "counter",
        "Anti-entropy (reconciliation) rounds this node completed.",
        telemetry.anti_entropy_completed,
    );
    out.single(
        "consort_anti_entropy_received_bytes_total",
        "counter",
        "Bytes of anti-entropy (reconciliation) messages received.",
        stats.anti_entropy_bytes_in,
    );
    out.single(
        "consort_anti_entropy_sent_bytes_total",
        "counter",
        "Bytes of anti-entropy (reconciliation) messages sent.",
        stats.anti_entropy_bytes_out,
    );

    out.single(
        "consort_bootstrapping",
        "gauge",
        "1 while the node is still pulling its state from a peer.",
        u64::from(status.bootstrapping),
    );
    let (received, total) = telemetry.bootstrap.unwrap_or((0, 0));
    out.single(
        "consort_bootstrap_received_entries",
        "gauge",
        "Entries received of the latest snapshot (0 if none was pulled).",
        received,
    );
    out.single(
        "consort_bootstrap_snapshot_entries",
        "gauge",
        "Entries in the latest snapshot pulled (0 if none was).",
        total,
    );

    let classes = [("best_effort", 0), ("reliable", 1)];
    let sent = "consort_messages_sent_total";
    out.header(
        sent,
        "counter",
        "Messages handed to the network or delivered locally, by class.",
    );
    for (class, i) in classes {
        out.sample(sent, &[("class", class)], messaging.sent[i]);
    }
    let delivered = "consort_messages_delivered_total";
    out.header(
        delivered,
        "counter",
        "Messages delivered to this node, by class.",
    );
    for (class, i) in classes {
        out.sample(delivered, &[("class", class)], messaging.delivered[i]);
    }
    out.single(
        "consort_messages_retransmitted_total",
        "counter",
        "Reliable transmissions beyond the first.",
        messaging.retransmitted,
    );
    out.single(
        "consort_messages_expired_total",
        "counter",
        "Reliable messages abandoned at their deadline.",
        messaging.expired,
    );
    out.single(
        "consort_messages_stale_total",
        "counter",
        "Leader messages dropped for a stale term or a sender that does not lead.",
        messaging.stale,
    );
    out.single(
        "consort_messages_pending",
        "gauge",
        "Reliable messages waiting for an ack, per receiver.",
        messaging.pending,
    );
    let calls = "consort_service_calls_total";
    out.header(
        calls,
        "counter",
        "Service calls made from this node, by outcome.",
    );
    for (outcome, i) in [("ok", 0), ("failed", 1)] {
        out.sample(calls, &[("outcome", outcome)], messaging.calls[i]);
    }
    out.single(
        "consort_service_requests_served_total",
        "counter",
        "Service requests this node started serving.",
        messaging.served,
    );
    out.single(
        "consort_service_requests_deduplicated_total",
        "counter",
        "Retried service requests answered from the cache without running again.",
        messaging.deduplicated,
    );

    let api = "consort_api_requests_total";
    out.header(
        api,
        "counter",
        "HTTP API requests answered, by route template, method and status.",
    );
    for ((route, method, code), count) in requests {
        let code = code.to_string();
        let labels = [
            ("route", route.as_str()),
            ("method", method),
            ("status", &code),
        ];
        out.sample(api, &labels, *count);
    }
    out.0
}

/// The exposition text being written.
struct Metrics(String);

impl Metrics {
    /// The `# HELP` and `# TYPE` lines of one metric.
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample line.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{label}=\"{}\"", escape(value));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A metric with one unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.header(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// A label value escaped as the text format wants (`\`, `"` and newlines).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use consort::{Identity, Member, MemberState, NodeId, Stats};

    fn status() -> Status {
        let me = Member {
            identity: Identity {
                id: NodeId(1),
                addr: "127.0.0.1:7470".parse().unwrap(),
                generation: 1,
                priority: 0,
                name: "n1".to_string(),
            },
            state: MemberState::Alive,
            is_self: true,
        };
        let mut stats = Stats {
            datagrams_in: 7,
            anti_entropy_bytes_out: 99,
            ..Stats::default()
        };
        stats.rejected.insert(RejectReason::UnknownKey, 3);
        let mut telemetry = consort::telemetry::Telemetry::default();
        telemetry.tombstones = 2;
        telemetry.leader_changes = 1;
        telemetry.propagation_lag.observe(0.02);
        telemetry.propagation_lag.observe(40.0);
        telemetry.bootstrap = Some((10, 12));
        let messaging = consort_proto::messaging::MessagingStats {
            sent: [5, 6],
            calls: [8, 9],
            ..Default::default()
        };
        Status {
            identity: me.identity.clone(),
            members: vec![me],
            stats,
            entries: 12,
            bootstrapping: false,
            leader: Some(NodeId(1)),
            term: 4,
            clocks: Vec::new(),
            group_time_us: 0,
            services: Default::default(),
            messaging,
            telemetry,
        }
    }

    #[test]
    fn every_family_is_exposed_with_help_and_type() {
        let requests = vec![(("/v1/kv/{*key}".to_string(), "GET", 404), 3)];
        let text = render(&status(), &requests);
        for line in [
            "consort_members{state=\"alive\"} 1\n",
            "consort_members{state=\"left\"} 0\n",
            "# TYPE consort_leader_term gauge\nconsort_leader_term 4\n",
            "consort_is_leader 1\n",
            "consort_leader_changes_total 1\n",
            "consort_datagrams_received_total 7\n",
            "consort_datagrams_rejected_total{reason=\"unknown_key\"} 3\n",
            "consort_datagrams_rejected_total{reason=\"bad_tag\"} 0\n",
            "# TYPE consort_entries gauge\nconsort_entries 12\n",
            "consort_tombstones 2\n",
            "# TYPE consort_propagation_lag_seconds histogram\n",
            "consort_propagation_lag_seconds_bucket{le=\"0.01\"} 0\n",
            "consort_propagation_lag_seconds_bucket{le=\"0.025\"} 1\n",
            "consort_propagation_lag_seconds_bucket{le=\"30\"} 1\n",
            "consort_propagation_lag_seconds_bucket{le=\"+Inf\"} 2\n",
            "consort_propagation_lag_seconds_sum 40.02\n",
            "consort_propagation_lag_seconds_count 2\n",
            "consort_anti_entropy_sent_bytes_total 99\n",
            "consort_anti_entropy_rounds_started_total 0\n",
            "consort_bootstrapping 0\n",
            "consort_bootstrap_received_entries 10\n",
            "consort_bootstrap_snapshot_entries 12\n",
            "consort_messages_sent_total{class=\"best_effort\"} 5\n",
            "consort_messages_sent_total{class=\"reliable\"} 6\n",
            "consort_service_calls_total{outcome=\"failed\"} 9\n",
            "consort_api_requests_total{route=\"/v1/kv/{*key}\",method=\"GET\",status=\"404\"} 3\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        // Every sample belongs to a family announced with HELP and TYPE just before.
        let mut announced = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                announced.push(rest.split(' ').next().unwrap().to_string());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let name = line.split(['{', ' ']).next().unwrap();
            let family = announced.last().expect("a TYPE line first");
            assert!(name.starts_with(family.as_str()), "{name} after {family}");
            assert!(name.starts_with("consort_"), "{name}");
        }
        let counters = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter(|l| l.ends_with(" counter"));
        for counter in counters {
            assert!(
                counter.split(' ').next().unwrap().ends_with("_total"),
                "{counter}"
            );
        }
    }

    #[test]
    fn labels_are_escaped_and_methods_bounded() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(method_label(&Method::PUT), "PUT");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }

    #[test]
    fn refusals_are_logged_once_a_second_per_route_and_status() {
        let requests = ApiRequests::default();
        let t0 = Instant::now();
        let not_found = StatusCode::NOT_FOUND;
        assert_eq!(requests.refusal_due("/v1/kv", not_found, t0), Some(0));
        assert_eq!(requests.refusal_due("/v1/kv", not_found, t0), None);
        assert_eq!(requests.refusal_due("/v1/kv", not_found, t0), None);
        let bad = StatusCode::BAD_REQUEST;
        assert_eq!(requests.refusal_due("/v1/kv", bad, t0), Some(0));
        let later = t0 + REFUSAL_LOG_INTERVAL;
        assert_eq!(requests.refusal_due("/v1/kv", not_found, later), Some(2));
        assert_eq!(requests.refusal_due("/v1/kv", not_found, later), None);
    }
}
