//! Dense retriever fine-tuning: DPR, Contriever and ColBERT with contrastive losses, HNSW hard-negative mining and distillation.

pub mod error;
pub mod gradcache;
pub mod losses;

pub use error::{Result, RetrieverError};
