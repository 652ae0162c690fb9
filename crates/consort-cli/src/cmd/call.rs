//! `consort call SERVICE JSON [--timeout MS] [--policy P]`: prints the provider's reply.

use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};

use crate::client::{ClientArgs, Daemon, Method};
use crate::exit::usage;

/// Call a service with a JSON request and print the reply (one JSON line; with --policy all,
/// the list of every provider's reply). A request runs at most once, even when retried.
#[derive(Debug, Args)]
pub struct Call {
    #[command(flatten)]
    client: ClientArgs,
    /// The service name
    service: String,
    /// The request, as JSON
    #[arg(allow_hyphen_values = true)]
    body: String,
    /// How long the call may take in all, in ms [default: 5000]
    #[arg(long, value_name = "MS")]
    timeout: Option<u64>,
    /// round_robin, local_first, leader, all, or node:ID [default: round_robin]
    #[arg(long, value_name = "POLICY")]
    policy: Option<String>,
    /// Print the whole answer ({"from","body"}) rather than the body alone
    #[arg(long)]
    json: bool,
}

impl Call {
    /// Checks the arguments, calls, and prints the reply.
    pub fn run(self) -> anyhow::Result<()> {
        let body: Value = serde_json::from_str(&self.body)
            .map_err(|e| usage(format!("the request is not valid JSON: {e}")))?;
        if self.timeout == Some(0) {
            return Err(usage("--timeout must be at least 1 ms"));
        }
        let request = json!({
            "body": body,
            "timeout_ms": self.timeout,
            "policy": self.policy,
        });
        let daemon = Daemon::locate(&self.client)?;
        let path = format!(
            "/v1/services/{}/call",
            crate::client::query_value(&self.service)
        );
        let wait = Duration::from_millis(self.timeout.unwrap_or(5_000));
        let answer =
            daemon.call_within(Method::Post, &path, Some(&request.to_string()), Some(wait))?;
        let reply: Value = serde_json::from_str(&answer.body)?;
        let shown = match (&reply.get("replies"), self.json) {
            (Some(replies), false) => (*replies).clone(),
            (None, false) => reply.get("body").cloned().unwrap_or(Value::Null),
            (_, true) => reply,
        };
        println!("{shown}");
        Ok(())
    }
}
