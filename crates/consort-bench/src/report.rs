//! Figures, their goals, and the JSON report.
//!
//! Every figure holds one value per round for each contender; what is reported is the median
//! over the rounds, with the per-round values beside it so the spread can be read. The JSON is
//! `{"scenarios": {NAME: {"unit", "consort", "mosquitto", "udp_floor", "goal", ...}}}`, a
//! baseline that does not apply being `null`.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{json, Map, Value};

use crate::machine::Machine;
use crate::stats;

/// Who is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Contender {
    /// Consort nodes, each its own process.
    Consort,
    /// The Mosquitto broker driven by a Rust MQTT client.
    Mosquitto,
    /// Raw UDP between two processes: the physical floor.
    UdpFloor,
}

impl Contender {
    /// Every contender, in report order.
    pub const ALL: [Contender; 3] = [
        Contender::Consort,
        Contender::Mosquitto,
        Contender::UdpFloor,
    ];

    /// The key in the JSON report.
    pub fn key(self) -> &'static str {
        match self {
            Contender::Consort => "consort",
            Contender::Mosquitto => "mosquitto",
            Contender::UdpFloor => "udp_floor",
        }
    }
}

impl fmt::Display for Contender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// One condition a figure must meet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// At most this value.
    Max(f64),
    /// At most this many times a baseline's figure.
    MaxTimes(f64, Contender),
    /// At least this many times a baseline's figure.
    MinTimes(f64, Contender),
}

impl Bound {
    /// Whether `value` meets the bound; `None` if the baseline it needs was not measured.
    fn met(self, value: f64, baseline: impl Fn(Contender) -> Option<f64>) -> Option<bool> {
        Some(match self {
            Bound::Max(limit) => value <= limit,
            Bound::MaxTimes(times, of) => value <= times * baseline(of)?,
            Bound::MinTimes(times, of) => value >= times * baseline(of)?,
        })
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Max(limit) => write!(f, "<= {limit}"),
            Bound::MaxTimes(times, of) => write!(f, "<= {times:.1}x {of}"),
            Bound::MinTimes(times, of) => write!(f, ">= {times:.1}x {of}"),
        }
    }
}

/// One measured quantity: per-round values of each contender that applies, and its goal.
#[derive(Debug, Clone)]
pub struct Figure {
    /// The scenario name in the report (`propagation_p50_us`).
    pub name: &'static str,
    /// Its unit (`us`, `s`, `updates/s`, `%`, `MB`, `bytes`, `ratio`).
    pub unit: &'static str,
    /// Every bound Consort's figure must meet.
    pub goal: Vec<Bound>,
    /// Per-round values; a contender absent here does not apply (reported as `null`).
    pub rounds: BTreeMap<Contender, Vec<f64>>,
    /// Anything else worth keeping (the figure at other fan-outs, bytes counted, notes).
    pub extra: Map<String, Value>,
}

impl Figure {
    /// A figure with no rounds yet.
    pub fn new(name: &'static str, unit: &'static str, goal: Vec<Bound>) -> Figure {
        Figure {
            name,
            unit,
            goal,
            rounds: BTreeMap::new(),
            extra: Map::new(),
        }
    }

    /// Marks `contender` as applying to this figure, with no round yet.
    pub fn applies(mut self, contender: Contender) -> Figure {
        self.rounds.entry(contender).or_default();
        self
    }

    /// Adds one round's value for `contender`.
    pub fn push(&mut self, contender: Contender, value: f64) {
        self.rounds.entry(contender).or_default().push(value);
    }

    /// The median over rounds for `contender`, if it applies and was measured.
    pub fn median(&self, contender: Contender) -> Option<f64> {
        stats::median(self.rounds.get(&contender)?)
    }

