//! `cargo xtask bench joint`: the two costly parts of an LSR retriever step (`ragtune joint lsr`,
//! REPLUG's LM-supervised retrieval) against the same work in PyTorch, on the CPU, both sides on
//! the same threads.
//!
//! 1. LM scoring: the generator (SmolLM2-135M-Instruct from the Hugging Face folder the generator
//!    bench converts from the GGUF, fp32 on both sides, no adapter) scores each of N training
//!    questions' top-k passages: the mean log-probability of the gold answer's tokens given the
//!    ChatML prompt with that one passage. ragtune writes the triples it scored (`save_triples`);
//!    transformers' `AutoModelForCausalLM` scores exactly those token ids in the same batches
//!    (longest first, right-padded, no gradients). tokens/s counts every input token of the scored
//!    triples (both sides' counts must agree), each over its own timing of the scoring loop
//!    (ragtune: `steps[0].scoring` of summary.json); the bench prints the largest difference of the
//!    scores between the sides.
//! 2. The retriever step: the query tower of all-MiniLM-L6-v2 trained by KL(Q‖P) against the LM's
//!    scores over the fixed passage embeddings, batches of 8 questions in the same order on both
//!    sides (the trainer's `shuffle = false`), fp32, AdamW with clipping. Seconds per optimizer
//!    step over the steps after the first (ragtune: from the `elapsed_s` of the trainer's `train`
//!    records in metrics.jsonl; sentence-transformers: each step timed on its own).
//!
//! Each side is one process (wall time and peak RSS from wait4): ragtune's whole `joint lsr` run
//! (it also evaluates retrieval on the validation split before and after the step and exports the
//! retriever), and one Python process doing both parts with the generator loaded throughout, as in
//! ragtune's. The run settings are configs/joint-bench.toml; the run folder is removed before each
//! run, so the LM-score cache starts empty.

use super::{generator, measure, Measured};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Threads for both sides: the whole of this project's 2-core CI machines.
const THREADS: &str = "2";
const CONFIG: &str = "configs/joint-bench.toml";

#[derive(clap::Args, Debug)]
pub struct JointArgs {
    /// Training questions scored and trained on (the first N of the FAQ's train split). The
    /// default keeps the whole bench under 10 minutes on a 2-core machine.
    #[arg(long, default_value_t = 32)]
    questions: usize,
    /// Passages per question (the retriever's top-k), each scored by the generator.
    #[arg(long, default_value_t = 8)]
    k: usize,
    /// Passes of the retriever step over the questions (more steps to average; scoring is once).
    #[arg(long, default_value_t = 1.0)]
    epochs: f64,
}

/// What the Python side needs from the TOML.
struct Settings {
    runs_dir: PathBuf,
    run_name: String,
    lm: PathBuf,
    train: PathBuf,
    corpus: PathBuf,
    dense_model: PathBuf,
    max_length: Option<i64>,
    batch_size: i64,
    lr: f64,
    max_grad_norm: f64,
    retriever_temperature: f64,
    lm_temperature: f64,
    score_batch_size: i64,
}

