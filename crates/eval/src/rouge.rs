//! ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum as Google's rouge-score 0.1.2 computes them.
//!
//! Tokenizer: lowercase, every run of characters outside `[a-z0-9]` becomes a space, split; with
//! stemming, nltk's Porter stemmer ([`crate::porter`]) is applied to tokens longer than 3 characters.
//! ROUGE-Lsum splits both texts into sentences on newlines (`split_summaries=False`) and scores the
//! union LCS per reference sentence without double counting (ROUGE 1.5.5 behaviour). With several
//! references, each ROUGE type takes the reference with the highest F (the first on a tie), as
//! `RougeScorer.score_multi` does.

use crate::porter;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};

/// Precision, recall and F1 of one ROUGE type, each in 0..=1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RougeScore {
    pub precision: f64,
    pub recall: f64,
    pub fmeasure: f64,
}

impl RougeScore {
    fn new(precision: f64, recall: f64) -> Self {
        let fmeasure = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        RougeScore {
            precision,
            recall,
            fmeasure,
        }
    }
}

/// The four ROUGE types for one prediction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RougeScores {
    pub rouge1: RougeScore,
    pub rouge2: RougeScore,
    pub rouge_l: RougeScore,
    pub rouge_lsum: RougeScore,
}

/// rouge-score's default tokenizer.
pub fn tokenize(text: &str, use_stemmer: bool) -> Vec<String> {
    let lowered = text.to_lowercase();
    let spaced: String = lowered
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                ' '
            }
        })
        .collect();
    spaced
        .split(' ')
        .filter(|t| !t.is_empty())
        .map(|t| {
            if use_stemmer && t.len() > 3 {
                porter::stem(t)
            } else {
                t.to_string()
            }
        })
        // A stem is always [a-z0-9]; the filter mirrors rouge-score's VALID_TOKEN_RE all the same.
        .filter(|t| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        .collect()
}

fn ngram_counts(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    for w in tokens.windows(n) {
        *counts.entry(w).or_default() += 1;
    }
    counts
}

/// ROUGE-N between token lists.
pub fn rouge_n(target: &[String], prediction: &[String], n: usize) -> RougeScore {
    let target_counts = ngram_counts(target, n);
    let prediction_counts = ngram_counts(prediction, n);
    let overlap: usize = target_counts
        .iter()
        .map(|(g, &c)| c.min(prediction_counts.get(g).copied().unwrap_or(0)))
        .sum();
    let target_total: usize = target_counts.values().sum();
    let prediction_total: usize = prediction_counts.values().sum();
    RougeScore::new(
        overlap as f64 / prediction_total.max(1) as f64,
        overlap as f64 / target_total.max(1) as f64,
    )
}

fn lcs_table(reference: &[String], candidate: &[String]) -> Vec<Vec<usize>> {
    let mut table = vec![vec![0usize; candidate.len() + 1]; reference.len() + 1];
    for i in 1..=reference.len() {
        for j in 1..=candidate.len() {
            table[i][j] = if reference[i - 1] == candidate[j - 1] {
                table[i - 1][j - 1] + 1
            } else {
                table[i - 1][j].max(table[i][j - 1])
            };
        }
    }
    table
}

/// Indices into `reference` of one LCS, read back the way rouge-score's `_backtrack_norec` does.
fn lcs_indices(reference: &[String], candidate: &[String]) -> Vec<usize> {
    let table = lcs_table(reference, candidate);
    let (mut i, mut j) = (reference.len(), candidate.len());
    let mut lcs = Vec::new();
    while i > 0 && j > 0 {
        if reference[i - 1] == candidate[j - 1] {
            lcs.push(i - 1);
            i -= 1;
            j -= 1;
        } else if table[i][j - 1] > table[i - 1][j] {
            j -= 1;
        } else {
            i -= 1;
        }
    }
    lcs.reverse();
    lcs
}

