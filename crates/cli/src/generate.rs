//! `ragtune generate`: text generation with a Llama model from a GGUF file or a Hugging Face folder.

use anyhow::{bail, Context, Result};
use ragtune_models::generation::{generate_seeded, GenerationConfig, Sampling};
use ragtune_models::llama_load::{load_causal_lm, CausalLm};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use tch::{Device, Kind};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["prompt", "input"])))]
pub struct Args {
    /// A .gguf file or a Hugging Face folder (config.json, model.safetensors, tokenizer files).
    #[arg(long)]
    model: PathBuf,
    /// A PEFT adapter folder (adapter_config.json + adapter_model.safetensors; LoRA or IA3).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// One prompt.
    #[arg(long)]
    prompt: Option<String>,
    /// A JSONL file whose rows have a string field "prompt"; other fields are copied to the output.
    #[arg(long)]
    input: Option<PathBuf>,
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// 0 is greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Nucleus sampling: sample among the most likely tokens whose probability reaches this.
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Prompt i (0-based, in input order) samples with seed + i, whatever the batch size.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A system message for the chat template.
    #[arg(long)]
    system: Option<String>,
    /// Feed prompts to the model verbatim instead of wrapping them in the chat template.
    #[arg(long)]
    no_chat_template: bool,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Model dtype: f32 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Where to write one JSON row per prompt (input fields + "completion"); stdout if absent.
    #[arg(long)]
    output: Option<PathBuf>,
}

pub fn run(args: Args, device: Device) -> Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if args.no_chat_template && args.system.is_some() {
        bail!("--system needs the chat template; drop --no-chat-template or --system");
    }
    let sampling = Sampling::from_temperature(args.temperature, args.top_p)?;
    let kind = match args.dtype.as_str() {
        "f32" | "fp32" | "float32" => Kind::Float,
        "bf16" | "bfloat16" => Kind::BFloat16,
        other => bail!("--dtype {other}: expected f32 or bf16"),
    };
    let rows = match (&args.prompt, &args.input) {
        (Some(p), _) => vec![(
            0,
            Map::from_iter([("prompt".to_string(), Value::from(p.as_str()))]),
        )],
        (None, Some(path)) => read_prompts(path)?,
        (None, None) => unreachable!("clap requires --prompt or --input"),
    };
    let mut lm = load_causal_lm(&args.model, device, kind)
        .with_context(|| format!("loading {}", args.model.display()))?;
    if let Some(dir) = &args.adapter {
        let adapter = ragtune_models::peft::Peft::load(dir, &lm.model, device)
            .with_context(|| format!("loading the adapter {}", dir.display()))?;
        if matches!(
            adapter,
            ragtune_models::peft::Peft::Prefix(_) | ragtune_models::peft::Peft::Prompt(_)
        ) {
            bail!("--adapter {}: generation supports LoRA and IA3 adapters (prefix and prompt tuning are for training and scoring)", dir.display());
        }
        adapter.attach(&mut lm.model);
    }
    let prompts = encode_prompts(&lm, &rows, &args)?;
    let rows: Vec<Map<String, Value>> = rows.into_iter().map(|(_, row)| row).collect();

    let config = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        sampling,
        seed: args.seed,
        eos_token_ids: eos_ids(&lm),
        pad_token_id: lm.tokenizer.pad_token_id(),
    };
    // Batches of similar length waste less on padding; results go back to input order.
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|&i| prompts[i].len());
    let progress = args.input.is_some().then(|| {
        let bar = indicatif::ProgressBar::new(prompts.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} prompts  {elapsed_precise} (eta {eta})",
            )
            .expect("valid template"),
        );
        bar
    });
    let mut completions: Vec<Option<(String, usize, bool)>> = vec![None; prompts.len()];
    for chunk in order.chunks(args.batch_size) {
        let batch: Vec<Vec<i64>> = chunk.iter().map(|&i| prompts[i].clone()).collect();
        let seeds: Vec<u64> = chunk
            .iter()
            .map(|&i| config.seed.wrapping_add(i as u64))
            .collect();
        let outputs = generate_seeded(&lm.model, &batch, &seeds, &config)?;
        for (&i, out) in chunk.iter().zip(outputs) {
            let text = lm.tokenizer.decode(&out.tokens, true)?;
            completions[i] = Some((text, out.tokens.len(), out.stopped_on_eos));
        }
        if let Some(bar) = &progress {
            bar.inc(chunk.len() as u64);
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }

    if args.prompt.is_some() && args.output.is_none() {
        let (text, _, _) = completions[0].as_ref().expect("generated");
        println!("{text}");
        return Ok(());
    }
    let mut jsonl = String::new();
    for (mut row, done) in rows.into_iter().zip(completions) {
        let (text, n_tokens, stopped) = done.expect("every prompt generated");
        row.insert("completion".into(), Value::from(text));
        row.insert("new_tokens".into(), Value::from(n_tokens));
        row.insert("stopped_on_eos".into(), Value::from(stopped));
        jsonl.push_str(&serde_json::to_string(&Value::Object(row))?);
        jsonl.push('\n');
    }
    match &args.output {
        Some(path) => {
            ragtune_models::checkpoint::atomic_write(path, jsonl.as_bytes())?;
            eprintln!("wrote {} completions to {}", prompts.len(), path.display());
        }
        None => print!("{jsonl}"),
    }
    Ok(())
}

