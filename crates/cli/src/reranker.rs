//! `ragtune reranker train|eval|export --config configs/reranker-faq.toml`: a cross-encoder
//! trained on mined triplets, evaluated as the reranker of a first stage's top k, exported as a
//! sentence-transformers CrossEncoder folder; flags override the file.

use anyhow::{Context, Result};
use clap::{Args as ClapArgs, Subcommand};
use ragtune_models::cross_encoder::{CrossEncoder, HeadInit};
use ragtune_retriever_train::evaluate::measures;
use ragtune_retriever_train::reranker::{self, RerankerConfig, MODEL_DIR};
use std::path::PathBuf;
use tch::{Device, Kind};

#[derive(ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

/// Settings every subcommand shares.
#[derive(ClapArgs)]
struct Common {
    /// The run's TOML configuration (configs/reranker-faq.toml, say).
    #[arg(long)]
    config: PathBuf,
    /// Overrides `trainer.run_name`.
    #[arg(long)]
    run_name: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Train, evaluate on val and test against the first stage; writes runs/<name>/model/,
    /// report.md and report.json.
    Train {
        #[command(flatten)]
        common: Common,
        /// Overrides `triplets`.
        #[arg(long)]
        triplets: Option<PathBuf>,
        /// Overrides `loss.kind`: binary_cross_entropy, listwise or margin_mse.
        #[arg(long)]
        loss: Option<String>,
        /// Overrides `trainer.epochs`.
        #[arg(long)]
        epochs: Option<f64>,
        /// Start afresh even when the run folder holds a checkpoint.
        #[arg(long)]
        no_resume: bool,
    },
    /// The first stage alone and reranked by a cross-encoder, on val or test.
    Eval {
        #[command(flatten)]
        common: Common,
        /// The cross-encoder folder (default: the run's model/).
        #[arg(long)]
        model: Option<PathBuf>,
        /// val or test.
        #[arg(long, default_value = "test")]
        split: String,
        /// Overrides `eval.k`: how many first-stage hits to rerank.
        #[arg(long)]
        k: Option<usize>,
    },
    /// Write a CrossEncoder folder from a checkpoint of the run (or the run's model/).
    Export {
        #[command(flatten)]
        common: Common,
        /// A checkpoint folder (`runs/<name>/checkpoints/step-N`); the run's model/ when unset.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
}

fn load_config(common: &Common) -> Result<RerankerConfig> {
    let mut config = RerankerConfig::from_file(&common.config)?;
    if let Some(name) = &common.run_name {
        config.trainer.run_name = name.clone();
    }
    Ok(config)
}

fn load_cross_encoder(
    config: &RerankerConfig,
    dir: &std::path::Path,
    device: Device,
) -> Result<CrossEncoder> {
    let mut model = CrossEncoder::load(dir, device, Kind::Float, HeadInit::default())
        .with_context(|| format!("loading the cross-encoder {}", dir.display()))?;
    if !model.head_loaded() {
        anyhow::bail!(
            "{}: no classifier in this folder; evaluate a trained cross-encoder (a run's {MODEL_DIR}/)",
            dir.display()
        );
    }
    model.set_max_length(
        config
            .model
            .max_length
            .min(model.bert().config.max_position_embeddings as usize),
    )?;
    model.set_batch_size(config.model.eval_batch_size)?;
    Ok(model)
}

pub fn run(args: Args, device: Device) -> Result<()> {
    match args.command {
        Command::Train {
            common,
            triplets,
            loss,
            epochs,
            no_resume,
        } => {
            let mut config = load_config(&common)?;
            if let Some(path) = triplets {
                config.triplets = path;
            }
            if let Some(kind) = loss {
                config.loss.kind = serde_json::from_value(serde_json::Value::String(kind.clone()))
                    .with_context(|| {
                        format!(
                            "--loss {kind}: expected binary_cross_entropy, listwise or margin_mse"
                        )
                    })?;
            }
            if let Some(epochs) = epochs {
                config.trainer.epochs = epochs;
            }
            if no_resume {
                config.trainer.resume = false;
            }
            config.validate()?;
            let started = std::time::Instant::now();
            let report = reranker::run(&config, device)?;
            println!("{}", report.markdown);
            println!(
                "{} triplets, {} steps in {:.0} s; model in {}, report in {}",
                report.train_triplets,
                report.steps,
                started.elapsed().as_secs_f64(),
                report.model_dir.display(),
                report.run_dir.join("report.md").display()
            );
            Ok(())
        }
        Command::Eval {
            common,
            model,
            split,
            k,
        } => {
            let mut config = load_config(&common)?;
            if let Some(k) = k {
                config.eval.k = k;
            }
            config.validate()?;
            let dir = model.unwrap_or_else(|| config.trainer.run_dir().join(MODEL_DIR));
            let cross_encoder = load_cross_encoder(&config, &dir, device)?;
            let started = std::time::Instant::now();
            let (first_stage, before, after) =
                reranker::evaluate(&config, &cross_encoder, &split, device)?;
            println!(
                "{} queries of {split}; first stage: {first_stage}; reranking its top {} with {}",
                after.exact.num_queries,
                config.eval.k,
                dir.display()
            );
            println!("{:<12} {:>12} {:>10}", "measure", "first stage", "reranked");
            for measure in measures() {
                let name = measure.to_string();
                let get = |e: &ragtune_retriever_train::evaluate::Evaluation| {
                    e.exact.mean.get(&name).copied().unwrap_or(0.0)
                };
                println!("{name:<12} {:>12.4} {:>10.4}", get(&before), get(&after));
            }
            println!("evaluated in {:.1} s", started.elapsed().as_secs_f64());
            Ok(())
        }
        Command::Export {
            common,
            checkpoint,
            out,
        } => {
            let config = load_config(&common)?;
            let model = match checkpoint {
                Some(checkpoint) => {
                    let model = reranker::load_model(&config.model, device)?;
                    let loaded = reranker::load_checkpoint(&model, &checkpoint)
                        .with_context(|| format!("loading checkpoint {}", checkpoint.display()))?;
                    println!("{loaded} tensors from {}", checkpoint.display());
                    model
                }
                None => {
                    load_cross_encoder(&config, &config.trainer.run_dir().join(MODEL_DIR), device)?
                }
            };
            model.save(&out)?;
            println!("wrote {}", out.display());
            Ok(())
        }
    }
}
