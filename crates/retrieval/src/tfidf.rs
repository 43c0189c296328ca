//! TF-IDF (log tf, smoothed idf, cosine ranking) over titles and texts: the lexical baseline, and
//! the retriever that needs no model.

use crate::corpus::Corpus;
use crate::index::Hit;
use crate::{Result, Retriever};
use std::collections::HashMap;

/// Lowercased alphanumeric runs of two or more characters.
fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| t.len() > 1)
        .map(str::to_lowercase)
        .collect()
}

pub struct TfIdfRetriever {
    corpus: Corpus,
    vectors: Vec<HashMap<String, f64>>,
    idf: HashMap<String, f64>,
}

impl TfIdfRetriever {
    pub fn new(corpus: Corpus) -> Self {
        let tokenized: Vec<Vec<String>> = corpus
            .docs()
            .iter()
            .map(|d| terms(&format!("{} {}", d.title, d.text)))
            .collect();
        let mut df: HashMap<String, usize> = HashMap::new();
        for t in &tokenized {
            let mut seen: Vec<&String> = t.iter().collect();
            seen.sort();
            seen.dedup();
            for term in seen {
                *df.entry(term.clone()).or_default() += 1;
            }
        }
        let n = corpus.len() as f64;
        let idf: HashMap<String, f64> = df
            .into_iter()
            .map(|(t, d)| (t, ((1.0 + n) / (1.0 + d as f64)).ln() + 1.0))
            .collect();
        let vectors = tokenized.iter().map(|t| vector(t, &idf)).collect();
        Self {
            corpus,
            vectors,
            idf,
        }
    }

    fn search_one(&self, query: &str, k: usize) -> Vec<Hit> {
        let q = vector(&terms(query), &self.idf);
        let mut scored: Vec<Hit> = self
            .vectors
            .iter()
            .enumerate()
            .map(|(index, d)| Hit {
                index,
                score: q
                    .iter()
                    .map(|(t, w)| w * d.get(t).copied().unwrap_or(0.0))
                    .sum::<f64>() as f32,
            })
            .collect();
        scored.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
        scored.truncate(k);
        scored
    }
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

impl Retriever for TfIdfRetriever {
    fn describe(&self) -> String {
        "tfidf".into()
    }

    fn corpus(&self) -> &Corpus {
        &self.corpus
    }

    fn search(&self, queries: &[&str], k: usize) -> Result<Vec<Vec<Hit>>> {
        Ok(queries.iter().map(|q| self.search_one(q, k)).collect())
    }
}
