//! `cargo xtask bench data`: `ragtune data import` of a JSONL corpus plus its token cache, against
//! pyarrow + Hugging Face tokenizers doing the same (tests/reference/data_bench.py).
//!
//! The corpus is generated here, deterministically: passages of 8..400 words (most short, a long
//! tail past the 256-token limit) drawn from the FAQ's vocabulary. Each side runs as its own process
//! on the same 2 cores; rows/s is rows over the process's wall time, start-up included.

use super::{measure, Measured};
use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;
use std::process::Command;

#[derive(clap::Args, Debug)]
pub struct DataArgs {
    /// Number of passages to generate.
    #[arg(long, default_value_t = 200_000)]
    passages: usize,
    /// Token cache truncation length.
    #[arg(long, default_value_t = 256)]
    max_length: usize,
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn generate(faq: &Path, out: &Path, passages: usize) -> Result<()> {
    let text =
        std::fs::read_to_string(faq).with_context(|| format!("reading {}", faq.display()))?;
    let mut vocab: Vec<String> = Vec::new();
    for line in text.lines() {
        // The answer field is enough: ordinary English with domain words and punctuation.
        if let Some(start) = line.find("\"a\":\"") {
            let rest = &line[start + 5..];
            let end = rest.find("\",\"").unwrap_or(rest.len());
            vocab.extend(
                rest[..end]
                    .split_whitespace()
                    .map(|w| w.replace(['"', '\\'], "")),
            );
        }
    }
    vocab.sort();
    vocab.dedup();
    anyhow::ensure!(vocab.len() > 100, "too few words in {}", faq.display());
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let mut state = 0x5eed_u64;
    for i in 0..passages {
        // Squaring a uniform skews towards short passages; 8..400 words.
        let u = (splitmix(&mut state) % 1000) as f64 / 1000.0;
        let words = 8 + (u * u * 392.0) as usize;
        let mut passage = String::with_capacity(words * 7);
        for k in 0..words {
            if k > 0 {
                passage.push(' ');
            }
            passage.push_str(&vocab[(splitmix(&mut state) % vocab.len() as u64) as usize]);
        }
        let title = &vocab[(splitmix(&mut state) % vocab.len() as u64) as usize];
        writeln!(
            w,
            "{{\"_id\":\"doc{i}\",\"title\":{},\"text\":{}}}",
            serde_json_string(title),
            serde_json_string(&passage)
        )?;
    }
    w.flush()?;
    Ok(())
}

fn serde_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn run(root: &Path, python: &Path, args: DataArgs) -> Result<()> {
    let work = root.join("target/bench-data");
    std::fs::create_dir_all(&work)?;
    let corpus = work.join(format!("corpus-{}.jsonl", args.passages));
    generate(
        &root.join("assets/zaragoza-faq/faq-en.jsonl"),
        &corpus,
        args.passages,
    )?;
    let tokenizer = root.join("assets/all-MiniLM-L6-v2/tokenizer.json");
    let size_mb = std::fs::metadata(&corpus)?.len() as f64 / 1e6;
    println!(
        "corpus: {} passages, {size_mb:.0} MB JSONL; tokenizer all-MiniLM-L6-v2, max length {}",
        args.passages, args.max_length
    );

    let rust_out = work.join("ragtune");
    let _ = std::fs::remove_dir_all(&rust_out);
    let rust = measure(
        Command::new(root.join("target/release/ragtune"))
            .args([
                "data",
                "import",
                "--format",
                "jsonl",
                "--table",
                "corpus",
                "--map",
                "doc_id=_id",
            ])
            .arg(&corpus)
            .arg("--out")
            .arg(&rust_out)
            .arg("--tokenizer")
            .arg(&tokenizer)
            .args([
                "--max-length",
                &args.max_length.to_string(),
                "--tokenize",
                "corpus",
            ])
            .current_dir(root),
        "ragtune data import",
    )?;
    let py_out = work.join("python");
    let _ = std::fs::remove_dir_all(&py_out);
    let py = measure(
        Command::new(python)
            .arg(root.join("tests/reference/data_bench.py"))
            .arg(&corpus)
            .arg(&py_out)
            .arg(&tokenizer)
            .arg(args.max_length.to_string())
            .env("TOKENIZERS_PARALLELISM", "true")
            .current_dir(root),
        "python data_bench.py",
    )?;
    let rows = args.passages as f64;
    let line = |name: &str, m: &Measured| {
        println!(
            "{name:<34} {:>8.1} s {:>10.0} rows/s {:>9.0} MiB peak RSS",
            m.seconds,
            rows / m.seconds,
            m.peak_rss_mib
        )
    };
    println!(
        "{:<34} {:>10} {:>17} {:>18}",
        "", "wall", "throughput", "memory"
    );
    line("ragtune data import + tokenize", &rust);
    line("pyarrow + HF tokenizers", &py);
    println!(
        "ratio (ragtune / python): {:.2}x rows/s, {:.2}x peak RSS",
        py.seconds / rust.seconds,
        rust.peak_rss_mib / py.peak_rss_mib
    );
    print!("{}", rust.stdout);
    Ok(())
}
