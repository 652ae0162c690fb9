//! `consort leader`: who leads the group, at which term.

use clap::Args;

use crate::api::model::LeaderBody;
use crate::client::{ClientArgs, Daemon};

/// Show the leader and its term.
#[derive(Debug, Args)]
pub struct Leader {
    #[command(flatten)]
    client: ClientArgs,
    /// Print the API's JSON as is
    #[arg(long)]
    json: bool,
}

impl Leader {
    /// Asks the daemon and prints the answer; exits 1 when there is no leader.
    pub fn run(self) -> anyhow::Result<()> {
        let daemon = Daemon::locate(&self.client)?;
        let (body, answer) = daemon.get_json::<LeaderBody>("/v1/leader")?;
        if self.json {
            println!("{}", body.trim_end());
            return Ok(());
        }
        match &answer.leader {
            Some(leader) => {
                let me = if answer.is_self { " (this node)" } else { "" };
                println!(
                    "{} ({}) at {}, term {}{me}",
                    leader.id, leader.name, leader.addr, answer.term
                );
                Ok(())
            }
            // Exit 1: "not found".
            None => Err(anyhow::anyhow!(
                "no leader (term {}): quorum not reached, or an election is under way",
                answer.term
            )),
        }
    }
}
