//! The readable side of the report: a Markdown table of every figure next to its baselines
//! and goal, written to stdout and, between two markers, into BENCHMARKS.md.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::report::{Contender, Figure, Report};
use crate::stats;

/// Where the generated section starts in the Markdown file.
pub const BEGIN: &str = "<!-- consort-bench:results:begin -->";
/// Where it ends.
pub const END: &str = "<!-- consort-bench:results:end -->";

/// A number with as many digits as it deserves.
fn number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 100.0 || value == value.trunc() {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 0.1 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// A contender's cell: the median and, over several rounds, the range `(min–max)`.
fn cell(figure: &Figure, contender: Contender) -> String {
    let Some(rounds) = figure.rounds.get(&contender) else {
        return "n/a".into();
    };
    let Some(median) = stats::median(rounds) else {
        return "not measured".into();
    };
    match stats::range(rounds) {
        Some((low, high)) if rounds.len() > 1 => {
            format!("{} ({}–{})", number(median), number(low), number(high))
        }
        _ => number(median),
    }
}

/// The table of every figure.
pub fn table(figures: &[Figure]) -> String {
    let mut out = String::from(
        "| scenario | unit | consort | mosquitto | UDP floor | goal | met |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for figure in figures {
        let met = match figure.met() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "?",
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} | {} | {met} |",
            figure.name,
            figure.unit,
            cell(figure, Contender::Consort),
            cell(figure, Contender::Mosquitto),
            cell(figure, Contender::UdpFloor),
            figure.goal_text(),
        );
    }
    out
}

/// The generated section: where the figures came from, the table, the plots, the warnings.
fn section(report: &Report, plots: &[PathBuf]) -> String {
    let mut out = String::new();
    let commit = report.machine.commit.as_deref().unwrap_or("unknown");
    let mosquitto = report
        .machine
        .mosquitto
        .as_deref()
        .unwrap_or("not installed");
    let flag = if report.mode == "quick" {
        " --quick"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "Measured by `consort-bench all{flag}` at commit `{commit}` on {}; Mosquitto \
         {mosquitto}; the run took {:.0} s (load average {} at its start, {} at its end). Each \
         cell is the median over the rounds, then the smallest and largest round in parentheses.\n",
        report.machine.summary(),
        report.duration_s,
        report.load[0],
        report.load[1],
    );
    out.push_str(&table(&report.figures));
    if !plots.is_empty() {
        out.push('\n');
    }
    for plot in plots {
        let name = plot.file_stem().unwrap_or_default().to_string_lossy();
        let _ = writeln!(out, "![{name}]({})", plot.display());
    }
    if !report.warnings.is_empty() {
        out.push_str("\nWarnings of this run:\n\n");
        for warning in &report.warnings {
            let _ = writeln!(out, "- {warning}");
        }
    }
    out
}

/// Replaces the section between [`BEGIN`] and [`END`] in the Markdown file at `path`; plot
/// paths are written relative to it.
pub fn update(path: &Path, report: &Report, plots: &[PathBuf]) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (Some(begin), Some(end)) = (text.find(BEGIN), text.find(END)) else {
        bail!("{} has no {BEGIN} ... {END} section", path.display());
    };
    if end < begin {
        bail!("{}: {END} comes before {BEGIN}", path.display());
    }
    let base = path
        .canonicalize()?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let relative: Vec<PathBuf> = plots
        .iter()
        .map(|p| {
            let absolute = p.canonicalize().unwrap_or_else(|_| p.clone());
            absolute
                .strip_prefix(&base)
                .map(Path::to_path_buf)
                .unwrap_or(absolute)
        })
        .collect();
    let updated = format!(
        "{}{BEGIN}\n{}{}",
        &text[..begin],
        section(report, &relative),
        &text[end..]
    );
    std::fs::write(path, updated).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Bound;

    #[test]
    fn cells_show_median_and_range() {
        let mut figure = Figure::new("x", "s", vec![Bound::Max(1.0)]).applies(Contender::Mosquitto);
        for v in [0.5, 0.7, 0.6] {
            figure.push(Contender::Consort, v);
        }
        assert_eq!(cell(&figure, Contender::Consort), "0.60 (0.50–0.70)");
        assert_eq!(cell(&figure, Contender::Mosquitto), "not measured");
        assert_eq!(cell(&figure, Contender::UdpFloor), "n/a");
        let table = table(&[figure]);
        assert!(table.contains("| `x` | s | 0.60 (0.50–0.70) | not measured | n/a | <= 1 | yes |"));
    }

    #[test]
    fn numbers_keep_meaningful_digits() {
        assert_eq!(number(12345.6), "12346");
        assert_eq!(number(34.0), "34");
        assert_eq!(number(12.34), "12.3");
        assert_eq!(number(1.234), "1.23");
        assert_eq!(number(0.0123), "0.012");
    }
}
