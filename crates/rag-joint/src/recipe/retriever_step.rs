//! The LSR retriever step: each training question's top-k, scored once by the generator, and the
//! retriever trained to match the LM's preference over them.

use super::{
    evaluate_and_finish, read_json, record_step, step_trainer, trainable_retriever, write_json,
    Run, StepRecord, STEP_RECORD, TARGETS,
};
use crate::config::{Scoring, Towers};
use crate::evaluate::Evaluator;
use crate::losses::{candidate_scores, lsr_loss, retriever_entropy};
use crate::scoring::{self, ScoringStats, Triple};
use crate::{JointError, Result};
use ragtune_generator_train::prompt::PromptBuilder;
use ragtune_retrieval::{passage_text, DenseRetriever, Retriever};
use ragtune_trainer::Trainer;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::Path;
use tch::{Device, Kind, Tensor};

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

/// An LSR retriever step: fix each training question's top-k and the LM's scores of them, then
/// train the retriever to match the LM's preference.
pub(super) fn retriever_step(
    run: &mut Run,
    evaluator: &Evaluator,
    round: usize,
) -> Result<StepRecord> {
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
                let questions: Vec<&str> = rows.iter().map(|t| t.question.as_str()).collect();
                let candidates: Vec<&[usize]> =
                    rows.iter().map(|t| t.doc_indices.as_slice()).collect();
                let scores =
                    candidate_scores_of(retriever, &questions, &candidates, towers, device)?;
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
            || evaluator.validation_retrieval(retriever),
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
    let (point, summary) =
        evaluate_and_finish(run, evaluator, trainer, &format!("round {round} retriever"))?;
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
    record_step(&dir, record)
}

/// The retriever's scores of each row's candidates, on the trainable towers' graph.
pub(super) fn candidate_scores_of(
    retriever: &DenseRetriever,
    questions: &[&str],
    candidates: &[&[usize]],
    towers: Towers,
    device: Device,
) -> Result<Tensor> {
    let tower = retriever.query_tower();
    let queries = tower.forward_t(&tower.tokenize_batch(questions)?, true);
    let (b, k) = (candidates.len() as i64, candidates[0].len() as i64);
    let passages = match towers {
        Towers::QueryOnly => {
            let indices: Vec<i64> = candidates
                .iter()
                .flat_map(|c| c.iter().map(|&i| i as i64))
                .collect();
            retriever
                .index()
                .embeddings()
                .index_select(0, &Tensor::from_slice(&indices))
                .to_device(device)
        }
        Towers::Both => {
            let corpus = retriever.corpus();
            let texts: Vec<String> = candidates
                .iter()
                .flat_map(|c| c.iter().map(|&i| passage_text(corpus.doc(i))))
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
