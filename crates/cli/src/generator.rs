//! `ragtune generator make-pairs|sft|dpo|eval|merge`: generator fine-tuning driven by a TOML
//! config (`configs/generator*.toml`).

use anyhow::{bail, Context, Result};
use ragtune_data::{Dataset, Preference};
use ragtune_generator_train::config::GeneratorConfig;
use ragtune_generator_train::contexts::LexicalIndex;
use ragtune_generator_train::dpo::{self, ReferenceLogps, ReferenceModel};
use ragtune_generator_train::evaluate::{evaluate, EvalReport};
use ragtune_generator_train::make_pairs::{make_pairs, PairContext};
use ragtune_generator_train::prompt::PromptBuilder;
use ragtune_generator_train::sft;
use ragtune_models::llama_load::{load_causal_lm, CausalLm};
use ragtune_models::peft::{self, Peft, PeftConfig};
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
        } => make_pairs_cmd(&config, split, limit, &out, device),
        Command::Dpo { config } => dpo_cmd(&config, device),
        Command::Sft { config, eval_base } => sft_cmd(&config, eval_base, device),
        Command::Eval {
            config,
            adapter,
            output,
        } => eval_cmd(&config, adapter.as_deref(), output.as_deref(), device),
        Command::Merge {
            model,
            adapter,
            out,
        } => {
            let mut lm = load_causal_lm(&model, device, Kind::Float)
                .with_context(|| format!("loading {}", model.display()))?;
            let a = Peft::load(&adapter, &lm.model, device)
                .with_context(|| format!("loading the adapter {}", adapter.display()))?;
            a.merge_and_unload(&mut lm.model)?;
            peft::save_hf_folder(&lm, &out)?;
            println!(
                "merged {} into {} -> {}",
                adapter.display(),
                model.display(),
                out.display()
            );
            Ok(())
        }
    }
}

struct Setup {
    config: GeneratorConfig,
    lm: CausalLm,
    train: Dataset,
    test: Dataset,
    corpus: Dataset,
}

fn setup(path: &Path, device: Device) -> Result<Setup> {
    let config = GeneratorConfig::from_file(path)?;
    let lm = load_causal_lm(&config.model, device, Kind::Float)
        .with_context(|| format!("loading {}", config.model.display()))?;
    let train = Dataset::read(&config.train)
        .with_context(|| format!("reading {}", config.train.display()))?;
    let test = match &config.test {
        Some(t) => Dataset::read(t).with_context(|| format!("reading {}", t.display()))?,
        None => Dataset::default(),
    };
    let corpus_dir = config
        .corpus
        .clone()
        .unwrap_or_else(|| config.train.clone());
    let corpus =
        Dataset::read(&corpus_dir).with_context(|| format!("reading {}", corpus_dir.display()))?;
    if corpus.corpus.is_empty() {
        bail!(
            "{}: no corpus.parquet to take passages from",
            corpus_dir.display()
        );
    }
    Ok(Setup {
        config,
        lm,
        train,
        test,
        corpus,
    })
}

fn progress(total: usize, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {what}  {{elapsed_precise}} (eta {{eta}})"
        ))
        .expect("valid template"),
    );
    bar
}

