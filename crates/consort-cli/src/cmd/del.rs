//! `consort del KEY`: delete a key (a tombstone that wins over older writes everywhere).

use clap::Args;

use crate::client::{key_arg, key_path, Answer, ClientArgs, Daemon, Method};

/// Delete KEY; returns once durable where it was applied.
#[derive(Debug, Args)]
pub struct Del {
    #[command(flatten)]
    client: ClientArgs,
    /// The key, e.g. kitchen/light/on
    key: String,
    /// If the key's owner is unreachable, queue the delete for it (prints `queued`)
    #[arg(long)]
    queue: bool,
    /// Print the version written, as the API gives it
    #[arg(long)]
    json: bool,
}

impl Del {
    /// Asks the daemon to delete.
    pub fn run(self) -> anyhow::Result<()> {
        let key = key_arg(&self.key)?;
        let daemon = Daemon::locate(&self.client)?;
        let mut path = key_path("/v1/kv/", &key);
        if self.queue {
            path.push_str("?queue=true");
        }
        let answer = daemon.call(Method::Delete, &path, None)?;
        print_written(&answer, self.json);
        Ok(())
    }
}

/// After a write: `queued` if it waits for its owner (202), the API's JSON with `json`, else
/// nothing.
pub fn print_written(answer: &Answer, json: bool) {
    if answer.status == 202 {
        println!("queued");
    } else if json {
        println!("{}", answer.body.trim_end());
    }
}
