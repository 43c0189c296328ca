//! What a joint run watches: after every step, retrieval on the validation split, answers on some
//! validation questions, and the signs of retrieval collapse on the training questions (the
//! entropy of the retriever's distribution, how many distinct passages the questions retrieve,
//! how often the gold passage is in the top-k). At the end, the starting and the final system on
//! the test split, with paired bootstrap intervals.

use crate::config::JointConfig;
use crate::losses::retriever_entropy;
use crate::Result;
use ragtune_data::{Dataset, QaExample};
use ragtune_eval::retrieval::{evaluate as score_run, Measure, Qrels};
use ragtune_eval::significance::paired_bootstrap;
use ragtune_generator_train::contexts::Ranking;
use ragtune_generator_train::evaluate::evaluate_with_progress;
use ragtune_models::llama_load::CausalLm;
use ragtune_retrieval::{Hit, Retriever};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use tch::Tensor;

/// The answer metrics reported, in order.
pub const ANSWER_METRICS: [&str; 3] = ["exact_match", "f1", "rouge_l"];

/// Retrieval collapse shows up here first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Watch {
    pub questions: usize,
    pub k: usize,
    /// Mean entropy (nats) of softmax(s / τ_r) over each question's top-k; ln k is uniform.
    pub entropy: f64,
    /// Distinct passages in the union of the questions' top-k, and the corpus size.
    pub distinct_passages: usize,
    pub corpus_passages: usize,
    /// Share of questions with a gold passage in their top-k.
    pub gold_in_top_k: f64,
}

/// The watch measures of `hits` (each question's top-k, best first) given each question's gold
/// passage indices.
pub fn watch(hits: &[Vec<Hit>], gold: &[Vec<usize>], temperature: f64, corpus: usize) -> Watch {
    let k = hits.iter().map(Vec::len).max().unwrap_or(0);
    let mut distinct = HashSet::new();
    let mut with_gold = 0usize;
    let mut entropy = 0.0;
    for (row, gold) in hits.iter().zip(gold) {
        distinct.extend(row.iter().map(|h| h.index));
        if row.iter().any(|h| gold.contains(&h.index)) {
            with_gold += 1;
        }
        if !row.is_empty() {
            let scores: Vec<f32> = row.iter().map(|h| h.score).collect();
            let scores = Tensor::from_slice(&scores).unsqueeze(0);
            entropy += retriever_entropy(&scores, temperature).double_value(&[0]);
        }
    }
    let n = hits.len().max(1) as f64;
    Watch {
        questions: hits.len(),
        k,
        entropy: entropy / n,
        distinct_passages: distinct.len(),
        corpus_passages: corpus,
        gold_in_top_k: with_gold as f64 / n,
    }
}

/// One point of the trajectory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// `start`, `round 1 retriever`, `round 1 generator`, `rag-sequence`, ...
    pub label: String,
    /// Validation retrieval means by measure.
    pub retrieval: BTreeMap<String, f64>,
    pub watch: Watch,
    /// Validation answer metrics (empty when `eval.questions` is unset).
    pub answers: BTreeMap<String, f64>,
    pub answered: usize,
    pub seconds: f64,
}

fn qrels_of(ds: &Dataset) -> Qrels {
    let mut qrels: Qrels = BTreeMap::new();
    for q in &ds.qrels {
        qrels
            .entry(q.query_id.clone())
            .or_default()
            .insert(q.doc_id.clone(), i64::from(q.relevance));
    }
    qrels
}

/// Per-query values of `measures` on the judged queries of `split`, in query order, by measure.
pub fn retrieval_per_query(
    retriever: &dyn Retriever,
    split: &Dataset,
    measures: &[Measure],
) -> Result<BTreeMap<String, Vec<f64>>> {
    let qrels = qrels_of(split);
    let judged: Vec<&ragtune_data::Query> = split
        .queries
        .iter()
        .filter(|q| qrels.contains_key(&q.query_id))
        .collect();
    let ids: Vec<&str> = judged.iter().map(|q| q.query_id.as_str()).collect();
    let texts: Vec<&str> = judged.iter().map(|q| q.text.as_str()).collect();
    let depth = measures
        .iter()
        .map(|m| match m {
            Measure::Recall(k)
            | Measure::Precision(k)
            | Measure::Mrr(k)
            | Measure::Ndcg(k)
            | Measure::Hit(k)
            | Measure::MapAt(k) => *k,
            Measure::Map => 100,
        })
        .max()
        .unwrap_or(10);
    let hits = retriever.search(&texts, depth)?;
    let run = ragtune_retrieval::to_run(retriever.corpus(), &ids, &hits);
    let report = score_run(&run, &qrels, measures)?;
    let mut values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for id in &ids {
        for m in &report.measures {
            let v = report.per_query.get(*id).and_then(|r| r.get(m)).copied();
            values.entry(m.clone()).or_default().push(v.unwrap_or(0.0));
        }
    }
    Ok(values)
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// Evaluates the system as it stands: the fixed parts of every evaluation, set up once.
pub struct Evaluator<'a> {
    pub config: &'a JointConfig,
    pub val: &'a Dataset,
    /// The training questions and their gold passages (corpus indices), for the watch.
    pub train_qa: &'a [QaExample],
    pub train_gold: Vec<Vec<usize>>,
    pub measures: Vec<Measure>,
}

