//! `cargo xtask bench retriever`: `ragtune retriever train` against sentence-transformers'
//! MultipleNegativesRankingLoss on the same FAQ pairs, all-MiniLM-L6-v2 on the CPU.
//!
//! Both sides train on the training split of the bundled FAQ (`ragtune data import` + `ragtune data
//! split`, seed 42, 0.8/0.1/0.1, the split `ragtune retriever train` makes itself), on the first
//! `--limit` pairs in qrels order, with in-batch negatives only, scale 20 (temperature 0.05), AdamW
//! at the same learning rate, weight decay, clipping, warmup and linear decay, the same batch size,
//! maximum length and epochs. Each side runs as its own process (peak RSS from wait4) and reports
//! the seconds of its training loop alone (ragtune: the trainer's `elapsed_s` at the last step in
//! metrics.jsonl; sentence-transformers: around `trainer.train()`), so model loading, zero-shot
//! evaluation and saving are outside pairs/s but inside the wall time beside it (ragtune's wall
//! time also holds its zero-shot and final evaluations, which the peer does not do). The trained
//! models are then scored on the test split by the same Python code
//! (`tests/reference/bench_retriever.py eval`, exact cosine search), with bootstrap CIs.

use super::{measure, Measured};
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Threads for both sides: the whole of this project's 2-core CI machines.
const THREADS: &str = "2";
const BOOTSTRAP_RESAMPLES: usize = 2000;

#[derive(clap::Args, Debug)]
pub struct RetrieverArgs {
    /// Passes over the pairs.
    #[arg(long, default_value_t = 1.0)]
    epochs: f64,
    /// Pairs per step, both sides.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Tokens per text, both sides (each batch is padded to its own longest text on both).
    #[arg(long, default_value_t = 256)]
    max_length: usize,
    /// fp32, bf16 (autocast on both sides), or both (four trainings).
    #[arg(long, default_value = "both", value_parser = ["fp32", "bf16", "both"])]
    dtype: String,
    /// Train on the first N training pairs (in qrels order); 0 for all 403. The default keeps the
    /// whole run (four trainings, four evaluations) near 15 minutes on a loaded 2-core machine.
    #[arg(long, default_value_t = 128)]
    limit: usize,
}

struct Side {
    name: String,
    dtype: String,
    measured: Measured,
    pairs: f64,
    train_seconds: f64,
    model: PathBuf,
}

