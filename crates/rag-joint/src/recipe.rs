//! The joint recipe, top to bottom: load the retriever, the generator and the splits; evaluate the
//! starting point; run the method's steps (LSR retriever steps; RA-DIT rounds of a retriever and a
//! generator step; or RAG-sequence), evaluating after each; export the tuned retriever (and
//! adapter); compare start and end on the test split; write the report.
//!
//! Every step runs in its own folder under the shared trainer, so a killed run resumes inside the
//! step it was in (checkpoints, data cursor and RNG), and finished steps are not run again: each
//! leaves `step.json` with the checkpoint or adapter to restore from.

use crate::config::{JointConfig, Method, Scoring, Towers};
use crate::evaluate::{compare, retrieval_per_query, Comparison, Evaluator, Point, ANSWER_METRICS};
use crate::losses::{candidate_scores, lsr_loss, retriever_entropy};
use crate::rag_sequence::{self, Generator};
use crate::scoring::{self, ScoreCache, ScoringStats, Triple};
use crate::{JointError, Result};
use ragtune_data::{Dataset, Doc, QaExample};
use ragtune_generator_train::config::GeneratorConfig;
use ragtune_generator_train::contexts::Ranking;
use ragtune_generator_train::evaluate::evaluate_with_progress;
use ragtune_generator_train::prompt::PromptBuilder;
use ragtune_generator_train::sft::{self, SftExample};
use ragtune_models::llama_load::{load_causal_lm, CausalLm};
use ragtune_models::peft::Peft;
use ragtune_retrieval::{passage_text, Corpus, DenseRetriever, Retriever};
use ragtune_trainer::{Metrics, Trainer, TrainerConfig};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

/// The LM cache, shared by every step and by later runs in the same folder.
pub const SCORE_CACHE: &str = "lm-scores.parquet";
const STEP_RECORD: &str = "step.json";
const TARGETS: &str = "targets.json";
/// The [`JointReport`] as JSON (`report.json` is the page's model).
pub const SUMMARY: &str = "summary.json";

/// One question's candidates and the LM's scores of them, fixed for a retriever step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Targets {
    pub question_id: String,
    pub question: String,
    /// Corpus positions, best first under the retriever that found them.
    pub doc_indices: Vec<usize>,
    pub doc_ids: Vec<String>,
    /// Mean answer log-probability given each passage.
    pub lm_scores: Vec<f64>,
}

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

