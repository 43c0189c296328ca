//! `ragtune`: the command line over the library crates. Each subcommand group lives in its own module;
//! the libraries know nothing of this crate.

mod embed;
mod eval;

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
    /// Show which device ragtune would use and what libtorch sees.
    Device,
    /// Metrics: retrieval runs against qrels, generated answers against references, labels.
    Eval(eval::Args),
    /// Sentence embeddings of a JSONL or Parquet file, written as Parquet.
    Embed(embed::Args),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let device = ragtune_models::device::parse_device(&cli.device)?;
    match cli.command {
        Command::Embed(args) => embed::run(args, device),
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
