//! Reranking: a first-stage [`Retriever`] proposes candidates and a cross-encoder
//! ([`ragtune_models::cross_encoder::CrossEncoder`]) reorders its top `k` by reading each
//! (query, passage) pair whole.
//!
//! The first stage's top `k` come back in the cross-encoder's order with its logits as scores;
//! hits beyond `k` (asked for with a larger search depth) follow in first-stage order, with scores
//! set below the lowest reranked one so that any consumer sorting by score (trec_eval does) keeps
//! that order. Pairs run in length-sorted batches (see [`CrossEncoder::predict`]).

use crate::corpus::passage_text;
use crate::{Corpus, Hit, Result, RetrievalError, Retriever};
use ragtune_models::cross_encoder::{CrossEncoder, HeadInit};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tch::{Device, Kind};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RerankConfig {
    /// A cross-encoder folder (`ragtune reranker train`'s `model/`, or any folder
    /// `sentence_transformers.CrossEncoder` loads).
    pub model: PathBuf,
    /// How many of the first stage's hits the cross-encoder reorders.
    pub k: usize,
    /// Pairs per forward pass.
    pub batch_size: usize,
    /// Tokens per pair; the folder's own maximum when unset.
    pub max_length: Option<usize>,
}

impl Default for RerankConfig {
    fn default() -> Self {
        Self {
            model: PathBuf::from("runs/reranker-faq/model"),
            k: 20,
            batch_size: 32,
            max_length: None,
        }
    }
}

/// A first stage followed by a cross-encoder over its top `k`.
pub struct RerankingRetriever {
    first_stage: Box<dyn Retriever>,
    model: CrossEncoder,
    config: RerankConfig,
}

impl RerankingRetriever {
    /// Loads the cross-encoder of `config` on `device` over `first_stage`. The folder must hold a
    /// trained head: a bare encoder would rerank with random weights.
    pub fn new(
        first_stage: Box<dyn Retriever>,
        config: &RerankConfig,
        device: Device,
    ) -> Result<Self> {
        if config.k == 0 {
            return Err(RetrievalError::Invalid(
                "rerank.k must be at least 1".into(),
            ));
        }
        let mut model =
            CrossEncoder::load(&config.model, device, Kind::Float, HeadInit::default())?;
        if !model.head_loaded() {
            return Err(RetrievalError::Invalid(format!(
                "{}: no classifier in this folder, so it is not a trained cross-encoder; point \
                 rerank.model at a `ragtune reranker train` run's model/ or a CrossEncoder folder",
                config.model.display()
            )));
        }
        if let Some(max_length) = config.max_length {
            model.set_max_length(max_length)?;
        }
        model.set_batch_size(config.batch_size)?;
        Ok(Self::with_model(first_stage, model, config.clone()))
    }

    /// Reranks with a cross-encoder already in memory (during training, say).
    pub fn with_model(
        first_stage: Box<dyn Retriever>,
        model: CrossEncoder,
        config: RerankConfig,
    ) -> Self {
        Self {
            first_stage,
            model,
            config,
        }
    }

    pub fn first_stage(&self) -> &dyn Retriever {
        self.first_stage.as_ref()
    }

    pub fn model(&self) -> &CrossEncoder {
        &self.model
    }
}

impl Retriever for RerankingRetriever {
    fn describe(&self) -> String {
        format!(
            "{} reranked (top {}) by cross-encoder {}",
            self.first_stage.describe(),
            self.config.k,
            self.config.model.display()
        )
    }

    fn corpus(&self) -> &Corpus {
        self.first_stage.corpus()
    }

    fn search(&self, queries: &[&str], k: usize) -> Result<Vec<Vec<Hit>>> {
        let depth = k.max(self.config.k);
        let hits = self.first_stage.search(queries, depth)?;
        let mut reranked = rerank_hits(&self.model, self.corpus(), queries, hits, self.config.k)?;
        for hits in &mut reranked {
            hits.truncate(k);
        }
        Ok(reranked)
    }
}

/// Reorders the first `k` hits of each query (`hits[i]` for `queries[i]`, indices into `corpus`)
/// by `model`'s score of (query, passage text); the rest keep their order behind them, scored
/// below the lowest reranked score. All pairs of all queries go through the model together, so
/// its length-sorted batches mix queries.
pub fn rerank_hits(
    model: &CrossEncoder,
    corpus: &Corpus,
    queries: &[&str],
    hits: Vec<Vec<Hit>>,
    k: usize,
) -> Result<Vec<Vec<Hit>>> {
    if queries.len() != hits.len() {
        return Err(RetrievalError::Invalid(format!(
            "reranking: {} queries but {} hit lists",
            queries.len(),
            hits.len()
        )));
    }
    let mut pair_queries: Vec<&str> = Vec::new();
    let mut pair_passages: Vec<String> = Vec::new();
    for (query, hits) in queries.iter().zip(&hits) {
        for hit in hits.iter().take(k) {
            if hit.index >= corpus.len() {
                return Err(RetrievalError::Invalid(format!(
                    "reranking: hit {} is outside the corpus of {} passages",
                    hit.index,
                    corpus.len()
                )));
            }
            pair_queries.push(query);
            pair_passages.push(passage_text(corpus.doc(hit.index)));
        }
    }
    let passages: Vec<&str> = pair_passages.iter().map(String::as_str).collect();
    let scores = model.score_pairs(&pair_queries, &passages)?;
    let mut next = 0;
    let mut out = Vec::with_capacity(hits.len());
    for hits in hits {
        let head = hits.len().min(k);
        let mut reranked: Vec<Hit> = hits[..head]
            .iter()
            .map(|h| {
                let hit = Hit {
                    index: h.index,
                    score: scores[next],
                };
                next += 1;
                hit
            })
            .collect();
        // Stable: ties keep the first stage's order.
        reranked.sort_by(|a, b| b.score.total_cmp(&a.score));
        let floor = reranked.last().map_or(0.0, |h| h.score);
        reranked.extend(hits[head..].iter().enumerate().map(|(j, h)| Hit {
            index: h.index,
            score: floor - 1.0 - j as f32,
        }));
        out.push(reranked);
    }
    Ok(out)
}
