//! The retriever recipe, top to bottom: load and split the data, evaluate zero-shot, (mine hard
//! negatives,) train with InfoNCE under the shared trainer, evaluate again with exact search and
//! HNSW, and write a before/after report with paired bootstrap confidence intervals.

use crate::colbert::{self, Colbert, ColbertConfig};
use crate::contriever::{self, CropConfig};
use crate::evaluate::{encode_corpus, evaluate_queries, measures, Evaluation};
use crate::gradcache::{self, Side};
use crate::index::HnswConfig;
use crate::losses;
use crate::mining::{self, MiningConfig, MiningReport, PairScorer};
use crate::model::{Architecture, BiEncoder, Embedder, ModelConfig};
use crate::{Result, RetrieverError};
use ragtune_data::split::{split_dataset, SplitConfig};
use ragtune_data::{Dataset, Triplet};
use ragtune_eval::significance::paired_bootstrap;
use ragtune_models::tokenize::TokenizedText;
use ragtune_trainer::{Metrics, Trainer, TrainerConfig};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// The FAQ JSONL (`assets/zaragoza-faq/faq-en.jsonl`), a dataset folder (corpus, queries,
    /// qrels; split here), a folder with its own `train/`, `val/` and `test/` dataset folders, or a
    /// BEIR folder with `qrels/{train,dev,test}.tsv`.
    pub source: PathBuf,
    pub split_seed: u64,
    /// Fractions of queries for train, val and test.
    pub fractions: [f64; 3],
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            source: PathBuf::from("assets/zaragoza-faq/faq-en.jsonl"),
            split_seed: 42,
            fractions: [0.8, 0.1, 0.1],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    InfoNce,
    SymmetricInfoNce,
    /// Margin-MSE onto teacher scores (each triplet's positive against each of its negatives).
    MarginMse,
    /// KL divergence onto the teacher's softmax over each triplet's [positive, negatives...].
    Kl,
}

