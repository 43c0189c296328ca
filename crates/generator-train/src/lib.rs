//! Generator fine-tuning on (question + retrieved passages -> answer): SFT and instruction tuning
//! with ChatML, completion-only loss and a context-first truncation policy; RAFT-style mixing of
//! gold and distractor passages; DPO losses; evaluation with the eval crate. Full or PEFT (any
//! method of `ragtune_models::peft`), on the shared `ragtune_trainer::Trainer`.
//!
//! - [`config`]: the TOML run config.
//! - [`contexts`]: top-k passages per question from any `ragtune_retrieval::Retriever`, and RAFT mixing.
//! - [`setup`]: model, splits and retriever, as every recipe loads them.
//! - [`prompt`]: prompt templates, tokenization and the max-length policy.
//! - [`loss`]: chunked completion-only cross-entropy, sequence log-probs, DPO losses.
//! - [`packing`]: best-fit decreasing packing of short examples.
//! - [`sft`]: the SFT recipe (`sft::run`); [`evaluate`]: generation on a split and its scores.
//! - [`make_pairs`]: preference pairs (gold vs the model's own hallucination); [`dpo`]: the DPO
//!   recipe (`dpo::run`); [`ref_cache`]: reference log-probs cached in Parquet.

pub mod config;
pub mod contexts;
pub mod dpo;
pub mod error;
pub mod evaluate;
pub mod loss;
pub mod make_pairs;
pub mod packing;
pub mod prompt;
pub mod ref_cache;
pub mod setup;
pub mod sft;

pub use error::{GeneratorError, Result};
