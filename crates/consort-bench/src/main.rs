//! `consort-bench`: real `consort` nodes on loopback, measured in the same run as the baselines
//! (a raw UDP ping-pong between two processes, the physical floor; and Mosquitto driven by a Rust
//! MQTT client). Writes a JSON report, SVG plots, and the table of BENCHMARKS.md.
//!
//! ```text
//! cargo run --release -p consort-bench -- all [--quick] [--out FILE] [--only NAME]...
//!     [--markdown BENCHMARKS.md] [--consort PATH]
//! ```

mod http;
mod machine;
mod markdown;
mod mqtt;
mod node;
mod plan;
mod plot;
mod procfs;
mod report;
mod scenario;
mod stats;
mod tcp;
mod udp;
mod wait;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::machine::Machine;
use crate::plan::Plan;
use crate::plot::PlotData;
use crate::report::Report;
use crate::scenario::{Bench, FIGURES};
use crate::stats::Rng;

#[derive(Debug, Parser)]
#[command(name = "consort-bench", about, version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the scenarios against Consort, Mosquitto and the raw UDP floor
    All(AllArgs),
    /// A raw UDP peer for the floor (started by `all`)
    #[command(hide = true)]
    UdpPeer,
}

#[derive(Debug, Args)]
struct AllArgs {
    /// Fewer rounds and samples: minutes instead of a quarter of an hour
    #[arg(long)]
    quick: bool,
    /// The JSON report; the plots go beside it
    #[arg(long, value_name = "FILE", default_value = "bench/results.json")]
    out: PathBuf,
    /// Only this figure (repeatable), e.g. wire_overhead_bytes
    #[arg(long, value_name = "NAME")]
    only: Vec<String>,
    /// Also write the table and plots into this Markdown file, between its
    /// `<!-- consort-bench:results:begin/end -->` markers
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// The `consort` binary [default: built by cargo beside this one]
    #[arg(long, value_name = "PATH")]
    consort: Option<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::All(args) => all(args),
        Cmd::UdpPeer => udp::serve_peer(),
    };
    if let Err(e) = result {
        eprintln!("consort-bench: {e:#}");
        std::process::exit(1);
    }
}

/// Runs the scenarios and writes the report.
fn all(args: AllArgs) -> anyhow::Result<()> {
    if let Some(unknown) = args.only.iter().find(|o| !FIGURES.contains(&o.as_str())) {
        eprintln!(
            "consort-bench: no figure named {unknown:?}; known: {}",
            FIGURES.join(", ")
        );
        std::process::exit(2);
    }
    let consort = consort_binary(args.consort)?;
    let plan = if args.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    let mosquitto = mqtt::find_broker();
    let machine = Machine::describe(mosquitto.as_deref());
    let mut bench = Bench {
        plan,
        consort,
        mosquitto,
        plots: PlotData::default(),
        warnings: Vec::new(),
        rng: Rng::new(0x5eed),
    };
    if bench.mosquitto.is_none() {
        bench.warn(
            "mosquitto is not installed (apt-get install mosquitto): its figures are null".into(),
        );
    }
    eprintln!(
        "consort-bench: {} run on {}",
        bench.plan.mode,
        machine.summary()
    );
    let started = Instant::now();
    let load_at_start = machine::load_average();
    let figures = scenario::run(&mut bench, &args.only);
    let report = Report {
        mode: bench.plan.mode,
        machine,
        duration_s: started.elapsed().as_secs_f64(),
        load: [load_at_start, machine::load_average()],
        figures,
        warnings: bench.warnings,
    };
    write_json(&args.out, &report)?;
    let dir = args.out.parent().unwrap_or(Path::new("."));
    let plots = bench.plots.write(dir).context("cannot draw the plots")?;
    print!("{}", markdown::table(&report.figures));
    eprintln!("consort-bench: wrote {}", args.out.display());
    for plot in &plots {
        eprintln!("consort-bench: wrote {}", plot.display());
    }
    if let Some(path) = &args.markdown {
        markdown::update(path, &report, &plots)?;
        eprintln!("consort-bench: updated {}", path.display());
    }
    Ok(())
}

/// Writes the report as pretty JSON, creating its directory.
fn write_json(path: &Path, report: &Report) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&report.to_json())?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

/// The `consort` binary: the one given, or the one beside this binary in cargo's target
/// directory, which is first brought up to date when cargo runs us (so that one command
/// measures the current tree).
fn consort_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path);
    }
    let exe = std::env::current_exe().context("cannot find the bench binary")?;
    let dir = exe.parent().context("the bench binary has no directory")?;
    let sibling = dir.join("consort");
    if let Some(cargo) = std::env::var_os("CARGO") {
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev",
            Some(other) => other,
        };
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
        eprintln!("consort-bench: building consort-cli ({profile} profile)");
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--profile",
                profile,
                "-p",
                "consort-cli",
            ])
            .arg("--manifest-path")
            .arg(manifest)
            .status()
            .context("cannot run cargo")?;
        if !status.success() {
            bail!("cargo could not build consort-cli");
        }
    }
    if !sibling.is_file() {
        bail!(
            "no consort binary at {}: build it with `cargo build --release -p consort-cli` or \
             pass --consort PATH",
            sibling.display()
        );
    }
    Ok(sibling)
}