impl LossKind {
    /// Whether the loss regresses onto teacher scores stored in the triplets.
    pub fn is_distillation(self) -> bool {
        matches!(self, LossKind::MarginMse | LossKind::Kl)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    pub kind: LossKind,
    /// InfoNCE's temperature; KL distillation divides student and teacher scores by it too.
    pub temperature: f64,
    /// Rows per GradCache chunk; 0 runs the plain full-batch backward.
    pub gradcache_chunk: usize,
    /// Multiplies the teacher's scores before Margin-MSE or KL, to bring a teacher of another range
    /// to the student's (ColBERT's MaxSim adds up 32 cosines; a cosine student spans [-1, 1]).
    pub teacher_scale: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            kind: LossKind::InfoNce,
            temperature: losses::DEFAULT_TEMPERATURE,
            gradcache_chunk: 0,
            teacher_scale: 1.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct NegativesConfig {
    /// Add mined hard negatives to the in-batch ones.
    pub hard: bool,
    /// Train on this triplets Parquet file (from `ragtune retriever mine`, teacher-scored by
    /// `ragtune retriever score` for distillation) instead of mining or plain qrels pairs. Its
    /// queries must belong to the training split.
    pub triplets: Option<PathBuf>,
    /// ANCE-style: mine again with the current model every this many optimizer steps.
    pub remine_every_steps: Option<u64>,
    pub mining: MiningConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportConfig {
    /// Also search with HNSW on the test set, and report its recall against exact search.
    pub hnsw: bool,
    pub hnsw_config: HnswConfig,
    pub bootstrap_resamples: usize,
    pub confidence: f64,
    pub bootstrap_seed: u64,
}

impl Default for ReportConfig {
    fn default() -> Self {
        Self {
            hnsw: true,
            hnsw_config: HnswConfig::default(),
            bootstrap_resamples: 2000,
            confidence: 0.95,
            bootstrap_seed: 0,
        }
    }
}

/// What the model learns from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ObjectiveKind {
    /// (query, positive[, negatives]) pairs from the training split's qrels or a triplets file.
    #[default]
    Supervised,
    /// Contriever's unsupervised independent cropping over a raw corpus (no queries), see
    /// [`crate::contriever`].
    ContrieverCrops,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectiveConfig {
    pub kind: ObjectiveKind,
    /// The raw corpus of `contriever_crops`: a corpus Parquet table or a dataset folder. Without
    /// it, the corpus of `data.source` (its passages only; its queries are never seen).
    pub corpus: Option<PathBuf>,
    pub crop: CropConfig,
}

/// A whole run, as `configs/retriever-*.toml` spells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RetrieverConfig {
    pub data: DataConfig,
    pub model: ModelConfig,
    pub objective: ObjectiveConfig,
    /// ColBERT's settings, used when `model.architecture = "colbert"`.
    pub colbert: ColbertConfig,
    pub loss: LossConfig,
    pub negatives: NegativesConfig,
    pub report: ReportConfig,
    pub trainer: TrainerConfig,
}

/// Reads a recipe's TOML from `path`, naming the file and suggesting the nearest key on an
/// unknown one, then runs its `validate`.
pub(crate) fn read_config<C: serde::de::DeserializeOwned>(
    path: &Path,
    validate: impl FnOnce(&C) -> Result<()>,
) -> Result<C> {
    let text = std::fs::read_to_string(path).map_err(|e| RetrieverError::io(path, e))?;
    let config: C = toml::from_str(&text).map_err(|e| RetrieverError::Config {
        path: path.to_path_buf(),
        message: ragtune_trainer::config_errors::with_suggestion(&e.to_string()),
    })?;
    validate(&config).map_err(|e| RetrieverError::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(config)
}

impl RetrieverConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        crate::train::read_config(path, Self::validate)
    }

    /// Settings that contradict each other, found before any model or data is loaded.
    pub fn validate(&self) -> Result<()> {
        let invalid = |m: &str| Err(RetrieverError::Invalid(m.into()));
        let colbert = self.model.architecture == Architecture::Colbert;
        if self.negatives.hard && colbert {
            return invalid(
                "negatives.hard mines with a single-vector index: mine with a bi-encoder \
                 (`ragtune retriever mine`) and train ColBERT on negatives.triplets",
            );
        }
        if self.negatives.hard && self.negatives.triplets.is_some() {
            return invalid(
                "negatives.hard (mine now) and negatives.triplets (a mined file) exclude each other",
            );
        }
        if self.loss.kind.is_distillation() && self.negatives.triplets.is_none() {
            return Err(RetrieverError::Invalid(format!(
                "loss.kind {:?} distills teacher scores: set negatives.triplets to a teacher-scored \
                 triplets file (`ragtune retriever score`)",
                self.loss.kind
            )));
        }
        if self.objective.kind == ObjectiveKind::ContrieverCrops {
            if colbert {
                return invalid("Contriever cropping trains a bi-encoder, not ColBERT");
            }
            if self.negatives.hard {
                return invalid(
                    "objective.kind = \"contriever_crops\" uses in-batch negatives only: set negatives.hard = false",
                );
            }
        }
        if self.data.fractions.iter().any(|f| *f < 0.0)
            || (self.data.fractions.iter().sum::<f64>() - 1.0).abs() > 1e-6
        {
            return Err(RetrieverError::Invalid(format!(
                "data.fractions must be three non-negative fractions summing to 1, got {:?}",
                self.data.fractions
            )));
        }
        self.trainer.validate()?;
        Ok(())
    }
}

/// The three splits of the configured data: the dataset's own (`train/`, `val/` and `test/`
/// folders, or a BEIR folder's `qrels/{train,dev,test}.tsv`) when it has them, else a seeded,
/// leak-free split of it.
pub fn load_splits(config: &DataConfig) -> Result<[Dataset; 3]> {
    if let Some(given) = ragtune_data::read_given_splits(&config.source, config.split_seed)? {
        return Ok(given.splits);
    }
    let dataset = if config.source.is_dir() {
        Dataset::read(&config.source)?
    } else {
        ragtune_data::import::import_faq(&config.source)?.0
    };
    let split = SplitConfig {
        seed: config.split_seed,
        fractions: config.fractions,
        stratify: false,
    };
    Ok(split_dataset(&dataset, &split)?.0)
}

/// Training pairs straight from the qrels (no mined negatives).
pub fn pairs_from_qrels(split: &Dataset) -> Result<Vec<Triplet>> {
    let docs: HashMap<&str, &ragtune_data::Doc> = split
        .corpus
        .iter()
        .map(|d| (d.doc_id.as_str(), d))
        .collect();
    let queries: HashMap<&str, &str> = split
        .queries
        .iter()
        .map(|q| (q.query_id.as_str(), q.text.as_str()))
        .collect();
    split
        .qrels
        .iter()
        .filter(|q| q.relevance > 0)
        .enumerate()
        .map(|(row, qrel)| {
            let doc = docs.get(qrel.doc_id.as_str()).ok_or_else(|| {
                RetrieverError::Invalid(format!(
                    "qrels row {row}: doc `{}` is not in the corpus",
                    qrel.doc_id
                ))
            })?;
            let query = queries.get(qrel.query_id.as_str()).ok_or_else(|| {
                RetrieverError::Invalid(format!(
                    "qrels row {row}: query `{}` is not among the queries",
                    qrel.query_id
                ))
            })?;
            Ok(Triplet {
                query_id: qrel.query_id.clone(),
                query: query.to_string(),
                positive_id: qrel.doc_id.clone(),
                positive_text: mining::passage_text(doc),
                negatives: Vec::new(),
                provenance: Default::default(),
                positive_score: None,
                scored_by: None,
            })
        })
        .collect()
}

/// One batch of triplets laid out as every loss here expects: queries in order, then the passages
/// with the positives first (column i is query i's positive) followed by each triplet's negatives.
pub struct TripletBatch<'a> {
    pub queries: Vec<&'a str>,
    pub passages: Vec<&'a str>,
    /// `[queries, passages]`: true where a column other than the row's own positive is a known
    /// positive of the row's query (a duplicate question, or a negative another pair calls
    /// positive). InfoNCE masks these out rather than push them away.
    known_positive: Tensor,
    /// For each row, the columns of its own negatives.
    negative_columns: Vec<Vec<i64>>,
    /// For each row, the teacher's scores of its positive and negatives (distillation only).
    teacher: Option<Vec<Vec<f32>>>,
}

