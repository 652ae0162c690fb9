//! `consort peers`: every member of the group, this node included.

use clap::Args;

use crate::api::model::PeerBody;
use crate::client::{ClientArgs, Daemon};

/// List every member of the group, this node included.
#[derive(Debug, Args)]
pub struct Peers {
    #[command(flatten)]
    client: ClientArgs,
    /// Print the API's JSON as is
    #[arg(long)]
    json: bool,
}

impl Peers {
    /// Asks the daemon and prints the list.
    pub fn run(self) -> anyhow::Result<()> {
        let daemon = Daemon::locate(&self.client)?;
        let (body, peers) = daemon.get_json::<Vec<PeerBody>>("/v1/peers")?;
        if self.json {
            println!("{}", body.trim_end());
        } else {
            print!("{}", render(&peers));
        }
        Ok(())
    }
}

/// The peers as an aligned table; `*` marks the leader, `(self)` this node.
fn render(peers: &[PeerBody]) -> String {
    let header = ["ID", "NAME", "ADDR", "STATE", "LEADER"].map(str::to_string);
    let rows: Vec<[String; 5]> = peers
        .iter()
        .map(|p| {
            let name = if p.is_self {
                format!("{} (self)", p.name)
            } else {
                p.name.clone()
            };
            let leader = if p.is_leader { "*" } else { "" };
            [
                p.id.clone(),
                name,
                p.addr.clone(),
                p.state.clone(),
                leader.to_string(),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    std::iter::once(&header)
        .chain(&rows)
        .map(|row| line(row, &widths))
        .collect()
}

/// One row, cells padded to `widths`, trailing spaces trimmed.
fn line(row: &[String; 5], widths: &[usize; 5]) -> String {
    let cells: Vec<String> = row
        .iter()
        .zip(widths)
        .map(|(cell, w)| format!("{cell:<w$}"))
        .collect();
    format!("{}\n", cells.join("  ").trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str, is_self: bool) -> PeerBody {
        PeerBody {
            id: id.into(),
            name: "kitchen".into(),
            addr: "10.0.0.1:7470".into(),
            state: "alive".into(),
            is_leader: false,
            rtt_ms: None,
            clock_offset_ms: None,
            services: vec![],
            is_self,
            generation: 1,
        }
    }

    #[test]
    fn table_is_aligned() {
        let text = render(&[
            peer("00000000000000aa", true),
            peer("00000000000000bb", false),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID                NAME"));
        assert!(lines[1].contains("kitchen (self)  10.0.0.1:7470"));
        assert_eq!(lines[1].find("10.0.0.1"), lines[2].find("10.0.0.1"));
    }
}