fn score(
    s: &Setup,
    index: &LexicalIndex,
    builder: &PromptBuilder,
    label: &str,
) -> Result<EvalReport> {
    if s.test.qa.is_empty() {
        bail!("the config has no `test` dataset with a qa table to evaluate on");
    }
    let n = s
        .config
        .eval
        .limit
        .unwrap_or(s.test.qa.len())
        .min(s.test.qa.len());
    let bar = progress(n, &format!("questions ({label})"));
    let report = evaluate(
        &s.lm,
        &s.test.qa,
        index,
        builder,
        s.config.contexts.k,
        &s.config.eval,
        |k| bar.inc(k as u64),
    )?;
    bar.finish_and_clear();
    Ok(report)
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

fn init_text_ids(config: &GeneratorConfig, lm: &CausalLm) -> Result<Option<Vec<i64>>> {
    Ok(match &config.peft {
        Some(PeftConfig::PromptTuning(p)) => match &p.init_text {
            Some(t) => Some(lm.tokenizer.encode(t, false)?),
            None => None,
        },
        _ => None,
    })
}

fn sft_cmd(path: &Path, eval_base: bool, device: Device) -> Result<()> {
    let mut s = setup(path, device)?;
    let index = LexicalIndex::new(&s.corpus.corpus);
    let base_report = {
        let builder = PromptBuilder::new(&s.config.prompt, &s.lm.tokenizer)?;
        if eval_base {
            Some(score(&s, &index, &builder, "base")?)
        } else {
            None
        }
    };
    let mut qa = s.train.qa.clone();
    if let Some(max) = s.config.max_train_examples {
        qa.truncate(max);
    }
    let examples = {
        let builder = PromptBuilder::new(&s.config.prompt, &s.lm.tokenizer)?;
        sft::build_examples(&qa, &index, &builder, &s.config)?
    };
    let tokens: usize = examples.iter().map(|e| e.input_ids.len()).sum();
    println!(
        "{} training examples, {} tokens ({:.0} per example)",
        examples.len(),
        tokens,
        tokens as f64 / examples.len().max(1) as f64
    );
    let init = init_text_ids(&s.config, &s.lm)?;
    let adapter = match &s.config.peft {
        Some(c) => Some(Peft::new(c, &s.lm.model, device, init.as_deref())?),
        None => None,
    };
    if let Some(a) = &adapter {
        println!("PEFT: {} trainable values", a.trainable_parameters());
    }
    let started = std::time::Instant::now();
    let summary = sft::train(
        &s.config,
        &mut s.lm,
        adapter.as_ref(),
        &examples,
        device,
        |_| Ok(Default::default()),
    )?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "trained {} steps in {secs:.0} s ({:.1} tokens/s incl. padding-free count)",
        summary.steps,
        tokens as f64 * s.config.trainer.epochs / secs
    );
    let run_dir = s.config.trainer.run_dir();
    if let Some(a) = &adapter {
        let dir = run_dir.join("adapter");
        a.save(&dir)?;
        println!("adapter saved to {}", dir.display());
    }
    if !s.test.qa.is_empty() {
        let builder = PromptBuilder::new(&s.config.prompt, &s.lm.tokenizer)?;
        let tuned = score(&s, &index, &builder, "tuned")?;
        let mut rows = vec![];
        if let Some(b) = &base_report {
            rows.push(("base", b));
        }
        rows.push(("sft", &tuned));
        print_table(&rows);
        let out = run_dir.join("eval.json");
        let json = serde_json::json!({"base": base_report, "sft": tuned});
        ragtune_models::checkpoint::atomic_write(
            &out,
            serde_json::to_string_pretty(&json)?.as_bytes(),
        )?;
        println!("predictions and metrics: {}", out.display());
    }
    Ok(())
}

fn eval_cmd(
    path: &Path,
    adapter: Option<&Path>,
    output: Option<&Path>,
    device: Device,
) -> Result<()> {
    let mut s = setup(path, device)?;
    if let Some(dir) = adapter {
        let a = Peft::load(dir, &s.lm.model, device)
            .with_context(|| format!("loading the adapter {}", dir.display()))?;
        if matches!(a, Peft::Prefix(_) | Peft::Prompt(_)) {
            bail!(
                "{}: generation supports LoRA and IA3 adapters",
                dir.display()
            );
        }
        a.attach(&mut s.lm.model);
    }
    let index = LexicalIndex::new(&s.corpus.corpus);
    let builder = PromptBuilder::new(&s.config.prompt, &s.lm.tokenizer)?;
    let report = score(&s, &index, &builder, "eval")?;
    print_table(&[(if adapter.is_some() { "adapter" } else { "base" }, &report)]);
    if let Some(out) = output {
        ragtune_models::checkpoint::atomic_write(
            out,
            serde_json::to_string_pretty(&report)?.as_bytes(),
        )?;
    }
    Ok(())
}

fn make_pairs_cmd(
    path: &Path,
    split: Split,
    limit: Option<usize>,
    out: &Path,
    device: Device,
) -> Result<()> {
    let mut s = setup(path, device)?;
    let (dir, context) = match split {
        Split::Train => (Some(s.config.train.clone()), PairContext::Raft),
        Split::Val => (s.config.valid.clone(), PairContext::Retrieved),
        Split::Test => (s.config.test.clone(), PairContext::Retrieved),
    };
    let dir = dir.with_context(|| format!("the config names no {split:?} dataset"))?;
    let data = Dataset::read(&dir).with_context(|| format!("reading {}", dir.display()))?;
    if data.qa.is_empty() {
        bail!("{}: no qa table to make pairs from", dir.display());
    }
    let mut qa = data.qa;
    if let Some(n) = limit {
        qa.truncate(n);
    }
    let settings = s.config.pairs.clone();
    if let Some(a) = &settings.adapter {
        let adapter = Peft::load(a, &s.lm.model, device)
            .with_context(|| format!("loading the adapter {}", a.display()))?;
        if matches!(adapter, Peft::Prefix(_) | Peft::Prompt(_)) {
            bail!("{}: generation supports LoRA and IA3 adapters", a.display());
        }
        adapter.attach(&mut s.lm.model);
    }
    let index = LexicalIndex::new(&s.corpus.corpus);
    let builder = PromptBuilder::new(&s.config.prompt, &s.lm.tokenizer)?;
    let bar = progress(qa.len(), "questions");
    let made = make_pairs(
        &s.lm,
        &qa,
        &index,
        &builder,
        &s.config.contexts,
        &settings,
        context,
        |n| bar.inc(n as u64),
    )?;
    bar.finish_and_clear();
    let file = ragtune_data::dataset::table_path::<Preference>(out);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    ragtune_data::write_table(&file, &made.pairs)?;
    println!(
        "{} pairs from {} questions of {} (rejected: {:?} by {}; skipped {} empty and {} equal to the gold answer) -> {}",
        made.pairs.len(),
        qa.len(),
        dir.display(),
        settings.rejected,
        settings
            .adapter
            .as_ref()
            .map_or("the base model".to_string(), |a| format!("base + {}", a.display())),
        made.skipped_empty,
        made.skipped_same,
        file.display()
    );
    for p in made.pairs.iter().take(2) {
        println!(
            "  {}: {}\n    chosen:   {}\n    rejected: {}",
            p.id, p.prompt, p.chosen, p.rejected
        );
    }
    Ok(())
}

