//! The eval stage: on the test split, every retriever (zero-shot, tuned) against every generator
//! (base, tuned), with the same questions, prompts and k in every cell; with a joint stage, its
//! retriever with the tuned generator and with its own generator. Retrieval is scored
//! against the qrels, answers against the gold answers, and each cell is compared with zero-shot
//! RAG (the first retriever with the first generator) by a paired bootstrap over questions.

use crate::config::{PipelineConfig, Stage};
use crate::record::Throughput;
use crate::stages::{self, read_splits, Done};
use crate::{PipelineError, Result};
use ragtune_eval::retrieval::{evaluate as score_run, Measure, Qrels};
use ragtune_eval::significance::paired_bootstrap;
use ragtune_generator_train::contexts::Ranking;
use ragtune_generator_train::evaluate::{evaluate_with_progress, EvalReport};
use ragtune_generator_train::setup::attach_for_generation;
use ragtune_models::llama_load::load_causal_lm;
use ragtune_retrieval::{Corpus, Retriever};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use tch::{Device, Kind};

/// The answer metrics of the 2×2, in report order.
pub const ANSWER_METRICS: [&str; 4] = ["exact_match", "f1", "rouge_l", "groundedness"];

/// A mean and its paired bootstrap interval against a baseline (None for the baseline itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compared {
    pub mean: f64,
    pub difference: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub p_value: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalRow {
    pub retriever: String,
    pub description: String,
    /// measure -> mean with its CI against the first retriever.
    pub measures: BTreeMap<String, Compared>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub retriever: String,
    pub generator: String,
    pub metrics: BTreeMap<String, Compared>,
    pub questions: usize,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub test_queries: usize,
    pub measures: Vec<String>,
    pub retrieval: Vec<RetrievalRow>,
    pub cells: Vec<Cell>,
    pub k: usize,
    pub confidence: f64,
    pub resamples: usize,
    /// A few answers of each cell, for the report.
    pub examples: Vec<serde_json::Value>,
}

fn qrels_of(ds: &ragtune_data::Dataset) -> Qrels {
    let mut qrels: Qrels = BTreeMap::new();
    for q in &ds.qrels {
        qrels
            .entry(q.query_id.clone())
            .or_default()
            .insert(q.doc_id.clone(), i64::from(q.relevance));
    }
    qrels
}

fn compare(
    config: &PipelineConfig,
    baseline: &[f64],
    values: &[f64],
    is_baseline: bool,
) -> Result<Compared> {
    let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
    if is_baseline {
        return Ok(Compared {
            mean,
            difference: None,
            ci_low: None,
            ci_high: None,
            p_value: None,
        });
    }
    let b = paired_bootstrap(
        baseline,
        values,
        config.eval.bootstrap_resamples,
        config.eval.confidence,
        config.eval.seed,
    )?;
    Ok(Compared {
        mean,
        difference: Some(b.mean_difference),
        ci_low: Some(b.ci_low),
        ci_high: Some(b.ci_high),
        p_value: Some(b.p_value),
    })
}

