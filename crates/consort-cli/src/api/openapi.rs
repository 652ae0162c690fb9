//! `GET /v1/openapi.json`: an OpenAPI 3.1 description of the whole HTTP API, precise enough
//! for a schema-based fuzzer to check every answer against it (`tests/openapi_fuzz.rs`).

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use consort_proto::messaging::MAX_SERVICE_NAME;
use consort_proto::replica::MAX_KEY_LEN;
use serde_json::{json, Value};

/// The longest `timeout_ms` a request may ask for (`messages::MAX_TIMEOUT`).
const MAX_TIMEOUT_MS: u64 = 300_000;

/// `GET /v1/openapi.json`.
pub async fn serve() -> Response {
    static TEXT: OnceLock<String> = OnceLock::new();
    let text = TEXT.get_or_init(|| document().to_string());
    ([(header::CONTENT_TYPE, "application/json")], text.as_str()).into_response()
}

/// The document.
pub fn document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Consort daemon API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The HTTP API of `consort up`: status, replicated state, messages \
                and services of one node. Every error is a 4xx or 5xx status with \
                {\"error\": \"...\"}. With --api-token, every request but the dashboard's \
                files needs `Authorization: Bearer TOKEN` (or `?token=TOKEN`), else 401."
        },
        "security": [{ "bearer": [] }],
        "paths": paths(),
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Only when the daemon runs with --api-token."
                }
            },
            "schemas": schemas(),
            "responses": common_responses(),
        }
    })
}

/// Every route of the router, each method with its answers.
fn paths() -> Value {
    let mut paths = serde_json::Map::new();
    for (path, item) in [
        ("/v1/status", status_paths()),
        ("/v1/peers", peers_path()),
        ("/v1/leader", leader_path()),
        ("/v1/kv", list_path()),
        ("/v1/kv/{key}", entry_path()),
        ("/v1/pulse/{key}", pulse_path()),
        ("/v1/watch", watch_path()),
        ("/v1/ws", ws_path()),
        ("/v1/messages", messages_path()),
        ("/v1/services", services_path()),
        ("/v1/services/{name}/call", call_path()),
        ("/v1/openapi.json", openapi_path()),
        ("/metrics", metrics_path()),
        ("/", dashboard_path("The dashboard page", "text/html")),
        (
            "/dashboard/app.js",
            dashboard_path("Its script", "text/javascript"),
        ),
        (
            "/dashboard/app.css",
            dashboard_path("Its style sheet", "text/css"),
        ),
        (
            "/dashboard/icon.svg",
            dashboard_path("Its icon", "image/svg+xml"),
        ),
    ] {
        paths.insert(path.to_string(), item);
    }
    Value::Object(paths)
}

