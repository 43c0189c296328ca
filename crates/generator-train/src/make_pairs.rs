//! Preference pairs for DPO from a QA split: the chosen answer is the gold one, the rejected answer
//! is the model's own answer written without the passages (closed book) or with a wrong passage
//! only — what it says when retrieval fails, a hallucination. The pair keeps the passages the
//! model sees at train time (RAFT-mixed for the training split, the plain top-k for held-out
//! splits), so DPO teaches it to prefer the grounded gold answer over its own guess given them.

use crate::contexts::{raft, retrieved, wrong_passage, ContextConfig, Ranking};
use crate::prompt::PromptBuilder;
use crate::{GeneratorError, Result};
use ragtune_data::{Preference, QaExample};
use ragtune_models::generation::generate;
use ragtune_models::llama_load::CausalLm;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PairsSettings {
    /// How the rejected answer is written.
    pub rejected: RejectedSource,
    /// A PEFT adapter (LoRA or IA3) on the model that writes the rejected answers, e.g. the SFT
    /// adapter; none: the base model.
    pub adapter: Option<PathBuf>,
    pub max_new_tokens: usize,
    pub batch_size: usize,
}

impl Default for PairsSettings {
    fn default() -> Self {
        PairsSettings {
            rejected: RejectedSource::ClosedBook,
            adapter: None,
            max_new_tokens: 64,
            batch_size: 8,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectedSource {
    /// The prompt holds no passage at all.
    ClosedBook,
    /// The prompt holds only the best-ranked passage that is not a gold one.
    WrongPassage,
}

/// Which passages a pair stores (and DPO will show): those of training or those of deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairContext {
    /// RAFT mixing with the config's seed, as SFT builds its examples (the training split).
    Raft,
    /// The plain top-k of the retriever, as evaluation and a deployed RAG see it.
    Retrieved,
}

#[derive(Debug, Clone, Default)]
pub struct MadePairs {
    pub pairs: Vec<Preference>,
    /// Questions left out because the model's answer was empty or equal to the gold one.
    pub skipped_empty: usize,
    pub skipped_same: usize,
}

/// Passages are joined with a blank line in the `context` column (`dpo::build_pairs` splits on
/// it), so blank lines inside a passage are collapsed to one newline.
pub fn join_context(passages: &[String]) -> String {
    passages
        .iter()
        .map(|p| {
            let mut p = p.trim().to_string();
            while p.contains("\n\n") {
                p = p.replace("\n\n", "\n");
            }
            p
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn normalized(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Generates the rejected answer of every question of `qa` (greedy, batched) with `lm` as it
/// stands (attach an adapter first to use it), and pairs it with the gold answer. `on_batch` gets
/// the number of questions done in each batch.
#[allow(clippy::too_many_arguments)]
pub fn make_pairs(
    lm: &CausalLm,
    qa: &[QaExample],
    ranking: &Ranking,
    builder: &PromptBuilder,
    contexts: &ContextConfig,
    settings: &PairsSettings,
    context: PairContext,
    mut on_batch: impl FnMut(usize),
) -> Result<MadePairs> {
    let gen = crate::evaluate::greedy_chat_generation(lm, settings.max_new_tokens)?;
    let mut out = MadePairs::default();
    let mut row = 0usize;
    for chunk in qa.chunks(settings.batch_size.max(1)) {
        let mut prompts = vec![];
        let mut stored = vec![];
        for ex in chunk {
            let i = row;
            row += 1;
            let gold = ex.answers.first().ok_or_else(|| {
                GeneratorError::Invalid(format!(
                    "qa row {i} (id {:?}): field `answers` is empty",
                    ex.id
                ))
            })?;
            let shown = match context {
                // The same salt as `sft::build_examples`: row i of the split sees what SFT showed it.
                PairContext::Raft => raft(ranking, i, ex, contexts, i as u64),
                PairContext::Retrieved => retrieved(ranking, i, ex, contexts.k),
            };
            let rejected_passages = match settings.rejected {
                RejectedSource::ClosedBook => vec![],
                RejectedSource::WrongPassage => {
                    vec![wrong_passage(ranking, i, ex).ok_or_else(|| {
                        GeneratorError::Invalid(format!(
                            "qa row {i} (id {:?}): the corpus has no passage besides the gold ones",
                            ex.id
                        ))
                    })?]
                }
            };
            prompts.push(builder.prompt(&ex.question, &rejected_passages)?);
            stored.push((ex, gold.clone(), join_context(&shown)));
        }
        let outputs = tch::no_grad(|| generate(&lm.model, &prompts, &gen))?;
        for ((ex, gold, context), generated) in stored.into_iter().zip(outputs) {
            let rejected = lm
                .tokenizer
                .decode(&generated.tokens, true)?
                .trim()
                .to_string();
            if rejected.is_empty() {
                out.skipped_empty += 1;
            } else if normalized(&rejected) == normalized(&gold) {
                out.skipped_same += 1;
            } else {
                out.pairs.push(Preference {
                    id: ex.id.clone(),
                    prompt: ex.question.clone(),
                    chosen: gold,
                    rejected,
                    context: Some(context),
                });
            }
        }
        on_batch(chunk.len());
    }
    Ok(out)
}

/// Which split's questions [`run`] makes pairs from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairSplit {
    Train,
    Val,
    Test,
}

/// `ragtune generator make-pairs`: pairs from the first `limit` questions of `split`, written to
/// `<out>/preferences.parquet`. Training pairs keep the RAFT-mixed passages SFT showed; held-out
/// pairs the plain top-k.
pub fn run(
    config: &crate::config::GeneratorConfig,
    split: PairSplit,
    limit: Option<usize>,
    out: &std::path::Path,
    device: tch::Device,
) -> Result<MadePairs> {
    let mut s = crate::setup::load(config, device)?;
    let (data, context, name) = match split {
        PairSplit::Train => (&s.train, PairContext::Raft, "train"),
        PairSplit::Val => (&s.valid, PairContext::Retrieved, "valid"),
        PairSplit::Test => (&s.test, PairContext::Retrieved, "test"),
    };
    if data.qa.is_empty() {
        return Err(GeneratorError::Invalid(format!(
            "the config's `{name}` dataset has no qa table to make pairs from"
        )));
    }
    let mut qa = data.qa.clone();
    if let Some(n) = limit {
        qa.truncate(n);
    }
    if let Some(a) = &config.pairs.adapter {
        crate::setup::attach_for_generation(&mut s.lm, a, device)?;
    }
    let builder = PromptBuilder::new(&config.prompt, &s.lm.tokenizer)?;
    let ranking = Ranking::for_qa(s.retriever.as_ref(), &qa, config.contexts.k)?;
    let progress = ragtune_trainer::Progress::items(qa.len() as u64, "questions");
    let made = make_pairs(
        &s.lm,
        &qa,
        &ranking,
        &builder,
        &config.contexts,
        &config.pairs,
        context,
        |n| progress.inc(n as u64),
    )?;
    progress.finish_and_clear();
    std::fs::create_dir_all(out).map_err(|e| GeneratorError::io(out, e))?;
    let file = ragtune_data::dataset::table_path::<Preference>(out);
    ragtune_data::write_table(&file, &made.pairs)?;
    Ok(made)
}
