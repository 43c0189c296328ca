//! Hard-negative mining: encode the corpus (length-bucketed batches), search it for each training
//! query, and keep passages from a rank window that are not known or likely positives.
//!
//! False negatives are the main risk of mined negatives (RocketQA, Qu et al., 2021): a passage
//! that answers the query but is not in the qrels. Two filters drop them: every judged-relevant
//! passage of the query, and any candidate scoring above `false_negative_ratio` × the positive's
//! score (sentence-transformers' `relative_margin` of 0.05 is a ratio of 0.95).

use crate::index::{DenseIndex, HnswConfig, SearchKind};
use crate::model::Embedder;
use crate::{Result, RetrieverError};
use ragtune_data::{Doc, MiningProvenance, Negative, Qrel, Query, Triplet};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NegativeSampling {
    /// The highest-ranked candidates that pass the filters.
    Top,
    /// A seeded random sample of the candidates that pass the filters.
    Random,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MiningConfig {
    /// Negatives per (query, positive) pair.
    pub num_negatives: usize,
    /// Candidate ranks `[rank_min, rank_max)` (from 0) among the retrieved passages, known
    /// positives removed first.
    pub rank_min: usize,
    pub rank_max: usize,
    /// Drop a candidate scoring above this × its positive's score (a likely false negative).
    pub false_negative_ratio: f32,
    pub sampling: NegativeSampling,
    pub seed: u64,
    pub search: SearchKind,
    pub hnsw: HnswConfig,
}

impl Default for MiningConfig {
    fn default() -> Self {
        Self {
            num_negatives: 1,
            rank_min: 0,
            // A wide window: the FAQ's hardest queries have every close candidate within 5% of the positive.
            rank_max: 100,
            false_negative_ratio: 0.95,
            sampling: NegativeSampling::Top,
            seed: 42,
            search: SearchKind::Hnsw,
            hnsw: HnswConfig::default(),
        }
    }
}

/// What mining did, for the run's report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MiningReport {
    pub pairs: usize,
    pub triplets_with_negatives: usize,
    pub pairs_without_negatives: usize,
    pub negatives: usize,
    pub dropped_known_positives: usize,
    pub dropped_likely_false_negatives: usize,
}

pub use ragtune_retrieval::passage_text;

