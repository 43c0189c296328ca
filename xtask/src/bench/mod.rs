//! Benchmarks: each runs ragtune and its Python peer on the same workload in one run, measures
//! throughput and peak RSS of each as a child process, and prints the ratios.

mod bm25;
mod data;
mod encode;
mod generator;
mod joint;
mod retriever;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

// One file per benchmark under bench/, each with a `run(root, python)` that prints its table.
#[derive(Subcommand)]
pub enum Bench {
    /// `ragtune embed` vs sentence-transformers encode() on all-MiniLM-L6-v2 (CPU).
    Encode(encode::EncodeArgs),
    /// `ragtune data import` + token cache vs pyarrow + HF tokenizers on a generated 200k-passage corpus.
    Data(data::DataArgs),
    /// `ragtune retriever train` vs sentence-transformers MultipleNegativesRankingLoss on the same FAQ pairs.
    Retriever(retriever::RetrieverArgs),
    /// `ragtune generator sft` (LoRA) vs TRL's SFTTrainer with PEFT LoRA on the same data and model.
    Generator(generator::GeneratorArgs),
    /// `ragtune joint lsr`: LM scoring of (question, passage, answer) triples and the LSR retriever
    /// step vs transformers and sentence-transformers on the same triples and batches.
    Joint(joint::JointArgs),
    /// `ragtune retrieve` (BM25, Lucene's variant) vs bm25s on a generated 200k-passage corpus: index
    /// build, save and load, queries/s at top-10 and top-100, peak RSS, top-10 agreement.
    Bm25(bm25::Bm25Args),
}

pub fn run(root: &Path, python: &Path, which: Bench) -> Result<()> {
    match which {
        Bench::Encode(args) => encode::run(root, python, args),
        Bench::Data(args) => data::run(root, python, args),
        Bench::Retriever(args) => retriever::run(root, python, args),
        Bench::Generator(args) => generator::run(root, python, args),
        Bench::Joint(args) => joint::run(root, python, args),
        Bench::Bm25(args) => bm25::run(root, python, args),
    }
}

/// What one side of a benchmark used: wall time and the peak resident set of the process tree's largest child.
#[allow(dead_code)]
pub struct Measured {
    pub seconds: f64,
    pub peak_rss_mib: f64,
    pub stdout: String,
}

/// Runs `cmd` to completion and reads its peak RSS from the kernel's rusage, so no sampling is missed.
#[allow(dead_code)]
pub fn measure(cmd: &mut Command, what: &str) -> Result<Measured> {
    use std::os::unix::process::ExitStatusExt;
    let start = Instant::now();
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {what}"))?;
    let pid = child.id() as libc::pid_t;
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout {
        use std::io::Read;
        out.read_to_string(&mut stdout)?;
    }
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data, and wait4 fills it for the child we spawned and still own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if rc < 0 {
        bail!(
            "wait4 on {what} failed: {}",
            std::io::Error::last_os_error()
        );
    }
    let seconds = start.elapsed().as_secs_f64();
    let exit = std::process::ExitStatus::from_raw(status);
    if !exit.success() {
        bail!("{what} failed ({exit}); its output:\n{stdout}");
    }
    Ok(Measured {
        seconds,
        peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
        stdout,
    })
}
