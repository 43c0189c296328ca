//! `compare::run` on the real FAQ, split: BM25, a dense bert-tiny, their RRF hybrid and a weighted
//! hybrid whose weights come from the validation sweep. The rows' means are checked against
//! scoring each retriever's run directly, the baseline has no interval and every other row does,
//! and the report is written.

use ragtune_data::split::{split_dataset, SplitConfig};
use ragtune_pipeline::compare::{self, CompareConfig};
use ragtune_retrieval::{Corpus, RetrievalConfig};
use ragtune_testkit::{asset, scratch};
use tch::Device;

fn faq_splits(dir: &std::path::Path) {
    let (ds, _) =
        ragtune_data::import::import_faq(&asset("zaragoza-faq").join("faq-en.jsonl")).unwrap();
    let (splits, _) = split_dataset(
        &ds,
        &SplitConfig {
            fractions: [0.6, 0.2, 0.2],
            ..Default::default()
        },
    )
    .unwrap();
    for (name, part) in ["train", "val", "test"].iter().zip(&splits) {
        part.write(&dir.join(name)).unwrap();
    }
}

fn config(dir: &std::path::Path) -> CompareConfig {
    let text = format!(
        r#"
        name = "compare"
        runs_dir = "{runs}"
        data = "{data}"
        baseline = "dense"
        measures = ["ndcg@10", "recall@20"]
        bootstrap_resamples = 500
        [sweep]
        grid = [0.0, 0.5, 1.0]
        [[retrievers]]
        name = "bm25"
        retrieval = {{ backend = "bm25", cache_dir = "{bm25}" }}
        [[retrievers]]
        name = "dense"
        retrieval = {{ backend = "dense", model = "{tiny}", max_length = 64, cache_dir = "{cache}" }}
        [[retrievers]]
        name = "rrf"
        [retrievers.retrieval]
        backend = "hybrid"
        retrievers = [
          {{ backend = "bm25", cache_dir = "{bm25}" }},
          {{ backend = "dense", model = "{tiny}", max_length = 64, cache_dir = "{cache}" }},
        ]
        [[retrievers]]
        name = "weighted"
        sweep = true
        [retrievers.retrieval]
        backend = "hybrid"
        fusion = {{ method = "weighted", normalization = "z_score" }}
        retrievers = [
          {{ backend = "bm25", cache_dir = "{bm25}" }},
          {{ backend = "dense", model = "{tiny}", max_length = 64, cache_dir = "{cache}" }},
        ]
        "#,
        runs = dir.join("runs").display(),
        data = dir.join("data").display(),
        bm25 = dir.join("data/bm25").display(),
        cache = dir.join("cache").display(),
        tiny = asset("bert-tiny").display(),
    );
    let path = dir.join("compare.toml");
    std::fs::write(&path, text).unwrap();
    CompareConfig::load(&path, &[]).unwrap()
}

#[test]
fn rows_score_as_their_runs_and_differ_from_the_baseline_with_intervals() {
    let dir = scratch("compare");
    faq_splits(&dir.join("data"));
    let config = config(&dir);
    let report = compare::run(&config, Device::Cpu).unwrap();
    assert_eq!(
        report
            .rows
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["bm25", "dense", "rrf", "weighted"]
    );
    assert!(report.queries >= 90, "{} test queries", report.queries);

    // BM25's row is what scoring its run directly gives.
    let test = ragtune_data::Dataset::read(&dir.join("data/test")).unwrap();
    let bm25 = config.retrievers[0]
        .retrieval
        .build(Corpus::new(test.corpus.clone()), Device::Cpu)
        .unwrap();
    let judged: Vec<&ragtune_data::Query> = test
        .queries
        .iter()
        .filter(|q| test.qrels.iter().any(|r| r.query_id == q.query_id))
        .collect();
    let texts: Vec<&str> = judged.iter().map(|q| q.text.as_str()).collect();
    let ids: Vec<&str> = judged.iter().map(|q| q.query_id.as_str()).collect();
    let hits = bm25.search(&texts, 20).unwrap();
    let run = ragtune_retrieval::to_run(bm25.corpus(), &ids, &hits);
    let mut qrels = ragtune_eval::retrieval::Qrels::new();
    for r in &test.qrels {
        qrels
            .entry(r.query_id.clone())
            .or_default()
            .insert(r.doc_id.clone(), i64::from(r.relevance));
    }
    let direct = ragtune_eval::retrieval::evaluate(
        &run,
        &qrels,
        &[ragtune_eval::retrieval::Measure::Ndcg(10)],
    )
    .unwrap();
    let row = &report.rows[0].measures["ndcg@10"];
    assert!((row.mean - direct.mean["ndcg@10"]).abs() < 1e-12);
    let difference = row.mean - report.rows[1].measures["ndcg@10"].mean;
    assert!((row.difference.unwrap() - difference).abs() < 1e-9);
    assert!(row.ci_low.unwrap() <= difference && difference <= row.ci_high.unwrap());
    assert!(report.rows[1].measures["ndcg@10"].difference.is_none());

    // The sweep ran on validation, over the grid, and the weighted row uses its best point.
    let sweep = &report.sweeps[0];
    assert_eq!(sweep.retriever, "weighted");
    assert_eq!(sweep.points.len(), 3);
    assert!(sweep.points.windows(2).all(|w| w[0].score >= w[1].score));
    let weights = format!("{:?}", sweep.points[0].weights);
    assert!(
        report.rows[3].description.contains(&weights),
        "{} should use {weights}",
        report.rows[3].description
    );
    assert!(matches!(
        config.retrievers[2].retrieval,
        RetrievalConfig::Hybrid(_)
    ));

    let run_dir = dir.join("runs/compare");
    for file in ["summary.json", "report.html", "report.md"] {
        assert!(run_dir.join(file).is_file(), "{file}");
    }
    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert!(html.contains("Weight sweep: weighted") && html.contains("<svg"));
}

#[test]
fn a_baseline_that_is_no_retriever_is_refused_by_name() {
    let dir = scratch("compare-bad");
    let mut config = config(&dir);
    config.baseline = "colbert".into();
    let err = config.validate().unwrap_err().to_string();
    assert!(
        err.contains("baseline `colbert` is none of the retrievers (bm25, dense, rrf, weighted)"),
        "{err}"
    );
}
