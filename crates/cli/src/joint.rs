//! `ragtune joint <method> --config configs/joint.toml`: joint retriever–generator training
//! (LSR, RA-DIT rounds or the RAG-sequence marginal likelihood), one call of `ragtune_rag_joint::run`.

use anyhow::Result;
use ragtune_rag_joint::{JointConfig, Method};
use std::path::PathBuf;
use tch::Device;

#[derive(clap::Args)]
pub struct Args {
    /// lsr, ra-dit or rag-sequence (overrides the config's `method`).
    #[arg(value_parser = parse_method)]
    method: Method,
    /// The run's TOML (configs/joint-faq.toml, say).
    #[arg(long)]
    config: PathBuf,
    /// Override a config value: `--set lsr.k=4` (repeatable; values are TOML).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
}

fn parse_method(name: &str) -> Result<Method, String> {
    Method::parse(name).map_err(|e| e.to_string())
}

pub fn run(args: Args, device: Device) -> Result<()> {
    let mut overrides = args.set.clone();
    overrides.push(format!("method=\"{}\"", args.method.name()));
    let config = JointConfig::load(&args.config, &overrides)?;
    println!(
        "joint {} on {device:?}: run folder {}",
        config.method.name(),
        config.run_dir().display()
    );
    let report = ragtune_rag_joint::run(&config, device)?;
    if let (Some(first), Some(last)) = (report.trajectory.first(), report.trajectory.last()) {
        println!("\n{:<28} {:>10} {:>10}", "validation", "start", "end");
        for (measure, start) in &first.retrieval {
            let end = last.retrieval.get(measure).copied().unwrap_or(f64::NAN);
            println!("{measure:<28} {start:>10.4} {end:>10.4}");
        }
        for (metric, start) in &first.answers {
            let end = last.answers.get(metric).copied().unwrap_or(f64::NAN);
            println!("{metric:<28} {start:>10.4} {end:>10.4}");
        }
    }
    if let Some(test) = &report.test {
        println!("\ntest (end − start, paired bootstrap CI):");
        for (measure, c) in test.retrieval.iter().chain(&test.answers) {
            println!(
                "{measure:<28} {:.4} → {:.4}  {:+.4} [{:+.4}, {:+.4}]",
                c.start, c.end, c.difference, c.ci_low, c.ci_high
            );
        }
    }
    println!("retriever: {}", report.retriever.display());
    if let Some(adapter) = &report.adapter {
        println!("adapter:   {}", adapter.display());
    }
    println!(
        "report:    {}",
        report.run_dir.join("report.html").display()
    );
    Ok(())
}
