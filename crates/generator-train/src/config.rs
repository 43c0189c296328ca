//! The run config (`configs/generator*.toml`): model, data, prompt, contexts, PEFT and trainer.

use crate::contexts::ContextConfig;
use crate::dpo::DpoSettings;
use crate::make_pairs::PairsSettings;
use crate::packing::PackingConfig;
use crate::prompt::PromptConfig;
use crate::{GeneratorError, Result};
use ragtune_models::peft::PeftConfig;
use ragtune_trainer::TrainerConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// A `.gguf` file or a Hugging Face folder.
    pub model: PathBuf,
    /// Dataset folders (ragtune's Parquet tables: corpus + qa) for training and evaluation.
    #[serde(default)]
    pub train: PathBuf,
    pub valid: Option<PathBuf>,
    pub test: Option<PathBuf>,
    /// Where the passages come from (the corpus table of this dataset; `train` when unset).
    pub corpus: Option<PathBuf>,
    /// How passages are retrieved for every prompt (`backend = "dense"` with a sentence-transformers
    /// folder, such as a tuned retriever's export, or `"tfidf"`, the default).
    #[serde(default)]
    pub retrieval: ragtune_retrieval::RetrievalConfig,
    /// Use at most this many training examples (small CPU runs).
    pub max_train_examples: Option<usize>,
    /// Absent: full fine-tuning.
    pub peft: Option<PeftConfig>,
    #[serde(default)]
    pub prompt: PromptConfig,
    #[serde(default)]
    pub contexts: ContextConfig,
    #[serde(default)]
    pub eval: EvalSettings,
    #[serde(default)]
    pub trainer: TrainerConfig,
    /// `ragtune generator make-pairs`: how rejected answers are produced.
    #[serde(default)]
    pub pairs: PairsSettings,
    /// `ragtune generator dpo`: preference data, loss and reference model.
    #[serde(default)]
    pub dpo: DpoSettings,
    /// `[packing]`: best-fit decreasing packing of short SFT examples into rows.
    #[serde(default)]
    pub packing: PackingConfig,
    /// Recompute each decoder layer's activations in the backward pass instead of keeping them.
    #[serde(default)]
    pub gradient_checkpointing: bool,
    /// Write the tokenized training examples (ids and prompt length) to
    /// `<run dir>/train_examples.jsonl`, so another implementation can train on exactly them.
    #[serde(default)]
    pub save_examples: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSettings {
    pub max_new_tokens: usize,
    /// Score at most this many test questions.
    pub limit: Option<usize>,
    pub batch_size: usize,
    /// SFT: also score the untuned model first, with the same prompts and passages.
    pub base: bool,
}

impl Default for EvalSettings {
    fn default() -> Self {
        EvalSettings {
            max_new_tokens: 96,
            limit: None,
            batch_size: 8,
            base: false,
        }
    }
}

impl GeneratorConfig {
    /// Reads the TOML; relative paths are taken from the config file's folder's parent run
    /// directory as written (that is, relative to the working directory).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| GeneratorError::Config {
            path: path.into(),
            message: e.to_string(),
        })?;
        let config: Self = toml::from_str(&text).map_err(|e| GeneratorError::Config {
            path: path.into(),
            message: ragtune_trainer::config_errors::with_suggestion(&e.to_string()),
        })?;
        config.validate().map_err(|e| GeneratorError::Config {
            path: path.into(),
            message: e.to_string(),
        })?;
        Ok(config)
    }

    /// Settings that contradict each other or are missing, found before any model is loaded.
    pub fn validate(&self) -> Result<()> {
        let invalid = |m: String| Err(GeneratorError::Invalid(m));
        if self.train.as_os_str().is_empty() {
            return invalid(
                "`train` (a dataset folder with qa and corpus tables) is not set".into(),
            );
        }
        if self.contexts.k == 0 {
            return invalid("contexts.k must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.contexts.gold_probability) {
            return invalid(format!(
                "contexts.gold_probability must be within [0, 1], got {}",
                self.contexts.gold_probability
            ));
        }
        if self.packing.enabled
            && matches!(
                self.peft,
                Some(PeftConfig::PrefixTuning(_) | PeftConfig::PromptTuning(_))
            )
        {
            return invalid(
                "packing works with full fine-tuning, LoRA and IA3, not with prefix or prompt tuning"
                    .into(),
            );
        }
        if self.gradient_checkpointing && matches!(self.peft, Some(PeftConfig::PrefixTuning(_))) {
            return invalid("gradient_checkpointing does not cover prefix tuning".into());
        }
        self.trainer.validate()?;
        Ok(())
    }
}
