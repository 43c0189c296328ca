//! Supervised fine-tuning: (question + passages) -> answer, loss on the answer tokens only.
//! [`run`] is the whole recipe; the rest are its parts, which rag-joint reuses.

use crate::config::GeneratorConfig;
use crate::contexts::{raft, Ranking};
use crate::evaluate::{evaluate_with_progress, EvalReport};
use crate::loss::completion_loss;
use crate::packing::{best_fit_decreasing, collate_packed, PackedBatch};
use crate::prompt::PromptBuilder;
use crate::setup;
use crate::{GeneratorError, Result};
use ragtune_data::QaExample;
use ragtune_models::llama::Llama;
use ragtune_models::llama_load::CausalLm;
use ragtune_models::peft::{self, Peft};
use ragtune_trainer::{Metrics, RunSummary, Trainer};
use std::path::PathBuf;
use tch::{Device, Tensor};

/// Rows of the LM head's input per chunk of the cross-entropy.
pub const LOSS_CHUNK: i64 = 256;

#[derive(Debug, Clone, PartialEq)]
pub struct SftExample {
    pub id: String,
    /// Prompt then answer.
    pub input_ids: Vec<i64>,
    pub prompt_len: usize,
}

/// Tokenized training examples with RAFT-mixed contexts (one draw per example, seeded);
/// `ranking` holds the passages of `qa`, row for row.
pub fn build_examples(
    qa: &[QaExample],
    ranking: &Ranking,
    builder: &PromptBuilder,
    config: &GeneratorConfig,
) -> Result<Vec<SftExample>> {
    qa.iter()
        .enumerate()
        .map(|(i, ex)| {
            let answer = ex.answers.first().ok_or_else(|| {
                GeneratorError::Invalid(format!(
                    "qa row {i} (id {:?}): field `answers` is empty",
                    ex.id
                ))
            })?;
            let passages = raft(ranking, i, ex, &config.contexts, i as u64);
            let enc = builder.encode(&ex.question, &passages, Some(answer))?;
            let prompt_len = enc.prompt.len();
            let mut input_ids = enc.prompt;
            input_ids.extend(enc.answer);
            Ok(SftExample {
                id: ex.id.clone(),
                input_ids,
                prompt_len,
            })
        })
        .collect()
}

/// Right-padded `(input_ids, attention_mask, completion_mask)`, each `[batch, longest]`.
pub fn collate(
    examples: &[&SftExample],
    pad_token_id: i64,
    device: Device,
) -> (Tensor, Tensor, Tensor) {
    let width = examples
        .iter()
        .map(|e| e.input_ids.len())
        .max()
        .unwrap_or(0);
    let (mut ids, mut attention, mut completion) = (vec![], vec![], vec![]);
    for e in examples {
        let n = e.input_ids.len();
        ids.extend(
            e.input_ids
                .iter()
                .copied()
                .chain(std::iter::repeat_n(pad_token_id, width - n)),
        );
        attention.extend((0..width).map(|t| i64::from(t < n)));
        completion.extend((0..width).map(|t| i64::from(t >= e.prompt_len && t < n)));
    }
    let shape = [examples.len() as i64, width as i64];
    let t = |v: Vec<i64>| Tensor::from_slice(&v).reshape(shape).to_device(device);
    (t(ids), t(attention), t(completion))
}

/// Completion-only loss of one batch under `peft` (attached already for LoRA/IA3).
pub fn batch_loss(
    lm: &CausalLm,
    adapter: Option<&Peft>,
    batch: &[&SftExample],
    device: Device,
) -> Result<(Tensor, i64)> {
    let (ids, attention, completion) = collate(batch, lm.tokenizer.pad_token_id(), device);
    let hidden = peft::forward_hidden(&lm.model, adapter, &ids, Some(&attention))?;
    completion_loss(&lm.model, &hidden, &ids, &completion, LOSS_CHUNK)
}

/// Completion-only loss of packed rows (each example attends only to itself).
pub fn packed_loss(model: &Llama, batch: &PackedBatch) -> Result<(Tensor, i64)> {
    let hidden =
        model.forward_hidden_packed(&batch.input_ids, &batch.segment_ids, &batch.position_ids)?;
    completion_loss(
        model,
        &hidden,
        &batch.input_ids,
        &batch.completion_mask,
        LOSS_CHUNK,
    )
}

