//! `ragtune demo`: the main job on the bundled default, read top to bottom.
//!
//! 1. Import the FAQ and split it by question (seeded, leak-checked).
//! 2. Embed every answer passage with all-MiniLM-L6-v2 and retrieve for the test questions.
//! 3. Score retrieval with the eval crate (nDCG@10, MRR@10, Recall@k) and show the top passages.
//! 4. Answer test questions with SmolLM2 from its GGUF, closed-book and with the retrieved passages,
//!    and score both against the gold answers (ROUGE-L, token F1) with a paired bootstrap.
//!
//! Everything it writes goes under `--out` (default `runs/demo`), atomically.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use ragtune_data::split::{split_dataset, SplitConfig};
use ragtune_data::Dataset;
use ragtune_eval::retrieval::{evaluate, Measure, Qrels, Run};
use ragtune_eval::significance::paired_bootstrap;
use ragtune_models::chat::ChatMessage;
use ragtune_models::encoder::SentenceEncoder;
use ragtune_models::generation::{generate, GenerationConfig, Sampling};
use ragtune_models::llama_load::{load_causal_lm, CausalLm};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

#[derive(clap::Args)]
pub struct Args {
    /// The FAQ JSONL (fields id, category, q, a, sources).
    #[arg(long, default_value = "assets/zaragoza-faq/faq-en.jsonl")]
    faq: PathBuf,
    /// A BERT sentence-transformers folder: the retriever.
    #[arg(long, default_value = "assets/all-MiniLM-L6-v2")]
    encoder: PathBuf,
    /// A Llama GGUF file or Hugging Face folder: the generator.
    #[arg(
        long,
        default_value = "assets/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
    )]
    generator: PathBuf,
    /// Where the split dataset and the report go.
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Passages put in the generator's context.
    #[arg(long, default_value_t = 3)]
    top_k: usize,
    /// Test questions the generator answers (closed-book and with passages).
    #[arg(long, default_value_t = 8)]
    answer: usize,
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
}

const SYSTEM: &str = "You answer questions about construction and building permits in Zaragoza. \
Answer in one or two sentences. When passages are given, answer from them.";

