//! `ragtune compare --config configs/retrieval-faq.toml`: retrievers side by side on one split
//! (alone, fused, reranked), each against a baseline with paired bootstrap intervals; one call of
//! `ragtune_pipeline::compare::run`.

use anyhow::Result;
use ragtune_pipeline::compare::{self, CompareConfig};
use std::path::PathBuf;
use tch::Device;

#[derive(clap::Args)]
pub struct Args {
    /// The comparison's TOML (configs/retrieval-faq.toml, say).
    #[arg(long)]
    config: PathBuf,
    /// Override a config value: `--set split="val"` (repeatable; values are TOML).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

pub fn run(args: Args, device: Device) -> Result<()> {
    let config = CompareConfig::load(&args.config, &args.set)?;
    println!(
        "compare {} retrievers on {}/{} ({device:?}): run folder {}",
        config.retrievers.len(),
        config.data.display(),
        config.split,
        config.run_dir().display()
    );
    let report = compare::run(&config, device)?;
    for sweep in &report.sweeps {
        let best = &sweep.points[0];
        println!(
            "sweep {}: weights {:?} give {} {:.4} on {} validation queries",
            sweep.retriever, best.weights, sweep.measure, best.score, sweep.validation_queries
        );
    }
    print!("\n{:<40}", "retriever");
    for m in &report.measures {
        print!(" {m:>10} {:>26}", format!("Δ vs {}", report.baseline));
    }
    println!();
    for row in &report.rows {
        print!("{:<40}", row.name);
        for m in &report.measures {
            let c = &row.measures[m];
            let delta = match (c.difference, c.ci_low, c.ci_high) {
                (Some(d), Some(lo), Some(hi)) => format!("{d:+.4} [{lo:+.4}, {hi:+.4}]"),
                _ => "baseline".into(),
            };
            print!(" {:>10.4} {delta:>26}", c.mean);
        }
        println!();
    }
    println!(
        "\nreport: {}",
        config.run_dir().join("report.html").display()
    );
    Ok(())
}
