//! The trainer's pieces in-process: parameter groups, bf16 autocast, config, metrics, checkpoint
//! retention, early stopping, and the non-finite-loss stop.

use ragtune_trainer::precision::{autocast_bf16, autocast_enabled};
use ragtune_trainer::{
    CheckpointManager, Metrics, MetricsLog, OptimizerConfig, ParamPlan, Trainer, TrainerConfig,
    TrainerError,
};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// A VarStore with BERT-like Hugging Face names: embeddings, 3 layers, a pooler and a new head.
fn bert_like() -> nn::VarStore {
    let vs = nn::VarStore::new(Device::Cpu);
    let var = |name: &str, shape: &[i64]| {
        let (path, leaf) = name.rsplit_once('.').unwrap();
        let parent = path.split('.').fold(vs.root(), |p, segment| p / segment);
        let _ = parent.var(leaf, shape, nn::Init::Const(0.1));
    };
    var("bert.embeddings.word_embeddings.weight", &[10, 4]);
    var("bert.embeddings.LayerNorm.gamma", &[4]);
    for layer in 0..3 {
        var(
            &format!("bert.encoder.layer.{layer}.attention.self.query.weight"),
            &[4, 4],
        );
        var(
            &format!("bert.encoder.layer.{layer}.attention.self.query.bias"),
            &[4],
        );
        var(
            &format!("bert.encoder.layer.{layer}.output.LayerNorm.weight"),
            &[4],
        );
    }
    var("bert.pooler.dense.weight", &[4, 4]);
    var("classifier.weight", &[2, 4]);
    var("classifier.bias", &[2]);
    vs
}

#[test]
fn param_groups_decay_layers_skip_norms_and_freeze() {
    let vs = bert_like();
    let config = OptimizerConfig {
        weight_decay: 0.01,
        layer_decay: 0.5,
        head_patterns: vec![r"^classifier\.".into()],
        head_lr_multiplier: 10.0,
        freeze_patterns: vec![r"encoder\.layer\.0\.".into()],
        ..Default::default()
    };
    let plan = ParamPlan::new(vs.variables(), &config).unwrap();
    let by_name: HashMap<&str, (f64, f64)> = plan
        .trainable
        .iter()
        .map(|p| (p.name.as_str(), (p.lr_scale, p.weight_decay)))
        .collect();
    // 3 layers: embeddings at 0.5^4, layer i at 0.5^(3 - i), pooler at 1, the head at 10.
    assert_eq!(
        by_name["bert.embeddings.word_embeddings.weight"],
        (0.0625, 0.01)
    );
    assert_eq!(by_name["bert.embeddings.LayerNorm.gamma"], (0.0625, 0.0));
    assert_eq!(
        by_name["bert.encoder.layer.1.attention.self.query.weight"],
        (0.25, 0.01)
    );
    assert_eq!(
        by_name["bert.encoder.layer.1.attention.self.query.bias"],
        (0.25, 0.0)
    );
    assert_eq!(
        by_name["bert.encoder.layer.2.output.LayerNorm.weight"],
        (0.5, 0.0)
    );
    assert_eq!(by_name["bert.pooler.dense.weight"], (1.0, 0.01));
    assert_eq!(by_name["classifier.weight"], (10.0, 0.01));
    assert_eq!(by_name["classifier.bias"], (10.0, 0.0));
    assert_eq!(plan.frozen.len(), 3);
    assert!(plan.frozen.iter().all(|n| n.contains("encoder.layer.0.")));
    let variables = vs.variables();
    assert!(!variables["bert.encoder.layer.0.attention.self.query.weight"].requires_grad());
    assert!(variables["bert.encoder.layer.1.attention.self.query.weight"].requires_grad());
    assert!(plan.summary().contains("frozen tensors: 3"));

    // PEFT-style: only the head trains, and the optimizer holds state for it alone.
    let vs = bert_like();
    let peft = OptimizerConfig {
        trainable_patterns: Some(vec![r"^classifier\.".into()]),
        ..Default::default()
    };
    let plan = ParamPlan::new(vs.variables(), &peft).unwrap();
    let optimizer = ragtune_trainer::AdamW::new(plan.trainable, (0.9, 0.999), 1e-8);
    let names: Vec<String> = optimizer
        .state_tensors()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        [
            "exp_avg.classifier.bias",
            "exp_avg_sq.classifier.bias",
            "exp_avg.classifier.weight",
            "exp_avg_sq.classifier.weight"
        ]
    );

    let bad = OptimizerConfig {
        freeze_patterns: vec!["(".into()],
        ..Default::default()
    };
    let err = ParamPlan::new(bert_like().variables(), &bad)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("freeze_patterns") && err.contains("`(`"),
        "{err}"
    );
}

