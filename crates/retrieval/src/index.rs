//! Nearest-neighbour search over passage embeddings: exact (a matrix product and top-k) or
//! approximate (HNSW, Malkov & Yashunin 2018, through `hnsw_rs`).

use crate::{Result, RetrievalError, Similarity};
use anndists::dist::Distance;
use hnsw_rs::hnsw::Hnsw;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// HNSW's knobs: `m` links per node (hnsw_rs allows at most 256), the candidate list size while
/// building (`ef_construction`) and while searching (`ef_search`, raised to k when smaller).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HnswConfig {
    pub m: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
}

impl Default for HnswConfig {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 200,
            ef_search: 128,
        }
    }
}

/// Which search to run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchKind {
    /// Brute force: every query against every passage.
    Exact,
    Hnsw,
}

/// A passage and its similarity to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub index: usize,
    pub score: f32,
}

/// `1 - cos` of unit vectors, clamped at 0 against rounding: hnsw_rs requires distances >= 0.
/// Inner-product search runs on the same distance after the MIPS-to-cosine reduction of
/// Bachrach et al. (2014), see [`DenseIndex::graph_rows`].
#[derive(Debug, Clone, Copy, Default)]
struct CosineDistance;

impl Distance<f32> for CosineDistance {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        (1.0 - dot).max(0.0)
    }
}

/// Passage embeddings and, when built, an HNSW graph over them.
pub struct DenseIndex {
    /// `[passages, dim]` float32 on the CPU, L2-normalized under cosine similarity.
    embeddings: Tensor,
    similarity: Similarity,
    hnsw: Option<(Hnsw<'static, f32, CosineDistance>, HnswConfig)>,
}

impl std::fmt::Debug for DenseIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DenseIndex")
            .field("passages", &self.len())
            .field("similarity", &self.similarity)
            .field("hnsw", &self.hnsw.as_ref().map(|(_, c)| *c))
            .finish()
    }
}

fn prepare(embeddings: &Tensor, similarity: Similarity) -> Tensor {
    let e = embeddings.to_device(Device::Cpu).to_kind(Kind::Float);
    match similarity {
        Similarity::Cosine => ragtune_models::pooling::l2_normalize(&e).contiguous(),
        Similarity::Dot => e.contiguous(),
    }
}

impl DenseIndex {
    /// An exact index over `embeddings [passages, dim]`.
    pub fn exact(embeddings: &Tensor, similarity: Similarity) -> Result<Self> {
        if embeddings.dim() != 2 {
            return Err(RetrievalError::Invalid(format!(
                "index: embeddings must be [passages, dim], got {:?}",
                embeddings.size()
            )));
        }
        Ok(Self {
            embeddings: prepare(embeddings, similarity),
            similarity,
            hnsw: None,
        })
    }

    /// An exact index plus an HNSW graph over the same embeddings.
    pub fn hnsw(embeddings: &Tensor, similarity: Similarity, config: HnswConfig) -> Result<Self> {
        if config.m == 0 || config.m > 256 || config.ef_construction == 0 {
            return Err(RetrievalError::Invalid(format!(
                "HNSW: m must be 1..=256 and ef_construction at least 1 (got m {}, ef_construction {})",
                config.m, config.ef_construction
            )));
        }
        let mut index = Self::exact(embeddings, similarity)?;
        let rows = tensor_rows(&index.graph_rows(&index.embeddings, false))?;
        let layers = 16.min(
            ((rows.len().max(2) as f64).ln() / (config.m.max(2) as f64).ln()).ceil() as usize + 1,
        );
        let graph = Hnsw::new(
            config.m,
            rows.len().max(1),
            layers.max(1),
            config.ef_construction,
            CosineDistance,
        );
        let with_ids: Vec<(&Vec<f32>, usize)> = rows.iter().zip(0..).collect();
        graph.parallel_insert(&with_ids);
        index.hnsw = Some((graph, config));
        Ok(index)
    }

    /// The vectors the graph holds (passages) or searches with (queries). Under cosine they are the
    /// unit vectors themselves. Under inner product, passages become `[p / M, sqrt(1 - |p|² / M²)]`
    /// (M the largest passage norm) and queries `[q / |q|, 0]`: then `q'·p' = q·p / (M |q|)`, so
    /// the cosine ranking of the augmented vectors is the inner-product ranking of the originals.
    fn graph_rows(&self, vectors: &Tensor, queries: bool) -> Tensor {
        match self.similarity {
            Similarity::Cosine => vectors.shallow_clone(),
            Similarity::Dot if queries => {
                let unit = ragtune_models::pooling::l2_normalize(vectors);
                Tensor::cat(&[unit, vectors.zeros_like().narrow(1, 0, 1)], 1)
            }
            Similarity::Dot => {
                let norms = vectors.norm_scalaropt_dim(2, [1], true);
                let max_norm = norms.max().double_value(&[]).max(1e-12);
                let scaled = vectors / max_norm;
                let ratio: Tensor = norms / max_norm;
                let extra = (ratio.square().neg() + 1.0).clamp_min(0.0).sqrt();
                Tensor::cat(&[scaled, extra], 1)
            }
        }
    }

