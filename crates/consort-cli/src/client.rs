//! The client side of the HTTP API: finding the daemon and asking it, for the client commands.
//!
//! The daemon is found through `--api URL`, else `CONSORT_API`, else the `ports.json` of
//! `--data-dir` (or of the default data dir), else the default port on 127.0.0.1.

use std::fmt;
use std::io::{BufRead, BufReader, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use consort::{DataDir, DataDirError, Key, Value};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;

use crate::config::{default_data_dir, DEFAULT_API_PORT};
use crate::exit::usage;

/// How long a request may take in all (more than a write forwarded to its owner may wait for
/// it: 3 s by default).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long connecting (and, for a watch, getting the answer's head) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes left as they are in a path segment or query value: the RFC 3986 unreserved set.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The HTTP methods the client commands use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Read.
    Get,
    /// Write a value.
    Put,
    /// Write a tombstone.
    Delete,
    /// Send (a pulse).
    Post,
}

/// A 2xx answer of the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body, as received.
    pub body: String,
}

/// The daemon answered with an error: its status and its `{"error": ...}` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The status code.
    pub status: u16,
    /// What the daemon said was wrong.
    pub message: String,
}

impl Refused {
    /// The refusal for an answer with `status` and `body`.
    fn new(status: u16, body: &str) -> Refused {
        Refused {
            status,
            message: error_message(body),
        }
    }

    /// Whether the input was at fault (400 bad request, 413 too large): a usage error.
    pub fn is_usage(&self) -> bool {
        matches!(self.status, 400 | 413)
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if self.status == 401 {
            f.write_str(" (pass --api-token or set CONSORT_API_TOKEN)")?;
        }
        Ok(())
    }
}

impl std::error::Error for Refused {}

/// How a client command finds and authenticates to the daemon.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// URL of the daemon's HTTP API, e.g. http://127.0.0.1:7471
    #[arg(long, value_name = "URL", env = "CONSORT_API")]
    pub api: Option<String>,
    /// Bearer token for the API
    #[arg(
        long,
        value_name = "TOKEN",
        env = "CONSORT_API_TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,
    /// Data dir of the daemon to ask (its ports.json names the API port)
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// A daemon's API, found.
pub struct Daemon {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Daemon {
    /// Finds the daemon the arguments point at.
    pub fn locate(args: &ClientArgs) -> anyhow::Result<Daemon> {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(REQUEST_TIMEOUT))
            .http_status_as_error(false)
            .proxy(None)
            .build()
            .new_agent();
        Ok(Daemon {
            base: base_url(args)?,
            token: args.api_token.clone().filter(|t| !t.is_empty()),
            agent,
        })
    }

