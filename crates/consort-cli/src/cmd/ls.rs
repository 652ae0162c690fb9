//! `consort ls [PREFIX]`: the entries at or under a prefix.

use clap::Args;

use crate::api::model::EntryBody;
use crate::client::{query_value, ClientArgs, Daemon, Method};

/// List the entries at or under PREFIX (all when none), in key order, as `key = value` lines.
#[derive(Debug, Args)]
pub struct Ls {
    #[command(flatten)]
    client: ClientArgs,
    /// Only keys at or under this prefix, e.g. kitchen (whole segments: not kitchenette)
    prefix: Option<String>,
    /// Print the list as the API gives it
    #[arg(long)]
    json: bool,
}

impl Ls {
    /// Asks the daemon and prints the entries.
    pub fn run(self) -> anyhow::Result<()> {
        let daemon = Daemon::locate(&self.client)?;
        let prefix = self.prefix.unwrap_or_default();
        let path = format!("/v1/kv?prefix={}", query_value(&prefix));
        let answer = daemon.call(Method::Get, &path, None)?;
        if self.json {
            println!("{}", answer.body.trim_end());
            return Ok(());
        }
        let entries: Vec<EntryBody> = serde_json::from_str(&answer.body)
            .map_err(|e| anyhow::anyhow!("{}: unexpected answer: {e}", daemon.base()))?;
        print!("{}", render(&entries));
        Ok(())
    }
}

/// One `key = value` line per entry.
fn render(entries: &[EntryBody]) -> String {
    entries
        .iter()
        .map(|e| format!("{} = {}\n", e.key, e.value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_key_equals_compact_json() {
        let entry = |key: &str, value| EntryBody {
            key: key.into(),
            value,
            version: "1-00".into(),
            origin: "00".into(),
        };
        let text = render(&[
            entry("a/b", serde_json::json!({"on": true})),
            entry("c", serde_json::json!("x")),
        ]);
        assert_eq!(text, "a/b = {\"on\":true}\nc = \"x\"\n");
    }
}
