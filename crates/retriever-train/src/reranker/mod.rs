//! The cross-encoder reranker recipe, top to bottom: read the splits and the training pairs
//! (the mined triplets, or each training question's gold passage against the first stage's own
//! top `k` for it, see [`NegativeSource`]), start a cross-encoder ([`ragtune_models::cross_encoder`]) from a base folder, train it under the
//! shared trainer with binary cross-entropy, listwise softmax cross-entropy or Margin-MSE onto
//! the triplets' teacher scores, evaluate it on validation as the reranker of a first stage's
//! top `k` (nDCG@10 through the eval crate), and export a sentence-transformers CrossEncoder
//! folder with a before/after report on validation and test.
//!
//! - [`losses`]: the three losses on `[rows, 1 + negatives]` logits.
//!
//! A trained cross-encoder also scores triplets as a teacher (`ragtune retriever score`), through
//! the [`PairScorer`] implementation here, for distillation into the bi-encoder.

mod config;
pub mod losses;
mod report;

pub use config::*;

use crate::evaluate::{evaluate_hits, measures, Evaluation, RUN_DEPTH};
use crate::mining::PairScorer;
use crate::train::{load_splits, read_training_triplets};
use crate::{Result, RetrieverError};
use ragtune_data::{Dataset, Triplet};
use ragtune_models::cross_encoder::{CrossEncoder, HeadInit};
use ragtune_models::tokenize::TokenizedText;
use ragtune_retrieval::{rerank_hits, Corpus, Hit, RetrievalConfig};
use ragtune_trainer::{Metrics, Trainer};
use serde::Serialize;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// The exported model, in the run folder.
pub const MODEL_DIR: &str = "model";

/// A trained cross-encoder as a teacher for `ragtune retriever score`: its logits become the
/// triplets' `positive_score` and negative scores, for Margin-MSE or KL into the bi-encoder.
impl PairScorer for CrossEncoder {
    fn score_pairs(&self, queries: &[&str], passages: &[&str]) -> Result<Vec<f32>> {
        Ok(CrossEncoder::score_pairs(self, queries, passages)?)
    }
}

/// Loads the cross-encoder of `config` (starting a head if the base has none) for training or scoring.
pub fn load_model(config: &RerankerModelConfig, device: Device) -> Result<CrossEncoder> {
    let mut model = CrossEncoder::load(
        &config.base,
        device,
        Kind::Float,
        HeadInit {
            num_labels: 1,
            seed: config.init_seed,
        },
    )?;
    model.set_max_length(config.max_length)?;
    model.set_batch_size(config.eval_batch_size)?;
    Ok(model)
}

/// Loads a trainer checkpoint folder's weights (`checkpoints/step-N`) into `model`; returns
/// how many tensors it set.
pub fn load_checkpoint(model: &CrossEncoder, checkpoint: &Path) -> Result<usize> {
    Ok(ragtune_trainer::load_checkpoint_weights(
        model.var_store(),
        checkpoint,
    )?)
}

/// One training row's pairs, tokenized once: the positive, then its negatives (all of them for
/// triplets, a pool to draw `negatives.per_query` from for first-stage negatives).
struct TrainingRow {
    positive: TokenizedText,
    negatives: Vec<TokenizedText>,
    teacher: Option<Vec<f32>>,
}

/// The pairs one row contributes to a step: the positive first, then the negatives chosen.
struct StepRow<'a> {
    pairs: Vec<&'a TokenizedText>,
    teacher: Option<&'a [f32]>,
}

impl TrainingRow {
    fn from_pairs(mut pairs: Vec<TokenizedText>, teacher: Option<Vec<f32>>) -> Self {
        let negatives = pairs.split_off(1);
        let positive = pairs.pop().expect("a row's pairs start with the positive");
        Self {
            positive,
            negatives,
            teacher,
        }
    }

    /// The row's pairs for one step: every negative, or (with `draw`) that many drawn from the
    /// pool without replacement, in pool order.
    fn for_step(&self, draw: Option<usize>, rng: &mut impl rand::Rng) -> StepRow<'_> {
        let chosen: Vec<usize> = match draw {
            Some(n) if n < self.negatives.len() => {
                let mut picked = rand::seq::index::sample(rng, self.negatives.len(), n).into_vec();
                picked.sort_unstable();
                picked
            }
            _ => (0..self.negatives.len()).collect(),
        };
        StepRow {
            pairs: std::iter::once(&self.positive)
                .chain(chosen.iter().map(|&j| &self.negatives[j]))
                .collect(),
            teacher: self.teacher.as_deref(),
        }
    }
}

