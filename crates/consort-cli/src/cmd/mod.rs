//! The subcommands, one file each: the clap arguments and the code that carries them out.
//!
//! A new command adds a file here, a variant to [`Command`] and an arm to [`Command::run`].

mod keygen;
mod peers;
mod status;
mod up;

use clap::Subcommand;

pub use self::keygen::Keygen;
pub use self::peers::Peers;
pub use self::status::Status;
pub use self::up::Up;

/// What `consort` was asked to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node: join the group and serve the HTTP API until SIGINT or SIGTERM.
    Up(Up),
    /// Print a new group secret.
    Keygen(Keygen),
    /// Show this node, the leader and the number of live peers.
    Status(Status),
    /// List every member of the group, this node included.
    Peers(Peers),
}

impl Command {
    /// Carries out the command.
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Up(up) => up.run(),
            Command::Keygen(keygen) => keygen.run(),
            Command::Status(status) => status.run(),
            Command::Peers(peers) => peers.run(),
        }
    }
}
