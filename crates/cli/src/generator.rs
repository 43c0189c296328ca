//! `ragtune generator make-pairs|sft|dpo|eval|merge`: generator fine-tuning driven by a TOML
//! config (`configs/generator*.toml`). Each subcommand parses its flags and calls one library
//! function of `ragtune-generator-train`.

use anyhow::{Context, Result};
use ragtune_generator_train::config::GeneratorConfig;
use ragtune_generator_train::evaluate::{self, EvalReport};
use ragtune_generator_train::make_pairs::{self, PairSplit};
use ragtune_generator_train::{dpo, sft};
use ragtune_models::llama_load::load_causal_lm;
use ragtune_models::peft::{self, Peft};
use std::path::{Path, PathBuf};
use tch::{Device, Kind};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Supervised fine-tuning (full or PEFT) on question + passages -> answer; saves the adapter
    /// under <run dir>/adapter and scores the test split.
    Sft {
        #[arg(long)]
        config: PathBuf,
        /// Score the untuned model on the test split first, with the same prompts and passages.
        #[arg(long)]
        eval_base: bool,
    },
    /// Preference pairs for DPO: the gold answer (chosen) against the model's own answer written
    /// closed-book or from a wrong passage (rejected); writes <out>/preferences.parquet.
    MakePairs {
        #[arg(long)]
        config: PathBuf,
        /// The split whose questions are used (`train` stores RAFT-mixed passages as SFT sees
        /// them, `val`/`test` the plain top-k).
        #[arg(long, default_value = "train")]
        split: Split,
        /// Use the first N questions of the split.
        #[arg(long)]
        limit: Option<usize>,
        /// A dataset folder to write preferences.parquet into.
        #[arg(long)]
        out: PathBuf,
    },
    /// DPO with a PEFT adapter (fresh or an SFT adapter); reports reward accuracy on held-out
    /// pairs for the starting model and the DPO model against the same reference.
    Dpo {
        #[arg(long)]
        config: PathBuf,
    },
    /// Generate on the test split and score it (EM, F1, ROUGE-L, BLEU, METEOR, groundedness).
    Eval {
        #[arg(long)]
        config: PathBuf,
        /// A PEFT adapter folder to put on the model (none: the base model).
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// Write the predictions and metrics here (JSON).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Merge a LoRA or IA3 adapter into the base weights and write a Hugging Face folder.
    Merge {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        adapter: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Split {
    Train,
    Val,
    Test,
}

pub fn run(args: Args, device: Device) -> Result<()> {
    match args.command {
        Command::MakePairs {
            config,
            split,
            limit,
            out,
        } => {
            let config = GeneratorConfig::from_file(&config)?;
            let split = match split {
                Split::Train => PairSplit::Train,
                Split::Val => PairSplit::Val,
                Split::Test => PairSplit::Test,
            };
            let made = make_pairs::run(&config, split, limit, &out, device)?;
            println!(
                "{} pairs (rejected: {:?} by {}; skipped {} empty and {} equal to the gold answer) -> {}",
                made.pairs.len(),
                config.pairs.rejected,
                config
                    .pairs
                    .adapter
                    .as_ref()
                    .map_or("the base model".to_string(), |a| format!("base + {}", a.display())),
                made.skipped_empty,
                made.skipped_same,
                out.display()
            );
            for p in made.pairs.iter().take(2) {
                println!(
                    "  {}: {}\n    chosen:   {}\n    rejected: {}",
                    p.id, p.prompt, p.chosen, p.rejected
                );
            }
            Ok(())
        }
        Command::Dpo { config } => {
            let config = GeneratorConfig::from_file(&config)?;
            let report = dpo::run(&config, device)?;
            println!(
                "trained {} steps in {:.0} s ({:.1} tokens/s); adapter saved to {}",
                report.steps,
                report.train_seconds,
                report.tokens_per_second,
                report.adapter.display()
            );
            print_rewards(&report.heldout);
            println!("report: {}", report.run_dir.join("report.json").display());
            Ok(())
        }
        Command::Sft { config, eval_base } => {
            let mut config = GeneratorConfig::from_file(&config)?;
            config.eval.base |= eval_base;
            let report = sft::run(&config, device)?;
            println!(
                "trained {} steps in {:.0} s ({:.1} tokens/s); saved {}",
                report.steps,
                report.train_seconds,
                report.tokens_per_second,
                report.output.display()
            );
            let mut rows = vec![];
            if let Some(b) = &report.base {
                rows.push(("base", b));
            }
            if let Some(t) = &report.tuned {
                rows.push(("sft", t));
            }
            if !rows.is_empty() {
                print_table(&rows);
            }
            println!(
                "predictions and metrics: {}",
                report.run_dir.join("report.json").display()
            );
            Ok(())
        }
        Command::Eval {
            config,
            adapter,
            output,
        } => {
            let config = GeneratorConfig::from_file(&config)?;
            let report = evaluate::run(&config, adapter.as_deref(), device)?;
            print_table(&[(if adapter.is_some() { "adapter" } else { "base" }, &report)]);
            if let Some(out) = output {
                ragtune_models::checkpoint::atomic_write(
                    &out,
                    serde_json::to_string_pretty(&report)?.as_bytes(),
                )?;
            }
            Ok(())
        }
        Command::Merge {
            model,
            adapter,
            out,
        } => merge(&model, &adapter, &out, device),
    }
}

fn merge(model: &Path, adapter: &Path, out: &Path, device: Device) -> Result<()> {
    let mut lm = load_causal_lm(model, device, Kind::Float)
        .with_context(|| format!("loading {}", model.display()))?;
    let a = Peft::load(adapter, &lm.model, device)
        .with_context(|| format!("loading the adapter {}", adapter.display()))?;
    a.merge_and_unload(&mut lm.model)?;
    peft::save_hf_folder(&lm, out)?;
    println!(
        "merged {} into {} -> {}",
        adapter.display(),
        model.display(),
        out.display()
    );
    Ok(())
}

fn print_table(rows: &[(&str, &EvalReport)]) {
    let names: Vec<&String> = rows[0].1.metrics.keys().collect();
    print!("{:<14}{:>6}", "model", "n");
    for n in &names {
        print!("{:>14}", n);
    }
    println!();
    for (label, r) in rows {
        print!("{:<14}{:>6}", label, r.examples);
        for n in &names {
            print!("{:>14.4}", r.metrics[*n]);
        }
        println!();
    }
}

fn print_rewards(rows: &[dpo::HeldOut]) {
    let names = [
        "rewards/accuracies",
        "rewards/margins",
        "rewards/chosen",
        "rewards/rejected",
        "loss",
    ];
    print!("{:<8}{:<11}{:>5}", "model", "reference", "n");
    for n in names {
        print!("{:>20}", n);
    }
    println!();
    for row in rows {
        let means = row.metrics.means("");
        print!(
            "{:<8}{:<11}{:>5}",
            row.model, row.reference, row.metrics.pairs
        );
        for n in names {
            print!("{:>20.4}", means[n]);
        }
        println!();
    }
}