/// Mines negatives for every (query, relevant passage) pair of `qrels`. Pairs whose query or
/// passage is missing are an error naming the id. Triplets come out in qrels order; a pair whose
/// filters leave no candidate keeps zero negatives (it still trains with in-batch negatives).
pub fn mine(
    model: &dyn Embedder,
    corpus: &[Doc],
    queries: &[Query],
    qrels: &[Qrel],
    config: &MiningConfig,
    model_name: &str,
) -> Result<(Vec<Triplet>, MiningReport)> {
    if config.rank_max <= config.rank_min || config.num_negatives == 0 {
        return Err(RetrieverError::Invalid(format!(
            "mining: need rank_min < rank_max and num_negatives >= 1 (got {}..{}, {})",
            config.rank_min, config.rank_max, config.num_negatives
        )));
    }
    let doc_index: HashMap<&str, usize> = corpus
        .iter()
        .enumerate()
        .map(|(i, d)| (d.doc_id.as_str(), i))
        .collect();
    let query_index: HashMap<&str, usize> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| (q.query_id.as_str(), i))
        .collect();
    let mut positives: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (row, qrel) in qrels.iter().enumerate().filter(|(_, q)| q.relevance > 0) {
        if !query_index.contains_key(qrel.query_id.as_str()) {
            return Err(RetrieverError::Invalid(format!(
                "qrels row {row}: query `{}` is not among the queries",
                qrel.query_id
            )));
        }
        let doc = *doc_index.get(qrel.doc_id.as_str()).ok_or_else(|| {
            RetrieverError::Invalid(format!(
                "qrels row {row}: doc `{}` is not in the corpus",
                qrel.doc_id
            ))
        })?;
        positives
            .entry(qrel.query_id.as_str())
            .or_default()
            .push(doc);
    }

    let passage_texts: Vec<String> = corpus.iter().map(passage_text).collect();
    let passage_refs: Vec<&str> = passage_texts.iter().map(String::as_str).collect();
    let passage_embeddings = model.encode_passages(&passage_refs)?;
    let index = match config.search {
        SearchKind::Exact => DenseIndex::exact(&passage_embeddings, model.similarity())?,
        SearchKind::Hnsw => DenseIndex::hnsw(&passage_embeddings, model.similarity(), config.hnsw)?,
    };
    let mined_ids: Vec<&str> = positives.keys().copied().collect();
    let query_texts: Vec<&str> = mined_ids
        .iter()
        .map(|id| queries[query_index[id]].text.as_str())
        .collect();
    let query_embeddings = model.encode_queries(&query_texts)?;
    let max_positives = positives.values().map(Vec::len).max().unwrap_or(0);
    let hits = index.search(
        &query_embeddings,
        config.rank_max + max_positives,
        config.search,
    )?;

    let parameters = serde_json::to_string(config).expect("config serializes");
    let provenance = MiningProvenance {
        model: Some(model_name.to_string()),
        index: Some(match config.search {
            SearchKind::Exact => "exact".to_string(),
            SearchKind::Hnsw => format!(
                "hnsw:m={},ef_construction={},ef_search={}",
                config.hnsw.m, config.hnsw.ef_construction, config.hnsw.ef_search
            ),
        }),
        parameters: Some(parameters),
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    let mut report = MiningReport::default();
    let mut per_query: HashMap<&str, Vec<Triplet>> = HashMap::new();
    for (row, query_id) in mined_ids.iter().enumerate() {
        let known: HashSet<usize> = positives[query_id].iter().copied().collect();
        let query = &queries[query_index[query_id]];
        let candidates: Vec<_> = hits[row]
            .iter()
            .filter(|h| !known.contains(&h.index))
            .collect();
        report.dropped_known_positives += hits[row].len() - candidates.len();
        let window = &candidates
            [config.rank_min.min(candidates.len())..config.rank_max.min(candidates.len())];
        let query_embedding = query_embeddings.narrow(0, row as i64, 1);
        for &positive in &positives[query_id] {
            let positive_score = model
                .similarity()
                .matrix(
                    &query_embedding,
                    &passage_embeddings.narrow(0, positive as i64, 1),
                )
                .double_value(&[0, 0]) as f32;
            let threshold = config.false_negative_ratio * positive_score;
            let mut kept: Vec<_> = window
                .iter()
                .filter(|h| h.score <= threshold)
                .copied()
                .collect();
            report.dropped_likely_false_negatives += window.len() - kept.len();
            if config.sampling == NegativeSampling::Random {
                kept.shuffle(&mut rng);
            }
            kept.truncate(config.num_negatives);
            report.pairs += 1;
            report.negatives += kept.len();
            if kept.is_empty() {
                report.pairs_without_negatives += 1;
            } else {
                report.triplets_with_negatives += 1;
            }
            per_query.entry(query_id).or_default().push(Triplet {
                query_id: query.query_id.clone(),
                query: query.text.clone(),
                positive_id: corpus[positive].doc_id.clone(),
                positive_text: passage_texts[positive].clone(),
                negatives: kept
                    .iter()
                    .map(|h| Negative {
                        doc_id: corpus[h.index].doc_id.clone(),
                        text: passage_texts[h.index].clone(),
                        score: h.score,
                    })
                    .collect(),
                provenance: provenance.clone(),
                positive_score: Some(positive_score),
                scored_by: Some(model_name.to_string()),
            });
        }
    }
    // Back to qrels order, so the output does not depend on hashing.
    let mut triplets = Vec::with_capacity(report.pairs);
    let mut emitted: HashSet<&str> = HashSet::new();
    for qrel in qrels.iter().filter(|q| q.relevance > 0) {
        if emitted.insert(qrel.query_id.as_str()) {
            if let Some(rows) = per_query.remove(qrel.query_id.as_str()) {
                triplets.extend(rows);
            }
        }
    }
    Ok((triplets, report))
}

/// Scores (query, passage) pairs: a teacher for distillation. Bi-encoders score with their
/// similarity of pooled embeddings, ColBERT with MaxSim.
pub trait PairScorer {
    /// One score per pair, `queries[i]` against `passages[i]`.
    fn score_pairs(&self, queries: &[&str], passages: &[&str]) -> Result<Vec<f32>>;
}

