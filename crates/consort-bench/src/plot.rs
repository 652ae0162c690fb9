//! The plots of the report, as SVG: the distribution of propagation latency, and throughput
//! against fan-out, each contender one line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use plotters::prelude::*;

use crate::report::Contender;
use crate::stats;

/// Size of each plot, in pixels.
const SIZE: (u32, u32) = (800, 480);

/// What the scenarios collect for the plots.
#[derive(Debug, Default)]
pub struct PlotData {
    /// Every propagation latency measured, in microseconds, all rounds pooled.
    pub latencies: BTreeMap<Contender, Vec<f64>>,
    /// Median updates per second at each fan-out.
    pub throughput: BTreeMap<Contender, Vec<(usize, f64)>>,
}

impl PlotData {
    /// Writes the plots there is data for into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        let mut written = Vec::new();
        if self.latencies.values().any(|v| !v.is_empty()) {
            let path = dir.join("latency.svg");
            latency_cdf(&self.latencies, &path)?;
            written.push(path);
        }
        if self.throughput.values().any(|v| !v.is_empty()) {
            let path = dir.join("throughput.svg");
            throughput_by_fanout(&self.throughput, &path)?;
            written.push(path);
        }
        Ok(written)
    }
}

fn color(contender: Contender) -> RGBColor {
    match contender {
        Contender::Consort => RGBColor(0xd6, 0x27, 0x28),
        Contender::Mosquitto => RGBColor(0x1f, 0x77, 0xb4),
        Contender::UdpFloor => RGBColor(0x55, 0x55, 0x55),
    }
}

/// Decades that hold every positive value (at least one).
fn log_bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (low, high) = values
        .filter(|v| *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if low > high {
        return (1.0, 10.0);
    }
    let low = 10f64.powf(low.log10().floor());
    let high = 10f64.powf(high.log10().ceil()).max(low * 10.0);
    (low, high)
}

/// The cumulative distribution of one-way latency to every watcher, x on a log scale.
fn latency_cdf(latencies: &BTreeMap<Contender, Vec<f64>>, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let (low, high) = log_bounds(latencies.values().flatten().copied());
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Propagation latency to all 4 watchers (64-byte values)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((low..high).log_scale(), 0f64..100f64)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("latency (µs, log scale)")
        .y_desc("% of writes at or below")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (&contender, values) in latencies {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| *v > 0.0).collect();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len() as f64;
        let points = sorted
            .iter()
            .enumerate()
            .map(|(i, &v)| (v, (i + 1) as f64 / n * 100.0));
        let p50 = stats::percentile(&sorted, 50.0).unwrap_or(0.0);
        let style = color(contender).stroke_width(2);
        chart
            .draw_series(LineSeries::new(points, style))
            .map_err(|e| anyhow!("{e}"))?
            .label(format!("{contender} (p50 of all rounds {p50:.0} µs)"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    root.present().map_err(|e| anyhow!("{e}"))
}

/// Updates per second reaching every peer, against the number of peers, y on a log scale.
fn throughput_by_fanout(
    throughput: &BTreeMap<Contender, Vec<(usize, f64)>>,
    path: &Path,
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let (low, high) = log_bounds(throughput.values().flatten().map(|&(_, v)| v));
    let max_fanout = throughput
        .values()
        .flatten()
        .map(|&(f, _)| f)
        .max()
        .unwrap_or(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Sustained updates per second reaching every peer",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0usize..max_fanout + 1, (low..high).log_scale())
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("fan-out (peers or subscribers)")
        .y_desc("updates/s (log scale)")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (&contender, points) in throughput {
        let style = color(contender).stroke_width(2);
        chart
            .draw_series(LineSeries::new(points.iter().copied(), style))
            .map_err(|e| anyhow!("{e}"))?
            .label(contender.to_string())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&p| Circle::new(p, 4, color(contender).filled())),
            )
            .map_err(|e| anyhow!("{e}"))?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present().map_err(|e| anyhow!("{e}"))
}

/// The legend box, where it hides no line.
fn legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_plots_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = PlotData::default();
        data.latencies
            .insert(Contender::Consort, vec![120.0, 150.0, 900.0]);
        data.latencies.insert(Contender::UdpFloor, vec![12.0, 15.0]);
        data.throughput
            .insert(Contender::Consort, vec![(1, 5e3), (2, 4e3), (4, 3e3)]);
        data.throughput
            .insert(Contender::Mosquitto, vec![(1, 5e4), (4, 2e4)]);
        let written = data.write(dir.path()).unwrap();
        assert_eq!(written.len(), 2);
        for path in written {
            let svg = std::fs::read_to_string(path).unwrap();
            assert!(
                svg.starts_with("<svg") && svg.contains("consort"),
                "{svg:.200}"
            );
        }
    }
}
