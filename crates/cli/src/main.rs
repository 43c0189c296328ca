//! `ragtune`: the command line over the library crates. Each subcommand group lives in its own module;
//! the libraries know nothing of this crate.

// jemalloc for every allocation of the process, libtorch's included: training batches of varying
// length fragment glibc's heap until free but resident pages add a fifth to the peak RSS.
#[cfg(all(target_os = "linux", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's defaults unless `MALLOC_CONF` says otherwise. Without decay, freed pages stay with
/// the allocator for the next batch instead of going back to the kernel and faulting in again,
/// which costs a 2-core CPU 40% of a training step (PyTorch's CPU tuning guide sets the same).
/// Kept pages are then reused only if they fit: a free extent may serve a request up to 2^10
/// times smaller (jemalloc's default allows 2^6), or else a run whose tensor shapes vary from
/// batch to batch keeps growing: 2.06 GB against 1.23 GB at the same speed for two epochs of
/// the FAQ retriever.
#[cfg(all(target_os = "linux", not(target_env = "msvc")))]
#[used]
#[unsafe(export_name = "malloc_conf")]
static MALLOC_CONF: &[u8; 64] =
    b"dirty_decay_ms:-1,muzzy_decay_ms:-1,lg_extent_max_active_fit:10\0";

mod classify;
mod compare;
mod convert;
mod data;
mod embed;
mod eval;
mod generate;
mod generator;
mod joint;
mod pipeline;
mod reranker;
mod retrieve;
mod retriever;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ragtune",
    version,
    about = "Fine-tune retrieval-augmented generation systems: retriever, generator, or both"
)]
struct Cli {
    /// Where to run: auto (CUDA when present), cpu, cuda, cuda:N.
    #[arg(long, global = true, default_value = "auto")]
    device: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job on the bundled default: `pipeline` on configs/demo.toml (FAQ, all-MiniLM-L6-v2,
    /// SmolLM2): tune the retriever, tune the generator on its passages, evaluate the 2×2, report.
    Demo(pipeline::Args),
    /// A whole experiment from one config, stage by stage: data, retriever, index, generator,
    /// (pairs, DPO,) end-to-end eval and an HTML report; unchanged stages are skipped.
    Pipeline(pipeline::Args),
    /// Show which device ragtune would use and what libtorch sees.
    Device,
    /// Metrics: retrieval runs against qrels, generated answers against references, labels.
    Eval(eval::Args),
    /// Dense retriever fine-tuning: mine hard negatives, train, evaluate, export.
    Retriever(retriever::Args),
    /// Search a dataset's queries with any `[retrieval]` config (dense, TF-IDF, BM25, hybrid) and
    /// write a TREC run, with phase timings.
    Retrieve(retrieve::Args),
    /// Retrievers side by side on one split (alone, fused, reranked) with CIs against a baseline.
    Compare(compare::Args),
    /// Datasets: import, inspect, tokenize, dedup, split, export.
    Data(data::Args),
    /// Sentence embeddings of a JSONL or Parquet file, written as Parquet.
    Embed(embed::Args),
    /// Convert checkpoints (GGUF to a Hugging Face folder).
    Convert(convert::Args),
    /// Generate text with a Llama model (GGUF file or Hugging Face folder).
    Generate(generate::Args),
    /// Generator fine-tuning: SFT (full or PEFT), evaluation, merging adapters.
    Generator(generator::Args),
    /// Cross-encoder reranker: train on mined triplets, evaluate over a first stage, export.
    Reranker(reranker::Args),
    /// Task heads: sequence classification or regression on an encoder, full or PEFT (`train`, `eval`).
    Classify(classify::Args),
    /// Joint training, the generator teaching the retriever: `lsr`, `ra-dit` or `rag-sequence`.
    Joint(joint::Args),
}

/// oneDNN (bf16 matmuls on the CPU) compiles and keeps a kernel per matrix shape, up to 1,024 in
/// each of its two caches. Batch shapes change every step, so few of those kernels are used again
/// after their step, and together they held 0.55 GB of a bf16 retriever run (1.78 against 1.23
/// GB, same speed, with 128). A user's own setting wins.
const ONEDNN_CACHE_ENTRIES: &str = "128";

fn limit_onednn_caches() {
    // oneDNN's own primitive cache, and ideep's (PyTorch's wrapper) in front of it.
    for name in ["ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"] {
        if std::env::var_os(name).is_none() {
            // Before any thread starts, and before libtorch reads it on first use.
            std::env::set_var(name, ONEDNN_CACHE_ENTRIES);
        }
    }
}

fn main() -> Result<()> {
    limit_onednn_caches();
    let cli = Cli::parse();
    let device = ragtune_models::device::parse_device(&cli.device)?;
    match cli.command {
        Command::Demo(args) | Command::Pipeline(args) => pipeline::run(args, device),
        Command::Embed(args) => embed::run(args, device),
        Command::Convert(args) => convert::run(args),
        Command::Generate(args) => generate::run(args, device),
        Command::Generator(args) => generator::run(args, device),
        Command::Joint(args) => joint::run(args, device),
        Command::Data(args) => data::run(args),
        Command::Retriever(args) => retriever::run(args, device),
        Command::Retrieve(args) => retrieve::run(args, device),
        Command::Compare(args) => compare::run(args, device),
        Command::Reranker(args) => reranker::run(args, device),
        Command::Classify(args) => classify::run(args, device),
        Command::Eval(args) => eval::run(args),
        Command::Device => {
            println!("device: {device:?}");
            println!(
                "cuda available: {} ({} device(s))",
                tch::Cuda::is_available(),
                tch::Cuda::device_count()
            );
            println!("threads: {}", tch::get_num_threads());
            Ok(())
        }
    }
}