/// Pair scores of any single-vector embedder: each distinct text is encoded once.
pub fn embedder_pair_scores(
    model: &dyn Embedder,
    queries: &[&str],
    passages: &[&str],
) -> Result<Vec<f32>> {
    if queries.len() != passages.len() {
        return Err(RetrieverError::Invalid(format!(
            "scoring pairs: {} queries but {} passages",
            queries.len(),
            passages.len()
        )));
    }
    fn distinct<'t>(texts: &[&'t str]) -> (Vec<&'t str>, Vec<i64>) {
        let mut position: HashMap<&str, i64> = HashMap::new();
        let mut unique: Vec<&str> = Vec::new();
        let rows: Vec<i64> = texts
            .iter()
            .map(|t| {
                *position.entry(t).or_insert_with(|| {
                    unique.push(t);
                    unique.len() as i64 - 1
                })
            })
            .collect();
        (unique, rows)
    }
    let (unique_queries, query_rows) = distinct(queries);
    let (unique_passages, passage_rows) = distinct(passages);
    let q = model.encode_queries(&unique_queries)?;
    let p = model.encode_passages(&unique_passages)?;
    let device = q.device();
    let (q, p) = match model.similarity() {
        crate::losses::Similarity::Cosine => (
            ragtune_models::pooling::l2_normalize(&q.to_kind(tch::Kind::Float)),
            ragtune_models::pooling::l2_normalize(&p.to_kind(tch::Kind::Float)),
        ),
        crate::losses::Similarity::Dot => {
            (q.to_kind(tch::Kind::Float), p.to_kind(tch::Kind::Float))
        }
    };
    let q = q.index_select(0, &tch::Tensor::from_slice(&query_rows).to_device(device));
    let p = p.index_select(0, &tch::Tensor::from_slice(&passage_rows).to_device(device));
    let scores = (q * p).sum_dim_intlist([1i64].as_slice(), false, tch::Kind::Float);
    Ok(Vec::<f32>::try_from(scores.to_device(tch::Device::Cpu))?)
}

impl PairScorer for crate::model::BiEncoder {
    fn score_pairs(&self, queries: &[&str], passages: &[&str]) -> Result<Vec<f32>> {
        embedder_pair_scores(self, queries, passages)
    }
}

/// What rescoring did, for the command's output.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScoringReport {
    pub triplets: usize,
    pub pairs: usize,
    /// Mean teacher margin (positive minus negative) and how often the teacher ranks the positive
    /// above the negative: a quick sanity check of the teacher on these triplets.
    pub mean_margin: f64,
    pub positive_above_negative: f64,
}

/// Replaces the scores of every triplet (`positive_score` and each negative's `score`) with the
/// teacher's, and sets `scored_by` to `teacher_name`. Pairs are scored in chunks of `chunk` rows.
pub fn score_triplets(
    teacher: &dyn PairScorer,
    triplets: &mut [Triplet],
    teacher_name: &str,
    chunk: usize,
) -> Result<ScoringReport> {
    let mut pairs: Vec<(usize, Option<usize>)> = Vec::new();
    for (i, t) in triplets.iter().enumerate() {
        pairs.push((i, None));
        pairs.extend((0..t.negatives.len()).map(|j| (i, Some(j))));
    }
    let mut scores = Vec::with_capacity(pairs.len());
    for block in pairs.chunks(chunk.max(1)) {
        let queries: Vec<&str> = block
            .iter()
            .map(|&(i, _)| triplets[i].query.as_str())
            .collect();
        let passages: Vec<&str> = block
            .iter()
            .map(|&(i, j)| match j {
                None => triplets[i].positive_text.as_str(),
                Some(j) => triplets[i].negatives[j].text.as_str(),
            })
            .collect();
        scores.extend(teacher.score_pairs(&queries, &passages)?);
    }
    let (mut margin_sum, mut above, mut margins) = (0.0, 0usize, 0usize);
    for (&(i, j), score) in pairs.iter().zip(scores) {
        let t = &mut triplets[i];
        match j {
            None => t.positive_score = Some(score),
            Some(j) => {
                t.negatives[j].score = score;
                let margin = (t.positive_score.unwrap_or(f32::NAN) - score) as f64;
                margin_sum += margin;
                above += usize::from(margin > 0.0);
                margins += 1;
            }
        }
        t.scored_by = Some(teacher_name.to_string());
    }
    Ok(ScoringReport {
        triplets: triplets.len(),
        pairs: pairs.len(),
        mean_margin: margin_sum / margins.max(1) as f64,
        positive_above_negative: above as f64 / margins.max(1) as f64,
    })
}