fn tokenize_rows(
    model: &CrossEncoder,
    triplets: &[Triplet],
    config: &RerankerLossConfig,
) -> Result<Vec<TrainingRow>> {
    let distill = config.kind == RerankerLossKind::MarginMse;
    triplets
        .iter()
        .map(|t| {
            let keep = config
                .max_negatives
                .unwrap_or(usize::MAX)
                .min(t.negatives.len());
            let negatives = &t.negatives[..keep];
            let passages: Vec<&str> = std::iter::once(t.positive_text.as_str())
                .chain(negatives.iter().map(|n| n.text.as_str()))
                .collect();
            let queries = vec![t.query.as_str(); passages.len()];
            let teacher = distill.then(|| {
                std::iter::once(t.positive_score.unwrap_or(0.0))
                    .chain(negatives.iter().map(|n| n.score))
                    .collect()
            });
            Ok(TrainingRow::from_pairs(
                model.tokenize_pairs(&queries, &passages)?,
                teacher,
            ))
        })
        .collect()
}

/// One judged (training question, gold passage) pair and the question's first-stage negatives,
/// as indices into the corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct FirstStagePair {
    pub query_id: String,
    pub query: String,
    pub positive: usize,
    /// The first stage's top `k` for the question in its order, every gold passage removed.
    pub negatives: Vec<usize>,
}

/// The first stage's candidates as training pairs: for each judged question of `train`, one pair
/// per gold passage (relevance above 0), its negatives the first stage's top `k` for the
/// question minus all of its gold passages. Returns the corpus the indices point into.
pub fn first_stage_pairs(
    train: &Dataset,
    first_stage: &RetrievalConfig,
    k: usize,
    device: Device,
) -> Result<(Corpus, Vec<FirstStagePair>)> {
    let corpus = Corpus::new(train.corpus.clone());
    let mut golds: std::collections::HashMap<&str, Vec<usize>> = Default::default();
    for qrel in train.qrels.iter().filter(|q| q.relevance > 0) {
        // The split loader keeps qrels within the corpus; a judgement of a passage it lacks
        // could not be trained on anyway.
        if let Some(index) = corpus.position(&qrel.doc_id) {
            golds.entry(qrel.query_id.as_str()).or_default().push(index);
        }
    }
    let queries: Vec<&ragtune_data::Query> = train
        .queries
        .iter()
        .filter(|q| golds.contains_key(q.query_id.as_str()))
        .collect();
    if queries.is_empty() {
        return Err(RetrieverError::Invalid(
            "negatives.source = \"first_stage\": no training question has a judged gold passage"
                .into(),
        ));
    }
    let retriever = first_stage.build(corpus.clone(), device)?;
    let texts: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();
    let hits = retriever.search(&texts, k)?;
    let mut pairs = Vec::new();
    for (query, hits) in queries.iter().zip(&hits) {
        let gold = &golds[query.query_id.as_str()];
        let negatives: Vec<usize> = hits
            .iter()
            .map(|h| h.index)
            .filter(|i| !gold.contains(i))
            .collect();
        for &positive in gold {
            pairs.push(FirstStagePair {
                query_id: query.query_id.clone(),
                query: query.text.clone(),
                positive,
                negatives: negatives.clone(),
            });
        }
    }
    Ok((corpus, pairs))
}

/// [`first_stage_pairs`] tokenized as training rows.
fn first_stage_rows(
    model: &CrossEncoder,
    train: &Dataset,
    config: &RerankerConfig,
    device: Device,
) -> Result<Vec<TrainingRow>> {
    let (corpus, pairs) =
        first_stage_pairs(train, &config.first_stage, config.negatives.k, device)?;
    pairs
        .iter()
        .map(|pair| {
            let passages: Vec<String> = std::iter::once(pair.positive)
                .chain(pair.negatives.iter().copied())
                .map(|i| ragtune_retrieval::passage_text(corpus.doc(i)))
                .collect();
            let passages: Vec<&str> = passages.iter().map(String::as_str).collect();
            let queries = vec![pair.query.as_str(); passages.len()];
            Ok(TrainingRow::from_pairs(
                model.tokenize_pairs(&queries, &passages)?,
                None,
            ))
        })
        .collect()
}