impl Settings {
    fn from_config(c: &toml::Table, path: &Path) -> Result<Self> {
        let get = |key: &str| -> Option<&toml::Value> {
            let mut parts = key.split('.');
            let mut v = c.get(parts.next()?);
            for part in parts {
                v = v.and_then(|t| t.get(part));
            }
            v
        };
        let need = |key: &str| -> Result<&toml::Value> {
            get(key).with_context(|| format!("{}: `{key}` is not set", path.display()))
        };
        let string = |key: &str| -> Result<String> {
            Ok(need(key)?
                .as_str()
                .with_context(|| format!("{}: `{key}` is not a string", path.display()))?
                .to_string())
        };
        let int = |key: &str| -> Result<i64> {
            need(key)?
                .as_integer()
                .with_context(|| format!("{}: `{key}` is not an integer", path.display()))
        };
        let float = |key: &str| -> Result<f64> {
            let v = need(key)?;
            v.as_float()
                .or_else(|| v.as_integer().map(|i| i as f64))
                .with_context(|| format!("{}: `{key}` is not a number", path.display()))
        };
        if get("method").and_then(toml::Value::as_str) != Some("lsr") {
            bail!("{}: the bench runs method = \"lsr\"", path.display());
        }
        if get("adapter").is_some() {
            bail!(
                "{}: the bench scores with the base generator (no `adapter`)",
                path.display()
            );
        }
        if get("lsr.save_triples").and_then(toml::Value::as_bool) != Some(true) {
            bail!(
                "{}: the Python side scores ragtune's triples: set lsr.save_triples = true",
                path.display()
            );
        }
        if get("retriever.trainer.shuffle").and_then(toml::Value::as_bool) != Some(false) {
            bail!(
                "{}: set retriever.trainer.shuffle = false, so both sides train on the same batches",
                path.display()
            );
        }
        if get("retriever.towers")
            .and_then(toml::Value::as_str)
            .unwrap_or("query_only")
            != "query_only"
        {
            bail!("{}: the bench trains the query tower only", path.display());
        }
        if get("retriever.trainer.grad_accum_steps").is_some() {
            bail!("{}: the bench keeps grad_accum_steps at 1", path.display());
        }
        if get("retriever.trainer.optimizer.weight_decay").is_some() {
            bail!(
                "{}: the bench keeps weight decay at 0 (the Python side does)",
                path.display()
            );
        }
        if get("retriever.trainer.schedule.warmup_ratio").is_some()
            || get("retriever.trainer.schedule.warmup_steps").is_some()
            || get("retriever.trainer.schedule.kind").and_then(toml::Value::as_str)
                != Some("linear")
        {
            bail!(
                "{}: the bench uses a linear schedule without warm-up",
                path.display()
            );
        }
        if get("lsr.direction").is_some_and(|d| d.as_str() != Some("kl_q_p")) {
            bail!(
                "{}: the bench compares KL(Q‖P) (lsr.direction = \"kl_q_p\")",
                path.display()
            );
        }
        match get("retriever.dense.similarity").and_then(toml::Value::as_str) {
            None | Some("cosine") => {}
            Some(other) => bail!(
                "{}: the bench compares cosine scores, not {other}",
                path.display()
            ),
        }
        if string("retriever.trainer.precision")? != "fp32" {
            bail!(
                "{}: the bench compares fp32 (retriever.trainer.precision)",
                path.display()
            );
        }
        let train = PathBuf::from(string("generator.train")?);
        let corpus = match get("generator.corpus").and_then(toml::Value::as_str) {
            Some(dir) => PathBuf::from(dir),
            None => train.clone(),
        };
        Ok(Settings {
            runs_dir: PathBuf::from(string("runs_dir")?),
            run_name: string("run_name")?,
            lm: PathBuf::from(string("generator.model")?),
            train,
            corpus,
            dense_model: PathBuf::from(string("retriever.dense.model")?),
            max_length: get("retriever.dense.max_length").and_then(toml::Value::as_integer),
            batch_size: int("retriever.trainer.batch_size")?,
            lr: float("retriever.trainer.optimizer.lr")?,
            max_grad_norm: float("retriever.trainer.max_grad_norm")?,
            retriever_temperature: get("retriever.temperature")
                .map(|_| float("retriever.temperature"))
                .transpose()?
                .unwrap_or(0.05),
            lm_temperature: get("lsr.lm_temperature")
                .map(|_| float("lsr.lm_temperature"))
                .transpose()?
                .unwrap_or(0.1),
            score_batch_size: int("lsr.score_batch_size")?,
        })
    }
}

