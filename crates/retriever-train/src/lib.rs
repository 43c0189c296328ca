//! Dense retriever fine-tuning: DPR, Contriever and ColBERT with contrastive losses, HNSW hard-negative mining and distillation.
//!
//! - [`losses`]: InfoNCE (plain and symmetric), Margin-MSE and KL distillation on score matrices.
//! - [`gradcache`]: large contrastive batches in bounded memory.
//! - [`index`]: exact and HNSW search (from `ragtune-retrieval`); [`mining`]: hard negatives with false-negative filters.
//! - [`model`]: DPR / Contriever / sentence-transformers bi-encoders; [`export`]: sentence-transformers folders.
//! - [`adapters`]: LoRA/IA3 on the towers (`[model.peft]`), exported in PEFT's format.
//! - [`contriever`]: Contriever's unsupervised independent-cropping objective on a raw corpus.
//! - [`colbert`]: ColBERT late interaction (MaxSim), training, reranking and HNSW candidate generation over document tokens.

pub mod adapters;
pub mod colbert;
pub mod contriever;
pub mod error;
pub mod evaluate;
pub mod export;
pub mod gradcache;
pub mod losses;
pub mod mining;
pub mod model;
pub mod reranker;
pub mod train;

pub use error::{Result, RetrieverError};
/// Exact and HNSW search live in the shared retrieval crate; this path keeps older imports working.
pub use ragtune_retrieval::index;