impl<'a> TripletBatch<'a> {
    /// Lays out `batch`; with `with_teacher`, every triplet must carry teacher scores.
    pub fn new(batch: &[&'a Triplet], with_teacher: bool, device: Device) -> Result<Self> {
        let queries: Vec<&str> = batch.iter().map(|t| t.query.as_str()).collect();
        let mut passage_ids: Vec<&str> = batch.iter().map(|t| t.positive_id.as_str()).collect();
        let mut passages: Vec<&str> = batch.iter().map(|t| t.positive_text.as_str()).collect();
        let mut negative_columns = Vec::with_capacity(batch.len());
        for t in batch {
            let mut columns = Vec::with_capacity(t.negatives.len());
            for n in &t.negatives {
                columns.push(passages.len() as i64);
                passage_ids.push(&n.doc_id);
                passages.push(&n.text);
            }
            negative_columns.push(columns);
        }
        let mut positives_of: HashMap<&str, HashSet<&str>> = HashMap::new();
        for t in batch {
            positives_of
                .entry(&t.query_id)
                .or_default()
                .insert(&t.positive_id);
        }
        let mut mask = vec![false; batch.len() * passages.len()];
        for (i, t) in batch.iter().enumerate() {
            for (j, id) in passage_ids.iter().enumerate() {
                mask[i * passages.len() + j] =
                    j != i && positives_of[t.query_id.as_str()].contains(id);
            }
        }
        let known_positive = Tensor::from_slice(&mask)
            .view([batch.len() as i64, passages.len() as i64])
            .to_device(device);
        let teacher = if with_teacher {
            let rows = batch
                .iter()
                .map(|t| {
                    // A row without negatives has nothing to distill; its positive may be unscored.
                    let positive = match (t.positive_score, t.negatives.is_empty()) {
                        (Some(score), _) => score,
                        (None, true) => 0.0,
                        (None, false) => return Err(unscored(t)),
                    };
                    Ok(std::iter::once(positive)
                        .chain(t.negatives.iter().map(|n| n.score))
                        .collect())
                })
                .collect::<Result<Vec<Vec<f32>>>>()?;
            Some(rows)
        } else {
            None
        };
        Ok(Self {
            queries,
            passages,
            known_positive,
            negative_columns,
            teacher,
        })
    }

    /// The configured loss of the student's `scores [queries, passages]` for this batch.
    pub fn loss(&self, scores: &Tensor, config: &LossConfig) -> Result<Tensor> {
        match config.kind {
            LossKind::InfoNce => losses::info_nce(
                &scores.masked_fill(&self.known_positive, -1e4),
                config.temperature,
            ),
            LossKind::SymmetricInfoNce => losses::symmetric_info_nce(
                &scores.masked_fill(&self.known_positive, -1e4),
                config.temperature,
            ),
            LossKind::MarginMse | LossKind::Kl => self.distillation_loss(scores, config),
        }
    }

    fn distillation_loss(&self, scores: &Tensor, config: &LossConfig) -> Result<Tensor> {
        let teacher = self.teacher.as_ref().ok_or_else(|| {
            RetrieverError::Invalid("distillation needs a batch built with teacher scores".into())
        })?;
        let device = scores.device();
        let scale = |v: &[f32]| {
            Tensor::from_slice(v).to_device(device).to_kind(Kind::Float) * config.teacher_scale
        };
        // Each row's own candidates: its positive (column i), then its negatives.
        let candidates = |i: usize| {
            let mut columns = vec![i as i64];
            columns.extend(&self.negative_columns[i]);
            scores
                .get(i as i64)
                .index_select(0, &Tensor::from_slice(&columns).to_device(device))
        };
        match config.kind {
            LossKind::MarginMse => {
                let (mut student_pos, mut student_neg, mut teacher_pos, mut teacher_neg) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                for (i, row) in teacher.iter().enumerate().filter(|(_, r)| r.len() > 1) {
                    let student = candidates(i);
                    let n = row.len() as i64 - 1;
                    student_pos.push(student.narrow(0, 0, 1).expand([n], false));
                    student_neg.push(student.narrow(0, 1, n));
                    teacher_pos.push(scale(&row[..1]).expand([n], false));
                    teacher_neg.push(scale(&row[1..]));
                }
                if student_pos.is_empty() {
                    // No row of this batch has a negative: zero, still attached to the graph.
                    return Ok(scores.sum(Kind::Float) * 0.0);
                }
                losses::margin_mse(
                    &Tensor::cat(&student_pos, 0),
                    &Tensor::cat(&student_neg, 0),
                    &Tensor::cat(&teacher_pos, 0),
                    &Tensor::cat(&teacher_neg, 0),
                )
            }
            _ => {
                // Rows may hold different numbers of negatives, so each is its own softmax.
                let mut total = Tensor::zeros([], (Kind::Float, device));
                for (i, row) in teacher.iter().enumerate() {
                    total += losses::kl_distillation(
                        &candidates(i).unsqueeze(0),
                        &scale(row).unsqueeze(0),
                        config.temperature,
                    )?;
                }
                Ok(total / teacher.len().max(1) as f64)
            }
        }
    }
}

fn unscored(t: &Triplet) -> RetrieverError {
    RetrieverError::Invalid(format!(
        "triplet of query `{}` (positive `{}`) has negatives but no score for its positive: \
         distillation needs teacher scores; attach them with `ragtune retriever score`",
        t.query_id, t.positive_id
    ))
}

/// The loss of one batch of triplets for a bi-encoder (see [`TripletBatch`]), with GradCache when
/// `config.gradcache_chunk` is set.
pub fn batch_loss(
    model: &BiEncoder,
    batch: &[&Triplet],
    config: &LossConfig,
    step: u64,
    train: bool,
) -> Result<Tensor> {
    let layout = TripletBatch::new(batch, config.kind.is_distillation(), model.device())?;
    let (queries, passages) = (&layout.queries, &layout.passages);
    let similarity = model.similarity();
    let loss_of = |reps: &[Tensor]| -> Result<Tensor> {
        layout.loss(&similarity.matrix(&reps[0], &reps[1]), config)
    };
    if config.gradcache_chunk == 0 || !train {
        return loss_of(&[
            model.forward_queries(queries, train)?,
            model.forward_passages(passages, train)?,
        ]);
    }
    let q_ranges = gradcache::chunk_ranges(queries.len(), config.gradcache_chunk);
    let p_ranges = gradcache::chunk_ranges(passages.len(), config.gradcache_chunk);
    let sides = [
        Side::new(q_ranges.len(), |c| {
            model.forward_queries(&queries[q_ranges[c].clone()], true)
        }),
        Side::new(p_ranges.len(), |c| {
            model.forward_passages(&passages[p_ranges[c].clone()], true)
        }),
    ];
    let value = gradcache::backward(&sides, step as i64, loss_of)?;
    // The gradients are in place; hand the trainer a graph-free leaf carrying the loss value, whose
    // own backward adds nothing to the model.
    Ok(Tensor::from(value as f32).set_requires_grad(true))
}

/// Reads a triplets file to train on, checking that every query belongs to the training split
/// (no test query may leak in) and, for distillation, that every row carries teacher scores.
pub fn read_training_triplets(
    path: &Path,
    train: &Dataset,
    distillation: bool,
) -> Result<Vec<Triplet>> {
    let triplets: Vec<Triplet> = ragtune_data::read_table(path)?;
    let train_queries: HashSet<&str> = train.queries.iter().map(|q| q.query_id.as_str()).collect();
    for (row, t) in triplets.iter().enumerate() {
        if !train_queries.contains(t.query_id.as_str()) {
            return Err(RetrieverError::Config {
                path: path.to_path_buf(),
                message: format!(
                    "row {row}: query `{}` is not in the training split (a triplets file for this \
                     config must be mined from its training split)",
                    t.query_id
                ),
            });
        }
        if distillation && t.positive_score.is_none() && !t.negatives.is_empty() {
            return Err(RetrieverError::Config {
                path: path.to_path_buf(),
                message: format!("row {row}: {}", unscored(t)),
            });
        }
    }
    if triplets.is_empty() {
        return Err(RetrieverError::Config {
            path: path.to_path_buf(),
            message: "no triplets".into(),
        });
    }
    Ok(triplets)
}

/// The mined triplets of a run, in its folder.
const MINED_FILE: &str = "triplets.parquet";

/// Whether `config` continues a run that has saved a checkpoint.
fn resuming(config: &RetrieverConfig) -> bool {
    let checkpoints = config.trainer.run_dir().join("checkpoints");
    config.trainer.resume
        && ragtune_trainer::CheckpointManager::new(checkpoints, 1)
            .latest()
            .is_ok_and(|latest| latest.is_some())
}

/// The run's outcome, also written as `report.json` and `report.md` in the run folder.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_dir: PathBuf,
    pub steps: u64,
    /// Training examples: pairs, or documents for the cropping objective.
    pub train_pairs: usize,
    pub mining: Option<MiningReport>,
    pub report: serde_json::Value,
    pub markdown: String,
}