fn eos_ids(lm: &CausalLm) -> Vec<i64> {
    let mut ids = lm.config.eos_token_ids.clone();
    let tokenizer_eos = lm.tokenizer.eos_token_id();
    if !ids.contains(&tokenizer_eos) {
        ids.push(tokenizer_eos);
    }
    ids
}

fn encode_prompts(
    lm: &CausalLm,
    rows: &[(usize, Map<String, Value>)],
    args: &Args,
) -> Result<Vec<Vec<i64>>> {
    let template = if args.no_chat_template {
        None
    } else {
        Some(
            lm.tokenizer
                .chat_template()
                .with_context(|| format!("{} has no usable chat template", args.model.display()))?,
        )
    };
    let limit = lm.config.max_position_embeddings as usize;
    rows.iter()
        .map(|(line, row)| {
            let prompt = row["prompt"].as_str().expect("checked when read");
            let ids = match &template {
                Some(t) => lm
                    .tokenizer
                    .encode(&t.prompt(args.system.as_deref(), prompt), false)?,
                None => lm.tokenizer.encode(prompt, true)?,
            };
            if ids.is_empty() {
                bail!("{}: the prompt is empty", where_(args, *line));
            }
            if ids.len() + args.max_new_tokens > limit {
                bail!(
                    "{}: {} prompt tokens + {} new tokens exceed the model's context of {limit}",
                    where_(args, *line),
                    ids.len(),
                    args.max_new_tokens
                );
            }
            Ok(ids)
        })
        .collect()
}

fn where_(args: &Args, line: usize) -> String {
    match &args.input {
        Some(path) => format!("{}:{line}", path.display()),
        None => "--prompt".into(),
    }
}

/// Rows of a JSONL file with their 1-based line numbers, each an object with a string "prompt".
/// Blank lines are skipped.
fn read_prompts(path: &Path) -> Result<Vec<(usize, Map<String, Value>)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = || format!("{}:{}", path.display(), n + 1);
        if line.trim().is_empty() {
            continue;
        }
        let value: Value =
            serde_json::from_str(line).with_context(|| format!("{}: invalid JSON", at()))?;
        let Value::Object(row) = value else {
            bail!("{}: expected a JSON object with a \"prompt\" field", at());
        };
        match row.get("prompt") {
            Some(Value::String(_)) => {}
            Some(other) => bail!("{}: field \"prompt\" is {other}, expected a string", at()),
            None => bail!("{}: field \"prompt\" is missing", at()),
        }
        rows.push((n + 1, row));
    }
    if rows.is_empty() {
        bail!("{}: no prompts", path.display());
    }
    Ok(rows)
}