/// A `$ref` to a component schema.
fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// A JSON answer with `schema`.
fn json_answer(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

/// The answers of an operation: `ok` (status, answer) pairs, then the named common error
/// answers (`"400"`, `"401"`...).
fn answers(ok: &[(&str, Value)], errors: &[&str]) -> Value {
    let mut all = serde_json::Map::new();
    for (status, answer) in ok {
        all.insert(status.to_string(), answer.clone());
    }
    for status in errors {
        let reference = json!({ "$ref": format!("#/components/responses/{status}") });
        all.insert(status.to_string(), reference);
    }
    Value::Object(all)
}

fn key_param() -> Value {
    json!({
        "name": "key",
        "in": "path",
        "required": true,
        "description": "The key: `/`-separated non-empty segments, no control characters, at \
            most 512 bytes of UTF-8, percent-encoded in the path.",
        "schema": schema("Key")
    })
}

fn any_json_body(description: &str) -> Value {
    json!({
        "required": true,
        "description": description,
        "content": { "application/json": { "schema": {} } }
    })
}

fn status_paths() -> Value {
    json!({ "get": {
        "operationId": "getStatus",
        "summary": "This node, its leader and term, members and counters",
        "responses": answers(&[("200", json_answer("The status", schema("Status")))],
            &["401", "503"])
    }})
}

fn peers_path() -> Value {
    json!({ "get": {
        "operationId": "getPeers",
        "summary": "Every member, this node included",
        "responses": answers(
            &[("200", json_answer("The members", json!({ "type": "array", "items": schema("Peer") })))],
            &["401", "503"])
    }})
}

fn leader_path() -> Value {
    json!({ "get": {
        "operationId": "getLeader",
        "summary": "The leader as this node sees it, and the term",
        "responses": answers(&[("200", json_answer("The leader", schema("Leader")))],
            &["401", "503"])
    }})
}

fn list_path() -> Value {
    json!({ "get": {
        "operationId": "listEntries",
        "summary": "Entries at or under a prefix, in key order",
        "parameters": [{
            "name": "prefix", "in": "query", "required": false,
            "description": "Only keys at or under this prefix (`a` covers `a` and `a/b`, not `ab`); all when empty.",
            "schema": { "type": "string" }
        }],
        "responses": answers(
            &[("200", json_answer("The entries", json!({ "type": "array", "items": schema("Entry") })))],
            &["400", "401", "503"])
    }})
}

fn queue_param() -> Value {
    json!({
        "name": "queue", "in": "query", "required": false,
        "description": "When the key's owner is unreachable, queue the write for it (202) instead of failing (503).",
        "schema": { "type": "boolean" }
    })
}

fn entry_path() -> Value {
    let written = [
        ("200", json_answer("Durable", schema("Written"))),
        (
            "202",
            json_answer("Queued for the key's owner", schema("Queued")),
        ),
    ];
    json!({
        "parameters": [key_param()],
        "get": {
            "operationId": "getEntry",
            "summary": "One entry",
            "responses": answers(&[("200", json_answer("The entry", schema("Entry")))],
                &["400", "401", "404", "503"])
        },
        "put": {
            "operationId": "putEntry",
            "summary": "Write a JSON value; answered once durable (or queued for the owner)",
            "parameters": [queue_param()],
            "requestBody": any_json_body("The value: any JSON, at most --max-value bytes once compact (default 65536)."),
            "responses": answers(&written, &["400", "401", "403", "404", "409", "413", "503"])
        },
        "delete": {
            "operationId": "deleteEntry",
            "summary": "Delete (a tombstone, even for a key that holds nothing)",
            "parameters": [queue_param()],
            "responses": answers(&written, &["400", "401", "403", "404", "409", "503"])
        }
    })
}

fn pulse_path() -> Value {
    json!({
        "parameters": [key_param()],
        "post": {
            "operationId": "pulse",
            "summary": "Send an event on a key to every watcher in the group; never stored",
            "requestBody": any_json_body("The payload: any JSON."),
            "responses": answers(
                &[("200", json_answer("Sent", json!({ "type": "object", "maxProperties": 0 })))],
                &["400", "401", "403", "404", "413", "503"])
        }
    })
}

fn watch_path() -> Value {
    json!({ "get": {
        "operationId": "watch",
        "summary": "Changes and pulses as server-sent events (an endless stream)",
        "description": "Events: `change` (data: a Change, id: its sequence number), `pulse` \
            (data: a Pulse) and `lagged` (data: {\"missed\": N}; re-read the state). A \
            `Last-Event-ID` header wins over `from`.",
        "parameters": [
            { "name": "prefix", "in": "query", "required": false, "schema": { "type": "string" } },
            { "name": "from", "in": "query", "required": false,
              "description": "Resume after this sequence number.",
              "schema": { "type": "integer", "minimum": 0, "maximum": u64::MAX } },
            { "name": "Last-Event-ID", "in": "header", "required": false,
              "description": "Resume after this sequence number (a u64; wins over `from`).",
              "schema": { "type": "string", "pattern": "^[0-9]{1,19}$" } }
        ],
        "responses": answers(
            &[("200", json!({
                "description": "The event stream; the schema describes one event",
                "content": { "text/event-stream": { "schema": sse_event() } }
            }))],
            &["400", "401", "410"])
    }})
}

/// One server-sent event of `/v1/watch`: its name, its id (changes only) and its JSON data.
fn sse_event() -> Value {
    let event = |name: &str, data: &str, with_id: bool| {
        let mut event = json!({
            "type": "object",
            "required": ["event", "data"],
            "properties": {
                "event": { "const": name },
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": schema(data)
                }
            }
        });
        if with_id {
            event["required"] = json!(["event", "id", "data"]);
            event["properties"]["id"] = json!({ "type": "string", "pattern": "^[0-9]+$" });
        }
        event
    };
    json!({ "oneOf": [
        event("change", "Change", true),
        event("pulse", "Pulse", false),
        event("lagged", "Lagged", false)
    ]})
}