/// Trains and evaluates as `config` says, on `device`; writes the run folder and returns the report.
pub fn run(config: &RetrieverConfig, device: Device) -> Result<RunReport> {
    // 1. Data: the dataset's own splits, or a seeded, leak-free split of it.
    config.validate()?;
    let [train, val, test] = load_splits(&config.data)?;
    let run_dir = config.trainer.run_dir();
    std::fs::create_dir_all(&run_dir).map_err(|e| RetrieverError::io(&run_dir, e))?;

    // 2. The base model, evaluated zero-shot.
    let model = Retriever::load(config, device)?;
    let hnsw = config.report.hnsw.then(|| model.hnsw_config(config));
    let before = model.evaluate(&test, hnsw)?;
    let before_val = model.evaluate(&val, None)?;

    // 3. Training examples: pairs (with mined hard negatives when asked for), or raw documents to crop.
    let mut mining_report = None;
    let bi_encoder = model.bi_encoder();
    let crops: Vec<TokenizedText> = if config.objective.kind == ObjectiveKind::ContrieverCrops {
        config.objective.crop.validate()?;
        let bi_encoder = bi_encoder.ok_or_else(|| {
            RetrieverError::Invalid("Contriever cropping trains a bi-encoder, not ColBERT".into())
        })?;
        let docs = match &config.objective.corpus {
            Some(path) => contriever::read_corpus(path)?,
            None => train.corpus.clone(),
        };
        contriever::tokenize_corpus(bi_encoder, &docs, &config.objective.crop)?
    } else {
        Vec::new()
    };
    let mut triplets = if !crops.is_empty() {
        Vec::new()
    } else if let Some(path) = &config.negatives.triplets {
        read_training_triplets(path, &train, config.loss.kind.is_distillation())?
    } else if let (true, true) = (
        config.negatives.hard && resuming(config),
        run_dir.join(MINED_FILE).is_file(),
    ) {
        // HNSW builds its graph in parallel, so mining again could pick other negatives: a resumed
        // run trains on the ones it started with.
        ragtune_data::read_table(&run_dir.join(MINED_FILE))?
    } else if let (true, Some(bi_encoder)) = (config.negatives.hard, bi_encoder) {
        let (triplets, report) = tch::no_grad(|| {
            mining::mine(
                bi_encoder,
                &train.corpus,
                &train.queries,
                &train.qrels,
                &config.negatives.mining,
                &model_name(config),
            )
        })?;
        ragtune_data::write_table(&run_dir.join(MINED_FILE), &triplets)?;
        mining_report = Some(report);
        triplets
    } else {
        pairs_from_qrels(&train)?
    };

    // 4. Training under the shared trainer: checkpoints, resume, metrics.jsonl, early stopping on val nDCG@10.
    let examples = if crops.is_empty() {
        triplets.len()
    } else {
        crops.len()
    };
    let mut trainer = Trainer::new(config.trainer.clone(), model.var_store(), examples)?;
    while !trainer.finished() {
        if let (Some(every), true, Some(bi_encoder)) = (
            config.negatives.remine_every_steps,
            config.negatives.hard,
            bi_encoder,
        ) {
            if trainer.step() > 0 && trainer.step() % every == 0 {
                let (fresh, report) = tch::no_grad(|| {
                    mining::mine(
                        bi_encoder,
                        &train.corpus,
                        &train.queries,
                        &train.qrels,
                        &config.negatives.mining,
                        &model_name(config),
                    )
                })?;
                trainer.println(format!(
                    "step {}: re-mined {} negatives ({} likely false negatives dropped)",
                    trainer.step(),
                    report.negatives,
                    report.dropped_likely_false_negatives
                ));
                triplets = fresh;
                mining_report = Some(report);
            }
        }
        trainer.train_step(
            |batch| {
                if let (false, Some(bi_encoder)) = (crops.is_empty(), bi_encoder) {
                    let docs: Vec<&TokenizedText> =
                        batch.indices.iter().map(|&i| &crops[i]).collect();
                    return contriever::crop_batch_loss(
                        bi_encoder,
                        &docs,
                        &config.objective.crop,
                        &config.loss,
                        batch.rng,
                        batch.step,
                        true,
                    );
                }
                let rows: Vec<&Triplet> = batch.indices.iter().map(|&i| &triplets[i]).collect();
                model.batch_loss(&rows, &config.loss, batch.step, true)
            },
            || -> Result<Metrics> {
                let evaluation = model.evaluate(&val, None)?;
                Ok(evaluation.exact.mean.clone().into_iter().collect())
            },
        )?;
    }
    let summary = trainer.finish()?;
    if let Some(best) = &summary.best_checkpoint {
        ragtune_trainer::load_checkpoint_weights(model.var_store(), best)?;
    }

    // 5. Final evaluation and the before/after report.
    let after = model.evaluate(&test, hnsw)?;
    let after_val = model.evaluate(&val, None)?;
    model.save(&run_dir.join("model"))?;
    let (report, markdown) =
        build_report(config, &before, &after, &before_val, &after_val, &summary)?;
    let json_text = serde_json::to_string_pretty(&report).expect("report serializes");
    ragtune_models::checkpoint::atomic_write(&run_dir.join("report.json"), json_text.as_bytes())?;
    ragtune_models::checkpoint::atomic_write(&run_dir.join("report.md"), markdown.as_bytes())?;
    Ok(RunReport {
        run_dir,
        steps: summary.steps,
        train_pairs: examples,
        mining: mining_report,
        report,
        markdown,
    })
}

