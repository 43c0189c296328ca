//! The reranker recipe's settings: the TOML a `ragtune reranker` run reads (`[model]`, `[loss]`,
//! `[negatives]`, `[first_stage]`, `[eval]`, `[trainer]`), with defaults and the checks that
//! refuse settings which cannot work before anything is loaded.

use crate::train::DataConfig;
use crate::{Result, RetrieverError};
use ragtune_retrieval::RetrievalConfig;
use ragtune_trainer::TrainerConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RerankerModelConfig {
    /// A CrossEncoder folder to continue from, or an encoder folder (a sentence-transformers
    /// bi-encoder or a plain BERT) to start a cross-encoder from.
    pub base: PathBuf,
    /// Tokens per (query, passage) pair, special tokens included.
    pub max_length: usize,
    /// Seeds the pooler and classifier when the base has none.
    pub init_seed: u64,
    /// Pairs per forward pass when reranking for evaluation.
    pub eval_batch_size: usize,
}

impl Default for RerankerModelConfig {
    fn default() -> Self {
        Self {
            base: PathBuf::from("assets/all-MiniLM-L6-v2"),
            max_length: 256,
            init_seed: 42,
            eval_batch_size: 64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RerankerLossKind {
    /// Pointwise: positive 1, negatives 0.
    #[default]
    BinaryCrossEntropy,
    /// Softmax cross-entropy over the positive and the triplet's negatives.
    Listwise,
    /// Margin-MSE onto the triplets' teacher scores (`ragtune retriever score`).
    MarginMse,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RerankerLossConfig {
    pub kind: RerankerLossKind,
    /// Negatives per triplet to train on (the first ones of each row); all when unset.
    pub max_negatives: Option<usize>,
    /// The listwise softmax's temperature.
    pub temperature: f64,
    /// Multiplies the teacher's scores before Margin-MSE, to bring a teacher of another range (a
    /// cosine bi-encoder spans [-1, 1]) to the logits'.
    pub teacher_scale: f64,
}

impl Default for RerankerLossConfig {
    fn default() -> Self {
        Self {
            kind: RerankerLossKind::default(),
            max_negatives: None,
            temperature: 1.0,
            teacher_scale: 1.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RerankerEvalConfig {
    /// How many of the first stage's hits the cross-encoder reranks.
    pub k: usize,
    pub bootstrap_resamples: usize,
    pub confidence: f64,
    pub bootstrap_seed: u64,
}

impl Default for RerankerEvalConfig {
    fn default() -> Self {
        Self {
            k: 20,
            bootstrap_resamples: 2000,
            confidence: 0.95,
            bootstrap_seed: 0,
        }
    }
}

/// Where the training negatives come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NegativeSource {
    /// The `triplets` file's mined negatives (teacher scores too, for Margin-MSE).
    #[default]
    Triplets,
    /// The configured `first_stage` retriever's top `negatives.k` for each training question,
    /// its gold passages removed: the very candidates the reranker reorders at inference, so it
    /// trains on the distribution it is used on.
    FirstStage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RerankerNegativesConfig {
    pub source: NegativeSource,
    /// `first_stage` only: how deep in the first stage's ranking the negatives are taken from.
    pub k: usize,
    /// `first_stage` only: negatives per question in each step, drawn afresh at every step from
    /// that question's pool (the run's checkpointed RNG, so a resumed run draws the same), so
    /// that each epoch sees other negatives at the cost of `1 + per_query` pairs per question.
    pub per_query: usize,
}

impl Default for RerankerNegativesConfig {
    fn default() -> Self {
        Self {
            source: NegativeSource::Triplets,
            k: 20,
            per_query: 7,
        }
    }
}

/// A whole run, as `configs/reranker-*.toml` spells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RerankerConfig {
    pub data: DataConfig,
    /// The mined triplets (`ragtune retriever mine`; teacher-scored by `ragtune retriever score`
    /// for Margin-MSE). Every query must belong to the training split. Unread when
    /// `negatives.source = "first_stage"`.
    pub triplets: PathBuf,
    pub negatives: RerankerNegativesConfig,
    pub model: RerankerModelConfig,
    pub loss: RerankerLossConfig,
    /// The retriever whose top `eval.k` the cross-encoder reranks in evaluation (and, with
    /// `negatives.source = "first_stage"`, whose top `negatives.k` give the training negatives).
    pub first_stage: RetrievalConfig,
    pub eval: RerankerEvalConfig,
    pub trainer: TrainerConfig,
}

impl Default for RerankerConfig {
    fn default() -> Self {
        Self {
            data: DataConfig::default(),
            triplets: PathBuf::from("runs/retriever-faq/triplets.parquet"),
            negatives: RerankerNegativesConfig::default(),
            model: RerankerModelConfig::default(),
            loss: RerankerLossConfig::default(),
            first_stage: RetrievalConfig::default(),
            eval: RerankerEvalConfig::default(),
            trainer: TrainerConfig::default(),
        }
    }
}

impl RerankerConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        crate::train::read_config(path, Self::validate)
    }

    /// Settings that cannot work, found before any model or data is loaded.
    pub fn validate(&self) -> Result<()> {
        let invalid = |m: String| Err(RetrieverError::Invalid(m));
        if self.model.max_length < 3 {
            return invalid(format!(
                "model.max_length {}: a pair needs room for [CLS], [SEP] and [SEP]",
                self.model.max_length
            ));
        }
        if self.model.eval_batch_size == 0 {
            return invalid("model.eval_batch_size must be at least 1".into());
        }
        if self.eval.k == 0 {
            return invalid("eval.k must be at least 1".into());
        }
        if self.loss.temperature.is_nan() || self.loss.temperature <= 0.0 {
            return invalid(format!(
                "loss.temperature {}: it must be positive",
                self.loss.temperature
            ));
        }
        if self.loss.max_negatives == Some(0)
            && self.loss.kind != RerankerLossKind::BinaryCrossEntropy
        {
            return invalid(format!(
                "loss.max_negatives = 0 leaves {:?} nothing to compare the positive with",
                self.loss.kind
            ));
        }
        if self.negatives.source == NegativeSource::FirstStage {
            if self.negatives.k == 0 || self.negatives.per_query == 0 {
                return invalid(format!(
                    "negatives.k = {} and negatives.per_query = {}: first-stage negatives need \
                     both to be at least 1",
                    self.negatives.k, self.negatives.per_query
                ));
            }
            if self.loss.kind == RerankerLossKind::MarginMse {
                return invalid(
                    "loss.kind = margin_mse needs teacher scores, which only the triplets carry; \
                     use negatives.source = \"triplets\" with a scored triplets file"
                        .into(),
                );
            }
            if self.loss.max_negatives.is_some() {
                return invalid(
                    "loss.max_negatives applies to the triplets' negatives; with \
                     negatives.source = \"first_stage\" set negatives.per_query instead"
                        .into(),
                );
            }
        }
        Ok(())
    }
}
