//! The RAG-sequence step: the marginal likelihood of the answer over the current top-k, into the
//! query tower and (when it trains) the adapter, under one trainer.

use super::generator_step::generator_questions;
use super::retriever_step::candidate_scores_of;
use super::{
    evaluate_and_finish, read_json, record_step, step_trainer, trainable_retriever, Run,
    StepRecord, STEP_RECORD,
};
use crate::config::Towers;
use crate::evaluate::Evaluator;
use crate::losses::retriever_entropy;
use crate::rag_sequence::{self, Generator};
use crate::scoring;
use crate::Result;
use ragtune_data::QaExample;
use ragtune_generator_train::prompt::PromptBuilder;
use ragtune_models::peft::Peft;
use ragtune_retrieval::{passage_text, Retriever};
use ragtune_trainer::Trainer;
use serde_json::json;
use tch::{Kind, Tensor};

/// RAG-sequence: the marginal likelihood of the answer over the current top-k, into the query
/// tower and (when it trains) the adapter.
pub(super) fn rag_sequence_step(
    run: &mut Run,
    evaluator: &Evaluator,
    round: usize,
) -> Result<StepRecord> {
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
                let candidates: Vec<Vec<usize>> = hits
                    .iter()
                    .map(|hits| hits.iter().map(|h| h.index).collect())
                    .collect();
                let candidates: Vec<&[usize]> = candidates.iter().map(Vec::as_slice).collect();
                let scores = candidate_scores_of(
                    retriever,
                    &questions,
                    &candidates,
                    Towers::QueryOnly,
                    device,
                )?;
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
            || evaluator.validation_retrieval(retriever),
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
    let (point, summary) = evaluate_and_finish(
        run,
        evaluator,
        trainer,
        &format!("round {round} rag-sequence"),
    )?;
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
    record_step(&dir, record)
}