    /// The base URL, e.g. `http://127.0.0.1:7471`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Adds the bearer token, if any.
    fn authorize<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => request.header("Authorization", format!("Bearer {token}")),
            None => request,
        }
    }

    /// `GET path`: the body of a 2xx answer, or one clear error.
    pub fn get(&self, path: &str) -> anyhow::Result<String> {
        let url = format!("{}{path}", self.base);
        let request = self.authorize(self.agent.get(&url));
        let mut response = request.call().map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let body = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("{url}: cannot read the answer"))?;
        if !status.is_success() {
            bail!("{url}: {}", refusal(status.as_u16(), &body));
        }
        Ok(body)
    }

    /// `GET path`, parsed; also returns the body as received.
    pub fn get_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<(String, T)> {
        let body = self.get(path)?;
        let parsed = serde_json::from_str(&body)
            .with_context(|| format!("{}{path}: unexpected answer", self.base))?;
        Ok((body, parsed))
    }

    /// `METHOD path` with an optional JSON body: a 2xx answer, or the daemon's [`Refused`]
    /// (its message alone, so it reads as the command's own error).
    pub fn call(&self, method: Method, path: &str, json: Option<&str>) -> anyhow::Result<Answer> {
        self.call_within(method, path, json, None)
    }

    /// [`Daemon::call`] for a request the daemon may take `wait` to answer (a reliable send or
    /// a service call with that timeout).
    pub fn call_within(
        &self,
        method: Method,
        path: &str,
        json: Option<&str>,
        wait: Option<Duration>,
    ) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", self.base);
        let longer;
        let agent = match wait {
            Some(wait) => {
                longer = ureq::Agent::config_builder()
                    .timeout_global(Some(wait + REQUEST_TIMEOUT))
                    .http_status_as_error(false)
                    .proxy(None)
                    .build()
                    .new_agent();
                &longer
            }
            None => &self.agent,
        };
        let sent = match method {
            Method::Get => self.authorize(agent.get(&url)).call(),
            Method::Delete => self.authorize(agent.delete(&url)).call(),
            Method::Put | Method::Post => {
                let request = if method == Method::Put {
                    agent.put(&url)
                } else {
                    agent.post(&url)
                };
                self.authorize(request)
                    .content_type("application/json")
                    .send(json.unwrap_or(""))
            }
        };
        let mut response = sent.map_err(|e| self.unreachable(e))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("{url}: cannot read the answer"))?;
        if !(200..300).contains(&status) {
            return Err(Refused::new(status, &body).into());
        }
        Ok(Answer { status, body })
    }

    /// `GET path` as a stream that stays open (server-sent events): the body, line by line.
    pub fn stream(&self, path: &str) -> anyhow::Result<impl BufRead> {
        // No overall timeout: a watch runs until the daemon or the user ends it.
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(CONNECT_TIMEOUT))
            .http_status_as_error(false)
            .proxy(None)
            .build()
            .new_agent();
        let url = format!("{}{path}", self.base);
        let request = self
            .authorize(agent.get(&url))
            .header("Accept", "text/event-stream");
        let mut response = request.call().map_err(|e| self.unreachable(e))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let body = response.body_mut().read_to_string().unwrap_or_default();
            return Err(Refused::new(status, &body).into());
        }
        Ok(BufReader::new(response.into_body().into_reader()))
    }

    /// Opens the WebSocket `/v1/ws` (for `listen` and `serve`).
    pub fn websocket(
        &self,
    ) -> anyhow::Result<
        tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    > {
        use tungstenite::client::IntoClientRequest;
        let Some(rest) = self.base.strip_prefix("http://") else {
            bail!("{}: only http:// daemons are supported", self.base);
        };
        let url = format!("ws://{}/v1/ws", rest.trim_end_matches('/'));
        let mut request = url
            .as_str()
            .into_client_request()
            .with_context(|| format!("{url}: not a valid address"))?;
        if let Some(token) = &self.token {
            let value = format!("Bearer {token}")
                .parse()
                .context("the API token is not a valid header value")?;
            request.headers_mut().insert("Authorization", value);
        }
        match tungstenite::connect(request) {
            Ok((socket, _)) => Ok(socket),
            Err(tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err(Refused::new(status, &body).into())
            }
            Err(tungstenite::Error::Io(e)) => Err(self.unreachable(ureq::Error::Io(e))),
            Err(e) => Err(anyhow!("{url}: {e}")),
        }
    }

    /// The one line that says a request did not get through.
    fn unreachable(&self, err: ureq::Error) -> anyhow::Error {
        let base = &self.base;
        match err {
            ureq::Error::Io(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionRefused
                        | ErrorKind::ConnectionReset
                        | ErrorKind::AddrNotAvailable
                ) =>
            {
                anyhow!("no daemon at {base} (is 'consort up' running?)")
            }
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                anyhow!("no daemon at {base} (is 'consort up' running?)")
            }
            ureq::Error::Timeout(_) => anyhow!("the daemon at {base} did not answer in time"),
            other => anyhow!("{base}: {other}"),
        }
    }
}

/// Why the daemon said no, from its `{"error": "..."}` body.
fn refusal(status: u16, body: &str) -> String {
    format!("HTTP {status}: {}", Refused::new(status, body))
}

/// The message of an `{"error": "..."}` body, or the start of any other body.
fn error_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().chars().take(200).collect())
}

/// Checks a key given on the command line; an invalid one is a usage error.
pub fn key_arg(text: &str) -> anyhow::Result<Key> {
    Key::new(text).map_err(|e| usage(e.to_string()))
}

/// Checks a JSON value given on the command line; one that does not parse is a usage error.
pub fn value_arg(text: &str) -> anyhow::Result<Value> {
    Value::parse(text).map_err(|e| usage(e.to_string()))
}

