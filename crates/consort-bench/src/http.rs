//! A client for one node's HTTP API: JSON requests over kept-alive connections, Prometheus
//! counters, and the server-sent events of `/v1/watch`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;
use ureq::{Agent, BodyReader};

/// How long one API request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections kept open per node: enough for every writer thread of the throughput scenario.
const POOL: usize = 64;

/// Largest answer read (a full listing of 100k entries is about 10 MB).
const MAX_ANSWER: u64 = 256 << 20;

/// One node's API. Cloning shares its connection pool.
#[derive(Clone)]
pub struct Api {
    agent: Agent,
    base: String,
}

impl Api {
    /// The API listening at `addr`.
    pub fn new(addr: SocketAddr) -> Api {
        let config = Agent::config_builder()
            .timeout_global(Some(REQUEST_TIMEOUT))
            .max_idle_connections_per_host(POOL)
            .max_idle_connections(POOL)
            .build();
        Api {
            agent: config.into(),
            base: format!("http://{addr}"),
        }
    }

    /// `GET path`, parsed as JSON.
    pub fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let text = self.get_text(path)?;
        serde_json::from_str(&text).with_context(|| format!("GET {path}: not JSON"))
    }

    /// `GET path`, as text.
    pub fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let url = format!("{}{path}", self.base);
        let mut answer = self
            .agent
            .get(&url)
            .call()
            .with_context(|| format!("GET {url}"))?;
        let text = answer
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .with_context(|| format!("GET {url}: reading the answer"))?;
        Ok(text)
    }

    /// `PUT /v1/kv/{key}` with a JSON value; returns once the node made it durable.
    pub fn put(&self, key: &str, json: &str) -> anyhow::Result<()> {
        let url = format!("{}/v1/kv/{key}", self.base);
        let mut answer = self
            .agent
            .put(&url)
            .content_type("application/json")
            .send(json)
            .with_context(|| format!("PUT {url}"))?;
        // Reading the answer to its end returns the connection to the pool.
        answer.body_mut().read_to_string()?;
        Ok(())
    }

    /// Live entries the node holds (`entries` of `/v1/status`, its own metadata included).
    pub fn entries(&self) -> Option<u64> {
        self.get_json("/v1/status").ok()?["entries"].as_u64()
    }

    /// The members the node lists, itself included.
    pub fn peers(&self) -> Option<Vec<Value>> {
        match self.get_json("/v1/peers").ok()? {
            Value::Array(peers) => Some(peers),
            _ => None,
        }
    }

    /// The state (`alive`, `suspect`, `down`, `left`) the node shows for member `id`.
    pub fn state_of(&self, id: &str) -> Option<String> {
        let peers = self.peers()?;
        let peer = peers.iter().find(|p| p["id"] == id)?;
        Some(peer["state"].as_str()?.to_string())
    }

    /// The leader's id as the node sees it.
    pub fn leader(&self) -> Option<String> {
        let leader = self.get_json("/v1/leader").ok()?;
        Some(leader["leader"]["id"].as_str()?.to_string())
    }

    /// The unlabelled samples of `/metrics`, by name.
    pub fn metrics(&self) -> anyhow::Result<HashMap<String, f64>> {
        let text = self.get_text("/metrics")?;
        Ok(parse_metrics(&text))
    }

    /// Opens `/v1/watch?prefix=P`: the node's changes as they happen.
    pub fn watch(&self, prefix: &str) -> anyhow::Result<Watch> {
        // A stream stays open as long as the node: no timeout, and a connection of its own.
        let agent: Agent = Agent::config_builder().timeout_global(None).build().into();
        let url = format!("{}/v1/watch?prefix={prefix}", self.base);
        let answer = agent
            .get(&url)
            .call()
            .with_context(|| format!("GET {url}"))?;
        Ok(Watch {
            lines: BufReader::new(answer.into_body().into_reader()),
        })
    }
}

/// Prometheus text: `name value` lines; labelled samples and comments are skipped.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.contains('{'))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// A change seen by a watch.
#[derive(Debug, Clone)]
pub struct Change {
    /// Its new value, as JSON text.
    pub value: String,
    /// When the event was read.
    pub at: Instant,
}

/// An open `/v1/watch` stream.
pub struct Watch {
    lines: BufReader<BodyReader<'static>>,
}

impl Watch {
    /// Blocks until the next `change` event; `None` when the stream ends.
    pub fn next_change(&mut self) -> Option<Change> {
        let mut event = String::new();
        let mut data = String::new();
        let mut line = String::new();
        loop {
            line.clear();
            if self.lines.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if event == "change" {
                    let at = Instant::now();
                    return parse_change(&data, at);
                }
                event.clear();
                data.clear();
            } else if let Some(name) = line.strip_prefix("event:") {
                event = name.trim().to_string();
            } else if let Some(text) = line.strip_prefix("data:") {
                data.push_str(text.trim_start());
            }
        }
    }
}

/// The key and value of a `change` event's data.
fn parse_change(data: &str, at: Instant) -> Option<Change> {
    let body: Value = serde_json::from_str(data).ok()?;
    body["key"].as_str()?;
    Some(Change {
        value: body["value"].to_string(),
        at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_without_labels_are_read() {
        let text =
            "# HELP consort_sent_bytes_total Bytes.\n# TYPE consort_sent_bytes_total counter\n\
                    consort_sent_bytes_total 1234\nconsort_members{state=\"alive\"} 3\n";
        let metrics = parse_metrics(text);
        assert_eq!(metrics.get("consort_sent_bytes_total"), Some(&1234.0));
        assert_eq!(metrics.len(), 1);
    }

    #[test]
    fn change_events_are_parsed() {
        let data = r#"{"seq":3,"key":"a/b","value":{"i":1},"version":"x","origin":"y"}"#;
        let change = parse_change(data, Instant::now()).unwrap();
        assert_eq!(change.value, r#"{"i":1}"#);
    }
}