/// An LSR retriever step: fix each training question's top-k and the LM's scores of them, then
/// train the retriever to match the LM's preference.
fn retriever_step(run: &mut Run, evaluator: &Evaluator, round: usize) -> Result<StepRecord> {
    let config = run.config;
    let name = format!("round-{round}/retriever");
    let dir = config.run_dir().join(&name);
    if let Some(record) = read_json::<StepRecord>(&dir.join(STEP_RECORD))? {
        let vs = trainable_retriever(&run.retriever, config.retriever.towers, None);
        let checkpoint = record
            .checkpoint
            .as_ref()
            .expect("a retriever step saves one");
        ragtune_trainer::load_checkpoint_weights(&vs, checkpoint)?;
        if config.retriever.towers == Towers::Both {
            run.retriever.refresh()?;
        }
        println!(
            "{name}: done before, restored from {}",
            checkpoint.display()
        );
        return Ok(record);
    }
    let started = std::time::Instant::now();

    // 1. The candidates and their LM scores (kept in the step's folder, so a resumed step trains
    //    on the same ones).
    let (targets, scoring) = match read_json::<Vec<Targets>>(&dir.join(TARGETS))? {
        Some(targets) => (targets, None),
        None => {
            let first_round = config.run_dir().join("round-1/retriever").join(TARGETS);
            let (targets, stats) = match (config.lsr.scoring, round) {
                (Scoring::Once, r) if r > 1 => (
                    read_json::<Vec<Targets>>(&first_round)?.ok_or_else(|| {
                        JointError::Invalid(format!(
                            "{}: round 1's targets are missing (scoring = \"once\" reuses them)",
                            first_round.display()
                        ))
                    })?,
                    None,
                ),
                _ => {
                    let (t, s) = score_candidates(run, &dir)?;
                    (t, Some(s))
                }
            };
            write_json(&dir.join(TARGETS), &targets)?;
            (targets, stats)
        }
    };

    // 2. Training: KL between the LM's target and the retriever's distribution.
    let towers = config.retriever.towers;
    let vs = trainable_retriever(&run.retriever, towers, None);
    let mut trainer = Trainer::new(
        step_trainer(&config.retriever.trainer, &dir),
        &vs,
        targets.len(),
    )?;
    let mut refresh_seconds = Vec::new();
    if trainer.resumed_from().is_some() && towers == Towers::Both {
        refresh_seconds.push(refresh(&mut run.retriever)?);
    }
    let device = run.device;
    let lsr = &config.lsr;
    while !trainer.finished() {
        let step = trainer.step();
        if towers == Towers::Both && step > 0 && step % config.retriever.refresh_every_steps == 0 {
            let seconds = refresh(&mut run.retriever)?;
            trainer.log(&json!({"type": "index_refresh", "step": step, "seconds": seconds}))?;
            refresh_seconds.push(seconds);
        }
        let retriever = &run.retriever;
        let mut entropy = (0.0, 0usize);
        trainer.train_step(
            |batch| -> Result<Tensor> {
                let rows: Vec<&Targets> = batch.indices.iter().map(|&i| &targets[i]).collect();
                let scores = candidate_scores_of(retriever, &rows, towers, device)?;
                let lm_scores: Vec<f32> = rows
                    .iter()
                    .flat_map(|t| t.lm_scores.iter().map(|&s| s as f32))
                    .collect();
                let lm_scores = Tensor::from_slice(&lm_scores)
                    .view([rows.len() as i64, -1])
                    .to_device(device);
                let entropies = retriever_entropy(&scores.detach(), config.retriever.temperature);
                entropy.0 += entropies.sum(Kind::Float).double_value(&[]);
                entropy.1 += rows.len();
                lsr_loss(
                    &scores,
                    &lm_scores,
                    config.retriever.temperature,
                    lsr.lm_temperature,
                    lsr.direction,
                )
            },
            || validation_retrieval(retriever, evaluator),
        )?;
        trainer.log(&json!({"type": "lsr", "step": trainer.step(),
            "retriever_entropy": entropy.0 / entropy.1.max(1) as f64}))?;
    }
    if towers == Towers::Both {
        let seconds = refresh(&mut run.retriever)?;
        trainer
            .log(&json!({"type": "index_refresh", "step": trainer.step(), "seconds": seconds}))?;
        refresh_seconds.push(seconds);
    }

    // 3. Evaluate, and record the step as done.
    let point = evaluator.point(&format!("round {round} retriever"), &run.retriever, &run.lm)?;
    trainer.log(&json!({"type": "point", "point": point}))?;
    let summary = trainer.finish()?;
    let record = StepRecord {
        name,
        steps: summary.steps,
        seconds: started.elapsed().as_secs_f64(),
        point,
        checkpoint: summary.last_checkpoint,
        adapter: None,
        scoring,
        refresh_seconds,
        examples: targets.len(),
    };
    print_point(&record.point);
    write_json(&dir.join(STEP_RECORD), &record)?;
    Ok(record)
}

/// The retriever's scores of each row's candidates, on the trainable towers' graph.
fn candidate_scores_of(
    retriever: &DenseRetriever,
    rows: &[&Targets],
    towers: Towers,
    device: Device,
) -> Result<Tensor> {
    let questions: Vec<&str> = rows.iter().map(|t| t.question.as_str()).collect();
    let tower = retriever.query_tower();
    let queries = tower.forward_t(&tower.tokenize_batch(&questions)?, true);
    let (b, k) = (rows.len() as i64, rows[0].doc_indices.len() as i64);
    let passages = match towers {
        Towers::QueryOnly => {
            let indices: Vec<i64> = rows
                .iter()
                .flat_map(|t| t.doc_indices.iter().map(|&i| i as i64))
                .collect();
            retriever
                .index()
                .embeddings()
                .index_select(0, &Tensor::from_slice(&indices))
                .to_device(device)
        }
        Towers::Both => {
            let corpus = retriever.corpus();
            let texts: Vec<String> = rows
                .iter()
                .flat_map(|t| t.doc_indices.iter().map(|&i| passage_text(corpus.doc(i))))
                .collect();
            let tower = retriever.passage_tower();
            tower.forward_t(&tower.tokenize_batch(&texts)?, true)
        }
    };
    Ok(candidate_scores(
        &queries,
        &passages.view([b, k, -1]),
        retriever.config().similarity,
    ))
}