/// The logits of a micro-batch as a `[rows, width]` grid (the positive in column 0) and the
/// mask of the cells that hold a pair. Every pair of the batch runs in one forward pass, sorted
/// by length: the encoder computes real tokens only and lays sequences of similar length
/// together for attention, so the batch costs what its tokens cost. The encoder hands rows back
/// in input order, and `positions` puts each logit back in its own cell.
fn batch_logits(model: &CrossEncoder, rows: &[StepRow], train: bool) -> (Tensor, Tensor) {
    let width = rows.iter().map(|r| r.pairs.len()).max().unwrap_or(1) as i64;
    let mut cells: Vec<(usize, &TokenizedText)> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        for (j, pair) in row.pairs.iter().enumerate() {
            cells.push((i * width as usize + j, *pair));
        }
    }
    cells.sort_by_key(|(_, pair)| std::cmp::Reverse(pair.ids.len()));
    let batch = model.pad(&cells.iter().map(|(_, p)| *p).collect::<Vec<_>>());
    let logits = model.forward_t(&batch, train).reshape([-1]);
    let device = logits.device();
    let positions: Vec<i64> = cells.iter().map(|(cell, _)| *cell as i64).collect();
    let positions = Tensor::from_slice(&positions).to_device(device);
    let grid = Tensor::zeros([rows.len() as i64 * width], (Kind::Float, device))
        .index_put(&[Some(positions)], &logits, false)
        .view([rows.len() as i64, width]);
    let mut valid = vec![false; rows.len() * width as usize];
    for (cell, _) in &cells {
        valid[*cell] = true;
    }
    let valid = Tensor::from_slice(&valid)
        .view([rows.len() as i64, width])
        .to_device(device);
    (grid, valid)
}

/// The configured loss of one micro-batch (dropout on).
fn batch_loss(
    model: &CrossEncoder,
    rows: &[StepRow],
    config: &RerankerLossConfig,
) -> Result<Tensor> {
    let (grid, valid) = batch_logits(model, rows, true);
    let width = grid.size()[1] as usize;
    let device = grid.device();
    match config.kind {
        RerankerLossKind::BinaryCrossEntropy => losses::binary_cross_entropy(&grid, &valid),
        RerankerLossKind::Listwise => losses::listwise_softmax(&grid, &valid, config.temperature),
        RerankerLossKind::MarginMse => {
            let mut teacher = vec![0f32; rows.len() * width];
            for (i, row) in rows.iter().enumerate() {
                let scores = row.teacher.ok_or_else(|| {
                    RetrieverError::Invalid("Margin-MSE needs teacher scores".into())
                })?;
                if scores.len() < row.pairs.len() {
                    return Err(RetrieverError::Invalid(format!(
                        "Margin-MSE: {} teacher scores for {} pairs",
                        scores.len(),
                        row.pairs.len()
                    )));
                }
                teacher[i * width..i * width + row.pairs.len()]
                    .copy_from_slice(&scores[..row.pairs.len()]);
            }
            let teacher = Tensor::from_slice(&teacher)
                .view([rows.len() as i64, width as i64])
                .to_device(device);
            losses::margin_mse(&grid, &teacher, &valid, config.teacher_scale)
        }
    }
}

/// A split's queries with their first-stage hits, searched once and reranked at every evaluation.
pub struct RerankEvalSet {
    pub dataset: Dataset,
    pub corpus: Corpus,
    pub describe: String,
    query_texts: Vec<String>,
    first_stage_hits: Vec<Vec<Hit>>,
}

