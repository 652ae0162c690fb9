//! `consort`: run a node of a Consort group (`up`) and talk to a running one.
//!
//! The daemon and the client commands share this one binary. Each subcommand lives in its own
//! file under `cmd/`; the HTTP API the daemon serves is in `api/`, and the client side of it in
//! `client`. Errors carry their exit code (see `exit`): 0 ok, 1 not found or refused, 2 usage.

#![forbid(unsafe_code)]

mod api;
mod client;
mod cmd;
mod config;
mod dashboard;
mod exit;
mod logging;

use std::process::ExitCode;

use clap::Parser;

/// Keep devices or program instances in sync, peer to peer.
#[derive(Debug, Parser)]
#[command(name = "consort", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: cmd::Command,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version go to stdout as clap prints them.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        // A usage error is one line, like every other error: clap's first line, without its
        // "error: " prefix and its "For more information" footer.
        Err(e) => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("consort: {}", first.trim_start_matches("error: "));
            return ExitCode::from(exit::USAGE);
        }
    };
    match cli.command.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("consort: {}", exit::one_line(&err));
            ExitCode::from(exit::code(&err))
        }
    }
}
