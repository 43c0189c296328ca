//! Generation on a split (greedy, batched) and its scores: SQuAD EM and F1, ROUGE-L (with
//! stemming), corpus BLEU, METEOR and groundedness in the passages, all from the eval crate.

use crate::config::EvalSettings;
use crate::contexts::{retrieved, Ranking};
use crate::prompt::PromptBuilder;
use crate::{GeneratorError, Result};
use ragtune_data::QaExample;
use ragtune_eval::faithfulness::{groundedness, GroundednessParams};
use ragtune_models::generation::{generate, GenerationConfig, Sampling};
use ragtune_models::llama_load::CausalLm;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub id: String,
    pub question: String,
    pub prediction: String,
    pub answers: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub examples: usize,
    pub metrics: BTreeMap<String, f64>,
    /// Each metric but corpus BLEU per question, in prediction order (for paired tests).
    pub per_question: BTreeMap<String, Vec<f64>>,
    pub predictions: Vec<Prediction>,
}

/// Greedy decoding that stops at the tokenizer's EOS or at ChatML's `<|im_end|>` (the end of an
/// assistant turn), whichever comes first: how answers are generated for scoring and for pairs.
pub fn greedy_chat_generation(lm: &CausalLm, max_new_tokens: usize) -> Result<GenerationConfig> {
    let im_end = lm.tokenizer.encode("<|im_end|>", false)?;
    let mut eos_token_ids = vec![lm.tokenizer.eos_token_id()];
    if let [id] = im_end.as_slice() {
        eos_token_ids.push(*id);
    }
    Ok(GenerationConfig {
        max_new_tokens,
        sampling: Sampling::Greedy,
        seed: 0,
        eos_token_ids,
        pad_token_id: lm.tokenizer.pad_token_id(),
    })
}

/// Generates answers with `lm` as it stands (attach an adapter first to evaluate it) for the
/// first `settings.limit` questions, with the top-k passages of `ranking` (row for row with `qa`)
/// in the prompt.
pub fn evaluate(
    lm: &CausalLm,
    qa: &[QaExample],
    ranking: &Ranking,
    builder: &PromptBuilder,
    k: usize,
    settings: &EvalSettings,
    mut on_batch: impl FnMut(usize),
) -> Result<EvalReport> {
    let qa = &qa[..settings.limit.unwrap_or(qa.len()).min(qa.len())];
    if qa.is_empty() {
        return Err(GeneratorError::Invalid("no examples to evaluate".into()));
    }
    let gen = greedy_chat_generation(lm, settings.max_new_tokens)?;
    let mut predictions = vec![];
    let mut contexts = vec![];
    for chunk in qa.chunks(settings.batch_size.max(1)) {
        let mut prompts = vec![];
        for ex in chunk {
            let passages = retrieved(ranking, contexts.len(), ex, k);
            prompts.push(builder.prompt(&ex.question, &passages)?);
            contexts.push(passages);
        }
        let outputs = tch::no_grad(|| generate(&lm.model, &prompts, &gen))?;
        for (ex, out) in chunk.iter().zip(outputs) {
            predictions.push(Prediction {
                id: ex.id.clone(),
                question: ex.question.clone(),
                prediction: lm.tokenizer.decode(&out.tokens, true)?.trim().to_string(),
                answers: ex.answers.clone(),
            });
        }
        on_batch(chunk.len());
    }
    let score = |f: &dyn Fn(&Prediction, usize) -> f64| -> Vec<f64> {
        predictions
            .iter()
            .enumerate()
            .map(|(i, p)| f(p, i))
            .collect()
    };
    let mut per_question: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    per_question.insert(
        "exact_match".into(),
        score(&|p, _| ragtune_eval::squad::exact_match(&p.prediction, &p.answers)),
    );
    per_question.insert(
        "f1".into(),
        score(&|p, _| ragtune_eval::squad::token_f1(&p.prediction, &p.answers)),
    );
    per_question.insert(
        "rouge_l".into(),
        score(&|p, _| {
            ragtune_eval::rouge::rouge_multi(&p.prediction, &p.answers, true)
                .rouge_l
                .fmeasure
        }),
    );
    per_question.insert(
        "meteor".into(),
        score(&|p, _| ragtune_eval::meteor::meteor(&p.prediction, &p.answers)),
    );
    per_question.insert(
        "groundedness".into(),
        score(&|p, i| {
            groundedness(&p.prediction, &contexts[i], GroundednessParams::default()).token_support
        }),
    );
    let n = predictions.len() as f64;
    let mut metrics: BTreeMap<String, f64> = per_question
        .iter()
        .map(|(name, values)| (name.clone(), values.iter().sum::<f64>() / n))
        .collect();
    let hyps: Vec<&str> = predictions.iter().map(|p| p.prediction.as_str()).collect();
    let refs: Vec<Vec<String>> = predictions.iter().map(|p| p.answers.clone()).collect();
    metrics.insert(
        "bleu".into(),
        ragtune_eval::bleu::corpus_bleu(&hyps, &refs)?.score,
    );
    Ok(EvalReport {
        examples: predictions.len(),
        metrics,
        per_question,
        predictions,
    })
}

/// `ragtune generator eval`: the model (with `adapter` attached, when given) on the config's test
/// split, with the configured retriever's top-k in every prompt.
pub fn run(
    config: &crate::config::GeneratorConfig,
    adapter: Option<&std::path::Path>,
    device: tch::Device,
) -> Result<EvalReport> {
    let mut s = crate::setup::load(config, device)?;
    if let Some(dir) = adapter {
        crate::setup::attach_for_generation(&mut s.lm, dir, device)?;
    }
    if s.test.qa.is_empty() {
        return Err(GeneratorError::Invalid(
            "the config has no `test` dataset with a qa table to evaluate on".into(),
        ));
    }
    let ranking = Ranking::for_qa(s.retriever.as_ref(), &s.test.qa, config.contexts.k)?;
    let report = evaluate_with_progress(
        &s.lm,
        &s.test.qa,
        &ranking,
        &config.prompt,
        config.contexts.k,
        &config.eval,
        "questions",
    )?;
    Ok(report)
}

/// [`evaluate`] under a progress bar labelled `what` (the prompt builder made from `prompt`).
pub fn evaluate_with_progress(
    lm: &CausalLm,
    qa: &[QaExample],
    ranking: &Ranking,
    prompt: &crate::prompt::PromptConfig,
    k: usize,
    settings: &EvalSettings,
    what: &str,
) -> Result<EvalReport> {
    let n = settings.limit.unwrap_or(qa.len()).min(qa.len());
    let progress = ragtune_trainer::Progress::items(n as u64, what);
    let builder = PromptBuilder::new(prompt, &lm.tokenizer)?;
    let report = evaluate(lm, qa, ranking, &builder, k, settings, |done| {
        progress.inc(done as u64)
    })?;
    progress.finish_and_clear();
    Ok(report)
}