/// The API path of `key` under `route` (`/v1/kv/`): each segment percent-encoded, and `.` and
/// `..` segments encoded too, so no one on the way takes them for relative paths.
pub fn key_path(route: &str, key: &Key) -> String {
    let segments: Vec<String> = key
        .as_str()
        .split('/')
        .map(|segment| match segment {
            "." | ".." => segment.replace('.', "%2E"),
            _ => utf8_percent_encode(segment, UNRESERVED).to_string(),
        })
        .collect();
    format!("{route}{}", segments.join("/"))
}

/// `text` percent-encoded for a query string value.
pub fn query_value(text: &str) -> String {
    utf8_percent_encode(text, UNRESERVED).to_string()
}

/// The API's base URL, without a trailing slash.
fn base_url(args: &ClientArgs) -> anyhow::Result<String> {
    if let Some(url) = args.api.as_deref().filter(|u| !u.trim().is_empty()) {
        return normalize_url(url);
    }
    if let Some(dir) = &args.data_dir {
        return url_from_data_dir(dir);
    }
    let recorded = default_data_dir().and_then(|dir| url_from_data_dir(&dir).ok());
    Ok(recorded.unwrap_or_else(|| local_url(DEFAULT_API_PORT)))
}

/// `http://127.0.0.1:PORT`.
fn local_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// The API URL a node running on `dir` recorded in its `ports.json`.
fn url_from_data_dir(dir: &Path) -> anyhow::Result<String> {
    let not_running = || {
        let dir = dir.display();
        anyhow!("no daemon recorded in {dir} (is 'consort up --data-dir {dir}' running?)")
    };
    match DataDir::read_ports(dir) {
        Ok(ports) => ports.api.map(local_url).ok_or_else(not_running),
        Err(DataDirError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
            Err(not_running())
        }
        Err(e) => Err(e.into()),
    }
}

/// Accepts `http://host:port[/]` or `host:port`; refuses other schemes.
fn normalize_url(url: &str) -> anyhow::Result<String> {
    let url = url.trim().trim_end_matches('/');
    match url.split_once("://") {
        None => Ok(format!("http://{url}")),
        Some(("http", rest)) if !rest.is_empty() => Ok(url.to_string()),
        Some(_) => Err(usage(format!(
            "API URL {url:?} is not supported; use http://HOST:PORT"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalized() {
        assert_eq!(
            normalize_url("127.0.0.1:7471").unwrap(),
            "http://127.0.0.1:7471"
        );
        assert_eq!(normalize_url("http://h:1/").unwrap(), "http://h:1");
        assert!(normalize_url("https://h:1").is_err());
        assert!(normalize_url("ftp://h:1").is_err());
    }

    #[test]
    fn refusals_name_the_error() {
        assert_eq!(
            refusal(404, r#"{"error":"no such route"}"#),
            "HTTP 404: no such route"
        );
        assert!(refusal(401, "{}").contains("--api-token"));
        let refused = Refused::new(404, r#"{"error":"no such key: a/b"}"#);
        assert_eq!(refused.to_string(), "no such key: a/b");
        assert!(!refused.is_usage());
        assert!(Refused::new(413, "{}").is_usage());
    }

    #[test]
    fn keys_are_encoded_segment_by_segment() {
        let path = |k: &str| key_path("/v1/kv/", &Key::new(k).unwrap());
        assert_eq!(path("kitchen/light/on"), "/v1/kv/kitchen/light/on");
        assert_eq!(path("a b/c?d#e%f/é"), "/v1/kv/a%20b/c%3Fd%23e%25f/%C3%A9");
        assert_eq!(path("a/../b/./c.d"), "/v1/kv/a/%2E%2E/b/%2E/c.d");
        assert_eq!(query_value("a/b c&d"), "a%2Fb%20c%26d");
    }

    #[test]
    fn a_data_dir_without_a_daemon_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let err = url_from_data_dir(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("no daemon recorded"), "{err}");
        std::fs::write(
            tmp.path().join("ports.json"),
            r#"{"group":7470,"api":9999}"#,
        )
        .unwrap();
        assert_eq!(
            url_from_data_dir(tmp.path()).unwrap(),
            "http://127.0.0.1:9999"
        );
    }
}
