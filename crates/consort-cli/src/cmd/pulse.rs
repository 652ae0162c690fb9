//! `consort pulse KEY JSON`: an event on a key, delivered to every watcher, never stored.

use clap::Args;

use crate::client::{key_arg, key_path, value_arg, ClientArgs, Daemon, Method};

/// Send a JSON event on KEY to every watcher in the group; it is never stored.
#[derive(Debug, Args)]
pub struct Pulse {
    #[command(flatten)]
    client: ClientArgs,
    /// The key, e.g. doorbell
    key: String,
    /// The payload, as JSON
    #[arg(allow_hyphen_values = true)]
    value: String,
}

impl Pulse {
    /// Checks the arguments, then asks the daemon to send.
    pub fn run(self) -> anyhow::Result<()> {
        let key = key_arg(&self.key)?;
        let value = value_arg(&self.value)?;
        let daemon = Daemon::locate(&self.client)?;
        daemon.call(
            Method::Post,
            &key_path("/v1/pulse/", &key),
            Some(value.as_str()),
        )?;
        Ok(())
    }
}
