//! `coord-bench-report`: turns the raw results of `scripts/bench.sh` into `BENCHMARKS.md` and
//! an SVG plot of the latency distributions.
//!
//! ```text
//! coord-bench-report --results bench-results/latest --out BENCHMARKS.md --notes bench/notes.md
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use coord_bench::report::{plot, plot_scaling, render, Results};

/// Writes BENCHMARKS.md (tables, ratios, targets, CPU, scaling, coord-mem) and the latency plot
/// from a results directory written by scripts/bench.sh.
#[derive(Debug, Parser)]
#[command(name = "coord-bench-report", version)]
struct Args {
    /// The results directory (machine.txt, cpu.tsv, rounds/N/*.jsonl, rounds/N/lat/).
    #[arg(long, default_value = "bench-results/latest")]
    results: PathBuf,
    /// The Markdown file to write.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Hand-written analysis to append (optional).
    #[arg(long, default_value = "bench/notes.md")]
    notes: PathBuf,
    /// The SVG plot to write (default: latency-cdf.svg in the results directory).
    #[arg(long)]
    plot: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let results = match Results::load(&args.results) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("coord-bench-report: {e}");
            return ExitCode::FAILURE;
        }
    };
    let plot_path = args
        .plot
        .clone()
        .unwrap_or_else(|| args.results.join("latency-cdf.svg"));
    let plotted = match plot(&results, &plot_path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("coord-bench-report: plot failed: {e}");
            false
        }
    };
    let rel = plotted.then(|| relative(&plot_path, &args.out));
    let scaling_path = plot_path.with_file_name("scaling.svg");
    let scaled = match plot_scaling(&results, &scaling_path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("coord-bench-report: scaling plot failed: {e}");
            false
        }
    };
    let scaling_rel = scaled.then(|| relative(&scaling_path, &args.out));
    let notes = std::fs::read_to_string(&args.notes).unwrap_or_default();
    let md = render(&results, rel.as_deref(), scaling_rel.as_deref(), &notes);
    if let Err(e) = std::fs::write(&args.out, md) {
        eprintln!(
            "coord-bench-report: cannot write {}: {e}",
            args.out.display()
        );
        return ExitCode::FAILURE;
    }
    eprintln!(
        "coord-bench-report: wrote {}{}",
        args.out.display(),
        if plotted {
            format!(" and {}", plot_path.display())
        } else {
            String::new()
        }
    );
    ExitCode::SUCCESS
}

/// `target` relative to the directory of `from` (both relative to the current directory, as
/// the script passes them), for a Markdown link.
fn relative(target: &Path, from: &Path) -> String {
    let base = from.parent().unwrap_or(Path::new(""));
    target
        .strip_prefix(base)
        .unwrap_or(target)
        .to_string_lossy()
        .into_owned()
}