pub fn run(config: &PipelineConfig, device: Device) -> Result<Done> {
    let [_, _, test] = read_splits(config)?;
    let generator = config.generator.as_ref();
    let k = generator.map_or(10, |g| g.contexts.k);
    let mut measures = vec![Measure::Ndcg(10), Measure::Mrr(10)];
    let mut cutoffs = config.eval.recall_at.clone();
    cutoffs.push(k);
    cutoffs.sort_unstable();
    cutoffs.dedup();
    measures.extend(cutoffs.iter().map(|&c| Measure::Recall(c)));
    let depth = cutoffs.iter().copied().max().unwrap_or(10).max(10);
    let qrels = qrels_of(&test);
    let judged: Vec<&ragtune_data::Query> = test
        .queries
        .iter()
        .filter(|q| qrels.contains_key(&q.query_id))
        .collect();
    if judged.is_empty() {
        return Err(PipelineError::Invalid(
            "the test split has no judged queries (qrels) to evaluate retrieval on".into(),
        ));
    }

    // 1. Retrieval, per retriever; the retrievers stay loaded for the answers.
    let mut retrievers: Vec<(&str, Box<dyn Retriever>)> = Vec::new();
    let mut configs = stages::retrieval_configs(config);
    if let Some(joint) = stages::joint_retrieval(config) {
        configs.push(("joint", joint));
    }
    for (label, retrieval) in configs {
        retrievers.push((
            label,
            retrieval.build(Corpus::new(test.corpus.clone()), device)?,
        ));
    }
    let ids: Vec<&str> = judged.iter().map(|q| q.query_id.as_str()).collect();
    let texts: Vec<&str> = judged.iter().map(|q| q.text.as_str()).collect();
    let mut per_query: Vec<BTreeMap<String, Vec<f64>>> = Vec::new();
    for (_, retriever) in &retrievers {
        let hits = retriever.search(&texts, depth)?;
        let run = ragtune_retrieval::to_run(retriever.corpus(), &ids, &hits);
        let report = score_run(&run, &qrels, &measures)?;
        let mut values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for id in &ids {
            for m in &report.measures {
                let v = report.per_query.get(*id).and_then(|r| r.get(m)).copied();
                values.entry(m.clone()).or_default().push(v.unwrap_or(0.0));
            }
        }
        per_query.push(values);
    }
    let measure_names: Vec<String> = measures.iter().map(|m| m.to_string()).collect();
    let mut retrieval = Vec::new();
    for (i, (label, retriever)) in retrievers.iter().enumerate() {
        let mut row = BTreeMap::new();
        for m in &measure_names {
            row.insert(
                m.clone(),
                compare(config, &per_query[0][m], &per_query[i][m], i == 0)?,
            );
        }
        retrieval.push(RetrievalRow {
            retriever: label.to_string(),
            description: retriever.describe(),
            measures: row,
        });
    }

    // 2. Answers, per generator then per retriever: the tuned adapter is attached once.
    let mut cells = Vec::new();
    let mut examples = Vec::new();
    let mut answered = 0usize;
    let started = std::time::Instant::now();
    if let Some(g) = generator {
        if test.qa.is_empty() {
            return Err(PipelineError::Invalid(
                "the test split has no qa table: the generator cannot be evaluated".into(),
            ));
        }
        let mut settings = g.eval.clone();
        settings.limit = config.eval.questions.or(settings.limit);
        let tuned = stages::tuned_generator(config);
        let mut generators: Vec<(&str, Option<std::path::PathBuf>)> = vec![("base", None)];
        if let Some(t) = &tuned {
            generators.push(("tuned", Some(t.clone())));
        }
        if let Some(j) = stages::joint_adapter(config) {
            generators.push(("joint", Some(j)));
        }
        let last_stage_by_stage = if tuned.is_some() { "tuned" } else { "base" };
        let mut reports: Vec<(String, String, EvalReport, f64)> = Vec::new();
        for (generator_label, adapter) in &generators {
            let mut lm = match adapter {
                Some(path) if path.join("config.json").is_file() => {
                    load_causal_lm(path, device, Kind::Float)?
                }
                _ => load_causal_lm(&g.model, device, Kind::Float)?,
            };
            if let Some(path) = adapter
                .as_ref()
                .filter(|p| !p.join("config.json").is_file())
            {
                attach_for_generation(&mut lm, path, device)?;
            }
            for (retriever_label, retriever) in &retrievers {
                // The joint retriever is paired with the stage-by-stage generator and the joint
                // one; the joint generator only with the joint retriever.
                let wanted = match (*retriever_label, *generator_label) {
                    (_, "joint") => *retriever_label == "joint",
                    ("joint", g) => g == last_stage_by_stage,
                    _ => true,
                };
                if !wanted {
                    continue;
                }
                let cell_started = std::time::Instant::now();
                let ranking = Ranking::for_qa(retriever.as_ref(), &test.qa, k)?;
                let report = evaluate_with_progress(
                    &lm,
                    &test.qa,
                    &ranking,
                    &g.prompt,
                    k,
                    &settings,
                    &format!(
                        "questions ({retriever_label} retriever, {generator_label} generator)"
                    ),
                )?;
                answered += report.examples;
                reports.push((
                    retriever_label.to_string(),
                    generator_label.to_string(),
                    report,
                    cell_started.elapsed().as_secs_f64(),
                ));
            }
        }
        let baseline = reports[0].2.per_question.clone();
        for (i, (retriever, generator, report, seconds)) in reports.iter().enumerate() {
            let mut metrics = BTreeMap::new();
            for m in ANSWER_METRICS {
                metrics.insert(
                    m.to_string(),
                    compare(config, &baseline[m], &report.per_question[m], i == 0)?,
                );
            }
            cells.push(Cell {
                retriever: retriever.clone(),
                generator: generator.clone(),
                metrics,
                questions: report.examples,
                seconds: *seconds,
            });
            for p in report.predictions.iter().take(3) {
                examples.push(json!({"retriever": retriever, "generator": generator,
                    "question": p.question, "prediction": p.prediction, "gold": p.answers.first()}));
            }
        }
        let predictions: Vec<_> = reports
            .iter()
            .map(|(r, g, report, _)| json!({"retriever": r, "generator": g, "predictions": report.predictions}))
            .collect();
        let dir = config.stage_dir(Stage::Eval);
        std::fs::create_dir_all(&dir).map_err(|e| PipelineError::io(&dir, e))?;
        ragtune_models::checkpoint::atomic_write(
            &dir.join("predictions.json"),
            serde_json::to_string_pretty(&predictions)
                .expect("predictions serialize")
                .as_bytes(),
        )?;
    }
    let results = Results {
        test_queries: judged.len(),
        measures: measure_names,
        retrieval,
        cells,
        k,
        confidence: config.eval.confidence,
        resamples: config.eval.bootstrap_resamples,
        examples,
    };
    let seconds = started.elapsed().as_secs_f64();
    Ok(Done {
        outputs: serde_json::to_value(&results).expect("results serialize"),
        throughput: (answered > 0).then(|| Throughput {
            value: answered as f64 / seconds.max(1e-9),
            unit: "answers/s".into(),
        }),
    })
}