impl RerankEvalSet {
    /// Searches the judged queries of `dataset` with the first stage of `config`, [`RUN_DEPTH`] deep.
    pub fn new(
        mut dataset: Dataset,
        first_stage: &RetrievalConfig,
        device: Device,
    ) -> Result<Self> {
        let corpus = Corpus::new(dataset.corpus.clone());
        let retriever = first_stage.build(corpus.clone(), device)?;
        let judged: std::collections::HashSet<&str> =
            dataset.qrels.iter().map(|q| q.query_id.as_str()).collect();
        dataset
            .queries
            .retain(|q| judged.contains(q.query_id.as_str()));
        let query_texts: Vec<String> = dataset.queries.iter().map(|q| q.text.clone()).collect();
        let refs: Vec<&str> = query_texts.iter().map(String::as_str).collect();
        let first_stage_hits = retriever.search(&refs, RUN_DEPTH)?;
        Ok(Self {
            describe: retriever.describe(),
            dataset,
            corpus,
            query_texts,
            first_stage_hits,
        })
    }

    /// The first stage's own ranking, evaluated.
    pub fn first_stage(&self) -> Result<Evaluation> {
        self.evaluate_hits(&self.first_stage_hits)
    }

    /// The first stage's top `k` reranked by `model`, evaluated.
    pub fn reranked(&self, model: &CrossEncoder, k: usize) -> Result<Evaluation> {
        let queries: Vec<&str> = self.query_texts.iter().map(String::as_str).collect();
        let hits = tch::no_grad(|| {
            rerank_hits(
                model,
                &self.corpus,
                &queries,
                self.first_stage_hits.clone(),
                k,
            )
        })?;
        self.evaluate_hits(&hits)
    }

    fn evaluate_hits(&self, hits: &[Vec<Hit>]) -> Result<Evaluation> {
        evaluate_hits(
            &self.dataset.queries,
            self.corpus.docs(),
            &self.dataset.qrels,
            hits,
            None,
        )
    }
}

/// The run's outcome, also written as `report.json` and `report.md` in the run folder.
#[derive(Debug, Clone, Serialize)]
pub struct RerankerReport {
    pub run_dir: PathBuf,
    pub model_dir: PathBuf,
    pub steps: u64,
    /// Training rows: triplets, or (question, gold passage) pairs with first-stage negatives.
    pub train_triplets: usize,
    pub report: serde_json::Value,
    pub markdown: String,
}

fn mean_of(e: &Evaluation, measure: &str) -> f64 {
    e.exact.mean.get(measure).copied().unwrap_or(0.0)
}

fn eval_metrics(reranked: &Evaluation) -> Metrics {
    measures()
        .into_iter()
        .map(|m| {
            let name = m.to_string();
            let value = mean_of(reranked, &name);
            (name, value)
        })
        .collect()
}

