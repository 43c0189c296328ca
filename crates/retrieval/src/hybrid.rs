//! Hybrid search: several retrievers over the same corpus (BM25 and dense, typically), each
//! searched to `depth`, their rankings fused into one.
//!
//! - **Reciprocal-rank fusion** (Cormack et al., SIGIR 2009): `score(d) = Σ_i w_i / (k + rank_i(d))`,
//!   ranks from 1, k = 60; a passage missing from a ranking gets nothing from it.
//! - **Weighted score fusion**: each ranking's scores are normalised over its own top-`depth`
//!   (min-max to [0, 1], or z-scores), then `score(d) = Σ_i w_i · norm_i(d)`. A passage missing
//!   from a ranking takes that ranking's lowest normalised score, as Pyserini's hybrid does: it
//!   ranked below everything that was returned.
//!
//! Weights default to equal. [`sweep_weights`] picks them on validation queries.

use crate::corpus::Corpus;
use crate::index::Hit;
use crate::{Result, RetrievalConfig, RetrievalError, Retriever};
use ragtune_eval::retrieval::{evaluate, Measure, Qrels};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tch::Device;

/// How scores are put on one scale before they are weighted and summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    MinMax,
    ZScore,
}

/// How rankings are fused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fusion {
    Rrf {
        #[serde(default = "default_rrf_k")]
        k: f64,
        /// One per retriever; none means equal.
        #[serde(default)]
        weights: Vec<f64>,
    },
    Weighted {
        #[serde(default = "default_normalization")]
        normalization: Normalization,
        #[serde(default)]
        weights: Vec<f64>,
    },
}

fn default_rrf_k() -> f64 {
    60.0
}

fn default_normalization() -> Normalization {
    Normalization::MinMax
}

impl Default for Fusion {
    fn default() -> Self {
        Fusion::Rrf {
            k: default_rrf_k(),
            weights: Vec::new(),
        }
    }
}

impl Fusion {
    pub fn weights(&self) -> &[f64] {
        match self {
            Fusion::Rrf { weights, .. } | Fusion::Weighted { weights, .. } => weights,
        }
    }

    /// The same fusion with other weights (a sweep's candidates).
    pub fn with_weights(&self, new: Vec<f64>) -> Fusion {
        match self {
            Fusion::Rrf { k, .. } => Fusion::Rrf {
                k: *k,
                weights: new,
            },
            Fusion::Weighted { normalization, .. } => Fusion::Weighted {
                normalization: *normalization,
                weights: new,
            },
        }
    }

    /// `parts` is how many rankings will be fused.
    pub fn validate(&self, parts: usize) -> Result<()> {
        let weights = self.weights();
        if !weights.is_empty() && weights.len() != parts {
            return Err(RetrievalError::Invalid(format!(
                "retrieval.fusion.weights has {} values for {parts} retrievers: give one per retriever, in order",
                weights.len()
            )));
        }
        if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
            return Err(RetrievalError::Invalid(format!(
                "retrieval.fusion.weights must be finite and >= 0, got {weights:?}"
            )));
        }
        if let Fusion::Rrf { k, .. } = self {
            if !(k.is_finite() && *k >= 0.0) {
                return Err(RetrievalError::Invalid(format!(
                    "retrieval.fusion.k must be finite and >= 0, got {k}"
                )));
            }
        }
        Ok(())
    }

    /// One query's fused ranking, best first (ties by corpus position), cut to `k`.
    pub fn fuse(&self, rankings: &[&[Hit]], k: usize) -> Vec<Hit> {
        let weight = |i: usize| self.weights().get(i).copied().unwrap_or(1.0);
        let mut fused: HashMap<usize, f64> = HashMap::new();
        match self {
            Fusion::Rrf { k: rrf_k, .. } => {
                for (i, ranking) in rankings.iter().enumerate() {
                    for (rank, hit) in ranking.iter().enumerate() {
                        *fused.entry(hit.index).or_default() +=
                            weight(i) / (rrf_k + rank as f64 + 1.0);
                    }
                }
            }
            Fusion::Weighted { normalization, .. } => {
                let normalized: Vec<Vec<f64>> = rankings
                    .iter()
                    .map(|r| normalize(r, *normalization))
                    .collect();
                for ranking in rankings {
                    for hit in ranking.iter() {
                        fused.entry(hit.index).or_default();
                    }
                }
                for (i, (ranking, norm)) in rankings.iter().zip(&normalized).enumerate() {
                    let floor = norm.iter().copied().fold(f64::INFINITY, f64::min);
                    let floor = if floor.is_finite() { floor } else { 0.0 };
                    let position: HashMap<usize, usize> = ranking
                        .iter()
                        .enumerate()
                        .map(|(at, h)| (h.index, at))
                        .collect();
                    for (doc, score) in fused.iter_mut() {
                        let value = position.get(doc).map_or(floor, |&at| norm[at]);
                        *score += weight(i) * value;
                    }
                }
            }
        }
        let mut hits: Vec<Hit> = fused
            .into_iter()
            .map(|(index, score)| Hit {
                index,
                score: score as f32,
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
        hits.truncate(k);
        hits
    }
}

/// A ranking's scores on a common scale: min-max to [0, 1] (all 1 when every score is equal) or
/// z-scores (all 0 when the spread is 0).
fn normalize(ranking: &[Hit], normalization: Normalization) -> Vec<f64> {
    let scores: Vec<f64> = ranking.iter().map(|h| h.score as f64).collect();
    if scores.is_empty() {
        return scores;
    }
    match normalization {
        Normalization::MinMax => {
            let (lo, hi) = scores
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &s| {
                    (lo.min(s), hi.max(s))
                });
            if hi > lo {
                scores.iter().map(|s| (s - lo) / (hi - lo)).collect()
            } else {
                vec![1.0; scores.len()]
            }
        }
        Normalization::ZScore => {
            let n = scores.len() as f64;
            let mean = scores.iter().sum::<f64>() / n;
            let std = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n).sqrt();
            if std > 0.0 {
                scores.iter().map(|s| (s - mean) / std).collect()
            } else {
                vec![0.0; scores.len()]
            }
        }
    }
}

