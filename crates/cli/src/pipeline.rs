//! `ragtune pipeline --config configs/<name>.toml`: the whole experiment, stage by stage, from
//! one config; `ragtune demo` is the same on `configs/demo.toml`.

use anyhow::Result;
use ragtune_pipeline::{Outcome, PipelineConfig, Selection, Stage};
use std::path::PathBuf;
use tch::Device;

#[derive(clap::Args)]
pub struct Args {
    /// The experiment's TOML (configs/demo.toml, say).
    #[arg(long, default_value = "configs/demo.toml")]
    config: PathBuf,
    /// Run this stage and every later one, even when unchanged (earlier ones must have finished).
    #[arg(long, value_parser = parse_stage)]
    from: Option<Stage>,
    /// Run only this stage, even when unchanged (the stages before it must have finished).
    #[arg(long, value_parser = parse_stage, conflicts_with = "from")]
    only: Option<Stage>,
    /// Override a config value: `--set retriever.trainer.epochs=1` (repeatable; values are TOML).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
}

fn parse_stage(name: &str) -> Result<Stage, String> {
    Stage::parse(name).map_err(|e| e.to_string())
}

pub fn run(args: Args, device: Device) -> Result<()> {
    let config = PipelineConfig::load(&args.config, &args.set)?;
    println!(
        "pipeline `{}` on {device:?}: {}",
        config.name,
        config.stage_names()
    );
    let selection = Selection {
        from: args.from,
        only: args.only,
    };
    let started = std::time::Instant::now();
    let report = ragtune_pipeline::run(&config, &selection, device)?;
    println!("\n{:<14} {:>10} {:>10}", "stage", "outcome", "seconds");
    for s in &report.stages {
        let outcome = match s.outcome {
            Outcome::Ran => "ran",
            Outcome::Resumed => "resumed",
            Outcome::Skipped => "skipped",
            Outcome::NotSelected => "kept",
        };
        println!("{:<14} {:>10} {:>10.1}", s.stage.name(), outcome, s.seconds);
    }
    println!("total {:.1} s", started.elapsed().as_secs_f64());
    if let Some(html) = &report.report_html {
        println!("report: {}", html.display());
        println!("        {}", report.run_dir.join("report.md").display());
    }
    Ok(())
}