#[test]
fn bf16_autocast_on_cpu_keeps_fp32_master_weights() {
    let vs = nn::VarStore::new(Device::Cpu);
    let linear = nn::linear(vs.root(), 8, 4, Default::default());
    let x = Tensor::randn([3, 8], (Kind::Float, Device::Cpu));
    let y = autocast_bf16(Device::Cpu, true, || {
        assert!(autocast_enabled(Device::Cpu));
        linear.forward(&x)
    });
    assert!(
        !autocast_enabled(Device::Cpu),
        "autocast must be off again after the closure"
    );
    assert_eq!(y.kind(), Kind::BFloat16);
    y.to_kind(Kind::Float).sum(Kind::Float).backward();
    assert_eq!(linear.ws.kind(), Kind::Float);
    assert_eq!(linear.ws.grad().kind(), Kind::Float);
    assert!(linear.ws.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
    assert_eq!(
        autocast_bf16(Device::Cpu, false, || linear.forward(&x)).kind(),
        Kind::Float
    );
}

#[test]
fn config_reads_toml_and_names_bad_fields() {
    let config = TrainerConfig::from_toml_str(
        "run_name = \"r\"\nbatch_size = 4\n[schedule]\nkind = \"cosine\"\nwarmup_ratio = 0.1\n",
        Path::new("recipe.toml"),
    )
    .unwrap();
    assert_eq!(config.batch_size, 4);
    assert_eq!(
        config.grad_accum_steps,
        TrainerConfig::default().grad_accum_steps
    );
    let err = TrainerConfig::from_toml_str("batch_sise = 4\n", Path::new("recipe.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("recipe.toml") && err.contains("batch_sise"),
        "{err}"
    );
    let err = TrainerConfig::from_toml_str(
        "[optimizer]\nbetas = [0.9, 1.5]\n",
        Path::new("recipe.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("optimizer.betas"), "{err}");
    let err = TrainerConfig::from_toml_str("[eval]\npatience = 2\n", Path::new("recipe.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("eval.metric"), "{err}");
    // 10 examples in batches of 4: 3 micro-batches an epoch; 2 epochs with accumulation 2 -> 3 steps.
    let config = TrainerConfig {
        batch_size: 4,
        grad_accum_steps: 2,
        epochs: 2.0,
        ..Default::default()
    };
    assert_eq!(config.total_steps(10), 3);
}

#[test]
fn metrics_log_resume_drops_steps_after_the_checkpoint() {
    let dir = ragtune_testkit::scratch("trainer-metrics");
    let path = dir.join("metrics.jsonl");
    let mut log = MetricsLog::create(&path).unwrap();
    for step in 1..=5 {
        log.append(&json!({"type": "train", "step": step})).unwrap();
    }
    drop(log);
    // A torn last line, as a SIGKILL mid-write leaves.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"type\": \"tra"))
        .unwrap();
    let mut log = MetricsLog::resume(&path, 3).unwrap();
    log.append(&json!({"type": "train", "step": 4})).unwrap();
    let steps: Vec<u64> = MetricsLog::read(&path)
        .unwrap()
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3, 4]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn checkpoint_manager_ignores_torn_saves_and_prunes() {
    let dir = ragtune_testkit::scratch("trainer-ckpt");
    let manager = CheckpointManager::new(dir.join("checkpoints"), 2);
    let write = |d: &Path| {
        ragtune_models::checkpoint::atomic_write(&d.join("trainer_state.json"), b"{}")
            .map_err(TrainerError::from)
    };
    for step in [1, 2, 3, 4] {
        manager.save(step, write).unwrap();
    }
    // A save killed before its rename, and a folder without the state file: neither counts.
    std::fs::create_dir_all(dir.join("checkpoints/.tmp-step-00000009-1")).unwrap();
    std::fs::create_dir_all(dir.join("checkpoints/step-00000008")).unwrap();
    assert_eq!(manager.latest().unwrap().unwrap().step, 4);
    manager.prune(Some(1)).unwrap();
    let steps: Vec<u64> = manager.list().unwrap().iter().map(|c| c.step).collect();
    assert_eq!(steps, [1, 3, 4]);
    manager.save(5, write).unwrap();
    assert!(
        !dir.join("checkpoints/.tmp-step-00000009-1").exists(),
        "leftover temp folders are removed"
    );
    // A save whose writer fails leaves no checkpoint behind.
    assert!(manager.save(6, |_| Ok(())).is_err());
    assert_eq!(manager.latest().unwrap().unwrap().step, 5);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A one-layer regression on 32 examples, in fp32.
fn tiny_run(
    dir: &Path,
    name: &str,
    extra: &str,
) -> (nn::VarStore, nn::Linear, Tensor, Tensor, TrainerConfig) {
    let toml = format!(
        "run_name = \"{name}\"\nruns_dir = \"{}\"\nbatch_size = 8\nprecision = \"fp32\"\nprogress = false\n{extra}",
        dir.display()
    );
    let config = TrainerConfig::from_toml_str(&toml, Path::new("tiny.toml")).unwrap();
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let linear = nn::linear(vs.root() / "head", 4, 1, Default::default());
    let x = Tensor::randn([32, 4], (Kind::Float, Device::Cpu));
    let y = x.sum_dim_intlist(1, true, Kind::Float);
    (vs, linear, x, y, config)
}

#[test]
fn non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint() {
    let dir = ragtune_testkit::scratch("trainer-nan");
    let (vs, linear, x, y, config) =
        tiny_run(&dir, "nan", "epochs = 5.0\n[checkpoint]\nevery_steps = 5\n");
    let mut trainer = Trainer::new(config, &vs, 32).unwrap();
    let err = loop {
        let result = trainer.train_step(
            |batch| {
                let index = Tensor::from_slice(
                    &batch.indices.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                );
                let loss = linear
                    .forward(&x.index_select(0, &index))
                    .mse_loss(&y.index_select(0, &index), tch::Reduction::Mean);
                Ok::<_, TrainerError>(if batch.step == 6 {
                    loss * f64::NAN
                } else {
                    loss
                })
            },
            || Ok(Metrics::new()),
        );
        if let Err(e) = result {
            break e;
        }
    };
    assert!(
        matches!(err, TrainerError::NonFinite { step: 7, .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("non-finite loss") && message.contains("step-00000005"),
        "{message}"
    );
    assert_eq!(trainer.step(), 6);
    assert_eq!(trainer.checkpoints().latest().unwrap().unwrap().step, 5);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn early_stopping_stops_and_keeps_the_best_checkpoint() {
    let dir = ragtune_testkit::scratch("trainer-early");
    let extra = "epochs = 50.0\n[eval]\nevery_steps = 2\nmetric = \"score\"\npatience = 3\n\
                 [checkpoint]\nevery_steps = 1\nkeep_last = 2\n";
    let (vs, linear, x, y, config) = tiny_run(&dir, "early", extra);
    let mut trainer = Trainer::new(config, &vs, 32).unwrap();
    // The score peaks at the 2nd evaluation (step 4), then falls: stop after 3 more evaluations.
    let scores = [0.5, 0.9, 0.8, 0.7, 0.6, 0.5];
    let mut evals = 0;
    while !trainer.finished() {
        trainer
            .train_step(
                |batch| {
                    let index = Tensor::from_slice(
                        &batch.indices.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                    );
                    Ok::<_, TrainerError>(
                        linear
                            .forward(&x.index_select(0, &index))
                            .mse_loss(&y.index_select(0, &index), tch::Reduction::Mean),
                    )
                },
                || {
                    evals += 1;
                    Ok(Metrics::from([("score".to_string(), scores[evals - 1])]))
                },
            )
            .unwrap();
    }
    assert_eq!(trainer.step(), 10);
    assert_eq!(trainer.early_stopping().best_step, Some(4));
    let summary = trainer.finish().unwrap();
    assert!(summary.stopped_early);
    assert_eq!(summary.best_value, Some(0.9));
    assert!(summary
        .best_checkpoint
        .as_ref()
        .unwrap()
        .ends_with("step-00000004"));
    let kept: Vec<u64> = CheckpointManager::new(dir.join("early/checkpoints"), 2)
        .list()
        .unwrap()
        .iter()
        .map(|c| c.step)
        .collect();
    assert_eq!(kept, [4, 9, 10]);
    let records = MetricsLog::read(&summary.metrics_path).unwrap();
    assert_eq!(records.iter().filter(|r| r["type"] == "eval").count(), 5);
    assert!(records
        .iter()
        .any(|r| r["type"] == "early_stop" && r["best_step"] == 4));
    // The best checkpoint's weights load back.
    let loaded =
        ragtune_trainer::load_checkpoint_weights(&vs, summary.best_checkpoint.as_ref().unwrap())
            .unwrap();
    assert_eq!(loaded, 2);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn limit_examples_trains_on_the_first_examples_only() {
    let dir = ragtune_testkit::scratch("trainer-limit");
    let (vs, linear, x, y, config) = tiny_run(&dir, "limit", "epochs = 2.0\nlimit_examples = 12\n");
    // 12 of 32 examples in batches of 8: 2 micro-batches an epoch, 4 steps in 2 epochs.
    assert_eq!(config.total_steps(32), 4);
    let mut trainer = Trainer::new(config, &vs, 32).unwrap();
    assert_eq!(trainer.total_steps(), 4);
    let mut seen = Vec::new();
    while !trainer.finished() {
        trainer
            .train_step(
                |batch| {
                    seen.extend_from_slice(batch.indices);
                    let index = Tensor::from_slice(
                        &batch.indices.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                    );
                    Ok::<_, TrainerError>(
                        linear
                            .forward(&x.index_select(0, &index))
                            .mse_loss(&y.index_select(0, &index), tch::Reduction::Mean),
                    )
                },
                || Ok(Metrics::new()),
            )
            .unwrap();
    }
    seen.sort_unstable();
    let expected: Vec<usize> = (0..12).flat_map(|i| [i, i]).collect();
    assert_eq!(
        seen, expected,
        "each of the first 12 examples once per epoch"
    );
    let err = TrainerConfig::from_toml_str("limit_examples = 0\n", Path::new("recipe.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("limit_examples"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
