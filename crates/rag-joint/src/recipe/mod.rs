//! The joint recipe, top to bottom: load the retriever, the generator and the splits; evaluate the
//! starting point; run the method's steps (LSR retriever steps; RA-DIT rounds of a retriever and a
//! generator step; or RAG-sequence), evaluating after each; export the tuned retriever (and
//! adapter); compare start and end on the test split; write the report.
//!
//! Every step runs in its own folder under the shared trainer, so a killed run resumes inside the
//! step it was in (checkpoints, data cursor and RNG), and finished steps are not run again: each
//! leaves `step.json` with the checkpoint or adapter to restore from.

mod export;
mod generator_step;
mod rag_sequence_step;
mod retriever_step;

pub use export::export_retriever;
pub use retriever_step::Targets;

use generator_step::generator_step;
use rag_sequence_step::rag_sequence_step;
use retriever_step::retriever_step;

use crate::config::{JointConfig, Method, Towers};
use crate::evaluate::{compare, retrieval_per_query, Comparison, Evaluator, Point, ANSWER_METRICS};
use crate::scoring::{ScoreCache, ScoringStats};
use crate::{JointError, Result};
use ragtune_data::{Dataset, QaExample};
use ragtune_generator_train::config::GeneratorConfig;
use ragtune_generator_train::contexts::Ranking;
use ragtune_generator_train::evaluate::evaluate_with_progress;
use ragtune_models::llama_load::{load_causal_lm, CausalLm};
use ragtune_models::peft::Peft;
use ragtune_retrieval::{Corpus, DenseRetriever, Retriever};
use ragtune_trainer::{RunSummary, Trainer, TrainerConfig};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind};

/// The LM cache, shared by every step and by later runs in the same folder.
pub const SCORE_CACHE: &str = "lm-scores.parquet";
const STEP_RECORD: &str = "step.json";
const TARGETS: &str = "targets.json";
/// The [`JointReport`] as JSON (`report.json` is the page's model).
pub const SUMMARY: &str = "summary.json";

/// What a finished step leaves behind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    pub steps: u64,
    pub seconds: f64,
    pub point: Point,
    /// The trainer's last checkpoint (retriever weights to restore).
    pub checkpoint: Option<PathBuf>,
    /// The adapter this step saved.
    pub adapter: Option<PathBuf>,
    pub scoring: Option<ScoringStats>,
    /// Seconds each corpus re-encoding and index rebuild took (both towers).
    pub refresh_seconds: Vec<f64>,
    /// Training examples (questions; generator steps: question–passage examples).
    pub examples: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestResults {
    pub queries: usize,
    pub questions: usize,
    pub retrieval: BTreeMap<String, Comparison>,
    pub answers: BTreeMap<String, Comparison>,
}

/// What [`run`] did, also written as `summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JointReport {
    pub run_dir: PathBuf,
    pub method: Method,
    pub start_retriever: PathBuf,
    pub start_adapter: Option<PathBuf>,
    /// The tuned retriever: `query/` and `passage/` towers, or one folder.
    pub retriever: PathBuf,
    /// The tuned adapter, when the generator trained.
    pub adapter: Option<PathBuf>,
    pub trajectory: Vec<Point>,
    pub steps: Vec<StepRecord>,
    pub test: Option<TestResults>,
    pub config: serde_json::Value,
}

/// Everything the steps share.
struct Run<'a> {
    config: &'a JointConfig,
    generator: &'a GeneratorConfig,
    device: Device,
    retriever: DenseRetriever,
    lm: CausalLm,
    adapter: Option<Peft>,
    /// Where the current adapter's weights are on disk (its fingerprint keys the LM cache).
    adapter_dir: Option<PathBuf>,
    qa: Vec<QaExample>,
    cache: ScoreCache,
}