fn ws_path() -> Value {
    json!({ "get": {
        "operationId": "websocket",
        "summary": "WebSocket upgrade: group events, messages, state changes, sends, calls and serving",
        "description": "JSON text frames. Client ops: listen, watch, send, call, serve, respond \
            (see the README). Without the upgrade headers the answer is a 4xx error.",
        "responses": answers(
            &[("101", json!({ "description": "Switching to the WebSocket protocol" }))],
            &["400", "401", "405", "426"])
    }})
}

fn messages_path() -> Value {
    json!({ "post": {
        "operationId": "sendMessage",
        "summary": "Send a message to the group, the leader, every member or one node",
        "requestBody": {
            "required": true,
            "content": { "application/json": { "schema": schema("SendRequest") } }
        },
        "responses": answers(
            &[("200", json_answer("Handed to the network (best-effort) or acknowledged (reliable)",
                json!({
                    "type": "object", "required": ["sent"], "additionalProperties": false,
                    "properties": { "sent": { "const": true } }
                })))],
            &["400", "401", "404", "409", "413", "503", "504"])
    }})
}

fn services_path() -> Value {
    json!({ "get": {
        "operationId": "listServices",
        "summary": "Each service with the live members providing it",
        "responses": answers(
            &[("200", json_answer("Service name to provider ids", json!({
                "type": "object",
                "additionalProperties": { "type": "array", "items": schema("NodeId") }
            })))],
            &["401", "503"])
    }})
}

fn call_path() -> Value {
    json!({
        "parameters": [{
            "name": "name", "in": "path", "required": true,
            "schema": schema("ServiceName")
        }],
        "post": {
            "operationId": "callService",
            "summary": "Call a service provided in the group and wait for the reply",
            "requestBody": {
                "required": true,
                "content": { "application/json": { "schema": schema("CallRequest") } }
            },
            "responses": answers(
                &[("200", json_answer("The reply (with policy all: every provider's)",
                    json!({ "oneOf": [schema("CallReply"), schema("CallReplies")] })))],
                &["400", "401", "404", "413", "502", "503", "504"])
        }
    })
}

fn openapi_path() -> Value {
    json!({ "get": {
        "operationId": "openapi",
        "summary": "This document",
        "responses": answers(
            &[("200", json_answer("OpenAPI 3.1", json!({ "type": "object", "required": ["openapi", "paths"] })))],
            &["401"])
    }})
}

fn metrics_path() -> Value {
    json!({ "get": {
        "operationId": "metrics",
        "summary": "Counters in the Prometheus text exposition format",
        "responses": answers(
            &[("200", json!({
                "description": "Prometheus text format 0.0.4",
                "content": { "text/plain": { "schema": { "type": "string" } } }
            }))],
            &["401", "503"])
    }})
}

/// A file of the dashboard: served to anyone (it holds no data; the page asks the API for it,
/// with the token the user gives).
fn dashboard_path(what: &str, media_type: &str) -> Value {
    json!({ "get": {
        "summary": what,
        "security": [],
        "responses": {
            "200": {
                "description": what,
                "content": { media_type: { "schema": { "type": "string" } } }
            }
        }
    }})
}

