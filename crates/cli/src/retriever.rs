//! `ragtune retriever mine|score|train|eval|export --config configs/retriever-faq.toml`: dense retriever
//! fine-tuning driven by one TOML file; flags override the file.

use anyhow::{Context, Result};
use clap::{Args as ClapArgs, Subcommand};
use ragtune_retriever_train::evaluate::measures;
use ragtune_retriever_train::index::SearchKind;
use ragtune_retriever_train::mining;
use ragtune_retriever_train::model::BiEncoder;
use ragtune_retriever_train::train::{self, Retriever, RetrieverConfig};
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
    /// The run's TOML configuration (configs/retriever-faq.toml, say).
    #[arg(long)]
    config: PathBuf,
    /// Overrides `model.base`: the model folder to load.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Overrides `trainer.run_name`.
    #[arg(long)]
    run_name: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Mine hard negatives for the training split and write a triplets Parquet file.
    Mine {
        #[command(flatten)]
        common: Common,
        /// Where to write the triplets.
        #[arg(long)]
        out: PathBuf,
        /// Exact search instead of HNSW.
        #[arg(long)]
        exact: bool,
        /// Rescore the mined triplets with this teacher's config (its `[model]`), for distillation.
        #[arg(long)]
        teacher: Option<PathBuf>,
    },
    /// Rescore a triplets file with a teacher (the config's model): writes `positive_score`, each
    /// negative's `score` and `scored_by`, for Margin-MSE or KL distillation.
    Score {
        #[command(flatten)]
        common: Common,
        /// The triplets to score (from `ragtune retriever mine`).
        #[arg(long)]
        triplets: PathBuf,
        /// Where to write the scored triplets (may be the input file).
        #[arg(long)]
        out: PathBuf,
        /// Pairs per scoring call.
        #[arg(long, default_value_t = 256)]
        chunk: usize,
        /// Score with this cross-encoder folder (a `ragtune reranker train` run's model/, or any
        /// sentence-transformers CrossEncoder) instead of the config's bi-encoder: its logits
        /// become the teacher scores, to distil the reranker into the bi-encoder.
        #[arg(long)]
        cross_encoder: Option<PathBuf>,
    },
    /// Evaluate zero-shot, train, evaluate again; writes runs/<name>/report.md and report.json.
    Train {
        #[command(flatten)]
        common: Common,
        /// Overrides `trainer.epochs`.
        #[arg(long)]
        epochs: Option<f64>,
        /// Overrides `trainer.batch_size`.
        #[arg(long)]
        batch_size: Option<usize>,
        /// Overrides `negatives.hard` (add mined hard negatives).
        #[arg(long)]
        hard_negatives: Option<bool>,
        /// Overrides `negatives.triplets`: train on this (mined, possibly teacher-scored) file.
        #[arg(long)]
        triplets: Option<PathBuf>,
        /// Overrides `loss.kind`: info_nce, symmetric_info_nce, margin_mse or kl.
        #[arg(long)]
        loss: Option<String>,
        /// Overrides `loss.teacher_scale`.
        #[arg(long)]
        teacher_scale: Option<f64>,
        /// Start afresh even when the run folder holds a checkpoint.
        #[arg(long)]
        no_resume: bool,
    },
    /// Full-corpus retrieval metrics of a model on a split (exact search, and HNSW with --hnsw).
    Eval {
        #[command(flatten)]
        common: Common,
        /// train, val or test.
        #[arg(long, default_value = "test")]
        split: String,
        #[arg(long)]
        hnsw: bool,
    },
    /// Write a sentence-transformers folder of a model (a trained run's `model/` or a base).
    Export {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        out: PathBuf,
    },
}

fn load_config(common: &Common) -> Result<RetrieverConfig> {
    let mut config = RetrieverConfig::from_file(&common.config)?;
    if let Some(model) = &common.model {
        config.model.base = model.clone();
    }
    if let Some(name) = &common.run_name {
        config.trainer.run_name = name.clone();
    }
    Ok(config)
}