/// The model of `config` as a teacher that scores (query, passage) pairs.
pub fn load_teacher(config: &RetrieverConfig, device: Device) -> Result<Box<dyn PairScorer>> {
    Ok(Box::new(Retriever::load(config, device)?))
}

/// Any retriever the recipe trains: a bi-encoder, or ColBERT (`model.architecture = "colbert"`).
pub enum Retriever {
    Bi(Box<BiEncoder>),
    Colbert(Box<Colbert>),
}

impl Retriever {
    pub fn load(config: &RetrieverConfig, device: Device) -> Result<Self> {
        Ok(match config.model.architecture {
            Architecture::Colbert => Retriever::Colbert(Box::new(Colbert::load(
                &config.model,
                &config.colbert,
                device,
            )?)),
            _ => Retriever::Bi(Box::new(BiEncoder::load(
                &config.model,
                device,
                Kind::Float,
            )?)),
        })
    }

    /// The variables to train.
    pub fn var_store(&self) -> &tch::nn::VarStore {
        match self {
            Retriever::Bi(m) => m.var_store(),
            Retriever::Colbert(m) => m.var_store(),
        }
    }

    pub fn bi_encoder(&self) -> Option<&BiEncoder> {
        match self {
            Retriever::Bi(m) => Some(m),
            Retriever::Colbert(_) => None,
        }
    }

