//! Retrievers side by side on one split: each alone, fused, and reranked by a cross-encoder, with
//! paired bootstrap intervals against a baseline row (`ragtune retrieval compare`).
//!
//! The recipe, top to bottom:
//! 1. Read the evaluated split (its corpus, judged queries and qrels) and, when a hybrid asks for
//!    a weight sweep, the validation split.
//! 2. Build each named retriever from its `[retrieval]` table through the one retrieval interface.
//!    A hybrid with `sweep = true` gets its fusion weights from a sweep on validation first.
//! 3. Search every judged query once, deep enough for the measures and the reranker.
//! 4. With `[rerank]`, the cross-encoder reorders each retriever's top k: one more row each.
//! 5. Score each row per query, compare it with the baseline by a paired bootstrap, and write
//!    `summary.json` and `report.{html,md,json}` under `runs/<name>/`.

use crate::end_to_end::Compared;
use crate::{PipelineError, Result};
use ragtune_data::Dataset;
use ragtune_eval::retrieval::{evaluate as score_run, Measure, Qrels};
use ragtune_eval::significance::paired_bootstrap;
use ragtune_models::cross_encoder::{CrossEncoder, HeadInit};
use ragtune_report::{Block, Cell, Interval, IntervalChart, Report, Section, Table};
use ragtune_retrieval::hybrid::{sweep_weights, SweepPoint};
use ragtune_retrieval::rerank::{rerank_hits, RerankConfig};
use ragtune_retrieval::{Corpus, Hit, HybridRetriever, RetrievalConfig, Retriever};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind};

/// `configs/retrieval-*.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareConfig {
    pub name: String,
    #[serde(default = "default_runs_dir")]
    pub runs_dir: PathBuf,
    /// A dataset folder with split subfolders (`ragtune data split`, a pipeline's `data/`).
    pub data: PathBuf,
    /// The split evaluated.
    #[serde(default = "default_split")]
    pub split: String,
    /// The split weight sweeps run on.
    #[serde(default = "default_validation")]
    pub validation: String,
    /// The row every other row is compared with.
    pub baseline: String,
    /// Measures reported, in order (`ndcg@10`, `recall@100`, ...).
    #[serde(default = "default_measures")]
    pub measures: Vec<String>,
    pub retrievers: Vec<NamedRetriever>,
    /// When set, each retriever is also reported reranked by this cross-encoder.
    pub rerank: Option<RerankConfig>,
    #[serde(default)]
    pub sweep: SweepConfig,
    #[serde(default = "default_resamples")]
    pub bootstrap_resamples: usize,
    #[serde(default = "default_confidence")]
    pub confidence: f64,
    #[serde(default)]
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedRetriever {
    pub name: String,
    pub retrieval: RetrievalConfig,
    /// For a hybrid of two retrievers: choose its weights by the sweep on validation.
    #[serde(default)]
    pub sweep: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SweepConfig {
    /// The first retriever's weight w (the second's is 1 − w).
    pub grid: Vec<f64>,
    /// What the sweep maximises.
    pub measure: String,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            grid: (0..=10).map(|i| i as f64 / 10.0).collect(),
            measure: "ndcg@10".into(),
        }
    }
}

fn default_runs_dir() -> PathBuf {
    PathBuf::from("runs")
}
fn default_split() -> String {
    "test".into()
}
fn default_validation() -> String {
    "val".into()
}
fn default_measures() -> Vec<String> {
    ["ndcg@10", "recall@10", "recall@100", "mrr@10"]
        .map(String::from)
        .to_vec()
}
fn default_resamples() -> usize {
    2000
}
fn default_confidence() -> f64 {
    0.95
}