/// Rescores `triplets` with the model of `teacher` and prints what it did.
fn score_with(
    teacher: &RetrieverConfig,
    triplets: &mut [ragtune_data::Triplet],
    chunk: usize,
    device: Device,
) -> Result<()> {
    let scorer = train::load_teacher(teacher, device)?;
    let name = teacher.model.base.display().to_string();
    let report = tch::no_grad(|| mining::score_triplets(scorer.as_ref(), triplets, &name, chunk))?;
    println!("teacher {name}: {}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Rescores `triplets` with the cross-encoder folder `dir` and prints what it did.
fn score_with_cross_encoder(
    dir: &std::path::Path,
    triplets: &mut [ragtune_data::Triplet],
    chunk: usize,
    device: Device,
) -> Result<()> {
    use ragtune_models::cross_encoder::{CrossEncoder, HeadInit};
    let model = CrossEncoder::load(dir, device, Kind::Float, HeadInit::default())
        .with_context(|| format!("loading the cross-encoder {}", dir.display()))?;
    if !model.head_loaded() {
        anyhow::bail!(
            "{}: no classifier in this folder, so it is no trained cross-encoder to teach with",
            dir.display()
        );
    }
    let name = dir.display().to_string();
    let report = tch::no_grad(|| mining::score_triplets(&model, triplets, &name, chunk))?;
    println!("teacher {name}: {}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

pub fn run(args: Args, device: Device) -> Result<()> {
    match args.command {
        Command::Mine {
            common,
            out,
            exact,
            teacher,
        } => {
            let mut config = load_config(&common)?;
            if exact {
                config.negatives.mining.search = SearchKind::Exact;
            }
            let [train, _, _] = train::load_splits(&config.data)?;
            let model = BiEncoder::load(&config.model, device, Kind::Float)?;
            let (triplets, report) = tch::no_grad(|| {
                mining::mine(
                    &model,
                    &train.corpus,
                    &train.queries,
                    &train.qrels,
                    &config.negatives.mining,
                    &config.model.base.display().to_string(),
                )
            })?;
            let mut triplets = triplets;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if let Some(teacher) = teacher {
                let teacher_config = RetrieverConfig::from_file(&teacher)?;
                score_with(&teacher_config, &mut triplets, 256, device)?;
            }
            ragtune_data::write_table(&out, &triplets)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("wrote {} triplets to {}", triplets.len(), out.display());
            Ok(())
        }
        Command::Score {
            common,
            triplets,
            out,
            chunk,
            cross_encoder,
        } => {
            let config = load_config(&common)?;
            let mut rows: Vec<ragtune_data::Triplet> = ragtune_data::read_table(&triplets)
                .with_context(|| format!("reading {}", triplets.display()))?;
            match cross_encoder {
                Some(dir) => score_with_cross_encoder(&dir, &mut rows, chunk, device)?,
                None => score_with(&config, &mut rows, chunk, device)?,
            }
            ragtune_data::write_table(&out, &rows)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("wrote {} scored triplets to {}", rows.len(), out.display());
            Ok(())
        }
        Command::Train {
            common,
            epochs,
            batch_size,
            hard_negatives,
            triplets,
            loss,
            teacher_scale,
            no_resume,
        } => {
            let mut config = load_config(&common)?;
            if let Some(epochs) = epochs {
                config.trainer.epochs = epochs;
            }
            if let Some(batch_size) = batch_size {
                config.trainer.batch_size = batch_size;
            }
            if let Some(hard) = hard_negatives {
                config.negatives.hard = hard;
            }
            if let Some(path) = triplets {
                config.negatives.triplets = Some(path);
            }
            if let Some(kind) = loss {
                config.loss.kind = serde_json::from_value(serde_json::Value::String(kind.clone()))
                    .with_context(|| {
                        format!("--loss {kind}: expected info_nce, symmetric_info_nce, margin_mse or kl")
                    })?;
            }
            if let Some(scale) = teacher_scale {
                config.loss.teacher_scale = scale;
            }
            if no_resume {
                config.trainer.resume = false;
            }
            let started = std::time::Instant::now();
            let report = train::run(&config, device)?;
            println!("{}", report.markdown);
            println!(
                "{} pairs, {} steps in {:.0} s; report in {}",
                report.train_pairs,
                report.steps,
                started.elapsed().as_secs_f64(),
                report.run_dir.join("report.md").display()
            );
            Ok(())
        }
        Command::Eval {
            common,
            split,
            hnsw,
        } => {
            let config = load_config(&common)?;
            let index = ["train", "val", "test"]
                .iter()
                .position(|s| *s == split)
                .with_context(|| format!("--split {split}: expected train, val or test"))?;
            let splits = train::load_splits(&config.data)?;
            let data = &splits[index];
            let model = Retriever::load(&config, device)?;
            let hnsw_config = hnsw.then(|| model.hnsw_config(&config));
            let started = std::time::Instant::now();
            let evaluation = model.evaluate(data, hnsw_config)?;
            println!(
                "{} queries of {split}, {} passages",
                evaluation.exact.num_queries,
                data.corpus.len()
            );
            println!(
                "{:<12} {:>10} {:>10}",
                "measure",
                "exact",
                if hnsw { "hnsw" } else { "" }
            );
            for measure in measures() {
                let name = measure.to_string();
                let exact = evaluation.exact.mean.get(&name).copied().unwrap_or(0.0);
                match &evaluation.hnsw {
                    Some((report, _, _)) => println!(
                        "{name:<12} {exact:>10.4} {:>10.4}",
                        report.mean.get(&name).copied().unwrap_or(0.0)
                    ),
                    None => println!("{name:<12} {exact:>10.4}"),
                }
            }
            if let Some((_, r10, r100)) = &evaluation.hnsw {
                println!("HNSW recall vs exact: @10 {r10:.4}, @100 {r100:.4}");
            }
            println!("evaluated in {:.1} s", started.elapsed().as_secs_f64());
            Ok(())
        }
        Command::Export { common, out } => {
            let config = load_config(&common)?;
            let model = Retriever::load(&config, device)?;
            model.save(&out)?;
            println!("wrote {}", out.display());
            Ok(())
        }
    }
}