    /// The HNSW settings of this model's approximate search: over passages for a bi-encoder,
    /// over document tokens for ColBERT.
    pub fn hnsw_config(&self, config: &RetrieverConfig) -> HnswConfig {
        match self {
            Retriever::Bi(_) => config.report.hnsw_config,
            Retriever::Colbert(_) => config.colbert.hnsw,
        }
    }

    /// Full-corpus retrieval measures on `split` (exact search, plus HNSW when `hnsw` is set).
    pub fn evaluate(&self, split: &Dataset, hnsw: Option<HnswConfig>) -> Result<Evaluation> {
        tch::no_grad(|| match self {
            Retriever::Bi(m) => {
                let m: &BiEncoder = m;
                let corpus = encode_corpus(m, &split.corpus, hnsw)?;
                evaluate_queries(m, &corpus, &split.queries, &split.qrels, hnsw.is_some())
            }
            Retriever::Colbert(m) => {
                colbert::evaluate(m, &split.corpus, &split.queries, &split.qrels, hnsw)
            }
        })
    }

    /// The loss of a batch of triplets (see [`TripletBatch`]).
    pub fn batch_loss(
        &self,
        batch: &[&Triplet],
        config: &LossConfig,
        step: u64,
        train: bool,
    ) -> Result<Tensor> {
        match self {
            Retriever::Bi(m) => batch_loss(m, batch, config, step, train),
            Retriever::Colbert(m) => m.batch_loss(batch, config, step, train),
        }
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        match self {
            Retriever::Bi(m) => m.save(dir),
            Retriever::Colbert(m) => m.save(dir),
        }
    }
}

