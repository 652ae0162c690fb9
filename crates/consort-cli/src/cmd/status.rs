//! `consort status`: this node, the leader, and how many peers are live.

use clap::Args;

use crate::api::model::StatusBody;
use crate::client::{ClientArgs, Daemon};

/// Show this node, the leader and the number of live peers.
#[derive(Debug, Args)]
pub struct Status {
    #[command(flatten)]
    client: ClientArgs,
    /// Print the API's JSON as is
    #[arg(long)]
    json: bool,
}

impl Status {
    /// Asks the daemon and prints the answer.
    pub fn run(self) -> anyhow::Result<()> {
        let daemon = Daemon::locate(&self.client)?;
        let (body, status) = daemon.get_json::<StatusBody>("/v1/status")?;
        if self.json {
            println!("{}", body.trim_end());
        } else {
            print!("{}", render(&status));
        }
        Ok(())
    }
}

/// The status as a few aligned lines.
fn render(status: &StatusBody) -> String {
    let node = &status.node;
    let members = status
        .members
        .by_state()
        .map(|(state, n)| format!("{n} {state}"))
        .join(", ");
    let d = &status.datagrams;
    format!(
        "node     {} ({}) at {}, generation {}\n\
         group    {}\n\
         leader   {} (term {})\n\
         peers    {} live\n\
         members  {members}\n\
         state    {} entries{}\n\
         traffic  {} datagrams in ({} bytes), {} out ({} bytes), {} rejected\n",
        node.id,
        node.name,
        node.addr,
        node.generation,
        status.group,
        status.leader.as_deref().unwrap_or("none"),
        status.term,
        status.peers,
        status.entries,
        if status.bootstrapping {
            ", bootstrapping from a peer"
        } else {
            ""
        },
        d.received,
        d.bytes_in,
        d.sent,
        d.bytes_out,
        d.rejected_total(),
    )
}
