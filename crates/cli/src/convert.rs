//! `ragtune convert`: checkpoint format conversions.

use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: ConvertCommand,
}

#[derive(Subcommand)]
enum ConvertCommand {
    /// A llama-architecture GGUF file to a Hugging Face folder (config.json, model.safetensors in
    /// f32, tokenizer.json, tokenizer_config.json with the chat template, generation_config.json)
    /// that transformers loads with AutoModelForCausalLM and AutoTokenizer.
    GgufToHf {
        /// The .gguf file.
        input: PathBuf,
        /// The folder to write (created if missing; files in it are replaced atomically).
        output: PathBuf,
    },
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        ConvertCommand::GgufToHf { input, output } => {
            let started = Instant::now();
            let spinner = indicatif::ProgressBar::new_spinner();
            spinner.set_message(format!("dequantizing {}", input.display()));
            spinner.enable_steady_tick(Duration::from_millis(120));
            let result = ragtune_models::gguf_convert::convert_gguf_to_hf(&input, &output);
            spinner.finish_and_clear();
            let summary = result.with_context(|| {
                format!("converting {} to {}", input.display(), output.display())
            })?;
            let c = &summary.config;
            let types: Vec<String> = summary
                .source_types
                .iter()
                .map(|(t, n)| format!("{t}×{n}"))
                .collect();
            let rows = [
                ("output", output.display().to_string()),
                ("tensors", summary.tensors.to_string()),
                (
                    "parameters",
                    format!("{:.1} M", summary.parameters as f64 / 1e6),
                ),
                ("source types", types.join(", ")),
                (
                    "layers / hidden / ffn",
                    format!(
                        "{} / {} / {}",
                        c.num_hidden_layers, c.hidden_size, c.intermediate_size
                    ),
                ),
                (
                    "heads / kv heads / head dim",
                    format!(
                        "{} / {} / {}",
                        c.num_attention_heads, c.num_key_value_heads, c.head_dim
                    ),
                ),
                (
                    "rope theta / rms eps",
                    format!("{} / {:e}", c.rope_theta, c.rms_norm_eps),
                ),
                ("tied embeddings", c.tie_word_embeddings.to_string()),
                ("vocabulary", summary.vocab_size.to_string()),
                (
                    "chat template",
                    if summary.chat_template {
                        "kept"
                    } else {
                        "none"
                    }
                    .into(),
                ),
                ("time", format!("{:.1} s", started.elapsed().as_secs_f64())),
            ];
            let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (key, value) in rows {
                println!("{key:<width$}  {value}");
            }
            Ok(())
        }
    }
}
