//! Transformer architectures on tch (BERT encoders, Llama decoders), checkpoint loaders (safetensors, GGUF), PEFT modules and generation.
//!
//! This crate knows no datasets: it takes tensors and strings, and gives tensors and strings back.

pub mod checkpoint;
pub mod device;
pub mod error;

pub use error::{ModelError, Result};
