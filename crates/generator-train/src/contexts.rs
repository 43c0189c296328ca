//! Passages for each question, from any [`Retriever`] (dense, TF-IDF, ...): the top-k, where the
//! gold passage may be missing or buried; for training, RAFT mixing decides per example whether
//! the gold passage is in the context at all (probability `gold_probability`) and where, among
//! distractors from the same ranking. Evaluation uses the plain top-k, as a deployed RAG would.
//!
//! Questions are searched once, as a batch ([`Ranking`]), so a dense retriever encodes them in
//! batches rather than one by one.

use crate::Result;
use ragtune_data::{Doc, QaExample};
use ragtune_retrieval::{passage_text, Hit, Retriever};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContextConfig {
    /// Passages in each prompt.
    pub k: usize,
    /// RAFT: the probability that a training example's context holds its gold passage.
    pub gold_probability: f64,
    pub seed: u64,
}

impl Default for ContextConfig {
    fn default() -> Self {
        ContextConfig {
            k: 3,
            gold_probability: 0.8,
            seed: 17,
        }
    }
}

/// The ranked passages of each question of a QA list (`qa[i]` is row `i`), deep enough for the
/// top-k plus the gold passages RAFT sets aside.
pub struct Ranking<'a> {
    retriever: &'a dyn Retriever,
    hits: Vec<Vec<Hit>>,
}

impl<'a> Ranking<'a> {
    /// Searches every question of `qa` for its `k` best passages, and as many more as the
    /// question has gold passages.
    pub fn for_qa(retriever: &'a dyn Retriever, qa: &[QaExample], k: usize) -> Result<Self> {
        let extra = qa.iter().map(|q| q.gold_doc_ids.len()).max().unwrap_or(0);
        let questions: Vec<&str> = qa.iter().map(|q| q.question.as_str()).collect();
        let hits = retriever.search(&questions, k + extra)?;
        Ok(Self { retriever, hits })
    }

    pub fn retriever(&self) -> &'a dyn Retriever {
        self.retriever
    }

    /// The ranked passages of row `row`, best first.
    pub fn ranked(&self, row: usize) -> impl Iterator<Item = &'a Doc> + '_ {
        let corpus = self.retriever.corpus();
        self.hits[row].iter().map(move |h| corpus.doc(h.index))
    }

    /// The gold passages of `example` that the corpus holds.
    fn gold(&self, example: &QaExample) -> Vec<&'a Doc> {
        let corpus = self.retriever.corpus();
        example
            .gold_doc_ids
            .iter()
            .filter_map(|id| corpus.position(id).map(|i| corpus.doc(i)))
            .collect()
    }
}

/// The passages (texts) of row `row`: its fixed context where the dataset has one (SQuAD), else
/// the top `k`.
pub fn retrieved(ranking: &Ranking, row: usize, example: &QaExample, k: usize) -> Vec<String> {
    if let Some(c) = &example.context {
        return vec![c.clone()];
    }
    ranking.ranked(row).take(k).map(passage_text).collect()
}

/// RAFT mixing: `k` passages; with probability `gold_probability` the gold passage is one of
/// them at a random place, the rest are the best-ranked non-gold passages (distractors).
pub fn raft(
    ranking: &Ranking,
    row: usize,
    example: &QaExample,
    config: &ContextConfig,
    salt: u64,
) -> Vec<String> {
    let mut rng =
        rand::rngs::StdRng::seed_from_u64(config.seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut passages: Vec<String> = ranking
        .ranked(row)
        .filter(|d| !example.gold_doc_ids.contains(&d.doc_id))
        .take(config.k)
        .map(passage_text)
        .collect();
    let gold = ranking.gold(example);
    if let Some(g) = gold.choose(&mut rng) {
        if rng.gen_bool(config.gold_probability.clamp(0.0, 1.0)) {
            passages.truncate(config.k.saturating_sub(1));
            let at = rng.gen_range(0..=passages.len());
            passages.insert(at, passage_text(g));
        }
    }
    passages
}

/// The best-ranked passage of row `row` that is not a gold one: what the model sees when
/// retrieval fails.
pub fn wrong_passage(ranking: &Ranking, row: usize, example: &QaExample) -> Option<String> {
    ranking
        .ranked(row)
        .find(|d| !example.gold_doc_ids.contains(&d.doc_id))
        .map(passage_text)
}
