//! `consort get KEY`: the value at a key.

use clap::Args;

use crate::api::model::EntryBody;
use crate::client::{key_arg, key_path, ClientArgs, Daemon, Method};

/// Print the value at KEY (compact JSON); exit 1 if it holds none.
#[derive(Debug, Args)]
pub struct Get {
    #[command(flatten)]
    client: ClientArgs,
    /// The key, e.g. kitchen/light/on
    key: String,
    /// Print the whole entry (key, value, version, origin) as the API gives it
    #[arg(long)]
    json: bool,
}

impl Get {
    /// Asks the daemon and prints the value.
    pub fn run(self) -> anyhow::Result<()> {
        let key = key_arg(&self.key)?;
        let daemon = Daemon::locate(&self.client)?;
        let answer = daemon.call(Method::Get, &key_path("/v1/kv/", &key), None)?;
        if self.json {
            println!("{}", answer.body.trim_end());
        } else {
            let entry: EntryBody = serde_json::from_str(&answer.body)
                .map_err(|e| anyhow::anyhow!("{}: unexpected answer: {e}", daemon.base()))?;
            println!("{}", entry.value);
        }
        Ok(())
    }
}
