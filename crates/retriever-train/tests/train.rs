//! The whole recipe on a slice of the FAQ with bert-tiny: mining, ANCE re-mining, GradCache,
//! evaluation, report, export and resume.

mod common;

use ragtune_retriever_train::index::SearchKind;
use ragtune_retriever_train::model::ModelConfig;
use ragtune_retriever_train::train::{self, RetrieverConfig};
use tch::Device;

#[test]
fn recipe_runs_end_to_end_and_resumes() {
    let dir = ragtune_testkit::scratch("retriever-train");
    let data_dir = common::write_slice(common::faq(), 48, &dir);

    let mut config: RetrieverConfig = toml::from_str(
        r#"
        [data]
        split_seed = 1
        fractions = [0.6, 0.2, 0.2]
        [loss]
        gradcache_chunk = 4
        [negatives]
        hard = true
        remine_every_steps = 2
        [negatives.mining]
        num_negatives = 1
        rank_max = 10
        [report]
        bootstrap_resamples = 200
        hnsw_config = { m = 8, ef_construction = 64, ef_search = 64 }
        [trainer]
        run_name = "tiny"
        batch_size = 8
        epochs = 1.0
        precision = "fp32"
        progress = false
        [trainer.optimizer]
        lr = 1e-4
        [trainer.eval]
        every_steps = 2
        metric = "ndcg@10"
        [trainer.checkpoint]
        keep_best = true
        "#,
    )
    .unwrap();
    config.data.source = data_dir;
    config.model = ModelConfig {
        base: ragtune_testkit::asset("bert-tiny"),
        max_length: 64,
        ..Default::default()
    };
    config.negatives.mining.search = SearchKind::Exact;
    config.trainer.runs_dir = dir.join("runs");

    let report = train::run(&config, Device::Cpu).unwrap();
    let run_dir = dir.join("runs/tiny");
    assert!(report.steps >= 3, "{} steps", report.steps);
    assert!(report.mining.as_ref().unwrap().negatives > 0);
    for file in [
        "report.json",
        "report.md",
        "metrics.jsonl",
        "triplets.parquet",
        "model/modules.json",
        "model/model.safetensors",
    ] {
        assert!(run_dir.join(file).is_file(), "{file} is missing");
    }
    let rows = report.report["test_exact"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    for row in rows {
        let (low, high, diff) = (
            row["ci_low"].as_f64().unwrap(),
            row["ci_high"].as_f64().unwrap(),
            row["difference"].as_f64().unwrap(),
        );
        assert!(low <= diff + 1e-12 && diff <= high + 1e-12, "{row}");
    }
    assert!(
        report.report["test_hnsw"]["fine_tuned"]["recall_vs_exact@10"]
            .as_f64()
            .unwrap()
            > 0.5
    );
    assert!(report.markdown.contains("| ndcg@10 |"));
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert!(metrics
        .lines()
        .any(|l| l.contains("\"type\":\"eval\"") && l.contains("ndcg@10")));

    // The run folder holds the final checkpoint, so a second run resumes there and trains no further.
    let again = train::run(&config, Device::Cpu).unwrap();
    assert_eq!(again.steps, report.steps);
}