/// Answers shared by many operations: all are `{"error": "..."}`.
fn common_responses() -> Value {
    let mut all = serde_json::Map::new();
    for (status, description) in [
        ("400", "Invalid request (key, body, query or header)"),
        ("401", "Missing or wrong API token"),
        ("403", "Reserved key (under @consort/)"),
        ("404", "No such entry, node, or route"),
        ("405", "Method not allowed"),
        (
            "409",
            "Refused: not the leader (broadcast), or by the key's owner",
        ),
        ("410", "Changes since `from` are no longer kept"),
        ("413", "The value or message is too large"),
        ("426", "A WebSocket upgrade is required"),
        ("502", "The provider failed or was lost"),
        (
            "503",
            "No leader, no provider, owner unreachable, queue full, or the node stopped",
        ),
        ("504", "Timed out, or not delivered in time"),
    ] {
        all.insert(
            status.to_string(),
            json_answer(description, schema("Error")),
        );
    }
    Value::Object(all)
}

/// The bodies.
fn schemas() -> Value {
    let non_negative = || json!({ "type": "integer", "minimum": 0 });
    let timeout = json!({
        "type": ["integer", "null"], "minimum": 1, "maximum": MAX_TIMEOUT_MS,
        "description": "Milliseconds; null or absent for the default"
    });
    let mut all = json!({
        "Error": {
            "type": "object", "required": ["error"], "additionalProperties": false,
            "properties": { "error": { "type": "string" } }
        },
        "NodeId": {
            "type": "string", "pattern": "^[0-9a-f]{16}$",
            "not": { "const": "0000000000000000" }
        },
        "Key": {
            "type": "string", "minLength": 1, "maxLength": MAX_KEY_LEN,
            "pattern": "^[^/\\u0000-\\u001f\\u007f-\\u009f]+(/[^/\\u0000-\\u001f\\u007f-\\u009f]+)*$"
        },
        "ServiceName": {
            "type": "string", "pattern": format!("^[A-Za-z0-9._:-]{{1,{MAX_SERVICE_NAME}}}$")
        },
        "Version": { "type": "string", "pattern": "^[0-9]+-[0-9a-f]{16}$" },
        "Status": {
            "type": "object",
            "required": ["node", "group", "leader", "term", "peers", "members", "datagrams",
                "entries", "bootstrapping", "group_time_us"],
            "properties": {
                "node": {
                    "type": "object", "required": ["id", "name", "addr", "generation"],
                    "properties": {
                        "id": schema("NodeId"), "name": { "type": "string" },
                        "addr": { "type": "string" }, "generation": non_negative()
                    }
                },
                "group": { "type": "string" },
                "leader": { "oneOf": [schema("NodeId"), { "type": "null" }] },
                "term": non_negative(),
                "peers": non_negative(),
                "members": {
                    "type": "object", "required": ["alive", "suspect", "down", "left"],
                    "properties": {
                        "alive": non_negative(), "suspect": non_negative(),
                        "down": non_negative(), "left": non_negative()
                    }
                },
                "datagrams": {
                    "type": "object", "required": ["in", "out", "bytes_in", "bytes_out", "rejected"],
                    "properties": {
                        "in": non_negative(), "out": non_negative(),
                        "bytes_in": non_negative(), "bytes_out": non_negative(),
                        "rejected": { "type": "object", "additionalProperties": non_negative() }
                    }
                },
                "entries": non_negative(),
                "bootstrapping": { "type": "boolean" },
                "group_time_us": {
                    "type": "integer",
                    "description": "The group's time (the leader's clock as estimated here), µs since the Unix epoch"
                }
            }
        },
        "Peer": {
            "type": "object",
            "required": ["id", "name", "addr", "state", "is_leader", "rtt_ms", "clock_offset_ms",
                "services", "is_self", "generation"],
            "properties": {
                "id": schema("NodeId"),
                "name": { "type": "string" },
                "addr": { "type": "string" },
                "state": { "enum": ["alive", "suspect", "down", "left"] },
                "is_leader": { "type": "boolean" },
                "rtt_ms": { "type": ["number", "null"] },
                "clock_offset_ms": { "type": ["number", "null"] },
                "services": { "type": "array", "items": { "type": "string" } },
                "is_self": { "type": "boolean" },
                "generation": non_negative()
            }
        },
        "Leader": {
            "type": "object", "required": ["leader", "term", "is_self"],
            "properties": {
                "leader": { "oneOf": [schema("Peer"), { "type": "null" }] },
                "term": non_negative(),
                "is_self": { "type": "boolean" }
            }
        },
        "Entry": {
            "type": "object", "required": ["key", "value", "version", "origin"],
            "properties": {
                "key": schema("Key"), "value": {}, "version": schema("Version"),
                "origin": schema("NodeId")
            }
        },
        "Written": {
            "type": "object", "required": ["version", "origin"],
            "properties": { "version": schema("Version"), "origin": schema("NodeId") }
        },
        "Queued": {
            "type": "object", "required": ["queued"],
            "properties": { "queued": { "const": true } }
        },
        "Change": {
            "type": "object", "required": ["seq", "key", "value", "deleted", "version", "origin"],
            "properties": {
                "seq": non_negative(), "key": schema("Key"), "value": {},
                "deleted": { "type": "boolean" }, "version": schema("Version"),
                "origin": schema("NodeId")
            }
        },
        "Lagged": {
            "type": "object", "required": ["missed"],
            "properties": { "missed": non_negative() }
        },
        "Pulse": {
            "type": "object", "required": ["key", "value", "origin"],
            "properties": { "key": schema("Key"), "value": {}, "origin": schema("NodeId") }
        },
        "SendRequest": {
            "type": "object", "required": ["to", "body"], "additionalProperties": false,
            "properties": {
                "to": {
                    "description": "`broadcast` (the leader's, to every member; only the leader \
                        may), `leader`, `all` (every other member) or a node id.",
                    "anyOf": [
                        { "enum": ["broadcast", "leader", "all"] },
                        schema("NodeId")
                    ]
                },
                "body": { "description": "Any JSON." },
                "reliable": { "type": "boolean", "default": false },
                "timeout_ms": timeout.clone()
            }
        },
        "CallRequest": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "body": { "description": "Any JSON (null when absent)." },
                "timeout_ms": timeout,
                "policy": {
                    "description": "null or absent for round_robin",
                    "anyOf": [
                        { "enum": ["round_robin", "local_first", "leader", "all", null] },
                        {
                            "type": "string", "pattern": "^node:[0-9a-f]{16}$",
                            "not": { "const": "node:0000000000000000" }
                        }
                    ]
                }
            }
        },
        "CallReply": {
            "type": "object", "required": ["from", "body"],
            "properties": { "from": schema("NodeId"), "body": {} }
        },
        "CallReplies": {
            "type": "object", "required": ["replies"],
            "properties": {
                "replies": {
                    "type": "array",
                    "items": {
                        "type": "object", "required": ["from"],
                        "properties": {
                            "from": schema("NodeId"), "body": {}, "error": { "type": "string" }
                        }
                    }
                }
            }
        }
    });
    // What the server sends has no field the schema does not name.
    for closed in [
        "Status", "Peer", "Leader", "Entry", "Written", "Queued", "Change", "Pulse", "Lagged",
    ] {
        all[closed]["additionalProperties"] = json!(false);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        for part in text.split("\"$ref\":\"#/components/").skip(1) {
            let target = part.split('"').next().unwrap();
            let (kind, name) = target.split_once('/').unwrap();
            assert!(
                doc["components"][kind].get(name).is_some(),
                "dangling $ref {target}"
            );
        }
    }

    /// The property names of component schema `name`, and whether all are required.
    fn properties(name: &str) -> (Vec<String>, bool) {
        let schema = &document()["components"]["schemas"][name];
        let mut names: Vec<String> = schema["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{name} has no properties"))
            .keys()
            .cloned()
            .collect();
        names.sort();
        let mut required: Vec<String> = schema["required"]
            .as_array()
            .map(|r| r.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        required.sort();
        (names.clone(), names == required)
    }

    fn keys(value: impl serde::Serialize) -> Vec<String> {
        let mut keys: Vec<String> = serde_json::to_value(value)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    /// Every field the server sends is described, and required (a body type that gains a field
    /// fails to build here, or shows up as undocumented).
    #[test]
    fn schemas_match_the_bodies_the_server_sends() {
        use super::super::model::*;
        let id = "00000000000000ab".to_string();
        let peer = PeerBody {
            id: id.clone(),
            name: "n".into(),
            addr: "127.0.0.1:1".into(),
            state: "alive".into(),
            is_leader: true,
            rtt_ms: None,
            clock_offset_ms: None,
            services: vec![],
            is_self: true,
            generation: 1,
        };
        let status = StatusBody {
            node: NodeBody {
                id: id.clone(),
                name: "n".into(),
                addr: "127.0.0.1:1".into(),
                generation: 1,
            },
            group: "g".into(),
            leader: None,
            term: 0,
            peers: 0,
            members: MemberCounts::default(),
            datagrams: DatagramCounts::new(&consort::Stats::default()),
            entries: 0,
            bootstrapping: false,
            group_time_us: 0,
        };
        let leader = LeaderBody {
            leader: Some(peer.clone()),
            term: 1,
            is_self: true,
        };
        let entry = EntryBody {
            key: "k".into(),
            value: json!(1),
            version: format!("1-{id}"),
            origin: id.clone(),
        };
        let change = ChangeBody {
            seq: 1,
            key: "k".into(),
            value: json!(1),
            deleted: false,
            version: format!("1-{id}"),
            origin: id.clone(),
        };
        let pulse = PulseBody {
            key: "k".into(),
            value: json!(1),
            origin: id.clone(),
        };
        let written = WrittenBody {
            version: format!("1-{id}"),
            origin: id,
        };
        for (name, sent) in [
            ("Status", keys(status)),
            ("Peer", keys(peer)),
            ("Leader", keys(leader)),
            ("Entry", keys(entry)),
            ("Change", keys(change)),
            ("Pulse", keys(pulse)),
            ("Written", keys(written)),
            ("Queued", keys(QueuedBody { queued: true })),
            ("Lagged", keys(LaggedBody { missed: 1 })),
        ] {
            let (described, all_required) = properties(name);
            assert_eq!(described, sent, "{name}");
            assert!(all_required, "{name}: every field is always sent");
        }
    }

    #[test]
    fn every_route_is_described() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        for (path, method) in [
            ("/v1/status", "get"),
            ("/v1/peers", "get"),
            ("/v1/leader", "get"),
            ("/v1/kv", "get"),
            ("/v1/kv/{key}", "get"),
            ("/v1/kv/{key}", "put"),
            ("/v1/kv/{key}", "delete"),
            ("/v1/pulse/{key}", "post"),
            ("/v1/watch", "get"),
            ("/v1/ws", "get"),
            ("/v1/messages", "post"),
            ("/v1/services", "get"),
            ("/v1/services/{name}/call", "post"),
            ("/v1/openapi.json", "get"),
            ("/metrics", "get"),
        ] {
            let operation = &paths[path][method];
            assert!(operation.is_object(), "{method} {path} missing");
            let responses = operation["responses"].as_object().unwrap();
            assert!(responses.contains_key("401"), "{method} {path} lacks 401");
        }
        // The dashboard's files need no token.
        assert_eq!(paths["/"]["get"]["security"], json!([]));
    }
}
