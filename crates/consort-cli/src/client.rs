//! The client side of the HTTP API: finding the daemon and asking it, for the client commands.
//!
//! The daemon is found through `--api URL`, else `CONSORT_API`, else the `ports.json` of
//! `--data-dir` (or of the default data dir), else the default port on 127.0.0.1.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use consort::{DataDir, DataDirError};
use serde::de::DeserializeOwned;

use crate::config::{default_data_dir, DEFAULT_API_PORT};
use crate::exit::usage;

/// How long a request may take in all.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

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

    /// `GET path`: the body of a 2xx answer, or one clear error.
    pub fn get(&self, path: &str) -> anyhow::Result<String> {
        let url = format!("{}{path}", self.base);
        let mut request = self.agent.get(&url);
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
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
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().chars().take(200).collect());
    let hint = if status == 401 {
        " (pass --api-token or set CONSORT_API_TOKEN)"
    } else {
        ""
    };
    format!("HTTP {status}: {message}{hint}")
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
