//! Ranking metrics with trec_eval's semantics (checked against pytrec_eval to 1e-6).
//!
//! - Ranking: documents are ordered by score descending, ties by doc id descending (byte order),
//!   as trec_eval does; the rank column of a TREC run file plays no part.
//! - A document is relevant when its qrels relevance is >= 1 (trec_eval's `relevance_level`);
//!   graded gains for nDCG are the relevance values themselves (negative values count as 0),
//!   discounted by log2(rank + 1), and the ideal ranking is built from all judged documents.
//! - Queries: a query is scored when it appears in both the run and the qrels (trec_eval without
//!   `-c`). Queries judged but absent from the run are listed in
//!   [`RetrievalReport::queries_missing_from_run`] and left out of the means; pass them to the run
//!   as empty rankings to count them as zeros. A query whose judgments hold no relevant document
//!   scores 0 on every measure and counts in the means (listed in `queries_without_relevant`).
//! - Cutoffs: P@k divides by k even when fewer than k documents were retrieved; MRR@k is the
//!   reciprocal rank of the first relevant document if it is within the top k, else 0; Hit@k is
//!   trec_eval's `success_k`; MAP is over the whole ranking, MAP@k is `map_cut_k`.

use crate::error::{EvalError, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// query id -> doc id -> graded relevance.
pub type Qrels = BTreeMap<String, BTreeMap<String, i64>>;
/// query id -> doc id -> retrieval score (higher is better).
pub type Run = BTreeMap<String, BTreeMap<String, f64>>;

/// One retrieval measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Measure {
    Recall(usize),
    Precision(usize),
    Mrr(usize),
    Ndcg(usize),
    Hit(usize),
    MapAt(usize),
    Map,
}

impl Measure {
    /// The rank cutoff k of `measure@k`; `None` for MAP over the whole ranking.
    pub fn cutoff(self) -> Option<usize> {
        match self {
            Measure::Recall(k)
            | Measure::Precision(k)
            | Measure::Mrr(k)
            | Measure::Ndcg(k)
            | Measure::Hit(k)
            | Measure::MapAt(k) => Some(k),
            Measure::Map => None,
        }
    }

    /// Parses the names [`fmt::Display`] writes: `recall@10`, `p@5`, `mrr@10`, `ndcg@10`, `hit@1`,
    /// `map@100`, `map`.
    pub fn parse(name: &str) -> Result<Measure> {
        let lower = name.trim().to_ascii_lowercase();
        if lower == "map" {
            return Ok(Measure::Map);
        }
        let bad = || {
            EvalError::Invalid(format!(
                "unknown measure `{name}`: expected one of recall@K, p@K, mrr@K, ndcg@K, hit@K, map@K, map"
            ))
        };
        let (family, k) = lower.split_once('@').ok_or_else(bad)?;
        let k: usize = k.parse().map_err(|_| bad())?;
        if k == 0 {
            return Err(EvalError::Invalid(format!(
                "measure `{name}`: the cutoff must be at least 1"
            )));
        }
        Ok(match family {
            "recall" | "r" => Measure::Recall(k),
            "p" | "precision" => Measure::Precision(k),
            "mrr" => Measure::Mrr(k),
            "ndcg" => Measure::Ndcg(k),
            "hit" | "success" => Measure::Hit(k),
            "map" => Measure::MapAt(k),
            _ => return Err(bad()),
        })
    }
}

impl fmt::Display for Measure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Measure::Recall(k) => write!(f, "recall@{k}"),
            Measure::Precision(k) => write!(f, "p@{k}"),
            Measure::Mrr(k) => write!(f, "mrr@{k}"),
            Measure::Ndcg(k) => write!(f, "ndcg@{k}"),
            Measure::Hit(k) => write!(f, "hit@{k}"),
            Measure::MapAt(k) => write!(f, "map@{k}"),
            Measure::Map => write!(f, "map"),
        }
    }
}

/// Recall, P, MRR, nDCG and Hit at each cutoff, then MAP: the usual report.
pub fn standard_measures(cutoffs: &[usize]) -> Vec<Measure> {
    let mut measures = Vec::new();
    for make in [
        Measure::Recall,
        Measure::Precision,
        Measure::Mrr,
        Measure::Ndcg,
        Measure::Hit,
    ] {
        measures.extend(cutoffs.iter().map(|&k| make(k)));
    }
    measures.push(Measure::Map);
    measures
}

