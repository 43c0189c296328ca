//! `ragtune classify train|eval --config configs/classify-faq.toml`: a head on an encoder, fully
//! fine-tuned or with a PEFT adapter (`[peft]`), one call of `ragtune_classify::run` or `evaluate`.

use anyhow::Result;
use ragtune_classify::{ClassifyConfig, Task};
use std::path::PathBuf;
use tch::Device;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Train the head (and the encoder or adapter), early-stop on validation, score the test split.
    Train(ConfigArgs),
    /// Score the model saved in the run folder on the test split of the config.
    Eval(ConfigArgs),
}

#[derive(clap::Args)]
struct ConfigArgs {
    /// The run's TOML (configs/classify-faq.toml, say).
    #[arg(long)]
    config: PathBuf,
    /// Override a config value: `--set 'peft={method="lora", r=8, lr=1e-3}'` or
    /// `--set trainer.epochs=3` (repeatable; values are TOML).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
}

pub fn run(args: Args, device: Device) -> Result<()> {
    match args.command {
        Command::Train(args) => {
            let config = ClassifyConfig::load(&args.config, &args.set)?;
            println!(
                "classify train ({}) on {device:?}: run folder {}",
                config.method_name(),
                config.run_dir().display()
            );
            let report = ragtune_classify::run(&config, device)?;
            println!(
                "trainable parameters {} of {}; mean step {}; peak RSS {}",
                report.trainable_parameters,
                report.total_parameters,
                report
                    .mean_step_seconds
                    .map_or("n/a".into(), |s| format!("{:.1} ms", s * 1e3)),
                ragtune_classify::report::mebibytes(report.peak_rss_bytes)
            );
            print_scores("validation", &report.validation, config.task);
            if let Some(test) = &report.test {
                print_scores("test", test, config.task);
            }
            println!("model:  {}", report.model_dir.display());
            println!("report: {}", report.run_dir.join("report.md").display());
        }
        Command::Eval(args) => {
            let config = ClassifyConfig::load(&args.config, &args.set)?;
            let report = ragtune_classify::evaluate(&config, device)?;
            println!("{} ({})", report.model_dir.display(), report.method);
            print_scores("test", &report.test, config.task);
        }
    }
    Ok(())
}

fn print_scores(split: &str, scores: &ragtune_classify::metrics::Scores, task: Task) {
    let ci = |c: &Option<ragtune_classify::metrics::Interval>| {
        c.map(|c| format!(" [{:.4}, {:.4}]", c.low, c.high))
            .unwrap_or_default()
    };
    match task {
        Task::Classification => println!(
            "{split:<10} n={:<4} loss {:.4}  accuracy {:.4}{}  macro-F1 {:.4}{}",
            scores.examples,
            scores.loss,
            scores.accuracy.unwrap_or(f64::NAN),
            ci(&scores.accuracy_ci),
            scores.macro_f1.unwrap_or(f64::NAN),
            ci(&scores.macro_f1_ci)
        ),
        Task::Regression => println!(
            "{split:<10} n={:<4} loss {:.4}  MSE {:.4}  MAE {:.4}  Pearson r {:.4}",
            scores.examples,
            scores.loss,
            scores.mse.unwrap_or(f64::NAN),
            scores.mae.unwrap_or(f64::NAN),
            scores.pearson.unwrap_or(f64::NAN)
        ),
    }
}