/// Runs `config` on `device`: the whole recipe, resumed where a previous run in the same folder
/// stopped.
pub fn run(config: &JointConfig, device: Device) -> Result<JointReport> {
    // 1. Splits, retriever, generator.
    config.validate()?;
    let g = config.generator()?;
    let run_dir = config.run_dir();
    std::fs::create_dir_all(&run_dir).map_err(|e| JointError::io(&run_dir, e))?;
    let train = Dataset::read(&g.train)?;
    let val = Dataset::read(g.valid.as_deref().expect("validated"))?;
    let corpus = match &g.corpus {
        Some(dir) => Dataset::read(dir)?.corpus,
        None => train.corpus.clone(),
    };
    if corpus.len() < config.lsr.k.max(config.rag_sequence.k) {
        return Err(JointError::Invalid(format!(
            "the corpus has {} passages, fewer than k",
            corpus.len()
        )));
    }
    let retriever = DenseRetriever::load(&config.retriever.dense, Corpus::new(corpus), device)?;
    let mut lm = load_causal_lm(&g.model, device, Kind::Float)?;
    // The base weights never train here: no gradient is kept for them.
    lm.var_store.freeze();
    let adapter = match &config.adapter {
        Some(dir) => {
            let adapter = Peft::load(dir, &lm.model, device)?;
            if matches!(adapter, Peft::Prefix(_) | Peft::Prompt(_)) {
                return Err(JointError::Invalid(format!(
                    "{}: joint training evaluates by generating, which supports LoRA, IA3 and \
                     bottleneck adapters, not prefix or prompt tuning",
                    dir.display()
                )));
            }
            adapter.attach(&mut lm.model);
            Some(adapter)
        }
        None => None,
    };
    let mut qa: Vec<QaExample> = train
        .qa
        .iter()
        .filter(|q| !q.answers.is_empty())
        .cloned()
        .collect();
    if let Some(max) = config.max_train_questions {
        qa.truncate(max);
    }
    if qa.is_empty() {
        return Err(JointError::Invalid(format!(
            "{}: no training questions with an answer (qa table)",
            g.train.display()
        )));
    }
    let mut run = Run {
        config,
        generator: g,
        device,
        retriever,
        lm,
        adapter,
        adapter_dir: config.adapter.clone(),
        qa,
        cache: ScoreCache::open(
            &config
                .lsr
                .cache
                .clone()
                .unwrap_or_else(|| run_dir.join(SCORE_CACHE)),
        )?,
    };
    let qa_for_eval = run.qa.clone();
    let evaluator = Evaluator::new(config, &val, &qa_for_eval, &run.retriever)?;

    // 2. The starting point.
    let start_file = run_dir.join("start.json");
    let start = match read_json::<Point>(&start_file)? {
        Some(point) => point,
        None => {
            let point = evaluator.point("start", &run.retriever, &run.lm)?;
            write_json(&start_file, &point)?;
            point
        }
    };
    print_point(&start);

    // 3. The method's steps, each evaluated.
    let mut steps = Vec::new();
    match config.method {
        Method::Lsr => {
            for round in 1..=config.rounds {
                steps.push(retriever_step(&mut run, &evaluator, round)?);
            }
        }
        Method::RaDit => {
            for round in 1..=config.rounds {
                steps.push(retriever_step(&mut run, &evaluator, round)?);
                steps.push(generator_step(&mut run, &evaluator, round)?);
            }
        }
        Method::RagSequence => {
            for round in 1..=config.rounds {
                steps.push(rag_sequence_step(&mut run, &evaluator, round)?);
            }
        }
    }

    // 4. Export the tuned retriever and adapter.
    let retriever_dir = run_dir.join("model");
    export_retriever(&run.retriever, config.retriever.towers, &retriever_dir)?;
    let adapter_dir = if config.trains_generator() {
        let dir = run_dir.join("adapter");
        run.adapter
            .as_ref()
            .expect("a generator step made or loaded one")
            .save(&dir)?;
        Some(dir)
    } else {
        None
    };

    // 5. Start against end on the test split.
    let test = match (&g.test, config.eval.test) {
        (Some(dir), true) => Some(test_comparison(&mut run, &Dataset::read(dir)?, &evaluator)?),
        _ => None,
    };

    let mut trajectory = vec![start];
    trajectory.extend(steps.iter().map(|s| s.point.clone()));
    let report = JointReport {
        run_dir: run_dir.clone(),
        method: config.method,
        start_retriever: config.retriever.dense.model.clone(),
        start_adapter: config.adapter.clone(),
        retriever: retriever_dir,
        adapter: adapter_dir,
        trajectory,
        steps,
        test,
        config: serde_json::to_value(config).expect("the config serializes"),
    };
    write_json(&run_dir.join(SUMMARY), &report)?;
    crate::report::write(&report, &run_dir)?;
    Ok(report)
}

/// One variable store over what trains: the query tower (and the passage tower when both train
/// and they are separate), and the generator's adapter when given.
fn trainable_retriever(
    retriever: &DenseRetriever,
    towers: Towers,
    generator: Option<&nn::VarStore>,
) -> nn::VarStore {
    let vs = nn::VarStore::new(retriever.query_tower().device());
    ragtune_trainer::params::share_variables(&vs, "query", retriever.query_tower().var_store());
    if towers == Towers::Both && !retriever.shared_towers() {
        ragtune_trainer::params::share_variables(
            &vs,
            "passage",
            retriever.passage_tower().var_store(),
        );
    }
    if let Some(generator) = generator {
        ragtune_trainer::params::share_variables(&vs, "generator", generator);
    }
    vs
}

