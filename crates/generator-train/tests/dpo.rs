//! The DPO recipe on a tiny random Llama: the reference log-prob cache (reuse only while the key
//! holds), per-step and cached references agree, the training loop logs TRL's metric names and
//! resumes exactly from a checkpoint; and, on SmolLM2 with a saved LoRA, our per-sequence
//! log-probs, reference log-probs, rewards and losses match TRL 1.16's DPOTrainer.

mod common;

use ragtune_generator_train::config::GeneratorConfig;
use ragtune_generator_train::dpo::{self, PairExample, ReferenceLogps};
use ragtune_generator_train::prompt::{PromptBuilder, PromptConfig};
use ragtune_generator_train::sft::SftExample;
use ragtune_models::gguf_convert::convert_gguf_to_hf;
use ragtune_models::llama_load::{load_hf_folder, CausalLm};
use ragtune_models::peft::{Peft, PeftConfig};
use ragtune_testkit::{asset, reference, scratch};
use serde_json::json;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Pairs over the tiny vocabulary: the chosen answers share a pattern, the rejected ones another.
fn tiny_lm() -> CausalLm {
    common::tiny_causal_lm(common::tiny_config(300, 32, 2))
}

fn tiny_pairs(n: i64) -> Vec<PairExample> {
    (0..n)
        .map(|i| PairExample {
            id: format!("p{i}"),
            chosen: SftExample {
                id: format!("p{i}"),
                input_ids: vec![10 + i, 11, 12, 20, 21, 22 + i % 3],
                prompt_len: 3,
            },
            rejected: SftExample {
                id: format!("p{i}"),
                input_ids: vec![10 + i, 11, 12, 40 + i % 5, 41],
                prompt_len: 3,
            },
            reference: None,
        })
        .collect()
}

fn lora() -> PeftConfig {
    toml::from_str(
        "method = \"lora\"\nr = 4\nlora_alpha = 8\nlora_dropout = 0.0\ntarget_modules = \"all-linear\"",
    )
    .unwrap()
}

#[test]
fn reference_cache_reuses_rows_only_while_their_key_holds() {
    let mut lm = tiny_lm();
    let dir = scratch("dpo-cache");
    let cache = dir.join("ref.parquet");
    let fill = |lm: &mut CausalLm, pairs: &mut [PairExample], fp: &str| {
        dpo::fill_reference(
            lm,
            None,
            fp,
            pairs,
            Some(&cache),
            2,
            Device::Cpu,
            false,
            |_| {},
        )
        .unwrap()
    };
    let mut first = tiny_pairs(5);
    let stats = fill(&mut lm, &mut first, "model-a");
    assert_eq!((stats.reused, stats.computed), (0, 5));
    // Computed without the cache, one pair per batch (no padding): the same values.
    let mut direct = tiny_pairs(5);
    dpo::fill_reference(
        &mut lm,
        None,
        "x",
        &mut direct,
        None,
        1,
        Device::Cpu,
        false,
        |_| {},
    )
    .unwrap();
    for (a, b) in first.iter().zip(&direct) {
        let (a, b) = (a.reference.unwrap(), b.reference.unwrap());
        assert!(
            (a.0 - b.0).abs() < 1e-4 && (a.1 - b.1).abs() < 1e-4,
            "{a:?} vs {b:?}"
        );
    }
    let mut again = tiny_pairs(5);
    let stats = fill(&mut lm, &mut again, "model-a");
    assert_eq!((stats.reused, stats.computed), (5, 0));
    for (a, b) in first.iter().zip(&again) {
        assert_eq!(a.reference, b.reference, "reused rows are bit-identical");
    }
    // One pair re-tokenized (another answer): only that row is stale.
    let mut changed = tiny_pairs(5);
    changed[2].rejected.input_ids.push(77);
    let stats = fill(&mut lm, &mut changed, "model-a");
    assert_eq!((stats.reused, stats.computed), (4, 1));
    assert_ne!(changed[2].reference, first[2].reference);
    // Another reference model: nothing is reused.
    let mut other = tiny_pairs(5);
    let stats = fill(&mut lm, &mut other, "model-b");
    assert_eq!((stats.reused, stats.computed), (0, 5));
    // A corrupt cache is an error naming the file, not a panic.
    std::fs::write(&cache, b"not parquet").unwrap();
    let err = dpo::fill_reference(
        &mut lm,
        None,
        "model-a",
        &mut tiny_pairs(1),
        Some(&cache),
        2,
        Device::Cpu,
        false,
        |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("ref.parquet"), "{err}");
}

fn run_config(run_dir: &Path, mode: &str, resume: bool) -> GeneratorConfig {
    let text = format!(
        r#"
model = "unused.gguf"
train = "unused"
[dpo]
beta = 0.5
reference_logps = "{mode}"
log_every = 1
[trainer]
run_name = "{name}"
runs_dir = "{runs}"
batch_size = 2
max_steps = 6
precision = "fp32"
resume = {resume}
progress = false
[trainer.optimizer]
lr = 2e-2
[trainer.checkpoint]
every_steps = 3
keep_last = 3
"#,
        name = run_dir.file_name().unwrap().to_str().unwrap(),
        runs = run_dir.parent().unwrap().display(),
    );
    toml::from_str(&text).unwrap()
}