/// Each training question's top-k under the current retriever, scored by the current generator.
fn score_candidates(run: &mut Run, dir: &Path) -> Result<(Vec<Targets>, ScoringStats)> {
    let config = run.config;
    let k = config.lsr.k;
    let questions: Vec<&str> = run.qa.iter().map(|q| q.question.as_str()).collect();
    let hits = tch::no_grad(|| run.retriever.search(&questions, k))?;
    let builder = PromptBuilder::new(&run.generator.prompt, &run.lm.tokenizer)?;
    let corpus = run.retriever.corpus();
    let mut triples = Vec::new();
    for (q, hits) in run.qa.iter().zip(&hits) {
        for h in hits {
            let doc = corpus.doc(h.index);
            triples.push(Triple {
                question_id: q.id.clone(),
                doc_id: doc.doc_id.clone(),
                example: scoring::single_passage_example(
                    &builder,
                    &q.id,
                    &q.question,
                    passage_text(doc),
                    &q.answers[0],
                )?,
            });
        }
    }
    let fingerprint =
        scoring::generator_fingerprint(&run.generator.model, run.adapter_dir.as_deref())?;
    let progress = ragtune_trainer::Progress::items(triples.len() as u64, "LM scores");
    let (scores, stats) = scoring::score_triples(
        &run.lm,
        run.adapter.as_ref(),
        &fingerprint,
        &triples,
        &mut run.cache,
        config.lsr.score_batch_size,
        run.device,
        |n| progress.inc(n as u64),
    )?;
    progress.finish_and_clear();
    run.cache.save()?;
    if config.lsr.save_triples {
        let mut text = String::new();
        for (t, score) in triples.iter().zip(&scores) {
            let line = json!({"question_id": t.question_id, "doc_id": t.doc_id,
                "input_ids": t.example.input_ids, "prompt_len": t.example.prompt_len,
                "mean_logp": score});
            text.push_str(&line.to_string());
            text.push('\n');
        }
        std::fs::create_dir_all(dir).map_err(|e| JointError::io(dir, e))?;
        ragtune_models::checkpoint::atomic_write(&dir.join("triples.jsonl"), text.as_bytes())?;
    }
    println!(
        "LM scores: {} triples, {} from the cache, {} computed ({} tokens in {:.1} s, {:.0} tokens/s)",
        stats.triples,
        stats.reused,
        stats.computed,
        stats.tokens,
        stats.seconds,
        stats.tokens as f64 / stats.seconds.max(1e-9)
    );
    let mut scores = scores.into_iter();
    let targets = run
        .qa
        .iter()
        .zip(&hits)
        .map(|(q, hits)| Targets {
            question_id: q.id.clone(),
            question: q.question.clone(),
            doc_indices: hits.iter().map(|h| h.index).collect(),
            doc_ids: hits
                .iter()
                .map(|h| corpus.doc(h.index).doc_id.clone())
                .collect(),
            lm_scores: scores.by_ref().take(hits.len()).collect(),
        })
        .collect();
    Ok((targets, stats))
}