/// ROUGE-L (sentence-level LCS) between token lists.
pub fn rouge_l(target: &[String], prediction: &[String]) -> RougeScore {
    if target.is_empty() || prediction.is_empty() {
        return RougeScore::default();
    }
    let lcs = lcs_table(target, prediction)[target.len()][prediction.len()];
    RougeScore::new(
        lcs as f64 / prediction.len() as f64,
        lcs as f64 / target.len() as f64,
    )
}

/// ROUGE-Lsum (summary-level union LCS) between lists of tokenized sentences.
pub fn rouge_lsum(
    target_sentences: &[Vec<String>],
    prediction_sentences: &[Vec<String>],
) -> RougeScore {
    let m: usize = target_sentences.iter().map(Vec::len).sum();
    let n: usize = prediction_sentences.iter().map(Vec::len).sum();
    if m == 0 || n == 0 {
        return RougeScore::default();
    }
    let mut target_counts: HashMap<&str, usize> = HashMap::new();
    let mut prediction_counts: HashMap<&str, usize> = HashMap::new();
    for t in target_sentences.iter().flatten() {
        *target_counts.entry(t).or_default() += 1;
    }
    for t in prediction_sentences.iter().flatten() {
        *prediction_counts.entry(t).or_default() += 1;
    }
    let mut hits = 0usize;
    for reference in target_sentences {
        let union: BTreeSet<usize> = prediction_sentences
            .iter()
            .flat_map(|c| lcs_indices(reference, c))
            .collect();
        for i in union {
            let token = reference[i].as_str();
            let in_prediction = prediction_counts.get(token).copied().unwrap_or(0);
            let in_target = target_counts.get(token).copied().unwrap_or(0);
            if in_prediction > 0 && in_target > 0 {
                hits += 1;
                prediction_counts.insert(token, in_prediction - 1);
                target_counts.insert(token, in_target - 1);
            }
        }
    }
    RougeScore::new(hits as f64 / n as f64, hits as f64 / m as f64)
}

fn sentences(text: &str, use_stemmer: bool) -> Vec<Vec<String>> {
    text.split('\n')
        .filter(|s| !s.is_empty())
        .map(|s| tokenize(s, use_stemmer))
        .collect()
}

/// All four ROUGE types of `prediction` against one `target`.
pub fn rouge(prediction: &str, target: &str, use_stemmer: bool) -> RougeScores {
    let target_tokens = tokenize(target, use_stemmer);
    let prediction_tokens = tokenize(prediction, use_stemmer);
    RougeScores {
        rouge1: rouge_n(&target_tokens, &prediction_tokens, 1),
        rouge2: rouge_n(&target_tokens, &prediction_tokens, 2),
        rouge_l: rouge_l(&target_tokens, &prediction_tokens),
        rouge_lsum: rouge_lsum(
            &sentences(target, use_stemmer),
            &sentences(prediction, use_stemmer),
        ),
    }
}

/// Each ROUGE type against the reference that maximizes its F (first one on a tie). With no
/// references at all every score is 0.
pub fn rouge_multi<S: AsRef<str>>(
    prediction: &str,
    targets: &[S],
    use_stemmer: bool,
) -> RougeScores {
    let all: Vec<RougeScores> = targets
        .iter()
        .map(|t| rouge(prediction, t.as_ref(), use_stemmer))
        .collect();
    let best = |pick: fn(&RougeScores) -> RougeScore| -> RougeScore {
        let mut best: Option<RougeScore> = None;
        for s in &all {
            let candidate = pick(s);
            if best.is_none_or(|b| candidate.fmeasure > b.fmeasure) {
                best = Some(candidate);
            }
        }
        best.unwrap_or_default()
    };
    RougeScores {
        rouge1: best(|s| s.rouge1),
        rouge2: best(|s| s.rouge2),
        rouge_l: best(|s| s.rouge_l),
        rouge_lsum: best(|s| s.rouge_lsum),
    }
}