/// Trains a fresh LoRA with DPO on the tiny pairs; returns the adapter tensors after training.
fn train_run(run_dir: &Path, mode: &str, resume: bool) -> Vec<(String, Tensor)> {
    let config = run_config(run_dir, mode, resume);
    let mut lm = tiny_lm();
    let mut pairs = tiny_pairs(8);
    if mode == "cached" {
        dpo::fill_reference(
            &mut lm,
            None,
            "tiny",
            &mut pairs,
            None,
            4,
            Device::Cpu,
            false,
            |_| {},
        )
        .unwrap();
    }
    tch::manual_seed(1);
    let policy = Peft::new(&lora(), &lm.model, Device::Cpu, None).unwrap();
    dpo::train(&config, &mut lm, &policy, None, &pairs, &[], Device::Cpu).unwrap();
    let mut vars: Vec<(String, Tensor)> = policy.var_store().variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

fn max_diff(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
    a.iter()
        .zip(b)
        .map(|((n, x), (m, y))| {
            assert_eq!(n, m);
            (x - y).abs().max().double_value(&[])
        })
        .fold(0.0, f64::max)
}

#[test]
fn dpo_training_logs_trl_metrics_resumes_exactly_and_per_step_reference_agrees() {
    let root = scratch("dpo-train");
    let cached = train_run(&root.join("cached"), "cached", false);
    let metrics = std::fs::read_to_string(root.join("cached/metrics.jsonl")).unwrap();
    let dpo_records: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["type"] == "dpo")
        .collect();
    assert_eq!(dpo_records.len(), 6);
    for name in [
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
        "loss",
    ] {
        assert!(
            dpo_records.iter().all(|r| r[name].as_f64().is_some()),
            "{name} missing"
        );
    }
    // A fresh LoRA is the base: the first step's rewards are 0 and the loss is ln 2.
    assert!(dpo_records[0]["rewards/margins"].as_f64().unwrap().abs() < 1e-5);
    assert!((dpo_records[0]["loss"].as_f64().unwrap() - 2f64.ln()).abs() < 1e-5);
    // Training separates the pairs.
    let last = &dpo_records[5];
    assert!(last["rewards/margins"].as_f64().unwrap() > 0.0, "{last}");
    assert!(last["loss"].as_f64().unwrap() < 2f64.ln(), "{last}");

    // The reference forward at every step gives the same training as the cached log-probs.
    let per_step = train_run(&root.join("per-step"), "per_step", false);
    let d = max_diff(&cached, &per_step);
    assert!(d < 1e-5, "per-step vs cached reference: {d}");

    // Killed after step 3: drop the later checkpoint and resume; the end is the same, exactly.
    let resumed_dir = root.join("resumed");
    let copy = |from: &Path, to: &Path| {
        std::process::Command::new("cp")
            .arg("-r")
            .arg(from)
            .arg(to)
            .status()
            .unwrap()
    };
    assert!(copy(&root.join("cached"), &resumed_dir).success());
    let checkpoints = resumed_dir.join("checkpoints");
    for entry in std::fs::read_dir(&checkpoints).unwrap() {
        let path = entry.unwrap().path();
        if !path.ends_with("step-00000003") {
            std::fs::remove_dir_all(&path).unwrap();
        }
    }
    let resumed = train_run(&resumed_dir, "cached", true);
    assert_eq!(max_diff(&cached, &resumed), 0.0);
    let log = std::fs::read_to_string(resumed_dir.join("metrics.jsonl")).unwrap();
    assert!(log.contains("\"type\":\"resume\""));
    assert_eq!(log.matches("\"type\":\"dpo\"").count(), 6);
}

