//! Task heads on any BERT encoder: sequence classification (cross-entropy) and regression (MSE)
//! on a pooled vector, fully fine-tuned or with any PEFT method of the models crate (LoRA, IA3,
//! Houlsby and Pfeiffer bottleneck adapters, prompt tuning, prefix tuning), under the shared
//! trainer (layer-wise learning-rate decay, frozen lower layers, weight decay, early stopping on
//! validation loss, exact resume).
//!
//! - [`config`]: `ClassifyConfig` from TOML (`[peft]` absent = full fine-tuning).
//! - [`data`]: (text, label) examples from the FAQ, a dataset folder or JSONL; stratified split.
//! - [`model`]: the encoder, the head, saving and loading.
//! - [`metrics`]: predictions, accuracy / macro-F1 / per-class P and R, bootstrap intervals.
//! - [`recipe`]: [`run`] and [`evaluate`], top to bottom.
//! - [`report`]: `report.json` and `report.md`.
//!
//! This crate knows nothing of the command line.

pub mod config;
pub mod data;
mod error;
pub mod metrics;
pub mod model;
pub mod recipe;
pub mod report;

pub use config::{ClassifyConfig, PeftSettings, PoolingChoice, Task};
pub use error::{ClassifyError, Result};
pub use recipe::{evaluate, run, run_with_hook, trainer_config, EvalReport};
pub use report::ClassifyReport;