fn normalized_question(q: &str) -> String {
    q.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn dpo_cmd(path: &Path, device: Device) -> Result<()> {
    let config = GeneratorConfig::from_file(path)?;
    let settings = config.dpo.clone();
    let mut lm = load_causal_lm(&config.model, device, Kind::Float)
        .with_context(|| format!("loading {}", config.model.display()))?;
    let train_path = settings
        .train_pairs
        .clone()
        .context("[dpo] train_pairs is not set (make pairs with `ragtune generator make-pairs`)")?;
    let mut train_prefs = dpo::read_preferences(&train_path)?;
    if let Some(n) = settings.max_train_pairs {
        train_prefs.truncate(n);
    }
    let mut eval_prefs = match &settings.eval_pairs {
        Some(p) => dpo::read_preferences(p)?,
        None => vec![],
    };
    // Held out means held out: no evaluation question may also be a training question.
    let seen: std::collections::HashSet<String> = train_prefs
        .iter()
        .map(|p| normalized_question(&p.prompt))
        .collect();
    let before = eval_prefs.len();
    eval_prefs.retain(|p| !seen.contains(&normalized_question(&p.prompt)));
    if eval_prefs.len() < before {
        println!(
            "dropped {} held-out pairs whose question is also a training question",
            before - eval_prefs.len()
        );
    }
    let (mut train_pairs, mut eval_pairs) = {
        let builder = PromptBuilder::new(&config.prompt, &lm.tokenizer)?;
        (
            dpo::build_pairs(&train_prefs, &builder)?,
            dpo::build_pairs(&eval_prefs, &builder)?,
        )
    };
    let tokens: usize = train_pairs
        .iter()
        .map(|p| p.chosen.input_ids.len() + p.rejected.input_ids.len())
        .sum();
    println!(
        "{} training pairs ({} tokens, {:.0} per pair), {} held-out pairs",
        train_pairs.len(),
        tokens,
        tokens as f64 / train_pairs.len().max(1) as f64,
        eval_pairs.len()
    );
    let policy = match &settings.sft_adapter {
        Some(dir) => Peft::load(dir, &lm.model, device)
            .with_context(|| format!("loading the SFT adapter {}", dir.display()))?,
        None => {
            let c = config
                .peft
                .as_ref()
                .context("DPO trains an adapter: set [peft] or [dpo] sft_adapter")?;
            let init = init_text_ids(&config, &lm)?;
            Peft::new(c, &lm.model, device, init.as_deref())?
        }
    };
    println!(
        "policy: {} ({} trainable values)",
        settings
            .sft_adapter
            .as_ref()
            .map_or("a fresh adapter".to_string(), |d| format!(
                "the SFT adapter {}",
                d.display()
            )),
        policy.trainable_parameters()
    );
    let reference = match settings.reference {
        ReferenceModel::Base => None,
        ReferenceModel::Sft => {
            let dir = settings
                .sft_adapter
                .as_ref()
                .context("[dpo] reference = \"sft\" needs sft_adapter")?;
            let r = Peft::load(dir, &lm.model, device)?;
            dpo::freeze_adapter(&r);
            Some(r)
        }
    };
    let bf16 = config.trainer.precision.uses_bf16(device);
    let run_dir = config.trainer.run_dir();
    let cache = settings
        .cache
        .clone()
        .unwrap_or_else(|| run_dir.join("reference_logps.parquet"));
    let base_fp = dpo::reference_fingerprint(&config.model, None, Kind::Float, bf16)?;
    let train_fp = match settings.reference {
        ReferenceModel::Base => base_fp.clone(),
        ReferenceModel::Sft => dpo::reference_fingerprint(
            &config.model,
            settings.sft_adapter.as_deref(),
            Kind::Float,
            bf16,
        )?,
    };
    // Held-out rewards are always measured against the base (adapter off), for both models.
    let fill = |lm: &mut CausalLm,
                pairs: &mut [dpo::PairExample],
                adapter: Option<&Peft>,
                fp: &str,
                what: &str|
     -> Result<()> {
        let bar = progress(pairs.len(), &format!("pairs ({what} reference log-probs)"));
        let stats = dpo::fill_reference(
            lm,
            adapter,
            fp,
            pairs,
            Some(&cache),
            settings.eval_batch_size,
            device,
            bf16,
            |n| bar.inc(n as u64),
        )?;
        bar.finish_and_clear();
        println!(
            "{what} reference log-probs: {} reused from {}, {} computed",
            stats.reused,
            cache.display(),
            stats.computed
        );
        Ok(())
    };
    fill(&mut lm, &mut eval_pairs, None, &base_fp, "held-out, base")?;
    let mut eval_vs_sft = eval_pairs.clone();
    if let Some(r) = &reference {
        fill(
            &mut lm,
            &mut eval_vs_sft,
            Some(r),
            &train_fp,
            "held-out, SFT",
        )?;
    }
    if settings.reference_logps == ReferenceLogps::Cached {
        fill(
            &mut lm,
            &mut train_pairs,
            reference.as_ref(),
            &train_fp,
            "training",
        )?;
    }
    let start_label = if settings.sft_adapter.is_some() {
        "sft"
    } else {
        "base"
    };
    let initial = if eval_pairs.is_empty() {
        None
    } else {
        // The starting policy: the SFT adapter as loaded, or the base itself (rewards all 0).
        let policy_now = settings.sft_adapter.as_ref().map(|_| &policy);
        Some(dpo::evaluate_pairs(
            &mut lm,
            policy_now,
            &eval_pairs,
            &settings,
            device,
            bf16,
        )?)
    };
    let started = std::time::Instant::now();
    let summary = dpo::train(
        &config,
        &mut lm,
        &policy,
        reference.as_ref(),
        &train_pairs,
        &eval_pairs,
        device,
    )?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "trained {} steps in {secs:.0} s ({:.1} tokens/s)",
        summary.steps,
        tokens as f64 * config.trainer.epochs / secs
    );
    let adapter_dir = run_dir.join("adapter");
    policy.save(&adapter_dir)?;
    println!("adapter saved to {}", adapter_dir.display());
    if eval_pairs.is_empty() {
        return Ok(());
    }
    let tuned = dpo::evaluate_pairs(&mut lm, Some(&policy), &eval_pairs, &settings, device, bf16)?;
    let tuned_vs_sft = match &reference {
        Some(_) => Some(dpo::evaluate_pairs(
            &mut lm,
            Some(&policy),
            &eval_vs_sft,
            &settings,
            device,
            bf16,
        )?),
        None => None,
    };
    let mut rows: Vec<(String, &str, &dpo::RewardMetrics)> = vec![];
    if let Some(i) = &initial {
        rows.push((start_label.into(), "base", i));
    }
    rows.push(("dpo".into(), "base", &tuned));
    if let Some(t) = &tuned_vs_sft {
        rows.push(("dpo".into(), "sft", t));
    }
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
    for (model, reference, m) in &rows {
        let means = m.means("");
        print!("{:<8}{:<11}{:>5}", model, reference, m.pairs);
        for n in names {
            print!("{:>20.4}", means[n]);
        }
        println!();
    }
    let report = serde_json::json!({
        "definition": "held-out reward accuracy: share of pairs with beta*(log pi(chosen) - log pi_ref(chosen)) > beta*(log pi(rejected) - log pi_ref(rejected)), log-probs summed over answer tokens, as TRL 1.16; strict >, so a model against itself scores 0",
        "beta": settings.beta,
        "loss": settings.loss,
        "train_pairs": train_pairs.len(),
        "heldout_pairs": eval_pairs.len(),
        "train_reference": settings.reference,
        "reference_logps": settings.reference_logps,
        "sft_adapter": settings.sft_adapter,
        "steps": summary.steps,
        "train_seconds": secs,
        "heldout": rows.iter().map(|(model, reference, m)| serde_json::json!({
            "model": model, "reference": reference, "pairs": m.pairs, "metrics": m.means(""),
        })).collect::<Vec<_>>(),
    });
    let out = run_dir.join("report.json");
    ragtune_models::checkpoint::atomic_write(
        &out,
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    println!("report: {}", out.display());
    Ok(())
}
