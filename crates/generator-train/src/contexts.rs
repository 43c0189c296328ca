//! Passages for each question. A small TF-IDF retriever over the corpus gives the top-k, where the
//! gold passage may be missing or buried; for training, RAFT mixing decides per example whether
//! the gold passage is in the context at all (probability `gold_probability`) and where, among
//! distractors from the same ranking. Evaluation uses the plain top-k, as a deployed RAG would.
//!
//! This crate does not depend on retriever-train: swapping in dense retrieval means passing
//! precomputed contexts (`QaExample::context`) instead.

use ragtune_data::{Doc, QaExample};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

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

fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| t.len() > 1)
        .map(str::to_lowercase)
        .collect()
}

/// TF-IDF (log tf, smoothed idf) over the corpus, cosine-ranked.
pub struct LexicalIndex<'a> {
    docs: &'a [Doc],
    vectors: Vec<HashMap<String, f64>>,
    idf: HashMap<String, f64>,
}

impl<'a> LexicalIndex<'a> {
    pub fn new(docs: &'a [Doc]) -> Self {
        let mut df: HashMap<String, usize> = HashMap::new();
        let tokenized: Vec<Vec<String>> = docs
            .iter()
            .map(|d| terms(&format!("{} {}", d.title, d.text)))
            .collect();
        for t in &tokenized {
            let mut seen: Vec<&String> = t.iter().collect();
            seen.sort();
            seen.dedup();
            for term in seen {
                *df.entry(term.clone()).or_default() += 1;
            }
        }
        let n = docs.len() as f64;
        let idf: HashMap<String, f64> = df
            .into_iter()
            .map(|(t, d)| (t, ((1.0 + n) / (1.0 + d as f64)).ln() + 1.0))
            .collect();
        let vectors = tokenized.iter().map(|t| Self::vector(t, &idf)).collect();
        LexicalIndex { docs, vectors, idf }
    }

    fn vector(tokens: &[String], idf: &HashMap<String, f64>) -> HashMap<String, f64> {
        let mut tf: HashMap<String, f64> = HashMap::new();
        for t in tokens {
            *tf.entry(t.clone()).or_default() += 1.0;
        }
        let mut v: HashMap<String, f64> = tf
            .into_iter()
            .map(|(t, c)| {
                let w = (1.0 + c.ln()) * idf.get(&t).copied().unwrap_or(1.0);
                (t, w)
            })
            .collect();
        let norm = v.values().map(|w| w * w).sum::<f64>().sqrt().max(1e-12);
        v.values_mut().for_each(|w| *w /= norm);
        v
    }

    /// Indices of the `k` best documents for `query`, best first (ties by corpus order).
    pub fn search(&self, query: &str, k: usize) -> Vec<usize> {
        let q = Self::vector(&terms(query), &self.idf);
        let mut scored: Vec<(f64, usize)> = self
            .vectors
            .iter()
            .enumerate()
            .map(|(i, d)| {
                (
                    q.iter()
                        .map(|(t, w)| w * d.get(t).copied().unwrap_or(0.0))
                        .sum(),
                    i,
                )
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.into_iter().take(k).map(|(_, i)| i).collect()
    }

    pub fn doc(&self, i: usize) -> &Doc {
        &self.docs[i]
    }
}

/// The passages (texts) of one example.
pub fn retrieved(index: &LexicalIndex, example: &QaExample, k: usize) -> Vec<String> {
    if let Some(c) = &example.context {
        return vec![c.clone()];
    }
    index
        .search(&example.question, k)
        .into_iter()
        .map(|i| index.doc(i).text.clone())
        .collect()
}

/// RAFT mixing: `k` passages; with probability `gold_probability` the gold passage is one of
/// them at a random place, the rest are the best-ranked non-gold passages (distractors).
pub fn raft(
    index: &LexicalIndex,
    example: &QaExample,
    config: &ContextConfig,
    salt: u64,
) -> Vec<String> {
    let mut rng =
        rand::rngs::StdRng::seed_from_u64(config.seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let is_gold = |i: usize| {
        example
            .gold_doc_ids
            .iter()
            .any(|g| *g == index.doc(i).doc_id)
    };
    let mut passages: Vec<String> = index
        .search(&example.question, config.k + example.gold_doc_ids.len())
        .into_iter()
        .filter(|&i| !is_gold(i))
        .take(config.k)
        .map(|i| index.doc(i).text.clone())
        .collect();
    let gold: Vec<&Doc> = index
        .docs
        .iter()
        .filter(|d| example.gold_doc_ids.contains(&d.doc_id))
        .collect();
    if let Some(g) = gold.choose(&mut rng) {
        if rng.gen_bool(config.gold_probability.clamp(0.0, 1.0)) {
            passages.truncate(config.k.saturating_sub(1));
            let at = rng.gen_range(0..=passages.len());
            passages.insert(at, g.text.clone());
        }
    }
    passages
}