/// Per-query values and their means, keyed by the measure's display name.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetrievalReport {
    /// Measure names in the order they were asked for.
    pub measures: Vec<String>,
    /// query id -> measure -> value.
    pub per_query: BTreeMap<String, BTreeMap<String, f64>>,
    /// measure -> mean over the scored queries (0 when none was scored).
    pub mean: BTreeMap<String, f64>,
    pub num_queries: usize,
    pub queries_missing_from_run: Vec<String>,
    pub queries_without_relevant: Vec<String>,
}

/// A query's documents in trec_eval order: score descending, then doc id descending.
pub fn rank(docs: &BTreeMap<String, f64>) -> Vec<(&str, f64)> {
    let mut ranked: Vec<(&str, f64)> = docs.iter().map(|(d, &s)| (d.as_str(), s)).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(a.0)));
    ranked
}

/// Scores one query's ranking against its judgments for every measure.
pub fn evaluate_query(
    ranked: &[(&str, f64)],
    judgments: &BTreeMap<String, i64>,
    measures: &[Measure],
) -> Vec<f64> {
    let relevance: Vec<i64> = ranked
        .iter()
        .map(|(d, _)| judgments.get(*d).copied().unwrap_or(0))
        .collect();
    let num_relevant = judgments.values().filter(|&&r| r >= 1).count();
    let mut ideal: Vec<i64> = judgments.values().map(|&r| r.max(0)).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let dcg = |gains: &[i64], k: usize| -> f64 {
        gains
            .iter()
            .take(k)
            .enumerate()
            .map(|(i, &g)| g.max(0) as f64 / ((i + 2) as f64).log2())
            .sum()
    };
    let first_relevant = relevance.iter().position(|&r| r >= 1);
    let average_precision = |k: usize| -> f64 {
        if num_relevant == 0 {
            return 0.0;
        }
        let mut hits = 0usize;
        let mut sum = 0.0;
        for (i, &r) in relevance.iter().take(k).enumerate() {
            if r >= 1 {
                hits += 1;
                sum += hits as f64 / (i + 1) as f64;
            }
        }
        sum / num_relevant as f64
    };
    let relevant_in = |k: usize| relevance.iter().take(k).filter(|&&r| r >= 1).count();
    measures
        .iter()
        .map(|&m| match m {
            Measure::Recall(k) if num_relevant > 0 => relevant_in(k) as f64 / num_relevant as f64,
            Measure::Recall(_) => 0.0,
            Measure::Precision(k) => relevant_in(k) as f64 / k as f64,
            Measure::Mrr(k) => match first_relevant {
                Some(i) if i < k => 1.0 / (i + 1) as f64,
                _ => 0.0,
            },
            Measure::Ndcg(k) => {
                let ideal_dcg = dcg(&ideal, k);
                if ideal_dcg > 0.0 {
                    dcg(&relevance, k) / ideal_dcg
                } else {
                    0.0
                }
            }
            Measure::Hit(k) => f64::from(u8::from(first_relevant.is_some_and(|i| i < k))),
            Measure::MapAt(k) => average_precision(k),
            Measure::Map => average_precision(usize::MAX),
        })
        .collect()
}

/// Scores every query of `run` that `qrels` judges, and the means over them.
pub fn evaluate(run: &Run, qrels: &Qrels, measures: &[Measure]) -> Result<RetrievalReport> {
    if measures.is_empty() {
        return Err(EvalError::Invalid("no retrieval measures requested".into()));
    }
    if let Some(m) = measures.iter().find(|m| m.cutoff() == Some(0)) {
        return Err(EvalError::Invalid(format!(
            "{m}: the cutoff must be at least 1"
        )));
    }
    let names: Vec<String> = measures.iter().map(ToString::to_string).collect();
    let mut report = RetrievalReport {
        measures: names.clone(),
        ..Default::default()
    };
    let mut sums = vec![0.0; measures.len()];
    for (query, judgments) in qrels {
        let Some(docs) = run.get(query) else {
            report.queries_missing_from_run.push(query.clone());
            continue;
        };
        if let Some((doc, _)) = docs.iter().find(|(_, s)| s.is_nan()) {
            return Err(EvalError::Invalid(format!(
                "query {query}, doc {doc}: the score is NaN"
            )));
        }
        if !judgments.values().any(|&r| r >= 1) {
            report.queries_without_relevant.push(query.clone());
        }
        let values = evaluate_query(&rank(docs), judgments, measures);
        for (s, v) in sums.iter_mut().zip(&values) {
            *s += v;
        }
        report
            .per_query
            .insert(query.clone(), names.iter().cloned().zip(values).collect());
        report.num_queries += 1;
    }
    let n = report.num_queries.max(1) as f64;
    report.mean = names
        .into_iter()
        .zip(sums.into_iter().map(|s| s / n))
        .collect();
    Ok(report)
}