impl<'a> Evaluator<'a> {
    pub fn new(
        config: &'a JointConfig,
        val: &'a Dataset,
        train_qa: &'a [QaExample],
        retriever: &dyn Retriever,
    ) -> Result<Self> {
        let corpus = retriever.corpus();
        let train_gold = train_qa
            .iter()
            .map(|q| {
                q.gold_doc_ids
                    .iter()
                    .filter_map(|id| corpus.position(id))
                    .collect()
            })
            .collect();
        Ok(Self {
            config,
            val,
            train_qa,
            train_gold,
            measures: measures(config)?,
        })
    }

    /// The watch measures of the training questions' top-k under `retriever` now.
    pub fn watch(&self, retriever: &dyn Retriever) -> Result<Watch> {
        let questions: Vec<&str> = self.train_qa.iter().map(|q| q.question.as_str()).collect();
        let hits = retriever.search(&questions, self.watch_k())?;
        Ok(watch(
            &hits,
            &self.train_gold,
            self.config.retriever.temperature,
            retriever.corpus().len(),
        ))
    }

    fn watch_k(&self) -> usize {
        match self.config.method {
            crate::config::Method::RagSequence => self.config.rag_sequence.k,
            _ => self.config.lsr.k,
        }
    }

    /// Validation retrieval means by measure (also what the trainers evaluate between steps).
    pub fn validation_retrieval(&self, retriever: &dyn Retriever) -> Result<BTreeMap<String, f64>> {
        Ok(retrieval_per_query(retriever, self.val, &self.measures)?
            .into_iter()
            .map(|(m, v)| (m, mean(&v)))
            .collect())
    }

    /// A trajectory point: validation retrieval, the watch, and (when configured) validation answers.
    pub fn point(&self, label: &str, retriever: &dyn Retriever, lm: &CausalLm) -> Result<Point> {
        let started = std::time::Instant::now();
        let retrieval = self.validation_retrieval(retriever)?;
        let watch = self.watch(retriever)?;
        let mut answers = BTreeMap::new();
        let mut answered = 0;
        if let (Some(n), false) = (self.config.eval.questions, self.val.qa.is_empty()) {
            if n > 0 {
                let g = self.config.generator()?;
                let mut settings = g.eval.clone();
                settings.limit = Some(n);
                let ranking = Ranking::for_qa(retriever, &self.val.qa, g.contexts.k)?;
                let report = evaluate_with_progress(
                    lm,
                    &self.val.qa,
                    &ranking,
                    &g.prompt,
                    g.contexts.k,
                    &settings,
                    &format!("validation questions ({label})"),
                )?;
                answered = report.examples;
                for m in ANSWER_METRICS {
                    if let Some(v) = report.metrics.get(m) {
                        answers.insert(m.to_string(), *v);
                    }
                }
            }
        }
        Ok(Point {
            label: label.to_string(),
            retrieval,
            watch,
            answers,
            answered,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// nDCG@10, MRR@10, Recall@10 and Recall@k for the LSR, RAG-sequence and generator k.
pub fn measures(config: &JointConfig) -> Result<Vec<Measure>> {
    let mut cutoffs = vec![10, config.lsr.k, config.generator()?.contexts.k];
    if config.method == crate::config::Method::RagSequence {
        cutoffs.push(config.rag_sequence.k);
    }
    cutoffs.sort_unstable();
    cutoffs.dedup();
    let mut measures = vec![Measure::Ndcg(10), Measure::Mrr(10)];
    measures.extend(cutoffs.into_iter().map(Measure::Recall));
    Ok(measures)
}

/// A start-versus-end comparison on one measure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub start: f64,
    pub end: f64,
    pub difference: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub p_value: f64,
}

/// Paired bootstrap of `end − start` over the same queries or questions.
pub fn compare(config: &JointConfig, start: &[f64], end: &[f64]) -> Result<Comparison> {
    let b = paired_bootstrap(
        start,
        end,
        config.eval.bootstrap_resamples,
        config.eval.confidence,
        config.eval.seed,
    )?;
    Ok(Comparison {
        start: b.mean_a,
        end: b.mean_b,
        difference: b.mean_difference,
        ci_low: b.ci_low,
        ci_high: b.ci_high,
        p_value: b.p_value,
    })
}
