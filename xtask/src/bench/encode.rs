//! `cargo xtask bench encode`: `ragtune embed` against sentence-transformers' `encode()` on the
//! same passages, all-MiniLM-L6-v2 on the CPU, both sides on the same threads.
//!
//! The passages (5..300 words, re-combined from the FAQ answers by a fixed generator) are written
//! once by `tests/reference/encode_bench.py generate`; each side then runs as its own process so
//! that its peak RSS is its own. Throughput counts encoding only (each side reports its own time
//! around encode); wall time, which includes start-up and model loading, is shown beside it.

use super::{measure, Measured};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

/// Threads for both sides: the whole of this project's 2-core CI machines.
const THREADS: &str = "2";

#[derive(clap::Args, Debug)]
pub struct EncodeArgs {
    /// Number of passages.
    #[arg(long, default_value_t = 5000)]
    passages: usize,
    /// Texts per forward pass, both sides.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Skip ragtune's bf16 run.
    #[arg(long)]
    no_bf16: bool,
}

struct Side {
    name: String,
    measured: Measured,
    encode_seconds: f64,
}

pub fn run(root: &Path, python: &Path, args: EncodeArgs) -> Result<()> {
    let work = std::env::temp_dir().join(format!("ragtune-bench-encode-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let passages = work.join("passages.jsonl");
    let script = root.join("tests/reference/encode_bench.py");
    let model = root.join("assets/all-MiniLM-L6-v2");
    let faq = root.join("assets/zaragoza-faq/faq-en.jsonl");
    crate::run(
        Command::new(python)
            .arg(&script)
            .arg("generate")
            .arg(&faq)
            .arg(&passages)
            .arg(args.passages.to_string()),
        "generating passages",
    )?;

    let mut sides = Vec::new();
    let mut outputs = Vec::new();
    let dtypes: &[&str] = if args.no_bf16 {
        &["f32"]
    } else {
        &["f32", "bf16"]
    };
    for dtype in dtypes {
        let output = work.join(format!("ragtune-{dtype}.parquet"));
        let mut cmd = Command::new(root.join("target/release/ragtune"));
        cmd.args(["--device", "cpu", "embed", "--model"])
            .arg(&model)
            .arg("--input")
            .arg(&passages)
            .arg("--output")
            .arg(&output)
            .args([
                "--batch-size",
                &args.batch_size.to_string(),
                "--dtype",
                dtype,
            ]);
        threads(&mut cmd);
        let what = format!("ragtune embed ({dtype})");
        eprintln!("running {what} on {} passages ...", args.passages);
        let measured = measure(&mut cmd, &what)?;
        let encode_seconds = value(&measured.stdout, "encode seconds", &what)?;
        sides.push(Side {
            name: format!("ragtune {dtype}"),
            measured,
            encode_seconds,
        });
        outputs.push(output);
    }

    let mut cmd = Command::new(python);
    cmd.arg(&script)
        .arg("encode")
        .arg(&model)
        .arg(&passages)
        .arg(args.batch_size.to_string())
        .args(&outputs)
        .env("HF_HUB_OFFLINE", "1")
        .env("TOKENIZERS_PARALLELISM", "false");
    threads(&mut cmd);
    let what = "sentence-transformers encode() (f32)";
    eprintln!("running {what} on {} passages ...", args.passages);
    let measured = measure(&mut cmd, what)?;
    let st_seconds = value(&measured.stdout, "encode_seconds", what)?;
    let cosines: Vec<(f64, f64)> = (0..outputs.len())
        .map(|i| {
            Ok((
                value(&measured.stdout, &format!("min_cosine_{i}"), what)?,
                value(&measured.stdout, &format!("mean_cosine_{i}"), what)?,
            ))
        })
        .collect::<Result<_>>()?;
    let st = Side {
        name: "sentence-transformers f32".into(),
        measured,
        encode_seconds: st_seconds,
    };

    let n = args.passages as f64;
    let st_rate = n / st.encode_seconds;
    println!(
        "\nencode: all-MiniLM-L6-v2, {} passages of 5..300 words, batch {}, {THREADS} threads, CPU\n",
        args.passages, args.batch_size
    );
    println!(
        "{:<28}{:>12}{:>10}{:>12}{:>10}{:>14}{:>16}",
        "side", "passages/s", "ratio", "encode s", "wall s", "peak RSS MiB", "cos vs ST min"
    );
    for (i, side) in sides.iter().chain(std::iter::once(&st)).enumerate() {
        let rate = n / side.encode_seconds;
        let cosine = cosines
            .get(i)
            .map(|(min, _)| format!("{min:.6}"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<28}{:>12.1}{:>9.2}x{:>12.2}{:>10.2}{:>14.0}{:>16}",
            side.name,
            rate,
            rate / st_rate,
            side.encode_seconds,
            side.measured.seconds,
            side.measured.peak_rss_mib,
            cosine
        );
    }
    for (side, (min, mean)) in sides.iter().zip(&cosines) {
        println!(
            "{}: cosine vs sentence-transformers min {min:.6}, mean {mean:.6}",
            side.name
        );
    }
    std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    Ok(())
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
