//! `consort keygen`: print a new group secret.

use clap::Args;

/// Print a new group secret (64 hex digits) on one line.
#[derive(Debug, Args)]
pub struct Keygen {}

impl Keygen {
    /// Prints the secret.
    pub fn run(self) -> anyhow::Result<()> {
        println!("{}", consort::data_dir::generate_secret());
        Ok(())
    }
}