#[test]
fn dpo_log_probs_rewards_and_losses_match_trl_dpo_trainer() {
    let dir = scratch("dpo-trl");
    let model_dir = dir.join("smollm2-hf");
    convert_gguf_to_hf(
        &asset("smollm2-135m-instruct").join("SmolLM2-135M-Instruct.Q4_1.gguf"),
        &model_dir,
    )
    .unwrap();
    let mut lm = load_hf_folder(&model_dir, Device::Cpu, Kind::Float).unwrap();
    lm.var_store.freeze();
    let prefs = vec![
        ragtune_data::Preference {
            id: "a".into(),
            prompt: "Do I need a permit for a fence?".into(),
            chosen: "Yes, fences over 1.1 m need a permit.".into(),
            rejected: "No, fences never need one.".into(),
            context: Some("Fences higher than 1.1 metres need a building permit.".into()),
        },
        ragtune_data::Preference {
            id: "b".into(),
            prompt: "Who inspects the roof?".into(),
            chosen: "The municipal inspector.".into(),
            rejected: "Nobody does; you can build it yourself without checks.".into(),
            context: None,
        },
        ragtune_data::Preference {
            id: "c".into(),
            prompt: "How long is a permit valid?".into(),
            chosen: "Two years.".into(),
            rejected: "Forever.".into(),
            context: Some(
                "A permit is valid for two years.\n\nWork must start within a year.".into(),
            ),
        },
    ];
    let prompt = PromptConfig {
        max_length: 64,
        ..PromptConfig::default()
    };
    let mut pairs = {
        let builder = PromptBuilder::new(&prompt, &lm.tokenizer).unwrap();
        dpo::build_pairs(&prefs, &builder).unwrap()
    };
    dpo::fill_reference(
        &mut lm,
        None,
        "t",
        &mut pairs,
        None,
        3,
        Device::Cpu,
        false,
        |_| {},
    )
    .unwrap();
    tch::manual_seed(5);
    let policy = Peft::new(&lora(), &lm.model, Device::Cpu, None).unwrap();
    // Move B away from 0, so the policy differs from the reference.
    tch::no_grad(|| {
        for (name, mut v) in policy.var_store().variables() {
            if name.contains("lora_B") {
                v.f_copy_(&(Tensor::randn(v.size(), (Kind::Float, Device::Cpu)) * 0.02))
                    .unwrap();
            }
        }
    });
    let adapter_dir = dir.join("adapter");
    policy.save(&adapter_dir).unwrap();
    policy.attach(&mut lm.model);
    let settings = dpo::DpoSettings {
        beta: 0.1,
        reference_logps: ReferenceLogps::Cached,
        ..Default::default()
    };
    // All pairs in one padded batch on our side, one pair per batch on TRL's.
    let refs: Vec<&PairExample> = pairs.iter().collect();
    let (rc, rr) = (
        Tensor::from_slice(
            &pairs
                .iter()
                .map(|p| p.reference.unwrap().0)
                .collect::<Vec<_>>(),
        ),
        Tensor::from_slice(
            &pairs
                .iter()
                .map(|p| p.reference.unwrap().1)
                .collect::<Vec<_>>(),
        ),
    );
    let (out, pc, pr) = tch::no_grad(|| {
        dpo::dpo_against(
            &lm,
            Some(&policy),
            &refs,
            &settings,
            (&rc, &rr),
            Device::Cpu,
        )
    })
    .unwrap();
    let v = |t: &Tensor| Vec::<f64>::try_from(t.to_kind(Kind::Double)).unwrap();
    let (pc, pr, losses) = (v(&pc), v(&pr), v(&out.losses));
    let (chosen_rewards, rejected_rewards) = (v(&out.chosen_rewards), v(&out.rejected_rewards));
    let want = reference(
        "generator_dpo.py",
        &json!({
            "op": "trainer", "model_dir": model_dir, "adapter_dir": adapter_dir, "beta": 0.1,
            "loss_type": "sigmoid", "pad_token_id": lm.tokenizer.pad_token_id(),
            "pairs": pairs.iter().map(|p| json!({
                "prompt_ids": p.chosen.input_ids[..p.chosen.prompt_len],
                "chosen_ids": p.chosen.input_ids[p.chosen.prompt_len..],
                "rejected_ids": p.rejected.input_ids[p.rejected.prompt_len..],
            })).collect::<Vec<_>>(),
        }),
    );
    let theirs = want["pairs"].as_array().unwrap();
    assert_eq!(theirs.len(), pairs.len());
    let worst = std::cell::Cell::new(0f64);
    let close = |what: &str, ours: f64, theirs: &serde_json::Value, tol: f64| {
        let t = theirs.as_f64().unwrap();
        worst.set(worst.get().max((ours - t).abs()));
        assert!((ours - t).abs() < tol, "{what}: ours {ours} vs TRL {t}");
    };
    for (i, (p, t)) in pairs.iter().zip(theirs).enumerate() {
        assert_eq!(
            p.chosen.input_ids[..p.chosen.prompt_len],
            p.rejected.input_ids[..p.rejected.prompt_len]
        );
        let (ref_c, ref_r) = p.reference.unwrap();
        close(
            &format!("pair {i} ref chosen"),
            ref_c,
            &t["ref_chosen"],
            1e-3,
        );
        close(
            &format!("pair {i} ref rejected"),
            ref_r,
            &t["ref_rejected"],
            1e-3,
        );
        close(
            &format!("pair {i} logps chosen"),
            pc[i],
            &t["logps_chosen"],
            1e-3,
        );
        close(
            &format!("pair {i} logps rejected"),
            pr[i],
            &t["logps_rejected"],
            1e-3,
        );
        close(
            &format!("pair {i} reward chosen"),
            chosen_rewards[i],
            &t["rewards_chosen"],
            1e-4,
        );
        close(
            &format!("pair {i} reward rejected"),
            rejected_rewards[i],
            &t["rewards_rejected"],
            1e-4,
        );
        close(&format!("pair {i} loss"), losses[i], &t["loss"], 1e-5);
    }
    eprintln!("largest difference from TRL: {:.2e}", worst.get());
}