/// The units the trainer samples: one example each, or with packing, the rows of
/// best-fit-decreasing bins (example indices).
fn training_units(
    config: &GeneratorConfig,
    adapter: Option<&Peft>,
    examples: &[SftExample],
) -> Result<Vec<Vec<usize>>> {
    if !config.packing.enabled {
        return Ok((0..examples.len()).map(|i| vec![i]).collect());
    }
    if matches!(adapter, Some(Peft::Prefix(_) | Peft::Prompt(_))) {
        return Err(GeneratorError::Invalid(
            "packing works with full fine-tuning, LoRA and IA3, not with prefix or prompt tuning \
             (their virtual tokens would be shared across the packed examples)"
                .into(),
        ));
    }
    let capacity = config
        .packing
        .max_length
        .unwrap_or(config.prompt.max_length);
    let lengths: Vec<usize> = examples.iter().map(|e| e.input_ids.len()).collect();
    best_fit_decreasing(&lengths, capacity).map_err(|e| match e {
        GeneratorError::Invalid(m) => GeneratorError::Invalid(format!(
            "{m} ([packing] max_length; the example's id is {:?})",
            lengths
                .iter()
                .position(|&l| l > capacity)
                .map(|i| &examples[i].id)
        )),
        other => other,
    })
}

/// `<run dir>/train_examples.jsonl`: one `{"id", "input_ids", "prompt_len"}` per line.
fn save_examples(config: &GeneratorConfig, examples: &[SftExample]) -> Result<()> {
    let mut text = String::new();
    for e in examples {
        let line =
            serde_json::json!({"id": e.id, "input_ids": e.input_ids, "prompt_len": e.prompt_len});
        text.push_str(&line.to_string());
        text.push('\n');
    }
    let dir = config.trainer.run_dir();
    std::fs::create_dir_all(&dir)
        .map_err(|e| GeneratorError::Invalid(format!("cannot create {}: {e}", dir.display())))?;
    ragtune_models::checkpoint::atomic_write(&dir.join("train_examples.jsonl"), text.as_bytes())?;
    Ok(())
}

fn trainer_note(units: &[Vec<usize>], examples: &[SftExample]) {
    let tokens: usize = examples.iter().map(|e| e.input_ids.len()).sum();
    let longest = units
        .iter()
        .map(|u| {
            u.iter()
                .map(|&i| examples[i].input_ids.len())
                .sum::<usize>()
        })
        .max()
        .unwrap_or(0);
    eprintln!(
        "packing: {} examples into {} rows ({tokens} tokens, longest row {longest})",
        examples.len(),
        units.len()
    );
}