impl CompareConfig {
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| PipelineError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let mut value: toml::Value = toml::from_str(&text)
            .map_err(|e| PipelineError::Config(format!("{}: {e}", path.display())))?;
        for o in overrides {
            ragtune_trainer::config_errors::apply_override(&mut value, o)
                .map_err(|e| PipelineError::Config(format!("{}: {e}", path.display())))?;
        }
        let config: CompareConfig = value
            .try_into()
            .map_err(|e| PipelineError::Config(format!("{}: {e}", path.display())))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(PipelineError::Config(m));
        if self.retrievers.is_empty() {
            return bad("retrievers: list at least one [[retrievers]] table".into());
        }
        let mut names = std::collections::HashSet::new();
        for r in &self.retrievers {
            if !names.insert(r.name.as_str()) {
                return bad(format!("retrievers: the name `{}` is used twice", r.name));
            }
            if r.sweep
                && !matches!(&r.retrieval, RetrievalConfig::Hybrid(h) if h.retrievers.len() == 2)
            {
                return bad(format!(
                    "retrievers `{}`: sweep = true needs a hybrid of exactly two retrievers",
                    r.name
                ));
            }
        }
        if !names.contains(self.baseline.as_str()) {
            return bad(format!(
                "baseline `{}` is none of the retrievers ({})",
                self.baseline,
                self.retrievers
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for m in self.measures.iter().chain([&self.sweep.measure]) {
            Measure::parse(m).map_err(|e| PipelineError::Config(format!("measures: {e}")))?;
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) || self.bootstrap_resamples == 0 {
            return bad(format!(
                "confidence must lie in (0, 1) and bootstrap_resamples be >= 1 (got {}, {})",
                self.confidence, self.bootstrap_resamples
            ));
        }
        Ok(())
    }

    pub fn run_dir(&self) -> PathBuf {
        self.runs_dir.join(&self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareRow {
    pub name: String,
    pub description: String,
    pub reranked: bool,
    pub measures: BTreeMap<String, Compared>,
    /// Search (and reranking) time over all queries.
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepResult {
    pub retriever: String,
    pub measure: String,
    pub validation_queries: usize,
    /// Best first.
    pub points: Vec<SweepPoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareReport {
    pub name: String,
    pub split: String,
    pub queries: usize,
    pub corpus: usize,
    pub baseline: String,
    pub measures: Vec<String>,
    pub rows: Vec<CompareRow>,
    pub sweeps: Vec<SweepResult>,
    pub confidence: f64,
    pub resamples: usize,
}

/// The judged queries of a split: ids, texts and their qrels.
struct Judged {
    ids: Vec<String>,
    texts: Vec<String>,
    qrels: Qrels,
}

fn judged(ds: &Dataset, dir: &Path) -> Result<Judged> {
    let mut qrels: Qrels = BTreeMap::new();
    for q in &ds.qrels {
        qrels
            .entry(q.query_id.clone())
            .or_default()
            .insert(q.doc_id.clone(), i64::from(q.relevance));
    }
    let (ids, texts): (Vec<String>, Vec<String>) = ds
        .queries
        .iter()
        .filter(|q| qrels.contains_key(&q.query_id))
        .map(|q| (q.query_id.clone(), q.text.clone()))
        .unzip();
    if ids.is_empty() {
        return Err(PipelineError::Invalid(format!(
            "{}: no judged queries (queries with qrels) to evaluate retrieval on",
            dir.display()
        )));
    }
    Ok(Judged { ids, texts, qrels })
}

/// Per-query values of each measure, in `judged.ids` order (a query the run lacks scores 0).
fn per_query(
    corpus: &Corpus,
    judged: &Judged,
    hits: &[Vec<Hit>],
    measures: &[Measure],
) -> Result<BTreeMap<String, Vec<f64>>> {
    let ids: Vec<&str> = judged.ids.iter().map(String::as_str).collect();
    let run = ragtune_retrieval::to_run(corpus, &ids, hits);
    let report = score_run(&run, &judged.qrels, measures)?;
    let mut values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for m in measures {
        let name = m.to_string();
        let column = ids
            .iter()
            .map(|id| {
                report
                    .per_query
                    .get(*id)
                    .and_then(|r| r.get(&name))
                    .copied()
                    .unwrap_or(0.0)
            })
            .collect();
        values.insert(name, column);
    }
    Ok(values)
}

/// A hybrid of two whose weights are chosen on validation: its parts are built once, searched on
/// the validation queries, and fused at each grid point.
fn swept_hybrid(
    named: &NamedRetriever,
    config: &CompareConfig,
    corpus: &Corpus,
    validation: &(Dataset, PathBuf),
    device: Device,
) -> Result<(Box<dyn Retriever>, SweepResult)> {
    let RetrievalConfig::Hybrid(hybrid) = &named.retrieval else {
        unreachable!("validated: sweep needs a hybrid");
    };
    let (val, val_dir) = validation;
    if val.corpus.len() != corpus.len() || Corpus::new(val.corpus.clone()).hash() != corpus.hash() {
        return Err(PipelineError::Invalid(format!(
            "{}: the validation split searches another corpus than {}; the sweep needs the same one",
            val_dir.display(),
            config.split
        )));
    }
    let judged = judged(val, val_dir)?;
    let parts = hybrid
        .retrievers
        .iter()
        .map(|r| r.build(corpus.clone(), device))
        .collect::<ragtune_retrieval::Result<Vec<_>>>()?;
    let measure = Measure::parse(&config.sweep.measure)?;
    let texts: Vec<&str> = judged.texts.iter().map(String::as_str).collect();
    let depth = hybrid.depth.max(measure.cutoff().unwrap_or(1000));
    let rankings = parts
        .iter()
        .map(|p| p.search(&texts, depth))
        .collect::<ragtune_retrieval::Result<Vec<_>>>()?;
    let ids: Vec<&str> = judged.ids.iter().map(String::as_str).collect();
    let points = sweep_weights(
        &hybrid.fusion,
        &rankings,
        corpus,
        &ids,
        &judged.qrels,
        &config.sweep.grid,
        measure,
    )?;
    let best = points
        .first()
        .ok_or_else(|| PipelineError::Config("sweep.grid is empty".into()))?;
    let fusion = hybrid.fusion.with_weights(best.weights.clone());
    let retriever = HybridRetriever::new(parts, fusion, hybrid.depth)?;
    Ok((
        Box::new(retriever),
        SweepResult {
            retriever: named.name.clone(),
            measure: config.sweep.measure.clone(),
            validation_queries: judged.ids.len(),
            points,
        },
    ))
}

/// The cross-encoder of `[rerank]`; the folder must hold a trained head.
fn load_reranker(config: &RerankConfig, device: Device) -> Result<CrossEncoder> {
    let mut model = CrossEncoder::load(&config.model, device, Kind::Float, HeadInit::default())?;
    if !model.head_loaded() {
        return Err(PipelineError::Invalid(format!(
            "{}: no trained classifier head; point rerank.model at a `ragtune reranker train` run's model/",
            config.model.display()
        )));
    }
    if let Some(max_length) = config.max_length {
        model.set_max_length(max_length)?;
    }
    model.set_batch_size(config.batch_size)?;
    Ok(model)
}

pub fn run(config: &CompareConfig, device: Device) -> Result<CompareReport> {
    config.validate()?;
    let split_dir = config.data.join(&config.split);
    let test = Dataset::read(&split_dir)?;
    let judged_test = judged(&test, &split_dir)?;
    let corpus = Corpus::new(test.corpus.clone());
    let measures: Vec<Measure> = config
        .measures
        .iter()
        .map(|m| Measure::parse(m))
        .collect::<std::result::Result<_, _>>()?;
    let rerank_k = config.rerank.as_ref().map_or(0, |r| r.k);
    let depth = measures
        .iter()
        .map(|m| m.cutoff().unwrap_or(1000))
        .max()
        .unwrap_or(10)
        .max(rerank_k);
    let validation = if config.retrievers.iter().any(|r| r.sweep) {
        let dir = config.data.join(&config.validation);
        Some((Dataset::read(&dir)?, dir))
    } else {
        None
    };
    let reranker = config
        .rerank
        .as_ref()
        .map(|r| load_reranker(r, device))
        .transpose()?;
    let texts: Vec<&str> = judged_test.texts.iter().map(String::as_str).collect();

    let mut rows: Vec<(CompareRow, BTreeMap<String, Vec<f64>>)> = Vec::new();
    let mut sweeps = Vec::new();
    for named in &config.retrievers {
        let retriever = if named.sweep {
            let validation = validation.as_ref().expect("read when any retriever sweeps");
            let (retriever, sweep) = swept_hybrid(named, config, &corpus, validation, device)?;
            sweeps.push(sweep);
            retriever
        } else {
            named.retrieval.build(corpus.clone(), device)?
        };
        let started = Instant::now();
        let hits = retriever.search(&texts, depth)?;
        let seconds = started.elapsed().as_secs_f64();
        let values = per_query(&corpus, &judged_test, &hits, &measures)?;
        rows.push((
            CompareRow {
                name: named.name.clone(),
                description: retriever.describe(),
                reranked: false,
                measures: BTreeMap::new(),
                seconds,
            },
            values,
        ));
        if let (Some(model), Some(rerank)) = (&reranker, &config.rerank) {
            let started = Instant::now();
            let reranked =
                rerank_hits(model, &corpus, &texts, hits, rerank.k).map_err(PipelineError::from)?;
            let rerank_seconds = started.elapsed().as_secs_f64();
            let values = per_query(&corpus, &judged_test, &reranked, &measures)?;
            rows.push((
                CompareRow {
                    name: format!("{} + cross-encoder@{}", named.name, rerank.k),
                    description: format!(
                        "{} reranked (top {}) by {}",
                        retriever.describe(),
                        rerank.k,
                        rerank.model.display()
                    ),
                    reranked: true,
                    measures: BTreeMap::new(),
                    seconds: seconds + rerank_seconds,
                },
                values,
            ));
        }
    }

    let baseline = rows
        .iter()
        .position(|(r, _)| r.name == config.baseline)
        .expect("validated: the baseline is a retriever");
    let baseline_values = rows[baseline].1.clone();
    for (i, (row, values)) in rows.iter_mut().enumerate() {
        for m in &config.measures {
            let name = Measure::parse(m)?.to_string();
            let column = &values[&name];
            let mean = column.iter().sum::<f64>() / column.len() as f64;
            let cell = if i == baseline {
                Compared {
                    mean,
                    difference: None,
                    ci_low: None,
                    ci_high: None,
                    p_value: None,
                }
            } else {
                let b = paired_bootstrap(
                    &baseline_values[&name],
                    column,
                    config.bootstrap_resamples,
                    config.confidence,
                    config.seed,
                )?;
                Compared {
                    mean,
                    difference: Some(b.mean_difference),
                    ci_low: Some(b.ci_low),
                    ci_high: Some(b.ci_high),
                    p_value: Some(b.p_value),
                }
            };
            row.measures.insert(name, cell);
        }
    }
    let report = CompareReport {
        name: config.name.clone(),
        split: config.split.clone(),
        queries: judged_test.ids.len(),
        corpus: corpus.len(),
        baseline: config.baseline.clone(),
        measures: measures.iter().map(|m| m.to_string()).collect(),
        rows: rows.into_iter().map(|(r, _)| r).collect(),
        sweeps,
        confidence: config.confidence,
        resamples: config.bootstrap_resamples,
    };
    let dir = config.run_dir();
    std::fs::create_dir_all(&dir).map_err(|e| PipelineError::Io {
        path: dir.clone(),
        source: e,
    })?;
    let json = serde_json::to_vec_pretty(&report).expect("the report serializes");
    ragtune_data::atomic::write_atomic(&dir.join("summary.json"), &json)?;
    ragtune_report::write_report(&page(&report), &dir)?;
    Ok(report)
}

/// The report page: the table (means, and differences from the baseline with intervals), one
/// interval chart per measure, and the sweeps.
pub fn page(report: &CompareReport) -> Report {
    let mut header = vec!["retriever".to_string()];
    for m in &report.measures {
        header.push(m.clone());
        header.push(format!("Δ {m} vs {} [CI]", report.baseline));
    }
    header.push("seconds".into());
    let rows = report
        .rows
        .iter()
        .map(|row| {
            let mut cells = vec![Cell::text(&row.name)];
            for m in &report.measures {
                let c = &row.measures[m];
                cells.push(Cell::number(c.mean, 4));
                cells.push(match (c.difference, c.ci_low, c.ci_high) {
                    (Some(d), Some(lo), Some(hi)) => Cell::estimate(d, lo, hi, 4),
                    _ => Cell::text("baseline"),
                });
            }
            cells.push(Cell::number(row.seconds, 2));
            cells
        })
        .collect();
    let charts = report.measures.iter().map(|m| {
        Block::IntervalChart(IntervalChart {
            id: format!("delta-{}", m.replace('@', "-at-")),
            title: format!("{m}: difference from {}", report.baseline),
            y_label: format!("Δ {m}"),
            items: report
                .rows
                .iter()
                .filter_map(|row| {
                    let c = &row.measures[m];
                    Some(Interval {
                        label: row.name.clone(),
                        value: c.difference?,
                        low: c.ci_low?,
                        high: c.ci_high?,
                    })
                })
                .collect(),
        })
    });
    let mut blocks = vec![
        Block::paragraph(format!(
            "{} judged queries of the {} split over {} passages. Differences are row − {} per \
             query, with {:.0}% paired bootstrap intervals ({} resamples).",
            report.queries,
            report.split,
            report.corpus,
            report.baseline,
            report.confidence * 100.0,
            report.resamples
        )),
        Block::Table(Table {
            caption: None,
            header,
            rows,
        }),
    ];
    blocks.extend(charts);
    let mut sections = vec![Section {
        heading: "Retrieval".into(),
        blocks,
    }];
    sections.push(Section {
        heading: "Retrievers".into(),
        blocks: vec![Block::Table(Table {
            caption: None,
            header: vec!["row".into(), "what ran".into()],
            rows: report
                .rows
                .iter()
                .map(|r| vec![Cell::text(&r.name), Cell::text(&r.description)])
                .collect(),
        })],
    });
    for sweep in &report.sweeps {
        let mut points = sweep.points.clone();
        points.sort_by(|a, b| a.weights[0].total_cmp(&b.weights[0]));
        sections.push(Section {
            heading: format!("Weight sweep: {}", sweep.retriever),
            blocks: vec![
                Block::paragraph(format!(
                    "{} on {} validation queries; the best weights ({:?}) are the ones the test \
                     row uses.",
                    sweep.measure, sweep.validation_queries, sweep.points[0].weights
                )),
                Block::Table(Table {
                    caption: None,
                    header: vec![
                        "weight of the first".into(),
                        "weight of the second".into(),
                        sweep.measure.clone(),
                    ],
                    rows: points
                        .iter()
                        .map(|p| {
                            vec![
                                Cell::number(p.weights[0], 2),
                                Cell::number(p.weights[1], 2),
                                Cell::number(p.score, 4),
                            ]
                        })
                        .collect(),
                }),
            ],
        });
    }
    Report {
        title: format!("Retrieval comparison: {}", report.name),
        subtitle: format!("{} split, baseline {}", report.split, report.baseline),
        sections,
    }
}
