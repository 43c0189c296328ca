//! Hard-negative mining on a slice of the FAQ with bert-tiny: filters, seeding, HNSW vs exact, Parquet.

mod common;

use ragtune_data::{Dataset, Triplet};
use ragtune_retriever_train::index::{recall_vs_exact, DenseIndex, HnswConfig, SearchKind};
use ragtune_retriever_train::mining::{mine, MiningConfig, NegativeSampling};
use ragtune_retriever_train::model::{BiEncoder, Embedder, ModelConfig};
use std::collections::HashSet;
use tch::{Device, Kind, Tensor};

fn faq_slice(rows: usize) -> Dataset {
    common::slice(common::faq(), rows)
}

fn tiny() -> BiEncoder {
    let config = ModelConfig {
        base: ragtune_testkit::asset("bert-tiny"),
        max_length: 64,
        ..Default::default()
    };
    BiEncoder::load(&config, Device::Cpu, Kind::Float).unwrap()
}

#[test]
fn mined_negatives_respect_the_filters_and_the_seed() {
    let ds = faq_slice(40);
    let model = tiny();
    let config = MiningConfig {
        num_negatives: 3,
        rank_max: 15,
        search: SearchKind::Exact,
        ..Default::default()
    };
    let (triplets, report) = tch::no_grad(|| {
        mine(
            &model,
            &ds.corpus,
            &ds.queries,
            &ds.qrels,
            &config,
            "bert-tiny",
        )
    })
    .unwrap();
    assert_eq!(triplets.len(), ds.qrels.len());
    assert_eq!(report.pairs, triplets.len());
    let texts: Vec<&str> = triplets.iter().map(|t| t.query.as_str()).collect();
    let queries = model.encode_queries(&texts).unwrap();
    let mut negatives = 0;
    for (row, t) in triplets.iter().enumerate() {
        assert!(t.negatives.len() <= 3);
        let positives: HashSet<&str> = ds
            .qrels
            .iter()
            .filter(|q| q.query_id == t.query_id)
            .map(|q| q.doc_id.as_str())
            .collect();
        let q = queries.narrow(0, row as i64, 1);
        let positive = model.encode_passages(&[t.positive_text.as_str()]).unwrap();
        let positive_score = model
            .similarity()
            .matrix(&q, &positive)
            .double_value(&[0, 0]) as f32;
        for n in &t.negatives {
            assert!(
                !positives.contains(n.doc_id.as_str()),
                "a known positive was mined as a negative"
            );
            assert!(
                n.score <= 0.95 * positive_score + 1e-5,
                "{} > 0.95 × {positive_score}",
                n.score
            );
            negatives += 1;
        }
        assert_eq!(t.provenance.index.as_deref(), Some("exact"));
    }
    assert!(
        negatives > triplets.len(),
        "too few negatives mined: {negatives}"
    );
    assert_eq!(report.negatives, negatives);

    // A ratio of 0 keeps only candidates scoring at most 0 against a positive: the filter bites.
    let strict = MiningConfig {
        false_negative_ratio: 0.0,
        ..config.clone()
    };
    let (_, strict_report) =
        tch::no_grad(|| mine(&model, &ds.corpus, &ds.queries, &ds.qrels, &strict, "m")).unwrap();
    assert!(strict_report.dropped_likely_false_negatives > report.dropped_likely_false_negatives);

    let random = MiningConfig {
        sampling: NegativeSampling::Random,
        seed: 5,
        ..config.clone()
    };
    let first = tch::no_grad(|| mine(&model, &ds.corpus, &ds.queries, &ds.qrels, &random, "m"))
        .unwrap()
        .0;
    let again = tch::no_grad(|| mine(&model, &ds.corpus, &ds.queries, &ds.qrels, &random, "m"))
        .unwrap()
        .0;
    assert_eq!(first, again, "the same seed must mine the same negatives");

    let path = ragtune_testkit::scratch("mining").join("triplets.parquet");
    ragtune_data::write_table(&path, &triplets).unwrap();
    let back: Vec<Triplet> = ragtune_data::read_table(&path).unwrap();
    assert_eq!(back, triplets);
}

#[test]
fn hnsw_agrees_with_exact_search_on_a_small_corpus() {
    tch::manual_seed(0);
    let passages = Tensor::randn([300, 32], (Kind::Float, Device::Cpu));
    let queries = Tensor::randn([20, 32], (Kind::Float, Device::Cpu));
    let config = HnswConfig {
        m: 16,
        ef_construction: 200,
        ef_search: 200,
    };
    for similarity in [
        ragtune_retriever_train::losses::Similarity::Cosine,
        ragtune_retriever_train::losses::Similarity::Dot,
    ] {
        let index = DenseIndex::hnsw(&passages, similarity, config).unwrap();
        let exact = index.search(&queries, 10, SearchKind::Exact).unwrap();
        let approximate = index.search(&queries, 10, SearchKind::Hnsw).unwrap();
        let recall = recall_vs_exact(&exact, &approximate, 10);
        assert!(
            recall >= 0.95,
            "{similarity:?}: HNSW recall@10 vs exact {recall}"
        );
        for hits in &exact {
            assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        }
    }
    let bad = HnswConfig { m: 300, ..config };
    assert!(DenseIndex::hnsw(
        &passages,
        ragtune_retriever_train::losses::Similarity::Cosine,
        bad
    )
    .is_err());
}