/// RA-DIT's generator step: each of a question's top-k passages (from the current retriever) is
/// its own SFT example with the answer, gold passages mixed in or held out as RAFT does.
fn generator_step(run: &mut Run, evaluator: &Evaluator, round: usize) -> Result<StepRecord> {
    let config = run.config;
    let name = format!("round-{round}/generator");
    let round_dir = config.run_dir().join(format!("round-{round}"));
    let dir = round_dir.join("generator");
    let adapter_dir = dir.join("adapter");
    if let Some(record) = read_json::<StepRecord>(&dir.join(STEP_RECORD))? {
        let adapter = Peft::load(&adapter_dir, &run.lm.model, run.device)?;
        adapter.attach(&mut run.lm.model);
        run.adapter = Some(adapter);
        run.adapter_dir = Some(adapter_dir);
        println!("{name}: done before, adapter restored");
        return Ok(record);
    }
    let started = std::time::Instant::now();
    let g = run.generator;
    if run.adapter.is_none() {
        let peft = g
            .peft
            .as_ref()
            .expect("validated: an adapter or [generator.peft]");
        run.adapter = Some(Peft::new(peft, &run.lm.model, run.device, None)?);
    }
    let examples = radit_examples(run, round)?;
    println!(
        "{name}: {} examples (question × passage) from {} questions",
        examples.len(),
        generator_questions(run).len()
    );
    let mut step_config = g.clone();
    step_config.trainer.runs_dir = round_dir;
    step_config.trainer.run_name = "generator".into();
    let summary = sft::train(
        &step_config,
        &mut run.lm,
        run.adapter.as_ref(),
        &examples,
        run.device,
        |_| Ok(Metrics::default()),
    )?;
    let adapter = run.adapter.as_ref().expect("made above");
    adapter.save(&adapter_dir)?;
    run.adapter_dir = Some(adapter_dir.clone());
    let point = evaluator.point(&format!("round {round} generator"), &run.retriever, &run.lm)?;
    let record = StepRecord {
        name,
        steps: summary.steps,
        seconds: started.elapsed().as_secs_f64(),
        point,
        checkpoint: summary.last_checkpoint,
        adapter: Some(adapter_dir),
        scoring: None,
        refresh_seconds: Vec::new(),
        examples: examples.len(),
    };
    print_point(&record.point);
    write_json(&dir.join(STEP_RECORD), &record)?;
    Ok(record)
}

/// The generator step's examples: per question, its top-k passages one at a time. With
/// probability `contexts.gold_probability` a gold passage is among them (in place of the last
/// when retrieval missed it); otherwise gold passages are replaced by the next distractors.
fn radit_examples(run: &Run, round: usize) -> Result<Vec<SftExample>> {
    let g = run.generator;
    let k = g.contexts.k;
    let ranking = tch::no_grad(|| Ranking::for_qa(&run.retriever, generator_questions(run), k))?;
    let builder = PromptBuilder::new(&g.prompt, &run.lm.tokenizer)?;
    let corpus = run.retriever.corpus();
    let mut examples = Vec::new();
    for (row, q) in generator_questions(run).iter().enumerate() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(
            g.contexts.seed
                ^ ((round as u64) << 32)
                ^ (row as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let is_gold = |d: &Doc| q.gold_doc_ids.contains(&d.doc_id);
        let ranked: Vec<&Doc> = ranking.ranked(row).collect();
        let gold: Vec<&Doc> = q
            .gold_doc_ids
            .iter()
            .filter_map(|id| corpus.position(id).map(|i| corpus.doc(i)))
            .collect();
        let mut passages: Vec<&Doc> = ranked.iter().copied().take(k).collect();
        if !gold.is_empty() {
            if rng.gen_bool(g.contexts.gold_probability) {
                if !passages.iter().any(|d| is_gold(d)) {
                    passages.truncate(k - 1);
                    passages.push(gold[rng.gen_range(0..gold.len())]);
                }
            } else {
                passages = ranked
                    .iter()
                    .copied()
                    .filter(|d| !is_gold(d))
                    .take(k)
                    .collect();
            }
        }
        for (i, doc) in passages.into_iter().enumerate() {
            examples.push(scoring::single_passage_example(
                &builder,
                &format!("{}#{i}", q.id),
                &q.question,
                passage_text(doc),
                &q.answers[0],
            )?);
        }
    }
    Ok(examples)
}

/// The questions of the steps that train the generator: the first `generator.max_train_examples`.
fn generator_questions<'r>(run: &'r Run) -> &'r [QaExample] {
    let n = run.generator.max_train_examples.unwrap_or(usize::MAX);
    &run.qa[..n.min(run.qa.len())]
}

