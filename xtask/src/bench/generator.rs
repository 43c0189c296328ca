//! `cargo xtask bench generator`: ragtune's LoRA SFT (`ragtune generator sft`) against TRL 1.16's
//! SFTTrainer with a PEFT LoRA, SmolLM2-135M-Instruct on the CPU, both sides on the same threads.
//!
//! Both load the same Hugging Face folder (the bundled GGUF through `ragtune convert gguf-to-hf`)
//! and train on the same token ids: ragtune writes the tokenized examples it trains on
//! (`save_examples`), and the Python side hands exactly those to TRL with a completion mask. LoRA
//! rank, alpha, dropout and targets, batch size, max length, lr and schedule come from
//! `configs/generator-bench.toml` for both. ragtune batches examples as TRL does (each batch
//! padded to its longest); `--packing` adds a run with best-fit-decreasing packing. Throughput is non-pad tokens per second
//! of the train loop (each side times its own loop); wall time and peak RSS are per process.

use super::{measure, Measured};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Threads for both sides: the whole of this project's 2-core CI machines.
const THREADS: &str = "2";
const CONFIG: &str = "configs/generator-bench.toml";
pub(super) const WORK: &str = "target/bench-generator";

#[derive(clap::Args, Debug)]
pub struct GeneratorArgs {
    /// Training examples (the first N questions of the FAQ's train split), one epoch. The default
    /// keeps the whole run near 15 minutes on a busy 2-core machine.
    #[arg(long, default_value_t = 16)]
    examples: usize,
    /// Run TRL in fp32 instead of its default bf16 autocast (ragtune follows `trainer.precision`).
    #[arg(long)]
    trl_fp32: bool,
    /// Both sides without gradient checkpointing (TRL's SFTConfig turns it on by default, and
    /// the bench config does for ragtune).
    #[arg(long)]
    no_gradient_checkpointing: bool,
    /// Also run ragtune with best-fit-decreasing packing (`[packing] max_length` tokens per row).
    #[arg(long)]
    packing: bool,
}

struct Side {
    name: String,
    measured: Measured,
    tokens: f64,
    train_seconds: f64,
}

