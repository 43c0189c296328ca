//! ColBERT on bert-tiny: encoding and MaxSim against a transformers/torch reimplementation of
//! colbert-ai (tests/reference/colbert_ref.py), masks (padding and punctuation never win the max),
//! HNSW candidate generation against exact MaxSim, and a short training run whose loss falls.

mod common;

use ragtune_retriever_train::colbert::{self, Colbert, ColbertConfig};
use ragtune_retriever_train::index::{recall_vs_exact, HnswConfig};
use ragtune_retriever_train::mining::{passage_text, PairScorer};
use ragtune_retriever_train::model::{Architecture, ModelConfig};
use ragtune_retriever_train::train::{self, RetrieverConfig};
use serde_json::json;
use std::collections::HashSet;
use tch::{Device, Kind, Tensor};

fn tiny(max_length: usize) -> ModelConfig {
    ModelConfig {
        base: ragtune_testkit::asset("bert-tiny"),
        architecture: Architecture::Colbert,
        max_length,
        encode_batch_size: 16,
        ..Default::default()
    }
}

use common::faq;

#[test]
fn encoding_and_maxsim_match_the_colbert_reference() {
    let dir = ragtune_testkit::scratch("colbert-ref");
    // A fresh projection (seeded), saved and loaded back as a trained folder would be.
    let config = ColbertConfig {
        query_length: 12,
        ..Default::default()
    };
    Colbert::load(&tiny(24), &config, Device::Cpu)
        .unwrap()
        .save(&dir.join("model"))
        .unwrap();
    let mut model_config = tiny(24);
    model_config.base = dir.join("model");
    let queries = [
        "Do I need a permit to build a wall?",
        "fees",
        // Longer than the query length: truncated, no [MASK] padding.
        "What happens if I start the works before the licence is granted, and who pays the fines?",
    ];
    let ds = faq();
    let mut docs: Vec<String> = ds.corpus.iter().take(5).map(passage_text).collect();
    docs.push("Yes: walls, fences (and gates) need one!".into());
    docs.push("ok".into());
    let doc_refs: Vec<&str> = docs.iter().map(String::as_str).collect();

    for attend in [false, true] {
        let config = ColbertConfig {
            attend_to_mask_tokens: attend,
            ..config.clone()
        };
        let model = Colbert::load(&model_config, &config, Device::Cpu).unwrap();
        let expected = ragtune_testkit::reference(
            "colbert_ref.py",
            &json!({
                "model_dir": model_config.base, "queries": queries, "docs": docs,
                "query_length": 12, "doc_length": 24, "query_marker": "[unused0]",
                "doc_marker": "[unused1]", "attend_to_mask_tokens": attend, "skip_punctuation": true,
            }),
        );
        let query_ids = model.query_ids(&queries).unwrap();
        assert_eq!(json!(query_ids), expected["query_ids"]);
        assert_eq!(
            json!(model.doc_ids(&doc_refs).unwrap()),
            expected["doc_ids"]
        );
        let q = model.encode_queries(&queries).unwrap();
        let d = model.encode_docs(&doc_refs).unwrap();
        let ours = colbert::maxsim_blocked(&q, &d.embeddings, &d.mask, 3);
        let mut worst: f64 = 0.0;
        for (i, row) in expected["scores"].as_array().unwrap().iter().enumerate() {
            for (j, value) in row.as_array().unwrap().iter().enumerate() {
                let ours = ours.double_value(&[i as i64, j as i64]);
                worst = worst.max((ours - value.as_f64().unwrap()).abs());
            }
        }
        eprintln!("attend_to_mask_tokens {attend}: max |MaxSim - reference| = {worst:.2e}");
        assert!(worst < 1e-4, "{worst}");
        // Pair scoring gives the diagonal of the same computation.
        let pairs = model.score_pairs(&queries, &doc_refs[..3]).unwrap();
        for (i, score) in pairs.iter().enumerate() {
            assert!((*score as f64 - ours.double_value(&[i as i64, i as i64])).abs() < 1e-4);
        }
    }
}

