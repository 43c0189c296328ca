//! `make_pairs` on a tiny random Llama: chosen = gold, rejected = the model's own greedy answer,
//! written closed-book or from a wrong passage; the stored context is what the model sees at train
//! time (RAFT) or at deployment (top-k); both answers of a pair follow one prompt after tokenizing.

mod common;

use ragtune_data::{Doc, QaExample};
use ragtune_generator_train::contexts::{raft, retrieved, ContextConfig, Ranking};
use ragtune_generator_train::dpo::build_pairs;
use ragtune_generator_train::make_pairs::{
    join_context, make_pairs, PairContext, PairsSettings, RejectedSource,
};
use ragtune_generator_train::prompt::{PromptBuilder, PromptConfig};
use ragtune_models::llama_load::CausalLm;
use ragtune_retrieval::{Corpus, Retriever, TfIdfRetriever};

fn tiny_lm() -> CausalLm {
    common::tiny_causal_lm(common::tiny_config(49152, 16, 1))
}

fn data() -> (Vec<Doc>, Vec<QaExample>) {
    let doc = |id: &str, text: &str| Doc {
        doc_id: id.into(),
        title: String::new(),
        text: text.into(),
        metadata: None,
    };
    let docs = vec![
        doc(
            "d1",
            "Fences higher than 1.1 metres need a building permit.",
        ),
        doc("d2", "A fence permit costs a fee set by the municipality."),
        doc("d3", "Roofs are inspected by the municipal inspector."),
        doc("d4", "Permits are valid for two years."),
    ];
    let qa = |id: &str, q: &str, a: &str, gold: &str| QaExample {
        id: id.into(),
        question: q.into(),
        answers: vec![a.into()],
        gold_doc_ids: vec![gold.into()],
        context: None,
        label: None,
    };
    let qa = vec![
        qa(
            "q1",
            "Does a fence need a permit?",
            "Yes, above 1.1 m.",
            "d1",
        ),
        qa(
            "q2",
            "Who inspects roofs?",
            "The municipal inspector.",
            "d3",
        ),
        qa("q3", "How long is a permit valid?", "Two years.", "d4"),
    ];
    (docs, qa)
}

#[test]
fn pairs_hold_gold_against_the_models_own_answer_with_train_time_passages() {
    let lm = tiny_lm();
    let (docs, qa) = data();
    let index = TfIdfRetriever::new(Corpus::new(docs));
    let ranking = Ranking::for_qa(&index, &qa, 2).unwrap();
    let prompt = PromptConfig::default();
    let builder = PromptBuilder::new(&prompt, &lm.tokenizer).unwrap();
    let contexts = ContextConfig {
        k: 2,
        gold_probability: 0.5,
        seed: 3,
    };
    for rejected in [RejectedSource::ClosedBook, RejectedSource::WrongPassage] {
        let settings = PairsSettings {
            rejected,
            max_new_tokens: 6,
            batch_size: 2,
            ..Default::default()
        };
        for mode in [PairContext::Raft, PairContext::Retrieved] {
            let mut seen = 0;
            let made = make_pairs(
                &lm,
                &qa,
                &ranking,
                &builder,
                &contexts,
                &settings,
                mode,
                |n| seen += n,
            )
            .unwrap();
            assert_eq!(seen, 3);
            assert_eq!(made.pairs.len() + made.skipped_empty + made.skipped_same, 3);
            assert!(!made.pairs.is_empty());
            for p in &made.pairs {
                let i = qa.iter().position(|q| q.id == p.id).unwrap();
                assert_eq!(p.chosen, qa[i].answers[0]);
                assert_eq!(p.prompt, qa[i].question);
                assert_ne!(p.rejected, p.chosen);
                let shown = match mode {
                    PairContext::Raft => raft(&ranking, i, &qa[i], &contexts, i as u64),
                    PairContext::Retrieved => retrieved(&ranking, i, &qa[i], contexts.k),
                };
                assert_eq!(p.context.as_deref(), Some(join_context(&shown).as_str()));
            }
            // The rejected answer is the model's own greedy continuation of the rejected prompt.
            let p = &made.pairs[0];
            let i = qa.iter().position(|q| q.id == p.id).unwrap();
            let passages = match rejected {
                RejectedSource::ClosedBook => vec![],
                RejectedSource::WrongPassage => {
                    let wrong: Vec<String> = index
                        .search(&[qa[i].question.as_str()], 2)
                        .unwrap()
                        .remove(0)
                        .into_iter()
                        .map(|h| index.corpus().doc(h.index))
                        .filter(|d| !qa[i].gold_doc_ids.contains(&d.doc_id))
                        .map(|d| d.text.clone())
                        .take(1)
                        .collect();
                    assert_eq!(wrong.len(), 1);
                    wrong
                }
            };
            let gen = ragtune_models::generation::GenerationConfig {
                max_new_tokens: 6,
                sampling: ragtune_models::generation::Sampling::Greedy,
                seed: 0,
                eos_token_ids: vec![lm.tokenizer.eos_token_id(), 2],
                pad_token_id: lm.tokenizer.pad_token_id(),
            };
            let alone = tch::no_grad(|| {
                ragtune_models::generation::generate(
                    &lm.model,
                    &[builder.prompt(&qa[i].question, &passages).unwrap()],
                    &gen,
                )
            })
            .unwrap();
            let text = lm.tokenizer.decode(&alone[0].tokens, true).unwrap();
            assert_eq!(p.rejected, text.trim());
        }
    }
}

#[test]
fn both_answers_of_a_pair_follow_one_prompt_under_the_length_limit() {
    let lm = tiny_lm();
    let prompt = PromptConfig {
        max_length: 48,
        ..PromptConfig::default()
    };
    let builder = PromptBuilder::new(&prompt, &lm.tokenizer).unwrap();
    let pref = ragtune_data::Preference {
        id: "x".into(),
        prompt: "Does a fence need a permit?".into(),
        chosen: "Yes.".into(),
        rejected:
            "No, and here is a much longer answer that pushes the passages out of the prompt."
                .into(),
        context: Some(
            "Fences higher than 1.1 metres need a building permit.\n\nA fence permit costs a fee."
                .into(),
        ),
    };
    let pairs = build_pairs(&[pref], &builder).unwrap();
    let p = &pairs[0];
    assert_eq!(p.chosen.prompt_len, p.rejected.prompt_len);
    assert_eq!(
        p.chosen.input_ids[..p.chosen.prompt_len],
        p.rejected.input_ids[..p.rejected.prompt_len]
    );
    assert!(p.rejected.input_ids.len() <= 48 && p.chosen.input_ids.len() <= 48);
}