/// Trains `adapter` (or the whole model when `None`) on `examples`; `eval_fn` runs when the
/// trainer's eval cadence says so. Base weights under PEFT are frozen: no gradient, no AdamW state.
pub fn train(
    config: &GeneratorConfig,
    lm: &mut CausalLm,
    adapter: Option<&Peft>,
    examples: &[SftExample],
    device: Device,
    mut eval_fn: impl FnMut(&CausalLm) -> Result<Metrics>,
) -> Result<RunSummary> {
    let vs = match adapter {
        Some(a) => {
            lm.var_store.freeze();
            a.attach(&mut lm.model);
            a.var_store()
        }
        None => &lm.var_store,
    };
    if examples.is_empty() {
        return Err(GeneratorError::Invalid("no training examples".into()));
    }
    if config.save_examples {
        save_examples(config, examples)?;
    }
    if config.gradient_checkpointing && matches!(adapter, Some(Peft::Prefix(_))) {
        return Err(GeneratorError::Invalid(
            "gradient_checkpointing does not cover prefix tuning (its prefixes enter through the \
             key/value cache)"
                .into(),
        ));
    }
    lm.model
        .set_gradient_checkpointing(config.gradient_checkpointing);
    let units = training_units(config, adapter, examples)?;
    if config.packing.enabled {
        trainer_note(&units, examples);
    }
    let mut trainer = Trainer::new(config.trainer.clone(), vs, units.len())?;
    let started = std::time::Instant::now();
    let mut tokens = 0i64;
    while !trainer.finished() {
        if let Some(a) = adapter {
            a.set_training(true);
        }
        let lm_ref: &CausalLm = lm;
        let report = trainer.train_step(
            |batch| -> Result<Tensor> {
                let rows: Vec<Vec<&SftExample>> = batch
                    .indices
                    .iter()
                    .map(|&u| units[u].iter().map(|&i| &examples[i]).collect())
                    .collect();
                tokens += rows
                    .iter()
                    .flatten()
                    .map(|r| r.input_ids.len() as i64)
                    .sum::<i64>();
                let (loss, _) = if config.packing.enabled {
                    let packed = collate_packed(&rows, lm_ref.tokenizer.pad_token_id(), device);
                    packed_loss(&lm_ref.model, &packed)?
                } else {
                    let flat: Vec<&SftExample> = rows.into_iter().flatten().collect();
                    batch_loss(lm_ref, adapter, &flat, device)?
                };
                Ok(loss)
            },
            || {
                if let Some(a) = adapter {
                    a.set_training(false);
                }
                eval_fn(lm_ref)
            },
        )?;
        if report.step % 10 == 0 || report.finished {
            trainer.println(format!(
                "step {} loss {:.4} lr {:.2e} ({:.1} tokens/s)",
                report.step,
                report.loss,
                report.lr,
                tokens as f64 / started.elapsed().as_secs_f64()
            ));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    // On stdout, one line, for `cargo xtask bench generator` and for the record.
    println!(
        "train loop: {tokens} non-pad tokens in {secs:.2} s ({:.1} tokens/s)",
        tokens as f64 / secs
    );
    if let Some(a) = adapter {
        a.set_training(false);
    }
    lm.model.set_gradient_checkpointing(false);
    Ok(trainer.finish()?)
}

/// What [`run`] did: the examples, the training and the test scores.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SftReport {
    pub run_dir: PathBuf,
    /// The retriever the contexts came from.
    pub retriever: String,
    pub train_examples: usize,
    /// Tokens of the training examples (prompt and answer, no padding).
    pub train_tokens: usize,
    pub steps: u64,
    pub train_seconds: f64,
    /// Training tokens per second over the whole run (epochs counted).
    pub tokens_per_second: f64,
    /// The saved adapter (PEFT) or Hugging Face folder (full fine-tuning).
    pub output: PathBuf,
    pub trainable_values: Option<i64>,
    /// The untuned model on the test split (with `eval.base`), then the tuned one.
    pub base: Option<EvalReport>,
    pub tuned: Option<EvalReport>,
}

/// The SFT recipe, top to bottom: load the model, data and retriever; build RAFT-mixed examples
/// from the retriever's top-k; (score the base model;) train; save the adapter or the full model;
/// score the tuned model on the test split; write `report.json` in the run folder.
pub fn run(config: &GeneratorConfig, device: Device) -> Result<SftReport> {
    // 1. Model, splits, retriever.
    let mut s = setup::load(config, device)?;
    let test_ranking = if s.test.qa.is_empty() {
        None
    } else {
        Some(Ranking::for_qa(
            s.retriever.as_ref(),
            &s.test.qa,
            config.contexts.k,
        )?)
    };
    let score = |lm: &CausalLm, label: &str| -> Result<Option<EvalReport>> {
        let Some(ranking) = &test_ranking else {
            return Ok(None);
        };
        let report = evaluate_with_progress(
            lm,
            &s.test.qa,
            ranking,
            &config.prompt,
            config.contexts.k,
            &config.eval,
            &format!("questions ({label})"),
        )?;
        Ok(Some(report))
    };

    // 2. The untuned model, when asked for.
    let base = if config.eval.base {
        score(&s.lm, "base")?
    } else {
        None
    };

    // 3. Examples: question + RAFT-mixed passages -> answer.
    let mut qa = s.train.qa.clone();
    if let Some(max) = config.max_train_examples {
        qa.truncate(max);
    }
    let ranking = Ranking::for_qa(s.retriever.as_ref(), &qa, config.contexts.k)?;
    let examples = {
        let builder = PromptBuilder::new(&config.prompt, &s.lm.tokenizer)?;
        build_examples(&qa, &ranking, &builder, config)?
    };
    let train_tokens: usize = examples.iter().map(|e| e.input_ids.len()).sum();
    println!(
        "{} training examples, {train_tokens} tokens ({:.0} per example), passages from {}",
        examples.len(),
        train_tokens as f64 / examples.len().max(1) as f64,
        s.retriever.describe()
    );

    // 4. Training.
    let init = setup::init_text_ids(config, &s.lm)?;
    let adapter = match &config.peft {
        Some(c) => Some(Peft::new(c, &s.lm.model, device, init.as_deref())?),
        None => None,
    };
    let trainable_values = adapter.as_ref().map(Peft::trainable_parameters);
    let started = std::time::Instant::now();
    let summary = train(
        config,
        &mut s.lm,
        adapter.as_ref(),
        &examples,
        device,
        |_| Ok(Default::default()),
    )?;
    let train_seconds = started.elapsed().as_secs_f64();

    // 5. Save, score, report.
    let run_dir = config.trainer.run_dir();
    let output = match &adapter {
        Some(a) => {
            let dir = run_dir.join("adapter");
            a.save(&dir)?;
            dir
        }
        None => {
            let dir = run_dir.join("model");
            peft::save_hf_folder(&s.lm, &dir)?;
            dir
        }
    };
    let tuned = score(&s.lm, "tuned")?;
    let report = SftReport {
        run_dir: run_dir.clone(),
        retriever: s.retriever.describe(),
        train_examples: examples.len(),
        train_tokens,
        steps: summary.steps,
        train_seconds,
        tokens_per_second: train_tokens as f64 * config.trainer.epochs / train_seconds.max(1e-9),
        output,
        trainable_values,
        base,
        tuned,
    };
    let json = serde_json::to_string_pretty(&report).expect("the report serializes");
    ragtune_models::checkpoint::atomic_write(&run_dir.join("report.json"), json.as_bytes())?;
    Ok(report)
}