/// RAG-sequence: the marginal likelihood of the answer over the current top-k, into the query
/// tower and (when it trains) the adapter.
fn rag_sequence_step(run: &mut Run, evaluator: &Evaluator, round: usize) -> Result<StepRecord> {
    let config = run.config;
    let name = format!("round-{round}/rag-sequence");
    let dir = config.run_dir().join(&name);
    let adapter_dir = dir.join("adapter");
    let trains = config.rag_sequence.train_generator;
    if trains && run.adapter.is_none() {
        let peft = run.generator.peft.as_ref().expect("validated");
        let adapter = Peft::new(peft, &run.lm.model, run.device, None)?;
        adapter.attach(&mut run.lm.model);
        run.adapter = Some(adapter);
    }
    let generator_vs = run.adapter.as_ref().filter(|_| trains).map(Peft::var_store);
    let vs = trainable_retriever(&run.retriever, Towers::QueryOnly, generator_vs);
    if let Some(record) = read_json::<StepRecord>(&dir.join(STEP_RECORD))? {
        let checkpoint = record.checkpoint.as_ref().expect("a trainer run saves one");
        ragtune_trainer::load_checkpoint_weights(&vs, checkpoint)?;
        if trains {
            run.adapter_dir = Some(adapter_dir);
        }
        println!(
            "{name}: done before, restored from {}",
            checkpoint.display()
        );
        return Ok(record);
    }
    let started = std::time::Instant::now();
    let mut trainer_config = step_trainer(&config.retriever.trainer, &dir);
    if trains {
        // The adapter's variables (under `generator.`) as a group with their own learning rate.
        let optimizer = &mut trainer_config.optimizer;
        optimizer.head_patterns = vec!["^generator\\.".into()];
        optimizer.head_lr_multiplier = config.rag_sequence.generator_lr / optimizer.lr;
    }
    let scale = 1.0 / trainer_config.grad_accum_steps as f64;
    let seed = trainer_config.seed as i64;
    let questions = if trains {
        generator_questions(run).len()
    } else {
        run.qa.len()
    };
    let mut trainer = Trainer::new(trainer_config, &vs, questions)?;
    let builder = PromptBuilder::new(&run.generator.prompt, &run.lm.tokenizer)?;
    let k = config.rag_sequence.k;
    let device = run.device;
    if let Some(a) = &run.adapter {
        a.set_training(trains);
    }
    while !trainer.finished() {
        let (retriever, lm, qa) = (&run.retriever, &run.lm, &run.qa);
        let generator = Generator {
            lm,
            adapter: run.adapter.as_ref(),
            trains,
            chunk: config.rag_sequence.generator_chunk,
        };
        let mut entropy = (0.0, 0usize);
        trainer.train_step(
            |batch| -> Result<Tensor> {
                let rows: Vec<&QaExample> = batch.indices.iter().map(|&i| &qa[i]).collect();
                let questions: Vec<&str> = rows.iter().map(|q| q.question.as_str()).collect();
                let hits = tch::no_grad(|| retriever.search(&questions, k))?;
                let corpus = retriever.corpus();
                let targets: Vec<Targets> = rows
                    .iter()
                    .zip(&hits)
                    .map(|(q, hits)| Targets {
                        question_id: q.id.clone(),
                        question: q.question.clone(),
                        doc_indices: hits.iter().map(|h| h.index).collect(),
                        doc_ids: Vec::new(),
                        lm_scores: Vec::new(),
                    })
                    .collect();
                let target_refs: Vec<&Targets> = targets.iter().collect();
                let scores =
                    candidate_scores_of(retriever, &target_refs, Towers::QueryOnly, device)?;
                let examples = rows
                    .iter()
                    .zip(&hits)
                    .map(|(q, hits)| {
                        hits.iter()
                            .map(|h| {
                                scoring::single_passage_example(
                                    &builder,
                                    &q.id,
                                    &q.question,
                                    passage_text(corpus.doc(h.index)),
                                    &q.answers[0],
                                )
                            })
                            .collect::<Result<Vec<_>>>()
                    })
                    .collect::<Result<Vec<_>>>()?;
                let entropies = retriever_entropy(&scores.detach(), config.retriever.temperature);
                entropy.0 += entropies.sum(Kind::Float).double_value(&[]);
                entropy.1 += rows.len();
                let micro_seed = seed
                    .wrapping_mul(31)
                    .wrapping_add(batch.step as i64 * 1009 + batch.micro as i64);
                let value = rag_sequence::backward(
                    &scores,
                    &examples,
                    &generator,
                    config.retriever.temperature,
                    scale,
                    micro_seed,
                    device,
                )?;
                // The gradients are in place: the trainer gets a graph-free leaf with the value.
                Ok(Tensor::from(value as f32).set_requires_grad(true))
            },
            || validation_retrieval(retriever, evaluator),
        )?;
        trainer.log(&json!({"type": "rag_sequence", "step": trainer.step(),
            "retriever_entropy": entropy.0 / entropy.1.max(1) as f64}))?;
    }
    if let Some(a) = &run.adapter {
        a.set_training(false);
    }
    let saved_adapter = match (&run.adapter, trains) {
        (Some(a), true) => {
            a.save(&adapter_dir)?;
            run.adapter_dir = Some(adapter_dir.clone());
            Some(adapter_dir)
        }
        _ => None,
    };
    let point = evaluator.point(
        &format!("round {round} rag-sequence"),
        &run.retriever,
        &run.lm,
    )?;
    trainer.log(&json!({"type": "point", "point": point}))?;
    let summary = trainer.finish()?;
    let record = StepRecord {
        name,
        steps: summary.steps,
        seconds: started.elapsed().as_secs_f64(),
        point,
        checkpoint: summary.last_checkpoint,
        adapter: saved_adapter,
        scoring: None,
        refresh_seconds: Vec::new(),
        examples: questions,
    };
    print_point(&record.point);
    write_json(&dir.join(STEP_RECORD), &record)?;
    Ok(record)
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

fn validation_retrieval(retriever: &DenseRetriever, evaluator: &Evaluator) -> Result<Metrics> {
    Ok(
        retrieval_per_query(retriever, evaluator.val, &evaluator.measures)?
            .into_iter()
            .map(|(m, v)| (m, v.iter().sum::<f64>() / v.len().max(1) as f64))
            .collect(),
    )
}

/// Re-encodes the corpus with the current passage tower; returns the seconds it took.
fn refresh(retriever: &mut DenseRetriever) -> Result<f64> {
    let started = std::time::Instant::now();
    retriever.refresh()?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "index refresh: {} passages re-encoded in {seconds:.1} s",
        retriever.corpus().len()
    );
    Ok(seconds)
}