/// Trains and evaluates as `config` says, on `device`; writes the run folder (checkpoints,
/// metrics.jsonl, `model/`, report.json, report.md) and returns the report.
pub fn run(config: &RerankerConfig, device: Device) -> Result<RerankerReport> {
    // 1. Data: the splits, the training pairs, the first stage's candidates for val and test.
    config.validate()?;
    let [train, val, test] = load_splits(&config.data)?;
    let distill = config.loss.kind == RerankerLossKind::MarginMse;
    let model = load_model(&config.model, device)?;
    let (rows, draw, negatives_path) = match config.negatives.source {
        NegativeSource::Triplets => {
            let triplets = read_training_triplets(&config.triplets, &train, distill)?;
            (
                tokenize_rows(&model, &triplets, &config.loss)?,
                None,
                config.triplets.clone(),
            )
        }
        NegativeSource::FirstStage => (
            first_stage_rows(&model, &train, config, device)?,
            Some(config.negatives.per_query),
            PathBuf::from(format!("the first stage's top {}", config.negatives.k)),
        ),
    };
    if config.loss.kind != RerankerLossKind::BinaryCrossEntropy
        && rows.iter().all(|r| r.negatives.is_empty())
    {
        return Err(RetrieverError::Config {
            path: negatives_path,
            message: format!(
                "no training row has a negative, so loss {:?} has nothing to rank the positive against",
                config.loss.kind
            ),
        });
    }
    let run_dir = config.trainer.run_dir();
    std::fs::create_dir_all(&run_dir).map_err(|e| RetrieverError::io(&run_dir, e))?;
    let val_set = RerankEvalSet::new(val, &config.first_stage, device)?;
    let test_set = RerankEvalSet::new(test, &config.first_stage, device)?;

    // 2. Training under the shared trainer; validation reranks the first stage's top k.
    let mut trainer = Trainer::new(config.trainer.clone(), model.var_store(), rows.len())?;
    if let Some(step) = trainer.resumed_from() {
        trainer.println(format!("resuming from step {step}"));
    }
    while !trainer.finished() {
        trainer.train_step(
            |batch| -> Result<Tensor> {
                let step_rows: Vec<StepRow> = batch
                    .indices
                    .iter()
                    .map(|&i| rows[i].for_step(draw, &mut *batch.rng))
                    .collect();
                batch_loss(&model, &step_rows, &config.loss)
            },
            || -> Result<Metrics> { Ok(eval_metrics(&val_set.reranked(&model, config.eval.k)?)) },
        )?;
    }
    let summary = trainer.finish()?;
    if let Some(best) = &summary.best_checkpoint {
        ragtune_trainer::load_checkpoint_weights(model.var_store(), best)?;
    }

    // 3. Export, then the first stage against the reranked first stage on val and test.
    let model_dir = run_dir.join(MODEL_DIR);
    model.save(&model_dir)?;
    let evaluations = [
        (
            "val",
            val_set.first_stage()?,
            val_set.reranked(&model, config.eval.k)?,
        ),
        (
            "test",
            test_set.first_stage()?,
            test_set.reranked(&model, config.eval.k)?,
        ),
    ];
    let (report, markdown) = report::build_report(
        config,
        &val_set.describe,
        &evaluations,
        &summary,
        rows.len(),
    )?;
    report::write_report(&run_dir, &report, &markdown)?;
    Ok(RerankerReport {
        run_dir,
        model_dir,
        steps: summary.steps,
        train_triplets: rows.len(),
        report,
        markdown,
    })
}

/// Evaluates a cross-encoder folder (or an encoder with a fresh head, for a floor) as the
/// reranker of `config.first_stage` on one split: (first stage, reranked).
pub fn evaluate(
    config: &RerankerConfig,
    model: &CrossEncoder,
    split: &str,
    device: Device,
) -> Result<(String, Evaluation, Evaluation)> {
    let [_, val, test] = load_splits(&config.data)?;
    let dataset = match split {
        "val" => val,
        "test" => test,
        other => {
            return Err(RetrieverError::Invalid(format!(
                "split `{other}`: the reranker evaluates on val or test"
            )))
        }
    };
    let set = RerankEvalSet::new(dataset, &config.first_stage, device)?;
    Ok((
        set.describe.clone(),
        set.first_stage()?,
        set.reranked(model, config.eval.k)?,
    ))
}

#[cfg(test)]
mod tests {
    //! What the training step does to the model, checked inside the crate: the logits land in
    //! the cells of the pairs they score, every parameter learns, and a few rows overfit.
    use super::*;
    use ragtune_trainer::TrainerConfig;

    fn bert_tiny() -> CrossEncoder {
        let mut model = CrossEncoder::load(
            &ragtune_testkit::asset("bert-tiny"),
            Device::Cpu,
            Kind::Float,
            HeadInit {
                num_labels: 1,
                seed: 3,
            },
        )
        .unwrap();
        model.set_max_length(64).unwrap();
        model
    }

    /// Eight rows of made-up FAQ pairs of different lengths: a positive that shares the
    /// question's words and two negatives that do not, one row with a single negative.
    fn rows(model: &CrossEncoder) -> Vec<TrainingRow> {
        let topics = [
            ("building permit", "municipality committee decision"),
            ("heat pump", "energy installation"),
            ("roof repair", "tiles and underlay"),
            ("kitchen renovation", "cabinets and plumbing"),
            ("garden shed", "small outbuilding without permit"),
            ("window replacement", "triple glazing frames"),
            ("bathroom tiling", "waterproofing membrane"),
            ("facade painting", "exterior paint layers"),
        ];
        topics
            .iter()
            .enumerate()
            .map(|(i, (topic, detail))| {
                let query = format!("How does a {topic} work?");
                let mut passages = vec![format!(
                    "A {topic} is handled as follows: {detail}{}.",
                    " in detail".repeat(i)
                )];
                for o in 1..=(if i == 3 { 1 } else { 2 }) {
                    let (other, other_detail) = topics[(i + o * 3) % topics.len()];
                    passages.push(format!("About {other}: {other_detail}."));
                }
                let p: Vec<&str> = passages.iter().map(String::as_str).collect();
                let q = vec![query.as_str(); p.len()];
                TrainingRow::from_pairs(model.tokenize_pairs(&q, &p).unwrap(), None)
            })
            .collect()
    }

