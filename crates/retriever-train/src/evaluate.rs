//! Full-corpus retrieval evaluation of a bi-encoder with the eval crate's pytrec_eval-compatible
//! measures, by exact search or HNSW, and the agreement of HNSW with exact search.

use crate::index::{recall_vs_exact, DenseIndex, Hit, HnswConfig, SearchKind};
use crate::mining::passage_text;
use crate::model::Embedder;
use crate::Result;
use ragtune_data::{Doc, Qrel, Query};
use ragtune_eval::retrieval::{evaluate, Measure, Qrels, RetrievalReport, Run};
use std::collections::BTreeMap;

/// Passages retrieved per query: enough for Recall@100.
pub const RUN_DEPTH: usize = 100;

/// nDCG@10, MRR@10, Recall@1/10/100 and MAP (over the top [`RUN_DEPTH`]).
pub fn measures() -> Vec<Measure> {
    vec![
        Measure::Ndcg(10),
        Measure::Mrr(10),
        Measure::Recall(1),
        Measure::Recall(10),
        Measure::Recall(100),
        Measure::Map,
    ]
}

/// Everything one evaluation produced.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub exact: RetrievalReport,
    /// HNSW results and their recall@10 / recall@100 against exact search, when asked for.
    pub hnsw: Option<(RetrievalReport, f64, f64)>,
}

/// The corpus embedded once, reusable across query sets.
pub struct EncodedCorpus<'a> {
    pub docs: &'a [Doc],
    pub index: DenseIndex,
}

pub fn encode_corpus<'a>(
    model: &dyn Embedder,
    docs: &'a [Doc],
    hnsw: Option<HnswConfig>,
) -> Result<EncodedCorpus<'a>> {
    let texts: Vec<String> = docs.iter().map(passage_text).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let embeddings = model.encode_passages(&refs)?;
    let index = match hnsw {
        Some(config) => DenseIndex::hnsw(&embeddings, model.similarity(), config)?,
        None => DenseIndex::exact(&embeddings, model.similarity())?,
    };
    Ok(EncodedCorpus { docs, index })
}

fn to_qrels(qrels: &[Qrel]) -> Qrels {
    let mut out: Qrels = BTreeMap::new();
    for q in qrels {
        out.entry(q.query_id.clone())
            .or_default()
            .insert(q.doc_id.clone(), q.relevance as i64);
    }
    out
}

fn to_run(queries: &[Query], docs: &[Doc], hits: &[Vec<Hit>]) -> Run {
    queries
        .iter()
        .zip(hits)
        .map(|(q, hits)| {
            let docs = hits
                .iter()
                .map(|h| (docs[h.index].doc_id.clone(), h.score as f64))
                .collect();
            (q.query_id.clone(), docs)
        })
        .collect()
}

/// Evaluates `queries` against the encoded corpus: exact search always, HNSW too when the corpus
/// index has a graph.
pub fn evaluate_queries(
    model: &dyn Embedder,
    corpus: &EncodedCorpus,
    queries: &[Query],
    qrels: &[Qrel],
    with_hnsw: bool,
) -> Result<Evaluation> {
    let judged: std::collections::HashSet<&str> =
        qrels.iter().map(|q| q.query_id.as_str()).collect();
    let queries: Vec<Query> = queries
        .iter()
        .filter(|q| judged.contains(q.query_id.as_str()))
        .cloned()
        .collect();
    let texts: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();
    let embeddings = model.encode_queries(&texts)?;
    let exact_hits = corpus
        .index
        .search(&embeddings, RUN_DEPTH, SearchKind::Exact)?;
    let hnsw_hits = if with_hnsw {
        Some(
            corpus
                .index
                .search(&embeddings, RUN_DEPTH, SearchKind::Hnsw)?,
        )
    } else {
        None
    };
    evaluate_hits(
        &queries,
        corpus.docs,
        qrels,
        &exact_hits,
        hnsw_hits.as_deref(),
    )
}

/// The measures of ranked hits (`hits[i]` for `queries[i]`, indices into `docs`) from any
/// retriever: exact search, and approximate search with its recall against exact when given.
pub fn evaluate_hits(
    queries: &[Query],
    docs: &[Doc],
    qrels: &[Qrel],
    exact_hits: &[Vec<Hit>],
    approximate_hits: Option<&[Vec<Hit>]>,
) -> Result<Evaluation> {
    let qrels = to_qrels(qrels);
    let measures = measures();
    let exact = evaluate(&to_run(queries, docs, exact_hits), &qrels, &measures)?;
    let hnsw = match approximate_hits {
        Some(hits) => {
            let report = evaluate(&to_run(queries, docs, hits), &qrels, &measures)?;
            Some((
                report,
                recall_vs_exact(exact_hits, hits, 10),
                recall_vs_exact(exact_hits, hits, RUN_DEPTH),
            ))
        }
        None => None,
    };
    Ok(Evaluation { exact, hnsw })
}