    /// Whether Consort's median meets every bound; `None` if there is no goal or something it
    /// needs is missing.
    pub fn met(&self) -> Option<bool> {
        if self.goal.is_empty() {
            return None;
        }
        let ours = self.median(Contender::Consort)?;
        let mut all = true;
        for bound in &self.goal {
            all &= bound.met(ours, |c| self.median(c))?;
        }
        Some(all)
    }

    /// The goal as text (`<= 1.0x mosquitto, <= 5.0x udp_floor`).
    pub fn goal_text(&self) -> String {
        let parts: Vec<String> = self.goal.iter().map(Bound::to_string).collect();
        parts.join(", ")
    }

    /// The figure's JSON object.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("unit".into(), json!(self.unit));
        let mut per_round = Map::new();
        let mut spread = Map::new();
        for contender in Contender::ALL {
            let median = self.median(contender).map(round3);
            object.insert(contender.key().into(), json!(median));
            if let Some(values) = self.rounds.get(&contender) {
                let values: Vec<f64> = values.iter().copied().map(round3).collect();
                if let Some((low, high)) = stats::range(&values) {
                    spread.insert(contender.key().into(), json!({"min": low, "max": high}));
                }
                per_round.insert(contender.key().into(), json!(values));
            }
        }
        object.insert("goal".into(), json!(self.goal_text()));
        object.insert("met".into(), json!(self.met()));
        object.insert("spread".into(), Value::Object(spread));
        object.insert("per_round".into(), Value::Object(per_round));
        object.extend(self.extra.clone());
        Value::Object(object)
    }
}

/// Three decimals are more than any figure here can claim.
pub fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// Everything one invocation measured.
#[derive(Debug)]
pub struct Report {
    /// `quick` or `full`.
    pub mode: &'static str,
    /// Where it ran.
    pub machine: Machine,
    /// Wall time of the whole run, in seconds.
    pub duration_s: f64,
    /// Load averages of the machine when the run started and when it ended.
    pub load: [String; 2],
    /// The figures, in the canonical order.
    pub figures: Vec<Figure>,
    /// What could not be measured, and why.
    pub warnings: Vec<String>,
}

impl Report {
    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        let scenarios: Map<String, Value> = self
            .figures
            .iter()
            .map(|f| (f.name.to_string(), f.to_json()))
            .collect();
        json!({
            "mode": self.mode,
            "machine": self.machine.to_json(),
            "duration_s": round3(self.duration_s),
            "load_average": {"start": self.load[0], "end": self.load[1]},
            "warnings": self.warnings,
            "scenarios": scenarios,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_compare_medians() {
        let goal = vec![
            Bound::MaxTimes(1.0, Contender::Mosquitto),
            Bound::MaxTimes(5.0, Contender::UdpFloor),
        ];
        let mut figure = Figure::new("propagation_p50_us", "us", goal);
        for (c, v) in [
            (Contender::Consort, 90.0),
            (Contender::Consort, 100.0),
            (Contender::Consort, 500.0),
            (Contender::UdpFloor, 25.0),
        ] {
            figure.push(c, v);
        }
        assert_eq!(figure.median(Contender::Consort), Some(100.0));
        // Mosquitto was not measured: the goal cannot be judged.
        assert_eq!(figure.met(), None);
        figure.push(Contender::Mosquitto, 120.0);
        assert_eq!(figure.met(), Some(true));
        figure.push(Contender::Mosquitto, 60.0);
        // Mosquitto's median is now 90, below Consort's 100.
        assert_eq!(figure.met(), Some(false));
    }

    #[test]
    fn json_has_every_contender_key() {
        let mut figure = Figure::new("wire_overhead_bytes", "bytes", vec![Bound::Max(34.0)]);
        figure.push(Contender::Consort, 34.0);
        let json = figure.to_json();
        assert_eq!(json["consort"], json!(34.0));
        assert_eq!(json["mosquitto"], Value::Null);
        assert_eq!(json["udp_floor"], Value::Null);
        assert_eq!(json["goal"], json!("<= 34"));
        assert_eq!(json["met"], json!(true));
    }
}
