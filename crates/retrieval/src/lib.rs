//! One retrieval interface for every consumer: generator contexts (with RAFT mixing), make-pairs,
//! DPO, generation eval, retrieval eval, the pipeline and rag-joint all search through
//! [`Retriever`], so none of them builds its own index.
//!
//! - [`corpus`]: the passages, their ids and a content hash.
//! - [`index`]: exact and HNSW nearest-neighbour search over embeddings.
//! - [`dense`]: a sentence-transformers folder over a cached corpus embedding.
//! - [`tfidf`]: the lexical baseline.
//! - [`analyzer`], [`bm25`]: Lucene's BM25 over a saved, checksummed inverted index.
//! - [`hybrid`]: reciprocal-rank and weighted score fusion of several retrievers, with a weight sweep.
//! - [`rerank`]: a cross-encoder reordering any first stage's top k.
//!
//! Backends are chosen by [`RetrievalConfig`] (`dense`, `tfidf`, `bm25`, `hybrid`, `rerank`), and
//! they nest: a reranked hybrid of BM25 and a dense model is one config.

pub mod analyzer;
pub mod bm25;
pub mod corpus;
pub mod dense;
mod error;
pub mod hybrid;
pub mod index;
pub mod rerank;
mod similarity;
pub mod tfidf;

pub use analyzer::{Analyzer, Stemmer, Stopwords};
pub use bm25::{Bm25Config, Bm25Index, Bm25Retriever};
pub use corpus::{passage_text, Corpus};
pub use dense::{DenseConfig, DenseRetriever};
pub use error::{Result, RetrievalError};
pub use hybrid::{Fusion, HybridConfig, HybridRetriever, Normalization};
pub use index::{Hit, HnswConfig, SearchKind};
pub use rerank::{rerank_hits, RerankConfig, RerankingRetriever};
pub use similarity::Similarity;
pub use tfidf::TfIdfRetriever;

use ragtune_eval::retrieval::Run;
use serde::{Deserialize, Serialize};
use tch::Device;

/// Ranked search over a fixed corpus.
pub trait Retriever {
    /// What this retriever is, for logs and reports (`dense runs/demo/retriever/model (exact)`).
    fn describe(&self) -> String;

    fn corpus(&self) -> &Corpus;

    /// The `k` best passages of each query, best first (`hits[i]` for `queries[i]`).
    fn search(&self, queries: &[&str], k: usize) -> Result<Vec<Vec<Hit>>>;
}

/// Which retriever to build, as a config's `[retrieval]` table spells it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
pub enum RetrievalConfig {
    /// A sentence-transformers model, exact or HNSW search, cached corpus embeddings.
    Dense(DenseConfig),
    /// TF-IDF over titles and texts: no model, the lexical baseline.
    #[default]
    Tfidf,
    /// BM25 (Lucene's variant) over titles and texts, the index saved in `cache_dir`.
    Bm25(Bm25Config),
    /// Several retrievers' rankings fused (reciprocal-rank or weighted scores).
    Hybrid(HybridConfig),
    /// A first stage whose top k a cross-encoder reorders.
    Rerank(RerankedConfig),
}

/// `backend = "rerank"`: the first stage as `[retrieval.first_stage]` (any backend), the
/// cross-encoder as `[retrieval.reranker]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RerankedConfig {
    pub first_stage: Box<RetrievalConfig>,
    pub reranker: RerankConfig,
}

impl RetrievalConfig {
    /// The retriever over `corpus`; dense models run on `device`.
    pub fn build(&self, corpus: Corpus, device: Device) -> Result<Box<dyn Retriever>> {
        if corpus.is_empty() {
            return Err(RetrievalError::Invalid(
                "the corpus to retrieve from is empty".into(),
            ));
        }
        Ok(match self {
            RetrievalConfig::Dense(config) => {
                Box::new(DenseRetriever::load(config, corpus, device)?)
            }
            RetrievalConfig::Tfidf => Box::new(TfIdfRetriever::new(corpus)),
            RetrievalConfig::Bm25(config) => Box::new(Bm25Retriever::load(config, corpus)?),
            RetrievalConfig::Hybrid(config) => {
                Box::new(HybridRetriever::load(config, corpus, device)?)
            }
            RetrievalConfig::Rerank(config) => {
                let first_stage = config.first_stage.build(corpus, device)?;
                Box::new(RerankingRetriever::new(
                    first_stage,
                    &config.reranker,
                    device,
                )?)
            }
        })
    }
}

/// The hits of `query_ids[i]` as an eval-crate run (doc ids and scores), for the retrieval measures.
pub fn to_run(corpus: &Corpus, query_ids: &[&str], hits: &[Vec<Hit>]) -> Run {
    query_ids
        .iter()
        .zip(hits)
        .map(|(id, hits)| {
            let docs = hits
                .iter()
                .map(|h| (corpus.doc(h.index).doc_id.clone(), h.score as f64))
                .collect();
            (id.to_string(), docs)
        })
        .collect()
}