/// MaxSim the long way: loops over query tokens and unmasked document tokens.
fn naive_maxsim(q: &Tensor, d: &Tensor, mask: &Tensor) -> Vec<Vec<f64>> {
    let (nq, lq, _) = q.size3().unwrap();
    let (nd, ld, _) = d.size3().unwrap();
    (0..nq)
        .map(|a| {
            (0..nd)
                .map(|b| {
                    (0..lq)
                        .map(|i| {
                            (0..ld)
                                .filter(|&j| mask.int64_value(&[b, j]) != 0)
                                .map(|j| q.get(a).get(i).dot(&d.get(b).get(j)).double_value(&[]))
                                .fold(f64::NEG_INFINITY, f64::max)
                        })
                        .sum()
                })
                .collect()
        })
        .collect()
}

#[test]
fn masked_tokens_never_win_the_max() {
    tch::manual_seed(3);
    let q = Tensor::randn([3, 4, 8], (Kind::Float, Device::Cpu));
    let d = Tensor::randn([5, 6, 8], (Kind::Float, Device::Cpu));
    let mask = Tensor::rand([5, 6], (Kind::Float, Device::Cpu)).gt(0.4);
    let _ = mask.get(0).get(0).fill_(1);
    // Plant, at a masked position of every document, a copy of each query's first token scaled up:
    // it would win every max if masks leaked.
    let d = d.copy();
    for b in 0..5 {
        let _ = mask.get(b).get(5).fill_(0);
        d.get(b).get(5).copy_(&(q.get(0).get(0) * 100.0));
    }
    let expected = naive_maxsim(&q, &d, &mask);
    let all = colbert::maxsim(&q, &d, &mask);
    let blocked = colbert::maxsim_blocked(&q, &d, &mask, 2);
    for (a, row) in expected.iter().enumerate() {
        for (b, &e) in row.iter().enumerate() {
            let at = [a as i64, b as i64];
            assert!((all.double_value(&at) - e).abs() < 1e-4);
            assert!((blocked.double_value(&at) - e).abs() < 1e-4);
        }
    }
    let pairs = colbert::maxsim_pairs(&q, &d.narrow(0, 0, 3), &mask.narrow(0, 0, 3));
    for (a, row) in expected.iter().enumerate() {
        assert!((pairs.double_value(&[a as i64]) - row[a]).abs() < 1e-4);
    }

    // The model's own masks: padding and punctuation are out, [CLS]/[D]/words/[SEP] are in.
    let model = Colbert::load(&tiny(32), &ColbertConfig::default(), Device::Cpu).unwrap();
    let texts = [
        "walls, fences.",
        "a much longer document about building permits here",
    ];
    let ids = model.doc_ids(&texts).unwrap();
    let docs = model.encode_docs(&texts).unwrap();
    let punctuation: HashSet<i64> = [",", "."]
        .iter()
        .map(|p| model.doc_ids(&[p]).unwrap()[0][2])
        .collect();
    for (row, ids) in ids.iter().enumerate() {
        let width = docs.mask.size()[1] as usize;
        for j in 0..width {
            let scored = docs.mask.int64_value(&[row as i64, j as i64]) != 0;
            let expect = j < ids.len() && !punctuation.contains(&ids[j]);
            assert_eq!(scored, expect, "doc {row} token {j}");
        }
    }
    // Padding a document further changes nothing: its MaxSim is that of the unpadded document.
    let q = model.encode_queries(&["fences"]).unwrap();
    let alone = model.encode_docs(&texts[..1]).unwrap();
    let together = colbert::maxsim(&q, &docs.embeddings, &docs.mask);
    let single = colbert::maxsim(&q, &alone.embeddings, &alone.mask);
    assert!((together.double_value(&[0, 0]) - single.double_value(&[0, 0])).abs() < 1e-4);
}

