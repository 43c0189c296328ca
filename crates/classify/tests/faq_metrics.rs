//! The FAQ's categories on bert-tiny: the split is stratified by category, the test scores in
//! report.json equal scikit-learn's on the same predictions (accuracy, macro-F1, per-class
//! precision and recall), and `evaluate` on the saved model (full and LoRA) gives them again.

mod common;

use ragtune_classify::ClassifyConfig;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use tch::Device;

fn faq_config(runs: &Path, name: &str, peft: &str) -> ClassifyConfig {
    let toml = format!(
        r#"
[data]
source = "{faq}"
format = "faq"
[model]
base = "{base}"
max_length = 48
pooling = "mean"
[head]
lr = 1e-2
[trainer]
run_name = "{name}"
runs_dir = "{runs}"
batch_size = 16
max_steps = 24
progress = false
precision = "fp32"
[trainer.optimizer]
lr = 1e-3
[trainer.eval]
every_steps = 8
[trainer.checkpoint]
every_steps = 8
{peft}
"#,
        faq = ragtune_testkit::root()
            .join("assets/zaragoza-faq/faq-en.jsonl")
            .display(),
        base = ragtune_testkit::asset("bert-tiny").display(),
        runs = runs.display(),
    );
    ClassifyConfig::from_toml_str(&toml, Path::new("faq.toml"), &[]).unwrap()
}

fn close(what: &str, ours: f64, theirs: &Value) {
    let theirs = theirs.as_f64().unwrap();
    assert!(
        (ours - theirs).abs() <= 1e-12,
        "{what}: ours {ours}, sklearn {theirs}"
    );
}

#[test]
fn faq_categories_scores_match_sklearn_and_reload() {
    let runs = ragtune_testkit::scratch("classify-faq");
    for (name, peft) in [
        ("full", ""),
        ("lora", "[peft]\nmethod = \"lora\"\nr = 4\nlr = 1e-2"),
    ] {
        let config = faq_config(&runs, name, peft);
        let report = ragtune_classify::run(&config, Device::Cpu).unwrap();
        assert_eq!(report.method, name);
        assert_eq!(report.labels, 39);
        assert!(report.split.stratified);
        // bert-tiny has no pooler, so full fine-tuning trains every value; LoRA a small share.
        assert!(
            report.trainable_parameters > 0
                && report.trainable_parameters <= report.total_parameters
        );
        if name == "lora" {
            assert!(report.trainable_parameters * 10 < report.total_parameters);
        }
        assert!(report.mean_step_seconds.is_some() && report.peak_rss_bytes > 0);
        let run_dir = runs.join(name);
        for file in [
            "report.json",
            "report.md",
            "predictions.jsonl",
            "metrics.jsonl",
            "model/head.json",
        ] {
            assert!(run_dir.join(file).is_file(), "{file} missing");
        }
        let rows: Vec<Value> = std::fs::read_to_string(run_dir.join("predictions.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let test: Vec<&Value> = rows.iter().filter(|r| r["split"] == "test").collect();
        let train_share = report.split.train as f64 / 503.0;
        assert!(
            (train_share - 0.7).abs() < 0.03,
            "train share {train_share}"
        );

        // Stratified: every category with at least 5 questions has some in the test split.
        let mut per_label: BTreeMap<String, usize> = BTreeMap::new();
        for r in &test {
            *per_label
                .entry(r["label"].as_str().unwrap().into())
                .or_default() += 1;
        }
        assert_eq!(per_label.len(), 39, "categories in test: {per_label:?}");

        let y_true: Vec<&str> = test.iter().map(|r| r["label"].as_str().unwrap()).collect();
        let y_pred: Vec<&str> = test
            .iter()
            .map(|r| r["predicted"].as_str().unwrap())
            .collect();
        let sklearn = ragtune_testkit::reference(
            "classify_metrics.py",
            &json!({"y_true": y_true, "y_pred": y_pred}),
        );
        let scores = report.test.as_ref().unwrap();
        close("accuracy", scores.accuracy.unwrap(), &sklearn["accuracy"]);
        close("macro-F1", scores.macro_f1.unwrap(), &sklearn["macro_f1"]);
        let labels: Vec<&str> = sklearn["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        assert_eq!(scores.per_class.len(), labels.len());
        for (ours, (label, theirs)) in scores
            .per_class
            .iter()
            .zip(labels.iter().zip(sklearn["per_label"].as_array().unwrap()))
        {
            assert_eq!(ours.label, *label);
            close(&format!("{label} precision"), ours.precision, &theirs[0]);
            close(&format!("{label} recall"), ours.recall, &theirs[1]);
            close(&format!("{label} F1"), ours.f1, &theirs[2]);
            assert_eq!(ours.support as u64, theirs[3].as_u64().unwrap());
        }
        let ci = scores.accuracy_ci.unwrap();
        assert!(ci.low <= scores.accuracy.unwrap() && scores.accuracy.unwrap() <= ci.high);
        let ci = scores.macro_f1_ci.unwrap();
        assert!(ci.low <= ci.high);

        // The saved model (encoder folder, or adapter on the base) predicts the same again.
        let evaluated = ragtune_classify::evaluate(&config, Device::Cpu).unwrap();
        assert_eq!(
            evaluated.test.accuracy, scores.accuracy,
            "{name}: reload changed accuracy"
        );
        assert_eq!(evaluated.test.macro_f1, scores.macro_f1);
        assert!((evaluated.test.loss - scores.loss).abs() < 1e-5);
        let saved = run_dir.join(if name == "full" {
            "model/encoder/model.safetensors"
        } else {
            "model/adapter/adapter_config.json"
        });
        assert!(saved.is_file(), "{} missing", saved.display());
    }
}