    fn step_rows(rows: &[TrainingRow]) -> Vec<StepRow<'_>> {
        let mut rng = rand::rngs::mock::StepRng::new(0, 1);
        rows.iter().map(|r| r.for_step(None, &mut rng)).collect()
    }

    #[test]
    fn logits_land_in_their_own_cells() {
        let model = bert_tiny();
        let rows = rows(&model);
        let step = step_rows(&rows);
        let (grid, valid) = tch::no_grad(|| batch_logits(&model, &step, false));
        assert_eq!(grid.size(), [8, 3]);
        for (i, row) in step.iter().enumerate() {
            // Each pair alone, unpadded: what its cell must hold.
            for (j, pair) in row.pairs.iter().enumerate() {
                let alone = tch::no_grad(|| model.forward_t(&model.pad(&[*pair]), false))
                    .double_value(&[0, 0]);
                let cell = grid.double_value(&[i as i64, j as i64]);
                assert!(
                    (alone - cell).abs() < 1e-4,
                    "row {i} pair {j}: cell {cell} but the pair scores {alone}"
                );
                assert!(valid.int64_value(&[i as i64, j as i64]) == 1);
            }
            for j in row.pairs.len()..3 {
                assert!(valid.int64_value(&[i as i64, j as i64]) == 0);
            }
        }
    }

    #[test]
    fn every_parameter_gets_a_gradient() {
        let model = bert_tiny();
        let rows = rows(&model);
        let config = RerankerLossConfig {
            kind: RerankerLossKind::Listwise,
            ..Default::default()
        };
        let loss = batch_loss(&model, &step_rows(&rows), &config).unwrap();
        loss.backward();
        let variables = model.var_store().variables();
        assert!(variables.keys().any(|k| k.starts_with("bert.pooler.")));
        assert!(variables.keys().any(|k| k.starts_with("classifier.")));
        for (name, var) in &variables {
            assert!(var.requires_grad(), "{name} is frozen");
            let grad = var.grad();
            assert!(grad.defined(), "{name} has no gradient");
            let norm = grad.abs().sum(Kind::Double).double_value(&[]);
            assert!(norm > 0.0, "{name}: zero gradient");
        }
    }

    #[test]
    fn a_few_rows_overfit_under_the_trainer() {
        let dir = ragtune_testkit::scratch("reranker-overfit");
        let model = bert_tiny();
        let rows = rows(&model);
        let config: TrainerConfig = toml::from_str(&format!(
            r#"
            run_name = "overfit"
            runs_dir = {dir:?}
            batch_size = 8
            max_steps = 50
            precision = "fp32"
            progress = false
            resume = false
            [optimizer]
            lr = 1e-3
            [schedule]
            kind = "constant"
            "#
        ))
        .unwrap();
        let loss_config = RerankerLossConfig {
            kind: RerankerLossKind::Listwise,
            ..Default::default()
        };
        let mut trainer = Trainer::new(config, model.var_store(), rows.len()).unwrap();
        let mut losses = Vec::new();
        while !trainer.finished() {
            let report = trainer
                .train_step(
                    |batch| -> Result<Tensor> {
                        let step: Vec<StepRow> = batch
                            .indices
                            .iter()
                            .map(|&i| rows[i].for_step(None, &mut *batch.rng))
                            .collect();
                        batch_loss(&model, &step, &loss_config)
                    },
                    || -> Result<Metrics> { Ok(Metrics::new()) },
                )
                .unwrap();
            losses.push(report.loss);
        }
        let last = losses[losses.len() - 5..].iter().sum::<f64>() / 5.0;
        assert!(
            losses[0] > 0.9 && last < 0.05,
            "listwise loss on 8 rows from {} to {last}: {losses:?}",
            losses[0]
        );
    }
}
