//! Transformer architectures on tch (BERT encoders, Llama decoders), checkpoint loaders (safetensors, GGUF), PEFT modules and generation.
//!
//! This crate knows no datasets: it takes tensors and strings, and gives tensors and strings back.

pub mod bert;
pub mod chat;
pub mod checkpoint;
pub mod checkpointing;
pub mod cross_encoder;
pub mod device;
pub mod dropout;
pub mod encoder;
pub mod error;
pub mod generation;
pub mod gguf;
pub mod gguf_convert;
pub mod gguf_tokenizer;
pub mod llama;
pub mod llama_load;
pub mod llama_tokenizer;
pub mod peft;
pub mod pooling;
pub mod tokenize;

pub use error::{ModelError, Result};
