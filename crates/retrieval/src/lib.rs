//! One retrieval interface for every consumer: generator contexts (with RAFT mixing), make-pairs,
//! DPO, generation eval, retrieval eval, the pipeline and rag-joint all search through
//! [`Retriever`], so none of them builds its own index.
//!
//! - [`corpus`]: the passages, their ids and a content hash.
//! - [`index`]: exact and HNSW nearest-neighbour search over embeddings.
//! - [`dense`]: a sentence-transformers folder over a cached corpus embedding.
//! - [`tfidf`]: the lexical baseline.
//!
//! Backends are chosen by [`RetrievalConfig`]; hybrid search and rerankers plug in as further
//! implementations of the same trait.

pub mod corpus;
pub mod dense;
mod error;
pub mod index;
mod similarity;
pub mod tfidf;

pub use corpus::{passage_text, Corpus};
pub use dense::{DenseConfig, DenseRetriever};
pub use error::{Result, RetrievalError};
pub use index::{Hit, HnswConfig, SearchKind};
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