pub fn run(root: &Path, python: &Path, args: GeneratorArgs) -> Result<()> {
    let ragtune = root.join("target/release/ragtune");
    if !ragtune.exists() {
        bail!(
            "{} is missing: build it first (cargo build --release -p ragtune-cli)",
            ragtune.display()
        );
    }
    let work = root.join(WORK);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    prepare(root, &ragtune, &work)?;

    let base_path = root.join(CONFIG);
    let text = std::fs::read_to_string(&base_path)
        .with_context(|| format!("reading {}", base_path.display()))?;
    let base: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", base_path.display()))?;
    let mut settings = Settings::from_config(&base, &base_path)?;
    if args.no_gradient_checkpointing {
        settings.gradient_checkpointing = false;
    }

    let mut sides = Vec::new();
    let mut examples_file: Option<PathBuf> = None;
    let packed_runs: &[bool] = if args.packing {
        &[false, true]
    } else {
        &[false]
    };
    for &packed in packed_runs {
        let name = if packed { "packed" } else { "batched" };
        let run_name = format!("bench-generator-{name}");
        let mut config = base.clone();
        config.insert(
            "max_train_examples".into(),
            toml::Value::Integer(args.examples as i64),
        );
        table(&mut config, "trainer")?.insert("run_name".into(), run_name.clone().into());
        table(&mut config, "packing")?.insert("enabled".into(), packed.into());
        if args.no_gradient_checkpointing {
            config.insert("gradient_checkpointing".into(), false.into());
        }
        let path = work.join(format!("{run_name}.toml"));
        std::fs::write(&path, toml::to_string(&config)?)
            .with_context(|| format!("writing {}", path.display()))?;
        let mut cmd = Command::new(&ragtune);
        cmd.current_dir(root)
            .args(["--device", "cpu", "generator", "sft", "--config"])
            .arg(&path);
        threads(&mut cmd);
        let what = format!("ragtune generator sft ({name})");
        eprintln!("running {what} on {} examples ...", args.examples);
        let measured = measure(&mut cmd, &what)?;
        let (tokens, train_seconds) = train_loop(&measured.stdout, &what)?;
        sides.push(Side {
            name: format!("ragtune LoRA, {name}"),
            measured,
            tokens,
            train_seconds,
        });
        if examples_file.is_none() {
            examples_file = Some(
                root.join(&settings.runs_dir)
                    .join(&run_name)
                    .join("train_examples.jsonl"),
            );
        }
    }
    let examples_file = examples_file.expect("at least one ragtune run");

    let script = root.join("tests/reference/bench_generator.py");
    let mut cmd = Command::new(python);
    cmd.current_dir(root)
        .arg(&script)
        .arg(work.join("smollm2-hf"))
        .arg(&examples_file)
        .arg(work.join("trl-out"))
        .args(["--r", &settings.r.to_string()])
        .args(["--alpha", &settings.alpha.to_string()])
        .args(["--dropout", &settings.dropout.to_string()])
        .args(["--batch-size", &settings.batch_size.to_string()])
        .args(["--max-length", &settings.max_length.to_string()])
        .args(["--lr", &settings.lr.to_string()])
        .args(["--epochs", &settings.epochs.to_string()])
        .args(["--warmup-ratio", &settings.warmup_ratio.to_string()])
        .args(["--bf16", if args.trl_fp32 { "0" } else { "1" }])
        .args([
            "--gradient-checkpointing",
            if args.no_gradient_checkpointing {
                "0"
            } else {
                "1"
            },
        ])
        .env("HF_HUB_OFFLINE", "1")
        .env("TOKENIZERS_PARALLELISM", "false");
    threads(&mut cmd);
    let trl_name = format!(
        "TRL SFTTrainer + PEFT LoRA ({}{})",
        if args.trl_fp32 { "fp32" } else { "bf16" },
        if args.no_gradient_checkpointing {
            ""
        } else {
            ", grad ckpt"
        }
    );
    eprintln!("running {trl_name} on the same examples ...");
    let measured = measure(&mut cmd, &trl_name)?;
    let trl = Side {
        tokens: value(&measured.stdout, "tokens", &trl_name)?,
        train_seconds: value(&measured.stdout, "train_seconds", &trl_name)?,
        name: trl_name,
        measured,
    };
    for side in &sides {
        if side.tokens != trl.tokens {
            bail!(
                "{} trained on {} tokens but TRL on {}: not the same data",
                side.name,
                side.tokens,
                trl.tokens
            );
        }
    }

    println!(
        "\ngenerator: SmolLM2-135M-Instruct (HF folder from the GGUF), LoRA r={} alpha={} all-linear, \
         {} FAQ examples ({} non-pad tokens), batch {}, max length {}, 1 epoch, {THREADS} threads, CPU; \
         ragtune precision `{}`, gradient checkpointing {}\n",
        settings.r,
        settings.alpha,
        args.examples,
        trl.tokens,
        settings.batch_size,
        settings.max_length,
        settings.precision,
        settings.gradient_checkpointing
    );
    println!(
        "{:<44}{:>10}{:>9}{:>11}{:>10}{:>14}{:>10}",
        "side", "tokens/s", "ratio", "train s", "wall s", "peak RSS MiB", "RSS ratio"
    );
    let trl_rate = trl.tokens / trl.train_seconds;
    for side in sides.iter().chain(std::iter::once(&trl)) {
        let rate = side.tokens / side.train_seconds;
        println!(
            "{:<44}{:>10.1}{:>8.2}x{:>11.1}{:>10.1}{:>14.0}{:>9.2}x",
            side.name,
            rate,
            rate / trl_rate,
            side.train_seconds,
            side.measured.seconds,
            side.measured.peak_rss_mib,
            side.measured.peak_rss_mib / trl.measured.peak_rss_mib
        );
    }
    Ok(())
}

