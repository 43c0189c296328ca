//! BERTScore (P, R, F1) over token embeddings the caller supplies, following bert-score 0.3.13.
//!
//! For each candidate/reference pair: every token vector is L2-normalized; each candidate token
//! takes its best cosine over the reference tokens (precision side) and each reference token its
//! best over the candidate tokens (recall side); P and R are the weighted means of those maxima
//! with weights normalized per sentence; F = 2PR/(P+R) (0 when that is NaN). A token's best cosine
//! is floored at 0: bert-score pads each batch and masks padding to similarity 0 *before* the max,
//! so for every sentence shorter than the longest in its batch (in practice all but one) a negative
//! best cosine becomes 0. Only tokens with no positively similar counterpart are affected. Special tokens
//! ([CLS], [SEP]) stay in the similarity matrix but weigh 0. Weights are 1 without idf; with idf
//! they are log((M + 1) / (df + 1)) where M is the number of reference sentences and df the number
//! of references containing the token id (unseen ids get log(M + 1)). A candidate or reference
//! with no token besides the special ones scores 0, as bert-score does. No baseline rescaling.
//!
//! The encoder is the caller's (eval does not depend on tch): implement [`TokenEncoder`] over a BERT
//! that returns the hidden states of the chosen layer for every token, special ones included.

use crate::error::{check_parallel, EvalError, Result};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// One tokenized and encoded text: token ids, one vector per token, and which tokens are special.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedText {
    pub token_ids: Vec<u32>,
    pub vectors: Vec<Vec<f32>>,
    /// True for [CLS]/[SEP] (weight 0).
    pub special: Vec<bool>,
}

/// Turns texts into per-token embeddings (bert-score uses one hidden layer of a BERT).
pub trait TokenEncoder {
    type Error: std::fmt::Display;
    fn encode(&mut self, texts: &[String]) -> std::result::Result<Vec<EncodedText>, Self::Error>;
}

/// BERTScore of one pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct BertScore {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// Token id -> idf weight from the references, as bert-score's `get_idf_dict`.
#[derive(Debug, Clone)]
pub struct IdfWeights {
    weights: HashMap<u32, f64>,
    unseen: f64,
}

impl IdfWeights {
    pub fn from_references(references: &[EncodedText]) -> Self {
        let mut df: HashMap<u32, usize> = HashMap::new();
        for r in references {
            for id in r.token_ids.iter().copied().collect::<HashSet<_>>() {
                *df.entry(id).or_default() += 1;
            }
        }
        let m = references.len() as f64;
        IdfWeights {
            weights: df
                .into_iter()
                .map(|(id, c)| (id, ((m + 1.0) / (c as f64 + 1.0)).ln()))
                .collect(),
            unseen: (m + 1.0).ln(),
        }
    }

    pub fn get(&self, token_id: u32) -> f64 {
        self.weights.get(&token_id).copied().unwrap_or(self.unseen)
    }
}

fn check(text: &EncodedText, what: &str) -> Result<()> {
    if text.vectors.len() != text.token_ids.len() || text.special.len() != text.token_ids.len() {
        return Err(EvalError::Invalid(format!(
            "{what}: {} token ids, {} vectors, {} special flags; they must agree",
            text.token_ids.len(),
            text.vectors.len(),
            text.special.len()
        )));
    }
    Ok(())
}

fn normalized(vectors: &[Vec<f32>]) -> Vec<Vec<f64>> {
    vectors
        .iter()
        .map(|v| {
            let norm = v
                .iter()
                .map(|&x| f64::from(x) * f64::from(x))
                .sum::<f64>()
                .sqrt();
            v.iter().map(|&x| f64::from(x) / norm).collect()
        })
        .collect()
}

fn weights(text: &EncodedText, idf: Option<&IdfWeights>) -> Vec<f64> {
    text.token_ids
        .iter()
        .zip(&text.special)
        .map(|(&id, &special)| match (special, idf) {
            (true, _) => 0.0,
            (false, Some(idf)) => idf.get(id),
            (false, None) => 1.0,
        })
        .collect()
}

/// Greedy-matching BERTScore of one encoded pair.
pub fn score_pair(
    candidate: &EncodedText,
    reference: &EncodedText,
    idf: Option<&IdfWeights>,
) -> Result<BertScore> {
    check(candidate, "candidate")?;
    check(reference, "reference")?;
    if candidate.special.iter().all(|&s| s) || reference.special.iter().all(|&s| s) {
        return Ok(BertScore::default());
    }
    let cand = normalized(&candidate.vectors);
    let refs = normalized(&reference.vectors);
    if cand[0].len() != refs[0].len() {
        return Err(EvalError::Invalid(format!(
            "candidate vectors have {} dims, reference vectors {}",
            cand[0].len(),
            refs[0].len()
        )));
    }
    let sim: Vec<Vec<f64>> = cand
        .iter()
        .map(|c| {
            refs.iter()
                .map(|r| c.iter().zip(r).map(|(x, y)| x * y).sum())
                .collect()
        })
        .collect();
    // Starting the max at 0 floors a negative best cosine at 0, as bert-score's masked padding does.
    let best_for_candidate: Vec<f64> = sim
        .iter()
        .map(|row| row.iter().copied().fold(0.0, f64::max))
        .collect();
    let best_for_reference: Vec<f64> = (0..refs.len())
        .map(|j| sim.iter().map(|row| row[j]).fold(0.0, f64::max))
        .collect();
    let weighted = |values: &[f64], w: &[f64]| -> f64 {
        let total: f64 = w.iter().sum();
        values.iter().zip(w).map(|(v, w)| v * w / total).sum()
    };
    let precision = weighted(&best_for_candidate, &weights(candidate, idf));
    let recall = weighted(&best_for_reference, &weights(reference, idf));
    let f1 = 2.0 * precision * recall / (precision + recall);
    Ok(BertScore {
        precision,
        recall,
        f1: if f1.is_nan() { 0.0 } else { f1 },
    })
}

/// Scores encoded candidates against their encoded references; `use_idf` takes idf weights from
/// these references.
pub fn score_encoded(
    candidates: &[EncodedText],
    references: &[EncodedText],
    use_idf: bool,
) -> Result<Vec<BertScore>> {
    check_parallel(
        "BERTScore candidates and references",
        candidates.len(),
        references.len(),
    )?;
    let idf = use_idf.then(|| IdfWeights::from_references(references));
    candidates
        .iter()
        .zip(references)
        .map(|(c, r)| score_pair(c, r, idf.as_ref()))
        .collect()
}

/// Encodes candidates and references with `encoder` and scores them pairwise.
pub fn bert_score<E: TokenEncoder>(
    encoder: &mut E,
    candidates: &[String],
    references: &[String],
    use_idf: bool,
) -> Result<Vec<BertScore>> {
    check_parallel(
        "BERTScore candidates and references",
        candidates.len(),
        references.len(),
    )?;
    let encode = |encoder: &mut E, texts: &[String]| -> Result<Vec<EncodedText>> {
        let encoded = encoder
            .encode(texts)
            .map_err(|e| EvalError::Encoder(e.to_string()))?;
        check_parallel("texts and their encodings", texts.len(), encoded.len())?;
        Ok(encoded)
    };
    let c = encode(encoder, candidates)?;
    let r = encode(encoder, references)?;
    score_encoded(&c, &r, use_idf)
}