    pub fn len(&self) -> usize {
        self.embeddings.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn similarity(&self) -> Similarity {
        self.similarity
    }

    /// The passage vectors searched, `[passages, dim]` float32 on the CPU (unit length under
    /// cosine similarity).
    pub fn embeddings(&self) -> &Tensor {
        &self.embeddings
    }

    /// The top `k` passages of each query (`[queries, dim]`), best first, by `kind` of search.
    pub fn search(&self, queries: &Tensor, k: usize, kind: SearchKind) -> Result<Vec<Vec<Hit>>> {
        match kind {
            SearchKind::Exact => self.search_exact(queries, k),
            SearchKind::Hnsw => self.search_hnsw(queries, k),
        }
    }

    /// Brute force, in blocks of queries so the score matrix stays small.
    pub fn search_exact(&self, queries: &Tensor, k: usize) -> Result<Vec<Vec<Hit>>> {
        let queries = prepare(queries, self.similarity);
        let k = k.min(self.len());
        let mut out = Vec::with_capacity(queries.size()[0] as usize);
        if k == 0 {
            out.resize(queries.size()[0] as usize, Vec::new());
            return Ok(out);
        }
        let block = 256;
        for start in (0..queries.size()[0]).step_by(block) {
            let rows = block.min((queries.size()[0] - start) as usize) as i64;
            let scores = queries.narrow(0, start, rows).matmul(&self.embeddings.tr());
            let (values, indices) = scores.topk(k as i64, 1, true, true);
            let values = tensor_rows(&values)?;
            let indices: Vec<i64> = Vec::try_from(indices.flatten(0, -1))?;
            for (row, scores) in values.into_iter().enumerate() {
                out.push(
                    scores
                        .into_iter()
                        .enumerate()
                        .map(|(j, score)| Hit {
                            index: indices[row * k + j] as usize,
                            score,
                        })
                        .collect(),
                );
            }
        }
        Ok(out)
    }

    /// Approximate search through the HNSW graph; the hits' scores are their exact similarities.
    pub fn search_hnsw(&self, queries: &Tensor, k: usize) -> Result<Vec<Vec<Hit>>> {
        let (graph, config) = self.hnsw.as_ref().ok_or_else(|| {
            RetrievalError::Invalid(
                "this index was built without HNSW; build it with DenseIndex::hnsw".into(),
            )
        })?;
        let queries = prepare(queries, self.similarity);
        let rows = tensor_rows(&self.graph_rows(&queries, true))?;
        let k = k.min(self.len());
        let ef = config.ef_search.max(k);
        let mut out = Vec::with_capacity(rows.len());
        for (row, q) in rows.iter().enumerate() {
            let found: Vec<i64> = graph
                .search(q, k, ef)
                .into_iter()
                .map(|n| n.d_id as i64)
                .collect();
            if found.is_empty() {
                out.push(Vec::new());
                continue;
            }
            let candidates = self.embeddings.index_select(0, &Tensor::from_slice(&found));
            let scores: Vec<f32> = Vec::try_from(candidates.matmul(&queries.get(row as i64)))?;
            let mut hits: Vec<Hit> = found
                .iter()
                .zip(scores)
                .map(|(&index, score)| Hit {
                    index: index as usize,
                    score,
                })
                .collect();
            hits.sort_by(|a, b| b.score.total_cmp(&a.score));
            out.push(hits);
        }
        Ok(out)
    }
}

/// Fraction of the exact top-k that the approximate top-k found, averaged over queries.
pub fn recall_vs_exact(exact: &[Vec<Hit>], approximate: &[Vec<Hit>], k: usize) -> f64 {
    if exact.is_empty() {
        return 1.0;
    }
    let per_query = exact.iter().zip(approximate).map(|(e, a)| {
        let truth: std::collections::HashSet<usize> = e.iter().take(k).map(|h| h.index).collect();
        if truth.is_empty() {
            return 1.0;
        }
        let found = a
            .iter()
            .take(k)
            .filter(|h| truth.contains(&h.index))
            .count();
        found as f64 / truth.len() as f64
    });
    per_query.sum::<f64>() / exact.len() as f64
}

fn tensor_rows(matrix: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(ragtune_models::encoder::tensor_rows(matrix)?)
}