#[test]
fn hnsw_candidates_recover_exact_maxsim() {
    let ds = faq();
    let model = Colbert::load(&tiny(64), &ColbertConfig::default(), Device::Cpu).unwrap();
    let texts: Vec<String> = ds.corpus.iter().take(150).map(passage_text).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let queries: Vec<&str> = ds
        .queries
        .iter()
        .take(40)
        .map(|q| q.text.as_str())
        .collect();
    let docs = model.encode_docs(&refs).unwrap();
    let q = model.encode_queries(&queries).unwrap();
    let exact = model.search_exact(&q, &docs, 10);
    let tokens = model
        .token_index(
            &docs,
            HnswConfig {
                m: 16,
                ef_construction: 100,
                ef_search: 64,
            },
        )
        .unwrap();
    let tokens_total = docs.mask.sum(Kind::Int64).int64_value(&[]) as usize;
    assert_eq!(tokens.doc_of.len(), tokens_total);
    let approximate = model.search_hnsw(&q, &docs, &tokens, 10).unwrap();
    let recall = recall_vs_exact(&exact, &approximate, 10);
    eprintln!(
        "HNSW candidate generation: recall@10 vs exact MaxSim {recall:.3} ({tokens_total} tokens)"
    );
    assert!(recall >= 0.9, "{recall}");
    // Reranking gives exact MaxSim scores, so a document found by both has the same score.
    for (e, a) in exact.iter().zip(&approximate) {
        for hit in a {
            if let Some(same) = e.iter().find(|h| h.index == hit.index) {
                assert!((same.score - hit.score).abs() < 1e-4);
            }
        }
    }
}

#[test]
fn colbert_trains_on_bert_tiny_and_the_loss_falls() {
    let dir = ragtune_testkit::scratch("colbert-train");
    let data_dir = common::write_slice(faq(), 64, &dir);

    let mut config: RetrieverConfig = toml::from_str(
        r#"
        [data]
        split_seed = 1
        fractions = [0.6, 0.2, 0.2]
        [colbert]
        query_length = 32
        hnsw = { m = 8, ef_construction = 64, ef_search = 64 }
        [loss]
        kind = "info_nce"
        temperature = 1.0
        gradcache_chunk = 4
        [report]
        hnsw = true
        bootstrap_resamples = 100
        [trainer]
        run_name = "colbert-tiny"
        batch_size = 8
        epochs = 4.0
        precision = "fp32"
        progress = false
        [trainer.optimizer]
        lr = 1e-3
        [trainer.schedule]
        kind = "constant"
        "#,
    )
    .unwrap();
    config.data.source = data_dir;
    config.model = tiny(64);
    config.trainer.runs_dir = dir.join("runs");
    let report = train::run(&config, Device::Cpu).unwrap();
    let losses: Vec<f64> = std::fs::read_to_string(report.run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "train")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect();
    assert_eq!(losses.len() as u64, report.steps);
    let k = 4;
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    let (first, last) = (mean(&losses[..k]), mean(&losses[losses.len() - k..]));
    eprintln!("ColBERT training loss, first/last {k} steps: {first:.3} -> {last:.3}");
    assert!(last < 0.7 * first, "{first} -> {last}");
    assert!(report.markdown.contains("over document tokens"));
    assert!(
        report.report["test_hnsw"]["fine_tuned"]["recall_vs_exact@10"]
            .as_f64()
            .unwrap()
            > 0.5
    );

    // The saved folder loads back (BERT + projection) and scores as the trained model did.
    let saved = ModelConfig {
        base: report.run_dir.join("model"),
        ..config.model.clone()
    };
    let reloaded = Colbert::load(&saved, &config.colbert, Device::Cpu).unwrap();
    assert!(report
        .run_dir
        .join("model")
        .join(colbert::PROJECTION_FILE)
        .is_file());
    let [_, _, test] = train::load_splits(&config.data).unwrap();
    let again = tch::no_grad(|| {
        colbert::evaluate(&reloaded, &test.corpus, &test.queries, &test.qrels, None)
    })
    .unwrap();
    let reported = report.report["test_exact"][0]["fine_tuned"]
        .as_f64()
        .unwrap();
    assert!(
        (again.exact.mean["ndcg@10"] - reported).abs() < 1e-9,
        "{reported}"
    );
}