pub fn run(root: &Path, python: &Path, args: JointArgs) -> Result<()> {
    if args.questions == 0 || args.k < 2 || !(args.epochs.is_finite() && args.epochs > 0.0) {
        bail!("--questions must be positive, --k at least 2 and --epochs positive");
    }
    let ragtune = root.join("target/release/ragtune");
    if !ragtune.is_file() {
        bail!(
            "{} is missing: build it first (cargo build --release -p ragtune-cli)",
            ragtune.display()
        );
    }
    // The generator bench's converted model and split FAQ, made once and shared.
    let shared = root.join(generator::WORK);
    std::fs::create_dir_all(&shared).with_context(|| format!("creating {}", shared.display()))?;
    generator::prepare(root, &ragtune, &shared)?;

    let config_path = root.join(CONFIG);
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let config: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", config_path.display()))?;
    let s = Settings::from_config(&config, &config_path)?;
    for (what, dir) in [("generator.model", &s.lm), ("generator.train", &s.train)] {
        if !root.join(dir).exists() {
            bail!(
                "{}: {what} {} does not exist",
                config_path.display(),
                dir.display()
            );
        }
    }

    // ragtune: the whole `joint lsr` run in a fresh folder (an empty LM-score cache).
    let run_dir = root.join(&s.runs_dir).join(&s.run_name);
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("removing the previous run {}", run_dir.display()))?;
    }
    let mut cmd = Command::new(&ragtune);
    cmd.current_dir(root)
        .args(["--device", "cpu", "joint", "lsr", "--config"])
        .arg(&config_path)
        .args(["--set", &format!("max_train_questions={}", args.questions)])
        .args(["--set", &format!("lsr.k={}", args.k)])
        .args([
            "--set",
            &format!("retriever.trainer.epochs={:?}", args.epochs),
        ]);
    threads(&mut cmd);
    let what = "ragtune joint lsr";
    eprintln!(
        "running {what} on {} questions x {} passages ...",
        args.questions, args.k
    );
    let rag = measure(&mut cmd, what)?;
    let step_dir = run_dir.join("round-1/retriever");
    let summary_path = run_dir.join("summary.json");
    let summary = std::fs::read_to_string(&summary_path)
        .with_context(|| format!("reading {}", summary_path.display()))?;
    let scoring = after(&summary, "\"scoring\":", &summary_path)?;
    let rag_triples = number(scoring, "triples", &summary_path)?;
    let rag_computed = number(scoring, "computed", &summary_path)?;
    let rag_tokens = number(scoring, "tokens", &summary_path)?;
    let rag_score_s = number(scoring, "seconds", &summary_path)?;
    let step_record = after(&summary, "\"steps\": [", &summary_path)?;
    let rag_step_total_s = number(step_record, "seconds", &summary_path)?;
    if rag_computed != rag_triples {
        bail!(
            "ragtune reused {} of {rag_triples} LM scores: the run folder was not fresh",
            rag_triples - rag_computed
        );
    }
    if rag_triples != (args.questions * args.k) as f64 {
        eprintln!(
            "note: ragtune scored {rag_triples} triples, not {} x {} (fewer training questions?)",
            args.questions, args.k
        );
    }
    let metrics_path = step_dir.join("metrics.jsonl");
    let elapsed = train_elapsed(&metrics_path)?;
    if elapsed.len() < 2 {
        bail!(
            "{}: {} optimizer step(s); the per-step time needs at least 2 (raise --questions or --epochs)",
            metrics_path.display(),
            elapsed.len()
        );
    }
    let rag_steps: Vec<f64> = elapsed.windows(2).map(|w| w[1] - w[0]).collect();
    let rag_step_s = rag_steps.iter().sum::<f64>() / rag_steps.len() as f64;

    // Python: the same triples, then the same retriever steps, in one process.
    let script = root.join("tests/reference/bench_joint.py");
    let mut cmd = Command::new(python);
    cmd.current_dir(root)
        .arg(&script)
        .arg(root.join(&s.lm))
        .arg(step_dir.join("triples.jsonl"))
        .arg(root.join(&s.dense_model))
        .arg(step_dir.join("targets.json"))
        .arg(root.join(&s.corpus).join("corpus.parquet"))
        .args(["--score-batch-size", &s.score_batch_size.to_string()])
        .args(["--steps", &elapsed.len().to_string()])
        .args(["--batch-size", &s.batch_size.to_string()])
        .args(["--lr", &s.lr.to_string()])
        .args(["--max-grad-norm", &s.max_grad_norm.to_string()])
        .args([
            "--retriever-temperature",
            &s.retriever_temperature.to_string(),
        ])
        .args(["--lm-temperature", &s.lm_temperature.to_string()])
        .args(["--threads", THREADS])
        .env("HF_HUB_OFFLINE", "1")
        .env("TOKENIZERS_PARALLELISM", "false");
    if let Some(max_length) = s.max_length {
        cmd.args(["--max-length", &max_length.to_string()]);
    }
    threads(&mut cmd);
    let py_name = "transformers + sentence-transformers";
    eprintln!("running {py_name} on the same triples and batches ...");
    let py = measure(&mut cmd, py_name)?;
    let py_triples = value(&py.stdout, "triples", py_name)?;
    let py_tokens = value(&py.stdout, "tokens", py_name)?;
    let py_score_s = value(&py.stdout, "score_seconds", py_name)?;
    let max_diff = value(&py.stdout, "max_abs_diff", py_name)?;
    let mean_diff = value(&py.stdout, "mean_abs_diff", py_name)?;
    let py_step_s = value(&py.stdout, "step_seconds_mean", py_name)?;
    if py_triples != rag_triples || py_tokens != rag_tokens {
        bail!(
            "ragtune scored {rag_triples} triples of {rag_tokens} tokens, Python {py_triples} of \
             {py_tokens}: not the same work"
        );
    }
    let rag_loss = first_loss(&metrics_path)?;
    let py_loss = value(&py.stdout, "first_loss", py_name)?;

    println!(
        "\njoint (LSR step): SmolLM2-135M-Instruct (HF folder from the GGUF, fp32) scoring {} FAQ \
         questions x {} passages = {} triples ({} tokens, batches of {}), then the all-MiniLM-L6-v2 \
         query tower: {} steps of {} questions, KL(Q||P), tau_r {} tau_lm {}, AdamW lr {}, fp32; \
         {THREADS} threads, CPU\n",
        args.questions,
        args.k,
        rag_triples,
        rag_tokens,
        s.score_batch_size,
        elapsed.len(),
        s.batch_size,
        s.retriever_temperature,
        s.lm_temperature,
        s.lr
    );
    println!(
        "{:<38}{:>11}{:>9}{:>10}{:>13}{:>9}{:>9}{:>14}",
        "side", "tokens/s", "ratio", "score s", "step ms", "ratio", "wall s", "peak RSS MiB"
    );
    let row = |name: &str, tokens_s: f64, score_s: f64, step_s: f64, m: &Measured| {
        println!(
            "{:<38}{:>11.1}{:>8.2}x{:>10.1}{:>13.1}{:>8.2}x{:>9.1}{:>14.0}",
            name,
            tokens_s,
            tokens_s / (py_tokens / py_score_s),
            score_s,
            step_s * 1000.0,
            py_step_s / step_s,
            m.seconds,
            m.peak_rss_mib
        );
    };
    row(
        "ragtune joint lsr",
        rag_tokens / rag_score_s,
        rag_score_s,
        rag_step_s,
        &rag,
    );
    row(py_name, py_tokens / py_score_s, py_score_s, py_step_s, &py);
    println!(
        "\nratios are ragtune's speed over Python's (step: Python's seconds per step over ragtune's); \
         peak RSS ratio {:.2}x",
        rag.peak_rss_mib / py.peak_rss_mib
    );
    println!(
        "LM scores, ragtune vs Python: max |diff| {max_diff:.2e}, mean |diff| {mean_diff:.2e} \
         (nats per answer token)"
    );
    if let Some(line) = py.stdout.lines().find(|l| l.starts_with("worst_triple ")) {
        println!("  largest difference at {}", &line["worst_triple ".len()..]);
    }
    let py_steps: Vec<f64> = py
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("step_seconds "))
        .unwrap_or("")
        .split(',')
        .skip(1)
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let list = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{s:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "retriever step seconds after the first (median): ragtune {} ({:.3}); Python {} ({:.3})",
        list(&rag_steps),
        median(&rag_steps),
        list(&py_steps),
        median(&py_steps)
    );
    println!(
        "first-step loss (dropout differs between the sides): ragtune {rag_loss:.4}, Python {py_loss:.4}"
    );
    println!(
        "ragtune's LSR step took {rag_step_total_s:.1} s in all (scoring, training, the validation \
         evaluation after it); its process {:.1} s",
        rag.seconds
    );
    if max_diff > 1e-3 {
        eprintln!(
            "WARNING: the two sides' LM scores differ by up to {max_diff:.2e}: they are not \
             computing the same thing"
        );
    }
    Ok(())
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn threads(cmd: &mut Command) {
    cmd.env("OMP_NUM_THREADS", THREADS)
        .env("MKL_NUM_THREADS", THREADS);
}

