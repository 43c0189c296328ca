//! `ragtune generator sft|eval|merge`: generator fine-tuning driven by a TOML config
//! (`configs/generator*.toml`).

use anyhow::{bail, Context, Result};
use ragtune_data::Dataset;
use ragtune_generator_train::config::GeneratorConfig;
use ragtune_generator_train::contexts::LexicalIndex;
use ragtune_generator_train::evaluate::{evaluate, EvalReport};
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

pub fn run(args: Args, device: Device) -> Result<()> {
    match args.command {
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
