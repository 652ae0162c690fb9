//! The subcommands, one file each: the clap arguments and the code that carries them out.
//!
//! A new command adds a file here, a variant to [`Command`] and an arm to [`Command::run`].

mod call;
mod del;
mod demo;
mod get;
mod keygen;
mod leader;
mod listen;
mod ls;
mod peers;
mod pulse;
mod send;
mod serve;
mod set;
mod shutdown;
mod status;
mod up;
mod watch;

use clap::Subcommand;

pub use self::call::Call;
pub use self::del::Del;
pub use self::demo::Demo;
pub use self::get::Get;
pub use self::keygen::Keygen;
pub use self::leader::Leader;
pub use self::listen::Listen;
pub use self::ls::Ls;
pub use self::peers::Peers;
pub use self::pulse::Pulse;
pub use self::send::Send;
pub use self::serve::Serve;
pub use self::set::Set;
pub use self::status::Status;
pub use self::up::Up;
pub use self::watch::Watch;

/// What `consort` was asked to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node: join the group and serve the HTTP API until SIGINT or SIGTERM.
    Up(Up),
    /// Print a new group secret.
    Keygen(Keygen),
    /// Run three local nodes with simulated home devices and print their dashboards' URLs.
    Demo(Demo),
    /// Show this node, the leader and the number of live peers.
    Status(Status),
    /// List every member of the group, this node included.
    Peers(Peers),
    /// Show the leader and its term.
    Leader(Leader),
    /// Print the value at a key.
    Get(Get),
    /// Write a JSON value at a key.
    Set(Set),
    /// Delete a key.
    Del(Del),
    /// List the entries at or under a prefix.
    Ls(Ls),
    /// Print changes and pulses as they happen (NDJSON).
    Watch(Watch),
    /// Send an event on a key to every watcher; never stored.
    Pulse(Pulse),
    /// Send a message: the leader's broadcast, to the leader, to a node, or to all.
    Send(Send),
    /// Call a service and print its reply.
    Call(Call),
    /// Print every group event and message this node receives (NDJSON).
    Listen(Listen),
    /// Provide a service from this node by running a command for each request.
    Serve(Serve),
}

impl Command {
    /// Carries out the command.
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Up(up) => up.run(),
            Command::Keygen(keygen) => keygen.run(),
            Command::Demo(demo) => demo.run(),
            Command::Status(status) => status.run(),
            Command::Peers(peers) => peers.run(),
            Command::Leader(leader) => leader.run(),
            Command::Get(get) => get.run(),
            Command::Set(set) => set.run(),
            Command::Del(del) => del.run(),
            Command::Ls(ls) => ls.run(),
            Command::Watch(watch) => watch.run(),
            Command::Pulse(pulse) => pulse.run(),
            Command::Send(send) => send.run(),
            Command::Call(call) => call.run(),
            Command::Listen(listen) => listen.run(),
            Command::Serve(serve) => serve.run(),
        }
    }
}