/// The text of `text` after the first `anchor`.
fn after<'a>(text: &'a str, anchor: &str, path: &Path) -> Result<&'a str> {
    text.find(anchor)
        .map(|i| &text[i + anchor.len()..])
        .with_context(|| format!("{}: no `{anchor}`", path.display()))
}

/// The number after the first `"key":` of `text` (serde_json's output, compact or pretty).
fn number(text: &str, key: &str, path: &Path) -> Result<f64> {
    let rest = after(text, &format!("\"{key}\":"), path)?.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(rest.len());
    rest[..end]
        .parse()
        .with_context(|| format!("{}: `{key}` is not a number", path.display()))
}

/// The `elapsed_s` of every `train` record of the trainer's metrics.jsonl, in order.
fn train_elapsed(metrics: &Path) -> Result<Vec<f64>> {
    let text = std::fs::read_to_string(metrics)
        .with_context(|| format!("reading {}", metrics.display()))?;
    text.lines()
        .filter(|line| line.contains("\"type\":\"train\""))
        .map(|line| number(line, "elapsed_s", metrics))
        .collect()
}

/// The loss of the first `train` record.
fn first_loss(metrics: &Path) -> Result<f64> {
    let text = std::fs::read_to_string(metrics)
        .with_context(|| format!("reading {}", metrics.display()))?;
    let line = text
        .lines()
        .find(|line| line.contains("\"type\":\"train\""))
        .with_context(|| format!("{} holds no train record", metrics.display()))?;
    number(line, "loss", metrics)
}

/// The number after `key` on a `key value` line of a side's output.
fn value(stdout: &str, key: &str, what: &str) -> Result<f64> {
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix(key).and_then(|r| r.strip_prefix(' ')) {
            if let Ok(v) = rest.trim().parse::<f64>() {
                return Ok(v);
            }
        }
    }
    bail!("{what} printed no `{key}` line; its output:\n{stdout}")
}