pub fn run(args: Args, device: Device) -> Result<()> {
    println!("ragtune demo on {device:?}\n");

    // 1. Data: import, split by question, write the splits as Parquet.
    let (faq, import_report) = ragtune_data::import::import_faq(&args.faq)
        .with_context(|| format!("importing {}", args.faq.display()))?;
    let (splits, split_report) = split_dataset(
        &faq,
        &SplitConfig {
            seed: args.seed,
            ..Default::default()
        },
    )?;
    for (name, part) in ["train", "val", "test"].iter().zip(&splits) {
        part.write(&args.out.join("faq").join(name))?;
    }
    let test = &splits[2];
    println!(
        "FAQ: {} passages, {} questions -> train {} / val {} / test {} (seed {}, no question text in two splits)",
        faq.corpus.len(),
        faq.queries.len(),
        splits[0].queries.len(),
        splits[1].queries.len(),
        test.queries.len(),
        args.seed
    );

    // 2. Retrieval: embed the corpus and the test questions, exact cosine search.
    let encoder = SentenceEncoder::load(&args.encoder, device, Kind::Float)
        .with_context(|| format!("loading the encoder {}", args.encoder.display()))?;
    let started = Instant::now();
    let passages: Vec<&str> = faq.corpus.iter().map(|d| d.text.as_str()).collect();
    let bar = progress(passages.len(), "passages");
    let mut tick = |done: usize, _total: usize| bar.set_position(done as u64);
    let corpus_emb = encoder.encode_with_progress(&passages, Some(&mut tick))?;
    bar.finish_and_clear();
    let questions: Vec<&str> = test.queries.iter().map(|q| q.text.as_str()).collect();
    let query_emb = encoder.encode(&questions)?;
    println!(
        "Embedded {} passages and {} questions with {} in {:.1}s",
        passages.len(),
        questions.len(),
        args.encoder.display(),
        started.elapsed().as_secs_f64()
    );
    let scores = query_emb
        .matmul(&corpus_emb.transpose(0, 1))
        .to_device(Device::Cpu);
    let ranked = top_k(&scores, 100.min(faq.corpus.len() as i64))?;

    // 3. Retrieval metrics against the qrels.
    let mut run: Run = BTreeMap::new();
    for (qi, q) in test.queries.iter().enumerate() {
        let docs = ranked[qi]
            .iter()
            .map(|&(di, s)| (faq.corpus[di].doc_id.clone(), s))
            .collect();
        run.insert(q.query_id.clone(), docs);
    }
    let qrels = qrels_of(test);
    let measures = [
        Measure::Ndcg(10),
        Measure::Mrr(10),
        Measure::Recall(1),
        Measure::Recall(10),
        Measure::Recall(100),
        Measure::Map,
    ];
    let report = evaluate(&run, &qrels, &measures)?;
    println!(
        "\nZero-shot retrieval on the test split ({} questions):",
        report.num_queries
    );
    for measure in measures {
        let name = measure.to_string();
        println!("  {name:<10} {:.4}", report.mean[&name]);
    }

    let shown = test.queries.iter().take(2);
    for (qi, q) in shown.enumerate() {
        println!("\nQ: {}", q.text);
        for (rank, &(di, s)) in ranked[qi].iter().take(args.top_k).enumerate() {
            let doc = &faq.corpus[di];
            let gold = if qrels[&q.query_id].contains_key(&doc.doc_id) {
                " (gold)"
            } else {
                ""
            };
            println!(
                "  {}. [{:.3}]{gold} {}",
                rank + 1,
                s,
                shorten(&doc.text, 110)
            );
        }
    }

    // 4. Generation: closed-book vs retrieval-augmented, same questions, same decoding.
    let lm = load_causal_lm(&args.generator, device, Kind::Float)
        .with_context(|| format!("loading the generator {}", args.generator.display()))?;
    let n = args.answer.min(test.queries.len());
    let golds: Vec<&str> = (0..n)
        .map(|qi| gold_answer(test, &test.queries[qi].query_id))
        .collect();
    let closed: Vec<String> = (0..n)
        .map(|qi| user_message(&test.queries[qi].text, &[]))
        .collect();
    let augmented: Vec<String> = (0..n)
        .map(|qi| {
            let ctx: Vec<&str> = ranked[qi]
                .iter()
                .take(args.top_k)
                .map(|&(di, _)| faq.corpus[di].text.as_str())
                .collect();
            user_message(&test.queries[qi].text, &ctx)
        })
        .collect();
    let started = Instant::now();
    let closed_answers = answer_all(&lm, &closed, args.max_new_tokens, args.seed)?;
    let rag_answers = answer_all(&lm, &augmented, args.max_new_tokens, args.seed)?;
    println!(
        "\nGenerated {} answers with {} in {:.1}s",
        2 * n,
        args.generator.display(),
        started.elapsed().as_secs_f64()
    );

    let rouge_l = |pred: &str, gold: &str| {
        ragtune_eval::rouge::rouge(pred, gold, true)
            .rouge_l
            .fmeasure
    };
    let closed_rouge: Vec<f64> = closed_answers
        .iter()
        .zip(&golds)
        .map(|(p, g)| rouge_l(p, g))
        .collect();
    let rag_rouge: Vec<f64> = rag_answers
        .iter()
        .zip(&golds)
        .map(|(p, g)| rouge_l(p, g))
        .collect();
    let closed_f1: Vec<f64> = closed_answers
        .iter()
        .zip(&golds)
        .map(|(p, g)| ragtune_eval::squad::token_f1(p, &[*g]))
        .collect();
    let rag_f1: Vec<f64> = rag_answers
        .iter()
        .zip(&golds)
        .map(|(p, g)| ragtune_eval::squad::token_f1(p, &[*g]))
        .collect();

    println!(
        "\nQ: {}\n  closed-book: {}\n  with top-{}:  {}\n  gold:        {}",
        test.queries[0].text,
        shorten(&closed_answers[0], 200),
        args.top_k,
        shorten(&rag_answers[0], 200),
        shorten(golds[0], 200)
    );
    let rouge_gain = paired_bootstrap(&closed_rouge, &rag_rouge, 2000, 0.95, args.seed)?;
    let f1_gain = paired_bootstrap(&closed_f1, &rag_f1, 2000, 0.95, args.seed)?;
    println!("\nAnswers on {n} test questions (mean; 95% paired bootstrap CI of the gain):");
    println!(
        "  {:<10} {:>11} {:>11} {:>22}",
        "metric",
        "closed-book",
        format!("top-{}", args.top_k),
        "gain [CI]"
    );
    for (name, r) in [("ROUGE-L", &rouge_gain), ("token F1", &f1_gain)] {
        println!(
            "  {name:<10} {:>11.4} {:>11.4} {:>+8.4} [{:+.4}, {:+.4}]",
            r.mean_a, r.mean_b, r.mean_difference, r.ci_low, r.ci_high
        );
    }

    let report_json = json!({
        "device": format!("{device:?}"),
        "import": import_report,
        "split": split_report,
        "retrieval": { "encoder": args.encoder, "test": report.mean },
        "generation": {
            "generator": args.generator,
            "questions": n,
            "rouge_l": rouge_gain,
            "token_f1": f1_gain,
            "examples": (0..n).map(|i| json!({
                "question": test.queries[i].text,
                "gold": golds[i],
                "closed_book": closed_answers[i],
                "retrieval_augmented": rag_answers[i],
            })).collect::<Vec<_>>(),
        },
    });
    let path = args.out.join("report.json");
    ragtune_models::checkpoint::atomic_write(
        &path,
        serde_json::to_string_pretty(&report_json)?.as_bytes(),
    )?;
    println!("\nReport: {}", path.display());
    Ok(())
}

fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {what}  eta {{eta}}"))
            .expect("static template"),
    );
    bar
}

/// The best `k` documents of each row of `scores` [queries, docs], best first.
fn top_k(scores: &Tensor, k: i64) -> Result<Vec<Vec<(usize, f64)>>> {
    let (values, indices) = scores.topk(k, 1, true, true);
    let values: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(values)?;
    let indices: Vec<Vec<i64>> = Vec::<Vec<i64>>::try_from(indices)?;
    Ok(values
        .into_iter()
        .zip(indices)
        .map(|(v, i)| {
            i.into_iter()
                .map(|d| d as usize)
                .zip(v.into_iter().map(f64::from))
                .collect()
        })
        .collect())
}

fn qrels_of(ds: &Dataset) -> Qrels {
    let mut qrels: Qrels = BTreeMap::new();
    for q in &ds.qrels {
        qrels
            .entry(q.query_id.clone())
            .or_default()
            .insert(q.doc_id.clone(), i64::from(q.relevance));
    }
    qrels
}

fn gold_answer<'a>(ds: &'a Dataset, id: &str) -> &'a str {
    ds.qa
        .iter()
        .find(|q| q.id == id)
        .and_then(|q| q.answers.first())
        .map(String::as_str)
        .unwrap_or("")
}

fn user_message(question: &str, passages: &[&str]) -> String {
    if passages.is_empty() {
        return question.to_string();
    }
    let mut msg = String::from("Passages:\n");
    for (i, p) in passages.iter().enumerate() {
        msg.push_str(&format!("[{}] {}\n", i + 1, p));
    }
    msg.push_str(&format!("\nQuestion: {question}"));
    msg
}

fn answer_all(
    lm: &CausalLm,
    users: &[String],
    max_new_tokens: usize,
    seed: u64,
) -> Result<Vec<String>> {
    let template = lm.tokenizer.chat_template()?;
    let prompts = users
        .iter()
        .map(|u| {
            let text = template.render(
                &[
                    ChatMessage::new("system", SYSTEM),
                    ChatMessage::new("user", u.as_str()),
                ],
                true,
            );
            lm.tokenizer.encode(&text, false)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let config = GenerationConfig {
        max_new_tokens,
        sampling: Sampling::Greedy,
        seed,
        eos_token_ids: vec![lm.tokenizer.eos_token_id()],
        pad_token_id: lm.tokenizer.pad_token_id(),
    };
    let bar = progress(prompts.len(), "answers");
    let mut answers = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(4) {
        for g in tch::no_grad(|| generate(&lm.model, chunk, &config))? {
            answers.push(lm.tokenizer.decode(&g.tokens, true)?.trim().to_string());
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(answers)
}

fn shorten(text: &str, max_chars: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max_chars {
        flat
    } else {
        format!("{}…", flat.chars().take(max_chars).collect::<String>())
    }
}
