//! RA-DIT's generator step: retrieval-augmented instruction tuning on the current retriever's top-k.

use super::{read_json, record_step, Run, StepRecord, STEP_RECORD};
use crate::evaluate::Evaluator;
use crate::scoring;
use crate::Result;
use ragtune_data::{Doc, QaExample};
use ragtune_generator_train::contexts::Ranking;
use ragtune_generator_train::prompt::PromptBuilder;
use ragtune_generator_train::sft::{self, SftExample};
use ragtune_models::peft::Peft;
use ragtune_retrieval::{passage_text, Retriever};
use ragtune_trainer::Metrics;
use rand::{Rng, SeedableRng};

/// RA-DIT's generator step: each of a question's top-k passages (from the current retriever) is
/// its own SFT example with the answer, gold passages mixed in or held out as RAFT does.
pub(super) fn generator_step(
    run: &mut Run,
    evaluator: &Evaluator,
    round: usize,
) -> Result<StepRecord> {
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
    record_step(&dir, record)
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
pub(super) fn generator_questions<'r>(run: &'r Run) -> &'r [QaExample] {
    let n = run.generator.max_train_examples.unwrap_or(usize::MAX);
    &run.qa[..n.min(run.qa.len())]
}
