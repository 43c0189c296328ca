//! `ragtune joint` end to end, from a small stage-by-stage run (a FAQ slice, bert-tiny, a tiny
//! random Llama with a LoRA SFT adapter): query-side LSR leaves the passage tower, its corpus
//! embeddings and the index bit-identical while the query tower learns; and an RA-DIT run killed
//! inside a round resumes to exactly the weights and numbers of an uninterrupted one.

mod common;

use common::{config, faq_slice, kill_once_saved, ragtune, run_ok, tiny_generator, GENERATOR};
use ragtune_retrieval::{Corpus, DenseConfig, DenseRetriever};
use ragtune_testkit::scratch;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Data, the tuned retriever, its index and the SFT adapter, as the joint methods start from.
fn stage_by_stage(dir: &Path) -> (PathBuf, PathBuf) {
    let faq = faq_slice(dir, 90);
    let generator = tiny_generator(dir);
    let stages = "stages = [\"data\", \"retriever\", \"index\", \"generator-sft\"]";
    let cfg = config(dir, "base", &faq, Some(&generator), stages);
    run_ok(&mut ragtune(&[
        "pipeline",
        "--config",
        &cfg.display().to_string(),
    ]));
    (dir.join("runs/base"), generator)
}

fn joint_config(dir: &Path, name: &str, base: &Path, generator: &Path, extra: &str) -> PathBuf {
    let data = base.join("data");
    let generator_table = GENERATOR
        .replace("TINY_LLAMA", &generator.display().to_string())
        .replace(
            "max_train_examples = 16",
            &format!(
                "train = \"{}\"\nvalid = \"{}\"\ntest = \"{}\"",
                data.join("train").display(),
                data.join("val").display(),
                data.join("test").display()
            ),
        );
    // The pipeline's own tables ([pairs], [eval]) follow [generator] there; not here.
    let generator_table = generator_table
        .split("\n[pairs]")
        .next()
        .expect("the generator table")
        .to_string();
    let text = format!(
        r#"run_name = "{name}"
runs_dir = "{runs}"
max_train_questions = 12
adapter = "{adapter}"
{extra}

[retriever.dense]
model = "{model}"
max_length = 64
cache_dir = "{cache}"

[retriever.trainer]
batch_size = 4
epochs = 1.0
progress = false
precision = "fp32"

[retriever.trainer.optimizer]
lr = 1e-3

[retriever.trainer.checkpoint]
every_steps = 1
keep_last = 1

[lsr]
k = 3

[eval]
questions = 4
test_questions = 6
bootstrap_resamples = 200
{generator_table}
"#,
        runs = dir.join("runs").display(),
        adapter = base.join("generator-sft/adapter").display(),
        model = base.join("retriever/model").display(),
        cache = base.join("index/cache").display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn summary(run: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

/// The trajectory without timings.
fn trajectory(summary: &Value) -> Vec<Value> {
    summary["trajectory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let mut p = p.clone();
            p.as_object_mut().unwrap().remove("seconds");
            p
        })
        .collect()
}

fn embeddings(model: &Path, corpus: &Corpus) -> tch::Tensor {
    let config = DenseConfig {
        model: model.to_path_buf(),
        max_length: Some(64),
        ..DenseConfig::default()
    };
    let retriever = DenseRetriever::load(&config, corpus.clone(), tch::Device::Cpu).unwrap();
    retriever.index().embeddings().shallow_clone()
}

#[test]
fn query_side_lsr_leaves_passages_and_index_bit_identical() {
    let dir = scratch("joint-lsr");
    let (base, generator) = stage_by_stage(&dir);
    let cfg = joint_config(&dir, "lsr", &base, &generator, "rounds = 2");
    let out = run_ok(&mut ragtune(&[
        "joint",
        "lsr",
        "--config",
        &cfg.display().to_string(),
    ]));
    assert!(out.contains("test (end − start"), "{out}");
    let run = dir.join("runs/lsr");
    let s = summary(&run);
    assert_eq!(s["method"], "lsr");
    assert_eq!(trajectory(&s).len(), 3, "start and two retriever steps");
    // Scored once: round 2 trains on round 1's targets, scoring nothing.
    assert_eq!(s["steps"][0]["scoring"]["computed"], 36);
    assert!(s["steps"][1]["scoring"].is_null());
    for point in trajectory(&s) {
        let watch = &point["watch"];
        assert_eq!(watch["questions"], 12);
        let entropy = watch["entropy"].as_f64().unwrap();
        assert!(entropy > 0.0 && entropy <= (3f64).ln() + 1e-9, "{watch}");
        assert!(watch["distinct_passages"].as_u64().unwrap() >= 3);
    }
    let metrics = std::fs::read_to_string(run.join("round-1/retriever/metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"retriever_entropy\""), "{metrics}");

    // The passage tower is the starting folder byte for byte, so its corpus embeddings are the
    // same bits and the index the same; the query tower moved.
    let start = base.join("retriever/model");
    let tuned = run.join("model");
    assert_eq!(
        ragtune_retrieval::dense::folder_fingerprint(&tuned.join("passage")).unwrap(),
        ragtune_retrieval::dense::folder_fingerprint(&start).unwrap()
    );
    let corpus = Corpus::new(
        ragtune_data::Dataset::read(&base.join("data/train"))
            .unwrap()
            .corpus,
    );
    let (before, after) = (embeddings(&start, &corpus), embeddings(&tuned, &corpus));
    assert!(before.equal(&after), "passage embeddings changed");
    assert_ne!(
        std::fs::read(tuned.join("query/model.safetensors")).unwrap(),
        std::fs::read(start.join("model.safetensors")).unwrap(),
        "the query tower did not train"
    );
    // The report page exists beside the summary.
    let md = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        md.contains("Trajectory") && md.contains("start against end"),
        "{md}"
    );

    // The LM cache: the same generator, prompts and passages reuse every score; a changed
    // adapter scores every pair again.
    let scored = |name: &str, adapter: Option<&Path>| -> Value {
        let cfg = joint_config(&dir, name, &base, &generator, "rounds = 1");
        let folder = dir.join("runs").join(name);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::copy(
            run.join("lm-scores.parquet"),
            folder.join("lm-scores.parquet"),
        )
        .unwrap();
        let mut args = vec![
            "joint".to_string(),
            "lsr".into(),
            "--config".into(),
            cfg.display().to_string(),
        ];
        if let Some(a) = adapter {
            args.extend(["--set".into(), format!("adapter=\"{}\"", a.display())]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_ok(&mut ragtune(&args));
        summary(&folder)["steps"][0]["scoring"].clone()
    };
    let same = scored("lsr-cached", None);
    assert_eq!(
        (same["reused"].as_u64(), same["computed"].as_u64()),
        (Some(36), Some(0)),
        "{same}"
    );
    let changed = dir.join("changed-adapter");
    std::fs::create_dir_all(&changed).unwrap();
    let sft = base.join("generator-sft/adapter");
    std::fs::copy(
        sft.join("adapter_config.json"),
        changed.join("adapter_config.json"),
    )
    .unwrap();
    let weights = ragtune_models::checkpoint::load_safetensors(
        &sft.join("adapter_model.safetensors"),
        tch::Device::Cpu,
    )
    .unwrap();
    let mut scaled: Vec<(String, tch::Tensor)> = weights
        .into_iter()
        .map(|(name, t)| (name, t * 1.5))
        .collect();
    scaled.sort_by(|a, b| a.0.cmp(&b.0));
    ragtune_models::checkpoint::save_safetensors(
        &changed.join("adapter_model.safetensors"),
        &scaled,
    )
    .unwrap();
    let rescored = scored("lsr-changed", Some(&changed));
    assert_eq!(
        (rescored["reused"].as_u64(), rescored["computed"].as_u64()),
        (Some(0), Some(36)),
        "{rescored}"
    );

    // Both towers: the corpus is encoded again every 2 steps (and after the last), each refresh
    // timed, and the exported single tower has moved.
    let cfg = joint_config(&dir, "lsr-both", &base, &generator, "rounds = 1");
    run_ok(&mut ragtune(&[
        "joint",
        "lsr",
        "--config",
        &cfg.display().to_string(),
        "--set",
        "retriever.towers=\"both\"",
        "--set",
        "retriever.refresh_every_steps=2",
    ]));
    let both = summary(&dir.join("runs/lsr-both"));
    let refreshes = both["steps"][0]["refresh_seconds"].as_array().unwrap();
    assert_eq!(refreshes.len(), 2, "{both}");
    let metrics =
        std::fs::read_to_string(dir.join("runs/lsr-both/round-1/retriever/metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"index_refresh\""), "{metrics}");
    let tuned = dir.join("runs/lsr-both/model");
    assert!(tuned.join("config.json").is_file() && !tuned.join("passage").exists());
    assert!(
        !embeddings(&tuned, &corpus).equal(&before),
        "both towers trained, yet passages are the same"
    );
}

/// `ragtune joint ra-dit` with LM scores computed again each round.
fn ra_dit_online(config: &Path) -> std::process::Command {
    ragtune(&[
        "joint",
        "ra-dit",
        "--config",
        &config.display().to_string(),
        "--set",
        "lsr.scoring=\"online\"",
    ])
}

#[test]
fn a_killed_ra_dit_run_resumes_exactly() {
    let dir = scratch("joint-resume");
    let (base, generator) = stage_by_stage(&dir);
    let extra = "rounds = 2";
    let whole = joint_config(&dir, "whole", &base, &generator, extra);
    run_ok(&mut ra_dit_online(&whole));

    let killed = joint_config(&dir, "killed", &base, &generator, extra);
    let mut child = ra_dit_online(&killed)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Inside round 1's generator step, after its first checkpoint.
    let checkpoints = dir.join("runs/killed/round-1/generator/checkpoints");
    kill_once_saved(&mut child, &checkpoints);
    assert!(
        !dir.join("runs/killed/round-1/generator/step.json").exists(),
        "killed too late"
    );
    let resumed = run_ok(&mut ra_dit_online(&killed));
    assert!(
        resumed.contains("round-1/retriever: done before"),
        "{resumed}"
    );

    let (a, b) = (
        summary(&dir.join("runs/whole")),
        summary(&dir.join("runs/killed")),
    );
    assert_eq!(trajectory(&a).len(), 5);
    assert_eq!(trajectory(&a), trajectory(&b));
    assert_eq!(a["test"], b["test"]);
    for file in [
        "model/query/model.safetensors",
        "adapter/adapter_model.safetensors",
    ] {
        assert_eq!(
            std::fs::read(dir.join("runs/whole").join(file)).unwrap(),
            std::fs::read(dir.join("runs/killed").join(file)).unwrap(),
            "{file}"
        );
    }
    // Online scoring: round 2 searches again and scores with round 1's adapter, whose key differs
    // from the SFT adapter's, so every score is computed again.
    let round2 = &a["steps"][2];
    assert_eq!(round2["name"], "round-2/retriever");
    assert_eq!(round2["scoring"]["reused"], 0, "{round2}");
}
