//! `GET /metrics`: the node's counters in the Prometheus text exposition format.

use std::fmt::Write;

use super::model::{DatagramCounts, MemberCounts};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the state gauges show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateGauges {
    /// Live entries held.
    pub entries: usize,
    /// Whether the node is still pulling its state from a peer.
    pub bootstrapping: bool,
}

/// Renders the members by state, the state gauges and the datagram counters.
pub fn render(members: &MemberCounts, state: StateGauges, datagrams: &DatagramCounts) -> String {
    let mut out = String::new();
    header(
        &mut out,
        "consort_members",
        "gauge",
        "Members by state, this node included.",
    );
    for (state, count) in members.by_state() {
        let _ = writeln!(out, "consort_members{{state=\"{state}\"}} {count}");
    }
    let gauges = [
        (
            "consort_entries",
            "Live entries held (tombstones not counted).",
            state.entries as u64,
        ),
        (
            "consort_bootstrapping",
            "1 while the node is still pulling its state from a peer.",
            u64::from(state.bootstrapping),
        ),
    ];
    for (name, help, value) in gauges {
        header(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    }
    let counters = [
        (
            "consort_datagrams_received_total",
            "Datagrams received, accepted or not.",
            datagrams.received,
        ),
        (
            "consort_datagrams_sent_total",
            "Datagrams sent.",
            datagrams.sent,
        ),
        (
            "consort_received_bytes_total",
            "Bytes of datagrams received.",
            datagrams.bytes_in,
        ),
        (
            "consort_sent_bytes_total",
            "Bytes of datagrams sent.",
            datagrams.bytes_out,
        ),
    ];
    for (name, help, value) in counters {
        header(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
    let rejected = "consort_datagrams_rejected_total";
    header(
        &mut out,
        rejected,
        "counter",
        "Datagrams dropped, by reason.",
    );
    for (reason, count) in &datagrams.rejected {
        let _ = writeln!(out, "{rejected}{{reason=\"{reason}\"}} {count}");
    }
    out
}

/// The `# HELP` and `# TYPE` lines of one metric.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use consort::Stats;

    #[test]
    fn every_reason_and_state_is_exposed() {
        let mut stats = Stats {
            datagrams_in: 7,
            ..Stats::default()
        };
        stats.rejected.insert(consort::RejectReason::UnknownKey, 3);
        let state = StateGauges {
            entries: 12,
            bootstrapping: false,
        };
        let text = render(
            &MemberCounts::default(),
            state,
            &DatagramCounts::new(&stats),
        );
        assert!(text.contains("consort_members{state=\"alive\"} 0\n"));
        assert!(text.contains("consort_datagrams_received_total 7\n"));
        assert!(text.contains("# TYPE consort_entries gauge\nconsort_entries 12\n"));
        assert!(text.contains("consort_bootstrapping 0\n"));
        assert!(text.contains("consort_datagrams_rejected_total{reason=\"unknown_key\"} 3\n"));
        assert!(text.contains("consort_datagrams_rejected_total{reason=\"bad_tag\"} 0\n"));
    }
}