/// Writes the tuned retriever. Query side only: `query/` is the tuned tower and `passage/` a
/// byte-for-byte copy of the starting passage tower, so its corpus embeddings (and their cache
/// key) are those of the start. Both towers: one folder when shared, else `query/` and `passage/`.
pub fn export_retriever(retriever: &DenseRetriever, towers: Towers, dir: &Path) -> Result<()> {
    use ragtune_retriever_train::export::save_sentence_transformers;
    let staging = dir.with_extension("partial");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| JointError::io(&staging, e))?;
    }
    match (towers, retriever.shared_towers()) {
        (Towers::QueryOnly, _) => {
            save_sentence_transformers(retriever.query_tower(), &staging.join("query"))?;
            copy_dir(retriever.passage_dir(), &staging.join("passage"))?;
        }
        (Towers::Both, true) => save_sentence_transformers(retriever.query_tower(), &staging)?,
        (Towers::Both, false) => {
            save_sentence_transformers(retriever.query_tower(), &staging.join("query"))?;
            save_sentence_transformers(retriever.passage_tower(), &staging.join("passage"))?;
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| JointError::io(dir, e))?;
    }
    std::fs::rename(&staging, dir).map_err(|e| JointError::io(dir, e))?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| JointError::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| JointError::io(from, e))? {
        let path = entry.map_err(|e| JointError::io(from, e))?.path();
        let target = to.join(path.file_name().expect("a directory entry has a name"));
        if path.is_dir() {
            copy_dir(&path, &target)?;
        } else {
            std::fs::copy(&path, &target).map_err(|e| JointError::io(&path, e))?;
        }
    }
    Ok(())
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