/// A hybrid retriever's settings: `backend = "hybrid"`, the retrievers as `[[retrieval.retrievers]]`
/// tables, the fusion as `[retrieval.fusion]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HybridConfig {
    pub retrievers: Vec<RetrievalConfig>,
    #[serde(default)]
    pub fusion: Fusion,
    /// How deep each retriever's ranking goes before fusion (at least the k asked for).
    #[serde(default = "default_depth")]
    pub depth: usize,
}

fn default_depth() -> usize {
    100
}

impl HybridConfig {
    pub fn validate(&self) -> Result<()> {
        if self.retrievers.len() < 2 {
            return Err(RetrievalError::Invalid(format!(
                "a hybrid retriever fuses at least 2 retrievers; retrieval.retrievers has {}",
                self.retrievers.len()
            )));
        }
        if self.depth == 0 {
            return Err(RetrievalError::Invalid(
                "retrieval.depth must be at least 1".into(),
            ));
        }
        self.fusion.validate(self.retrievers.len())
    }
}

pub struct HybridRetriever {
    parts: Vec<Box<dyn Retriever>>,
    fusion: Fusion,
    depth: usize,
}

impl HybridRetriever {
    pub fn load(config: &HybridConfig, corpus: Corpus, device: Device) -> Result<Self> {
        config.validate()?;
        let parts = config
            .retrievers
            .iter()
            .map(|part| part.build(corpus.clone(), device))
            .collect::<Result<Vec<_>>>()?;
        Self::new(parts, config.fusion.clone(), config.depth)
    }

    /// Fuses retrievers already built (over the same corpus).
    pub fn new(parts: Vec<Box<dyn Retriever>>, fusion: Fusion, depth: usize) -> Result<Self> {
        fusion.validate(parts.len())?;
        if let Some(first) = parts.first() {
            if let Some(other) = parts
                .iter()
                .find(|p| p.corpus().hash() != first.corpus().hash())
            {
                return Err(RetrievalError::Invalid(format!(
                    "hybrid retrievers must search one corpus: `{}` and `{}` do not",
                    first.describe(),
                    other.describe()
                )));
            }
        }
        Ok(Self {
            parts,
            fusion,
            depth: depth.max(1),
        })
    }

    pub fn parts(&self) -> &[Box<dyn Retriever>] {
        &self.parts
    }

    pub fn fusion(&self) -> &Fusion {
        &self.fusion
    }

    /// Each part's ranking of each query, `depth` (or `k`, when larger) deep: `[part][query]`.
    pub fn part_rankings(&self, queries: &[&str], k: usize) -> Result<Vec<Vec<Vec<Hit>>>> {
        let depth = self.depth.max(k);
        self.parts
            .iter()
            .map(|p| p.search(queries, depth))
            .collect()
    }
}

/// Fuses `[part][query]` rankings query by query.
pub fn fuse_all(fusion: &Fusion, rankings: &[Vec<Vec<Hit>>], k: usize) -> Vec<Vec<Hit>> {
    let queries = rankings.first().map_or(0, Vec::len);
    (0..queries)
        .map(|q| {
            let per_part: Vec<&[Hit]> = rankings.iter().map(|r| r[q].as_slice()).collect();
            fusion.fuse(&per_part, k)
        })
        .collect()
}

impl Retriever for HybridRetriever {
    fn describe(&self) -> String {
        let parts: Vec<String> = self.parts.iter().map(|p| p.describe()).collect();
        let how = match &self.fusion {
            Fusion::Rrf { k, .. } => format!("rrf k={k}"),
            Fusion::Weighted { normalization, .. } => format!("weighted {normalization:?}"),
        };
        let weights = if self.fusion.weights().is_empty() {
            String::new()
        } else {
            format!(" w={:?}", self.fusion.weights())
        };
        format!(
            "hybrid[{how}{weights}, depth {}]({})",
            self.depth,
            parts.join(" + ")
        )
    }

