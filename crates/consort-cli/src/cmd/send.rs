//! `consort send (--broadcast | --leader | --to NODE | --all) [--reliable] JSON`.

use std::time::Duration;

use anyhow::Context;
use clap::{ArgGroup, Args};
use serde_json::json;

use crate::client::{ClientArgs, Daemon, Method};
use crate::exit::usage;

/// Send a JSON message: the leader's broadcast to every member, to the leader, to one node, or
/// to every other member. Best-effort unless --reliable (acked, retried, exactly once in order;
/// returns once every receiver has it).
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["broadcast", "leader", "to", "all"])))]
pub struct Send {
    #[command(flatten)]
    client: ClientArgs,
    /// The leader's broadcast to every member, itself included (refused on a follower)
    #[arg(long)]
    broadcast: bool,
    /// To the leader
    #[arg(long)]
    leader: bool,
    /// To one node, by id
    #[arg(long, value_name = "NODE")]
    to: Option<String>,
    /// To every other live member
    #[arg(long)]
    all: bool,
    /// Acked and retried until delivered (or the timeout)
    #[arg(long)]
    reliable: bool,
    /// How long a reliable message is retried, in ms [default: 30000]
    #[arg(long, value_name = "MS")]
    timeout: Option<u64>,
    /// The message, as JSON
    #[arg(allow_hyphen_values = true)]
    body: String,
}

impl Send {
    /// Checks the arguments, then asks the daemon to send.
    pub fn run(self) -> anyhow::Result<()> {
        let body: serde_json::Value = serde_json::from_str(&self.body)
            .map_err(|e| usage(format!("the message is not valid JSON: {e}")))?;
        let to = match (&self.to, self.broadcast, self.leader) {
            (Some(node), _, _) => node.clone(),
            (None, true, _) => "broadcast".into(),
            (None, false, true) => "leader".into(),
            _ => "all".into(),
        };
        if self.timeout == Some(0) {
            return Err(usage("--timeout must be at least 1 ms"));
        }
        let request = json!({
            "to": to,
            "body": body,
            "reliable": self.reliable,
            "timeout_ms": self.timeout,
        });
        let daemon = Daemon::locate(&self.client)?;
        let wait = self
            .reliable
            .then(|| Duration::from_millis(self.timeout.unwrap_or(30_000)));
        daemon
            .call_within(
                Method::Post,
                "/v1/messages",
                Some(&request.to_string()),
                wait,
            )
            .context("not sent")?;
        Ok(())
    }
}
