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
    pub train: PathBuf,
    pub valid: Option<PathBuf>,
    pub test: Option<PathBuf>,
    /// Where the passages come from (the corpus table of this dataset; `train` when unset).
    pub corpus: Option<PathBuf>,
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
}

impl Default for EvalSettings {
    fn default() -> Self {
        EvalSettings {
            max_new_tokens: 96,
            limit: None,
            batch_size: 8,
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
        toml::from_str(&text).map_err(|e| GeneratorError::Config {
            path: path.into(),
            message: e.to_string(),
        })
    }
}