pub fn run(root: &Path, python: &Path, args: RetrieverArgs) -> Result<()> {
    if !(args.epochs.is_finite() && args.epochs > 0.0) || args.batch_size == 0 {
        bail!("--epochs and --batch-size must be positive");
    }
    let ragtune = root.join("target/release/ragtune");
    if !ragtune.is_file() {
        bail!(
            "{} is missing: build it with `cargo build --release -p ragtune-cli`",
            ragtune.display()
        );
    }
    let work = std::env::temp_dir().join(format!("ragtune-bench-retriever-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let script = root.join("tests/reference/bench_retriever.py");
    let base = root.join("assets/all-MiniLM-L6-v2");

    // The FAQ as a dataset folder, and its seeded split for the Python side.
    let dataset = work.join("faq");
    let split = work.join("split");
    crate::run(
        Command::new(&ragtune)
            .args(["data", "import"])
            .arg(root.join("assets/zaragoza-faq/faq-en.jsonl"))
            .args(["--format", "faq", "--out"])
            .arg(&dataset),
        "ragtune data import",
    )?;
    crate::run(
        Command::new(&ragtune)
            .args(["data", "split"])
            .arg(&dataset)
            .arg("--out")
            .arg(&split)
            .args(["--seed", "42", "--fractions", "0.8,0.1,0.1"]),
        "ragtune data split",
    )?;

    let recipe = read_recipe(&root.join("configs/retriever-bench.toml"))?;
    let lr = recipe_f64(&recipe, &["trainer", "optimizer", "lr"])?;
    let warmup_ratio = recipe_f64(&recipe, &["trainer", "schedule", "warmup_ratio"])?;
    let weight_decay = recipe_f64(&recipe, &["trainer", "optimizer", "weight_decay"])?;
    let dtypes: &[&str] = match args.dtype.as_str() {
        "both" => &["fp32", "bf16"],
        "bf16" => &["bf16"],
        _ => &["fp32"],
    };

    let mut sides = Vec::new();
    // Interleaved, so that a change in the machine's load falls on both sides alike.
    for dtype in dtypes {
        let name = format!("ragtune-{dtype}");
        let mut config = recipe.clone();
        set(&mut config, &["data", "source"], path_value(&dataset));
        set(&mut config, &["model", "base"], path_value(&base));
        set(
            &mut config,
            &["model", "max_length"],
            toml::Value::Integer(args.max_length as i64),
        );
        set(&mut config, &["trainer", "run_name"], name.clone().into());
        set(
            &mut config,
            &["trainer", "runs_dir"],
            path_value(&work.join("runs")),
        );
        set(&mut config, &["trainer", "epochs"], args.epochs.into());
        set(
            &mut config,
            &["trainer", "batch_size"],
            toml::Value::Integer(args.batch_size as i64),
        );
        set(&mut config, &["trainer", "precision"], (*dtype).into());
        if args.limit > 0 {
            set(
                &mut config,
                &["trainer", "limit_examples"],
                toml::Value::Integer(args.limit as i64),
            );
        }
        let config_path = work.join(format!("{name}.toml"));
        std::fs::write(&config_path, toml::to_string(&config)?)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let mut cmd = Command::new(&ragtune);
        cmd.args(["--device", "cpu", "retriever", "train", "--config"])
            .arg(&config_path)
            .arg("--no-resume");
        threads(&mut cmd);
        let what = format!("ragtune retriever train ({dtype})");
        eprintln!("running {what} ...");
        let measured = measure(&mut cmd, &what)?;
        let run_dir = work.join("runs").join(&name);
        let (pairs, train_seconds) = trainer_loop(&run_dir.join("metrics.jsonl"))?;
        sides.push(Side {
            name,
            dtype: dtype.to_string(),
            measured,
            pairs,
            train_seconds,
            model: run_dir.join("model"),
        });

        let name = format!("st-{dtype}");
        let model = work.join(&name);
        let mut cmd = Command::new(python);
        cmd.arg(&script)
            .arg("train")
            .arg(&base)
            .arg(&split)
            .arg(&model)
            .args(["--epochs", &args.epochs.to_string()])
            .args(["--batch-size", &args.batch_size.to_string()])
            .args(["--max-length", &args.max_length.to_string()])
            .args(["--lr", &lr.to_string()])
            .args(["--warmup-ratio", &warmup_ratio.to_string()])
            .args(["--weight-decay", &weight_decay.to_string()])
            .args(["--limit", &args.limit.to_string()])
            .args(["--dtype", dtype])
            .env("HF_HUB_OFFLINE", "1")
            .env("TOKENIZERS_PARALLELISM", "false");
        threads(&mut cmd);
        let what = format!("sentence-transformers MNRL ({dtype})");
        eprintln!("running {what} ...");
        let measured = measure(&mut cmd, &what)?;
        let st_pairs = value(&measured.stdout, "pairs", &what)?;
        let steps = value(&measured.stdout, "steps", &what)?;
        let train_seconds = value(&measured.stdout, "train_seconds", &what)?;
        // Pairs seen in training: every pair once an epoch, as on the ragtune side.
        let seen = (st_pairs * args.epochs).round();
        if (seen - sides.last().expect("ragtune ran").pairs).abs() > 0.5 {
            bail!(
                "the sides trained on different numbers of pairs: ragtune {}, sentence-transformers {seen} ({steps} steps)",
                sides.last().expect("ragtune ran").pairs
            );
        }
        sides.push(Side {
            name,
            dtype: dtype.to_string(),
            measured,
            pairs: seen,
            train_seconds,
            model,
        });
    }

    // One evaluation code for every trained model (the zero-shot base is in ragtune's own report).
    let mut cmd = Command::new(python);
    cmd.arg(&script)
        .arg("eval")
        .arg(&split)
        .arg(BOOTSTRAP_RESAMPLES.to_string())
        .arg("0");
    for side in &sides {
        cmd.arg(format!("{}={}", side.name, side.model.display()));
    }
    for dtype in dtypes {
        cmd.args(["--compare", &format!("ragtune-{dtype},st-{dtype}")]);
    }
    cmd.env("HF_HUB_OFFLINE", "1")
        .env("TOKENIZERS_PARALLELISM", "false");
    threads(&mut cmd);
    eprintln!("evaluating the trained models on the test split ...");
    let eval = measure(&mut cmd, "bench_retriever.py eval")?.stdout;
    let ndcg = |name: &str| -> Result<[f64; 3]> {
        Ok([
            value(&eval, &format!("ndcg@10_{name}"), "eval")?,
            value(&eval, &format!("ci_low_own_{name}"), "eval")?,
            value(&eval, &format!("ci_high_own_{name}"), "eval")?,
        ])
    };
    let queries = value(&eval, "queries", "eval")?;

    let pairs = sides[0].pairs;
    println!(
        "\nretriever: all-MiniLM-L6-v2 on the FAQ train split, {pairs} pairs seen ({} epoch(s) of {} pairs), batch {}, max length {}, {THREADS} threads, CPU; test split {queries} queries\n",
        args.epochs,
        if args.limit > 0 { args.limit.to_string() } else { "all".into() },
        args.batch_size,
        args.max_length
    );
    println!(
        "{:<12}{:>10}{:>8}{:>10}{:>9}{:>10}{:>8}{:>26}",
        "side",
        "pairs/s",
        "ratio",
        "train s",
        "wall s",
        "RSS MiB",
        "ratio",
        "test nDCG@10 [95% CI]"
    );
    let mut json = String::from("{\n");
    let _ = write!(
        json,
        "  \"model\": \"all-MiniLM-L6-v2\",\n  \"epochs\": {},\n  \"batch_size\": {},\n  \"max_length\": {},\n  \"limit\": {},\n  \"pairs_seen\": {pairs},\n  \"threads\": {THREADS},\n  \"test_queries\": {queries},\n",
        args.epochs, args.batch_size, args.max_length, args.limit
    );
    json.push_str("  \"sides\": [\n");
    for (i, side) in sides.iter().enumerate() {
        let peer = sides
            .iter()
            .find(|s| s.name == format!("st-{}", side.dtype))
            .expect("each dtype has its peer");
        let rate = side.pairs / side.train_seconds;
        let peer_rate = peer.pairs / peer.train_seconds;
        let [mean, low, high] = ndcg(&side.name)?;
        println!(
            "{:<12}{:>10.2}{:>7.2}x{:>10.1}{:>9.1}{:>10.0}{:>7.2}x{:>26}",
            side.name,
            rate,
            rate / peer_rate,
            side.train_seconds,
            side.measured.seconds,
            side.measured.peak_rss_mib,
            side.measured.peak_rss_mib / peer.measured.peak_rss_mib,
            format!("{mean:.4} [{low:.4}, {high:.4}]")
        );
        let _ = writeln!(
            json,
            "    {{\"side\": \"{}\", \"dtype\": \"{}\", \"pairs_per_s\": {rate}, \"pairs_per_s_ratio\": {}, \"train_seconds\": {}, \"wall_seconds\": {}, \"peak_rss_mib\": {}, \"peak_rss_ratio\": {}, \"test_ndcg@10\": {mean}, \"ci_low\": {low}, \"ci_high\": {high}}}{}",
            side.name,
            side.dtype,
            rate / peer_rate,
            side.train_seconds,
            side.measured.seconds,
            side.measured.peak_rss_mib,
            side.measured.peak_rss_mib / peer.measured.peak_rss_mib,
            if i + 1 < sides.len() { "," } else { "" }
        );
    }
    // sentence-transformers trains in fp32 unless told otherwise: ragtune's bf16 against that default.
    let find = |name: &str| sides.iter().find(|s| s.name == name);
    if let (Some(ours), Some(peer)) = (find("ragtune-bf16"), find("st-fp32")) {
        let rate = |s: &Side| s.pairs / s.train_seconds;
        println!(
            "ragtune bf16 against sentence-transformers fp32 (its default): pairs/s {:.2}x, peak RSS {:.2}x",
            rate(ours) / rate(peer),
            ours.measured.peak_rss_mib / peer.measured.peak_rss_mib
        );
    }
    json.push_str("  ],\n  \"ragtune_minus_st_ndcg@10\": [\n");
    println!();
    for (i, dtype) in dtypes.iter().enumerate() {
        let key = format!("ragtune-{dtype},st-{dtype}");
        let diff = value(&eval, &format!("diff_{key}"), "eval")?;
        let low = value(&eval, &format!("ci_low_{key}"), "eval")?;
        let high = value(&eval, &format!("ci_high_{key}"), "eval")?;
        let verdict = if high < 0.0 {
            "ragtune worse beyond the CI"
        } else if low > 0.0 {
            "ragtune better beyond the CI"
        } else {
            "no difference beyond the CI"
        };
        println!(
            "test nDCG@10 ragtune − sentence-transformers ({dtype}): {diff:+.4}, 95% paired bootstrap CI [{low:+.4}, {high:+.4}]: {verdict}"
        );
        let _ = writeln!(
            json,
            "    {{\"dtype\": \"{dtype}\", \"difference\": {diff}, \"ci_low\": {low}, \"ci_high\": {high}}}{}",
            if i + 1 < dtypes.len() { "," } else { "" }
        );
    }
    json.push_str("  ]\n}\n");
    println!(
        "targets: pairs/s ratio ≥ 1.5x, peak RSS ratio ≤ 0.7x, nDCG@10 not worse beyond the CI"
    );

    let out_dir = root.join("runs/bench-retriever");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let out = out_dir.join(format!("result-{stamp}.json"));
    let tmp = out.with_extension("json.tmp");
    std::fs::write(&tmp, json).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &out).with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    Ok(())
}

fn threads(cmd: &mut Command) {
    cmd.env("OMP_NUM_THREADS", THREADS)
        .env("MKL_NUM_THREADS", THREADS);
}

fn read_recipe(path: &Path) -> Result<toml::Table> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn recipe_f64(recipe: &toml::Table, keys: &[&str]) -> Result<f64> {
    let mut value = recipe
        .get(keys[0])
        .with_context(|| format!("configs/retriever-bench.toml has no `{}`", keys[0]))?;
    for key in &keys[1..] {
        value = value
            .get(key)
            .with_context(|| format!("configs/retriever-bench.toml has no `{}`", keys.join(".")))?;
    }
    value
        .as_float()
        .or_else(|| value.as_integer().map(|i| i as f64))
        .with_context(|| {
            format!(
                "configs/retriever-bench.toml: `{}` is not a number",
                keys.join(".")
            )
        })
}

/// Sets `keys` (a dotted path of tables, created when missing) to `value`.
fn set(table: &mut toml::Table, keys: &[&str], value: toml::Value) {
    let (last, parents) = keys.split_last().expect("a key path");
    let mut table = table;
    for key in parents {
        table = table
            .entry(key.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .expect("a table in the recipe");
    }
    table.insert(last.to_string(), value);
}

fn path_value(path: &Path) -> toml::Value {
    toml::Value::String(path.display().to_string())
}

/// Pairs seen and seconds of the training loop: the `examples` and `elapsed_s` of the last `train`
/// record of the trainer's metrics.jsonl (elapsed from the trainer's start to the end of that step).
fn trainer_loop(metrics: &Path) -> Result<(f64, f64)> {
    let text = std::fs::read_to_string(metrics)
        .with_context(|| format!("reading {}", metrics.display()))?;
    let last = text
        .lines()
        .rev()
        .find(|line| line.contains("\"type\":\"train\""))
        .with_context(|| format!("{} holds no train record", metrics.display()))?;
    let field = |key: &str| -> Result<f64> {
        let pattern = format!("\"{key}\":");
        let start = last
            .find(&pattern)
            .with_context(|| format!("{}: no `{key}` in {last}", metrics.display()))?
            + pattern.len();
        let rest = &last[start..];
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        rest[..end]
            .trim()
            .parse()
            .with_context(|| format!("{}: `{key}` is not a number in {last}", metrics.display()))
    };
    Ok((field("examples")?, field("elapsed_s")?))
}

/// The number after `key` on a `key value` line of a side's output.
fn value(stdout: &str, key: &str, what: &str) -> Result<f64> {
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix(key) {
            if let Some(rest) = rest.strip_prefix(' ') {
                if let Ok(v) = rest.trim().parse::<f64>() {
                    return Ok(v);
                }
            }
        }
    }
    bail!("{what} printed no `{key}` line; its output:\n{stdout}")
}