/// The step's trainer: the configured one, in the step's folder.
fn step_trainer(base: &TrainerConfig, dir: &Path) -> TrainerConfig {
    let mut config = base.clone();
    config.runs_dir = dir.parent().unwrap_or(Path::new(".")).to_path_buf();
    config.run_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    config
}

/// The starting and the final system on the test split: retrieval per query, answers per question.
fn test_comparison(run: &mut Run, test: &Dataset, evaluator: &Evaluator) -> Result<TestResults> {
    let config = run.config;
    let g = run.generator;
    let start_retriever = DenseRetriever::load(
        &config.retriever.dense,
        run.retriever.corpus().clone(),
        run.device,
    )?;
    let before = retrieval_per_query(&start_retriever, test, &evaluator.measures)?;
    let after = retrieval_per_query(&run.retriever, test, &evaluator.measures)?;
    let mut retrieval = BTreeMap::new();
    for (measure, start) in &before {
        retrieval.insert(measure.clone(), compare(config, start, &after[measure])?);
    }
    let queries = before.values().next().map_or(0, Vec::len);
    let mut answers = BTreeMap::new();
    let mut questions = 0;
    if !test.qa.is_empty() {
        let mut settings = g.eval.clone();
        settings.limit = config.eval.test_questions.or(settings.limit);
        let k = g.contexts.k;
        let answer = |lm: &CausalLm, retriever: &dyn Retriever, label: &str| {
            let ranking = Ranking::for_qa(retriever, &test.qa, k)?;
            let report =
                evaluate_with_progress(lm, &test.qa, &ranking, &g.prompt, k, &settings, label)?;
            Ok::<_, JointError>(report)
        };
        let end = answer(&run.lm, &run.retriever, "test questions (end)")?;
        if config.trains_generator() {
            run.lm.model.set_adapter(None);
            if let Some(dir) = &config.adapter {
                Peft::load(dir, &run.lm.model, run.device)?.attach(&mut run.lm.model);
            }
        }
        let start = answer(&run.lm, &start_retriever, "test questions (start)")?;
        if config.trains_generator() {
            run.lm.model.set_adapter(None);
            if let Some(a) = &run.adapter {
                a.attach(&mut run.lm.model);
            }
        }
        questions = end.examples;
        for m in ANSWER_METRICS {
            if let (Some(s), Some(e)) = (start.per_question.get(m), end.per_question.get(m)) {
                answers.insert(m.to_string(), compare(config, s, e)?);
            }
        }
    }
    Ok(TestResults {
        queries,
        questions,
        retrieval,
        answers,
    })
}

/// Ends a step that ran under a trainer: evaluates the system as it now stands, logs the point to
/// the step's metrics.jsonl and closes the trainer.
fn evaluate_and_finish(
    run: &Run,
    evaluator: &Evaluator,
    mut trainer: Trainer,
    label: &str,
) -> Result<(Point, RunSummary)> {
    let point = evaluator.point(label, &run.retriever, &run.lm)?;
    trainer.log(&json!({"type": "point", "point": point}))?;
    Ok((point, trainer.finish()?))
}

/// Marks a step done: prints its point and writes `step.json`, which a later run restores from.
fn record_step(dir: &Path, record: StepRecord) -> Result<StepRecord> {
    print_point(&record.point);
    write_json(&dir.join(STEP_RECORD), &record)?;
    Ok(record)
}

fn print_point(point: &Point) {
    let mut parts: Vec<String> = point
        .retrieval
        .iter()
        .map(|(m, v)| format!("{m} {v:.4}"))
        .collect();
    parts.extend(point.answers.iter().map(|(m, v)| format!("{m} {v:.4}")));
    println!(
        "{}: {} | entropy {:.3}, {} distinct passages, gold in top-{} {:.3}",
        point.label,
        parts.join("  "),
        point.watch.entropy,
        point.watch.distinct_passages,
        point.watch.k,
        point.watch.gold_in_top_k
    );
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| JointError::io(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| JointError::Config {
            path: path.to_path_buf(),
            message: format!("{e}; delete the file to recompute it"),
        })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| JointError::io(dir, e))?;
    }
    let text = serde_json::to_string_pretty(value).expect("serializes");
    ragtune_models::checkpoint::atomic_write(path, text.as_bytes())?;
    Ok(())
}