impl PairScorer for Retriever {
    fn score_pairs(&self, queries: &[&str], passages: &[&str]) -> Result<Vec<f32>> {
        match self {
            Retriever::Bi(m) => m.score_pairs(queries, passages),
            Retriever::Colbert(m) => m.score_pairs(queries, passages),
        }
    }
}

fn model_name(config: &RetrieverConfig) -> String {
    config.model.base.display().to_string()
}

/// Per-measure means before and after with a paired bootstrap CI of the difference (test set).
fn build_report(
    config: &RetrieverConfig,
    before: &Evaluation,
    after: &Evaluation,
    before_val: &Evaluation,
    after_val: &Evaluation,
    summary: &ragtune_trainer::RunSummary,
) -> Result<(serde_json::Value, String)> {
    let r = &config.report;
    let mut rows = Vec::new();
    let mut md = String::new();
    md.push_str(&format!(
        "# Retriever run `{}`\n\nBase `{}`, {} test queries, {} optimizer steps{}.\n\n",
        config.trainer.run_name,
        config.model.base.display(),
        after.exact.num_queries,
        summary.steps,
        if summary.stopped_early {
            " (stopped early)"
        } else {
            ""
        }
    ));
    md.push_str(&format!(
        "## Test, exact search (paired bootstrap, {} resamples, {:.0}% CI of after − before)\n\n",
        r.bootstrap_resamples,
        r.confidence * 100.0
    ));
    md.push_str("| measure | zero-shot | fine-tuned | difference | CI low | CI high | p |\n|---|---|---|---|---|---|---|\n");
    for measure in measures() {
        let name = measure.to_string();
        let per_query = |e: &Evaluation| -> Vec<f64> {
            e.exact
                .per_query
                .values()
                .map(|m| m.get(&name).copied().unwrap_or(0.0))
                .collect()
        };
        let (a, b) = (per_query(before), per_query(after));
        let ci = paired_bootstrap(
            &a,
            &b,
            r.bootstrap_resamples,
            r.confidence,
            r.bootstrap_seed,
        )?;
        md.push_str(&format!(
            "| {name} | {:.4} | {:.4} | {:+.4} | {:+.4} | {:+.4} | {:.4} |\n",
            ci.mean_a, ci.mean_b, ci.mean_difference, ci.ci_low, ci.ci_high, ci.p_value
        ));
        rows.push(json!({
            "measure": name, "zero_shot": ci.mean_a, "fine_tuned": ci.mean_b,
            "difference": ci.mean_difference, "ci_low": ci.ci_low, "ci_high": ci.ci_high, "p_value": ci.p_value,
        }));
    }
    let val_ndcg = |e: &Evaluation| e.exact.mean.get("ndcg@10").copied().unwrap_or(0.0);
    md.push_str(&format!(
        "\nValidation nDCG@10: {:.4} zero-shot, {:.4} fine-tuned.\n",
        val_ndcg(before_val),
        val_ndcg(after_val)
    ));
    let mut hnsw_json = serde_json::Value::Null;
    if let (Some((hb, rb10, rb100)), Some((ha, ra10, ra100))) = (&before.hnsw, &after.hnsw) {
        let (graph, what) = if config.model.architecture == Architecture::Colbert {
            (
                config.colbert.hnsw,
                format!(
                    "over document tokens, {} per query token, MaxSim reranking of their documents",
                    config.colbert.candidate_tokens
                ),
            )
        } else {
            (r.hnsw_config, "over passages".to_string())
        };
        md.push_str(&format!(
            "\n## Test, HNSW {what} (m {}, ef_construction {}, ef_search {})\n\n| model | nDCG@10 | Recall@100 | recall@10 vs exact | recall@100 vs exact |\n|---|---|---|---|---|\n",
            graph.m, graph.ef_construction, graph.ef_search
        ));
        for (label, report, r10, r100) in [
            ("zero-shot", hb, rb10, rb100),
            ("fine-tuned", ha, ra10, ra100),
        ] {
            md.push_str(&format!(
                "| {label} | {:.4} | {:.4} | {:.4} | {:.4} |\n",
                report.mean.get("ndcg@10").copied().unwrap_or(0.0),
                report.mean.get("recall@100").copied().unwrap_or(0.0),
                r10,
                r100
            ));
        }
        hnsw_json = json!({
            "config": graph,
            "zero_shot": {"mean": hb.mean, "recall_vs_exact@10": rb10, "recall_vs_exact@100": rb100},
            "fine_tuned": {"mean": ha.mean, "recall_vs_exact@10": ra10, "recall_vs_exact@100": ra100},
        });
    }
    let report = json!({
        "run": config.trainer.run_name,
        "base": config.model.base,
        "steps": summary.steps,
        "stopped_early": summary.stopped_early,
        "best_checkpoint": summary.best_checkpoint,
        "test_queries": after.exact.num_queries,
        "test_exact": rows,
        "test_hnsw": hnsw_json,
        "val_ndcg@10": {"zero_shot": val_ndcg(before_val), "fine_tuned": val_ndcg(after_val)},
        "config": config,
    });
    Ok((report, md))
}