    fn corpus(&self) -> &Corpus {
        self.parts[0].corpus()
    }

    fn search(&self, queries: &[&str], k: usize) -> Result<Vec<Vec<Hit>>> {
        let rankings = self.part_rankings(queries, k)?;
        Ok(fuse_all(&self.fusion, &rankings, k))
    }
}

/// One candidate of a weight sweep and its validation score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    pub weights: Vec<f64>,
    pub score: f64,
}

/// Tries each candidate weighting of two retrievers, `(w, 1 − w)` for w in `grid`, on validation
/// queries and returns every point with the best first (ties keep the earlier, so equal weights
/// win a tie when the grid lists them first). `rankings` is `[part][query]`, as
/// [`HybridRetriever::part_rankings`] gives it; `measure` is the one to maximise (nDCG@10).
pub fn sweep_weights(
    fusion: &Fusion,
    rankings: &[Vec<Vec<Hit>>],
    corpus: &Corpus,
    query_ids: &[&str],
    qrels: &Qrels,
    grid: &[f64],
    measure: Measure,
) -> Result<Vec<SweepPoint>> {
    if rankings.len() != 2 {
        return Err(RetrievalError::Invalid(format!(
            "the weight sweep is over two retrievers, got {}",
            rankings.len()
        )));
    }
    // MAP has no cutoff: fuse deep enough for it to see the whole fused list.
    let k = measure.cutoff().unwrap_or(1000);
    let mut points = Vec::with_capacity(grid.len());
    for &w in grid {
        if !(0.0..=1.0).contains(&w) {
            return Err(RetrievalError::Invalid(format!(
                "sweep weights lie in [0, 1], got {w}"
            )));
        }
        let candidate = fusion.with_weights(vec![w, 1.0 - w]);
        let fused = fuse_all(&candidate, rankings, k);
        let run = crate::to_run(corpus, query_ids, &fused);
        let report = evaluate(&run, qrels, &[measure])
            .map_err(|e| RetrievalError::Invalid(format!("evaluating the sweep: {e}")))?;
        points.push(SweepPoint {
            weights: vec![w, 1.0 - w],
            score: report
                .mean
                .get(&measure.to_string())
                .copied()
                .unwrap_or(0.0),
        });
    }
    points.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(list: &[(usize, f32)]) -> Vec<Hit> {
        list.iter()
            .map(|&(index, score)| Hit { index, score })
            .collect()
    }

    #[test]
    fn rrf_sums_reciprocal_ranks() {
        let a = hits(&[(1, 9.0), (2, 5.0), (3, 1.0)]);
        let b = hits(&[(3, 0.9), (1, 0.8)]);
        let fused = Fusion::default().fuse(&[&a, &b], 3);
        let expect = |ranks: &[f64]| ranks.iter().map(|r| 1.0 / (60.0 + r)).sum::<f64>() as f32;
        assert_eq!(fused[0].index, 1);
        assert_eq!(fused[0].score, expect(&[1.0, 2.0]));
        assert_eq!(fused[1].index, 3);
        assert_eq!(fused[1].score, expect(&[3.0, 1.0]));
        assert_eq!(fused[2].index, 2);
        assert_eq!(fused[2].score, expect(&[2.0]));
    }

    #[test]
    fn weighted_min_max_gives_missing_passages_the_floor() {
        let a = hits(&[(1, 10.0), (2, 6.0), (3, 2.0)]);
        let b = hits(&[(4, 0.9), (1, 0.5)]);
        let fusion = Fusion::Weighted {
            normalization: Normalization::MinMax,
            weights: vec![0.25, 0.75],
        };
        let fused = fusion.fuse(&[&a, &b], 4);
        let score = |doc: usize| fused.iter().find(|h| h.index == doc).unwrap().score;
        assert!((score(1) - (0.25 * 1.0 + 0.75 * 0.0) as f32).abs() < 1e-7);
        assert!((score(4) - (0.25 * 0.0 + 0.75 * 1.0) as f32).abs() < 1e-7);
        assert!((score(2) - (0.25 * 0.5) as f32).abs() < 1e-7);
        assert_eq!(fused[0].index, 4);
    }

    #[test]
    fn z_scores_center_each_ranking() {
        let z = normalize(&hits(&[(0, 3.0), (1, 1.0)]), Normalization::ZScore);
        assert_eq!(z, vec![1.0, -1.0]);
        assert_eq!(
            normalize(&hits(&[(0, 2.0), (1, 2.0)]), Normalization::MinMax),
            vec![1.0, 1.0]
        );
    }

    #[test]
    fn weights_must_match_the_retrievers() {
        let fusion = Fusion::Rrf {
            k: 60.0,
            weights: vec![1.0],
        };
        let err = fusion.validate(2).unwrap_err().to_string();
        assert!(
            err.contains("retrieval.fusion.weights has 1 values for 2"),
            "{err}"
        );
    }
}