/// The converted model (`<work>/smollm2-hf`) and the imported, split FAQ (`<work>/faq`,
/// `<work>/faq-split/{train,val,test}`), made once under `work` (also used by `bench joint`).
pub(super) fn prepare(root: &Path, ragtune: &Path, work: &Path) -> Result<()> {
    let hf = work.join("smollm2-hf");
    if !hf.join("model.safetensors").exists() {
        let gguf = root.join("assets/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
        crate::run(
            Command::new(ragtune)
                .args(["convert", "gguf-to-hf"])
                .arg(&gguf)
                .arg(&hf),
            "converting SmolLM2 to a Hugging Face folder",
        )?;
    }
    let faq = work.join("faq");
    if !faq.join("qa.parquet").exists() && !faq.join("corpus.parquet").exists() {
        crate::run(
            Command::new(ragtune)
                .args([
                    "--device", "cpu", "data", "import", "--format", "faq", "--out",
                ])
                .arg(&faq)
                .arg(root.join("assets/zaragoza-faq/faq-en.jsonl")),
            "importing the FAQ",
        )?;
    }
    let split = work.join("faq-split");
    if !split.join("train").exists() {
        crate::run(
            Command::new(ragtune)
                .args(["--device", "cpu", "data", "split", "--out"])
                .arg(&split)
                .arg(&faq),
            "splitting the FAQ",
        )?;
    }
    Ok(())
}

/// What TRL must repeat from the TOML.
struct Settings {
    r: i64,
    alpha: f64,
    dropout: f64,
    batch_size: i64,
    max_length: i64,
    lr: f64,
    epochs: f64,
    warmup_ratio: f64,
    precision: String,
    gradient_checkpointing: bool,
    runs_dir: String,
}

impl Settings {
    fn from_config(c: &toml::Table, path: &Path) -> Result<Self> {
        let get = |section: &str, key: &str| -> Result<toml::Value> {
            let mut v = c.get(section);
            for part in key.split('.') {
                v = v.and_then(|t| t.get(part));
            }
            v.cloned()
                .with_context(|| format!("{}: [{section}] has no `{key}`", path.display()))
        };
        let int = |s: &str, k: &str| -> Result<i64> {
            get(s, k)?
                .as_integer()
                .with_context(|| format!("{}: [{s}] {k} is not an integer", path.display()))
        };
        let float = |s: &str, k: &str| -> Result<f64> {
            let v = get(s, k)?;
            v.as_float()
                .or_else(|| v.as_integer().map(|i| i as f64))
                .with_context(|| format!("{}: [{s}] {k} is not a number", path.display()))
        };
        let string = |s: &str, k: &str| -> Result<String> {
            Ok(get(s, k)?
                .as_str()
                .with_context(|| format!("{}: [{s}] {k} is not a string", path.display()))?
                .to_string())
        };
        if string("peft", "method")? != "lora" || string("peft", "target_modules")? != "all-linear"
        {
            bail!(
                "{}: the bench compares LoRA on all linear layers ([peft] method = \"lora\", \
                 target_modules = \"all-linear\")",
                path.display()
            );
        }
        if c.get("trainer")
            .and_then(|t| t.get("grad_accum_steps"))
            .is_some()
        {
            bail!("{}: the bench keeps grad_accum_steps at 1", path.display());
        }
        Ok(Settings {
            r: int("peft", "r")?,
            alpha: float("peft", "lora_alpha")?,
            dropout: float("peft", "lora_dropout")?,
            batch_size: int("trainer", "batch_size")?,
            max_length: int("prompt", "max_length")?,
            lr: float("trainer", "optimizer.lr")?,
            epochs: float("trainer", "epochs")?,
            warmup_ratio: float("trainer", "schedule.warmup_ratio")?,
            precision: string("trainer", "precision")?,
            gradient_checkpointing: c
                .get("gradient_checkpointing")
                .and_then(toml::Value::as_bool)
                .unwrap_or(false),
            runs_dir: string("trainer", "runs_dir")?,
        })
    }
}

fn table<'a>(config: &'a mut toml::Table, name: &str) -> Result<&'a mut toml::Table> {
    config
        .entry(name)
        .or_insert_with(|| toml::Value::Table(Default::default()))
        .as_table_mut()
        .with_context(|| format!("[{name}] is not a table"))
}

/// `train loop: N non-pad tokens in S s (...)` from `ragtune generator sft`.
fn train_loop(stdout: &str, what: &str) -> Result<(f64, f64)> {
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("train loop: ") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            if let (Some(n), Some(s)) = (words.first(), words.get(4)) {
                if let (Ok(n), Ok(s)) = (n.parse::<f64>(), s.parse::<f64>()) {
                    return Ok((n, s));
                }
            }
        }
    }
    bail!("{what} printed no `train loop:` line; its output:\n{stdout}")
}

fn threads(cmd: &mut Command) {
    cmd.env("OMP_NUM_THREADS", THREADS)
        .env("MKL_NUM_THREADS", THREADS);
}

/// The number after `key` on a `key value` line of a side's output.
fn value(stdout: &str, key: &str, what: &str) -> Result<f64> {
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix(key) {
            if let Ok(v) = rest.trim().parse::<f64>() {
                return Ok(v);
            }
        }
    }
    bail!("{what} printed no `{key}` line; its output:\n{stdout}")
}
