//! `consort listen`: every group event and message this node receives, one JSON object per line.

use std::io::{ErrorKind, Write};

use anyhow::{anyhow, bail};
use clap::Args;
use tungstenite::Message;

use crate::client::{ClientArgs, Daemon};

/// Print every group event (peers added and removed, leadership changes) and every message this
/// node receives, as NDJSON, until interrupted; exit 1 if the daemon goes away.
#[derive(Debug, Args)]
pub struct Listen {
    #[command(flatten)]
    client: ClientArgs,
}

impl Listen {
    /// Opens the WebSocket, asks for events, and prints them.
    pub fn run(self) -> anyhow::Result<()> {
        let daemon = Daemon::locate(&self.client)?;
        let mut socket = daemon.websocket()?;
        socket.send(Message::text(r#"{"op":"listen"}"#))?;
        let mut out = std::io::stdout().lock();
        loop {
            let text = match socket.read() {
                Ok(Message::Text(text)) => text,
                Ok(Message::Close(_)) | Err(_) => {
                    return Err(anyhow!("the daemon at {} ended the session", daemon.base()))
                }
                Ok(_) => continue,
            };
            match writeln!(out, "{text}").and_then(|()| out.flush()) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => bail!("cannot write the output: {e}"),
            }
        }
    }
}
