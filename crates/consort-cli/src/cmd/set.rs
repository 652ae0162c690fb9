//! `consort set KEY JSON`: write a value.

use clap::Args;

use super::del::print_written;
use crate::client::{key_arg, key_path, value_arg, ClientArgs, Daemon, Method};

/// Write a JSON value at KEY; returns once durable where it was applied.
#[derive(Debug, Args)]
pub struct Set {
    #[command(flatten)]
    client: ClientArgs,
    /// The key, e.g. kitchen/light/on
    key: String,
    /// The value, as JSON: true, 21.5, '"text"', '{"on":true}'
    #[arg(allow_hyphen_values = true)]
    value: String,
    /// If the key's owner is unreachable, queue the write for it (prints `queued`)
    #[arg(long)]
    queue: bool,
    /// Print the version written, as the API gives it
    #[arg(long)]
    json: bool,
}

impl Set {
    /// Checks the arguments, then asks the daemon to write.
    pub fn run(self) -> anyhow::Result<()> {
        let key = key_arg(&self.key)?;
        let value = value_arg(&self.value)?;
        let daemon = Daemon::locate(&self.client)?;
        let mut path = key_path("/v1/kv/", &key);
        if self.queue {
            path.push_str("?queue=true");
        }
        let answer = daemon.call(Method::Put, &path, Some(value.as_str()))?;
        print_written(&answer, self.json);
        Ok(())
    }
}
