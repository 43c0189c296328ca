//! Training on bert-tiny: a few steps of full fine-tuning and of every PEFT method make the loss
//! fall and change only what should train; frozen layers stay as loaded; layer-wise decay gives
//! each layer its rate; a regression head learns; bad configs and rows name what is wrong.

mod common;

use ragtune_classify::data;
use ragtune_classify::metrics::EncodedSplit;
use ragtune_classify::model::Classifier;
use ragtune_classify::{trainer_config, ClassifyConfig, ClassifyError};
use ragtune_trainer::{ParamPlan, Trainer};
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Tensor};

fn snapshot(model: &Classifier) -> HashMap<String, Tensor> {
    model
        .var_store()
        .variables()
        .into_iter()
        .map(|(name, t)| (name, t.detach().copy()))
        .collect()
}

/// Trains `config` for its `max_steps` through the trainer as the recipe does; returns the model,
/// the per-step losses and the names the optimizer updated.
fn train(config: &ClassifyConfig) -> (Classifier, HashMap<String, Tensor>, Vec<f64>, Vec<String>) {
    let splits = data::load(&config.data, config.task).unwrap();
    let outputs = match config.task {
        ragtune_classify::Task::Classification => splits.labels.len() as i64,
        ragtune_classify::Task::Regression => 1,
    };
    let model = Classifier::new(config, outputs, Device::Cpu).unwrap();
    let before = snapshot(&model);
    let train = EncodedSplit::new(&model, &splits.train, &splits.labels).unwrap();
    let layers = model.encoder().model().config.num_hidden_layers;
    let mut trainer_config = trainer_config(config, layers).unwrap();
    trainer_config.eval.every_steps = None;
    trainer_config.eval.metric = None;
    trainer_config.checkpoint.every_steps = None;
    let mut trainer = Trainer::new(trainer_config, model.var_store(), train.len()).unwrap();
    let trained: Vec<String> = trainer
        .optimizer()
        .params()
        .map(|p| p.name.clone())
        .collect();
    let pad = model.encoder().tokenizer().pad_id();
    let mut losses = vec![];
    while !trainer.finished() {
        let step = trainer
            .train_step(
                |batch| {
                    let (input, targets) =
                        train.collate(batch.indices, pad, config.task, Device::Cpu);
                    Ok::<_, ClassifyError>(model.loss(&model.forward(&input, true), &targets))
                },
                || Ok::<_, ClassifyError>(Default::default()),
            )
            .unwrap();
        losses.push(step.loss);
    }
    (model, before, losses, trained)
}

fn changed(before: &HashMap<String, Tensor>, model: &Classifier, name: &str) -> bool {
    let now = &model.var_store().variables()[name];
    !before[name].equal(now)
}

#[test]
fn every_method_trains_and_the_loss_falls() {
    let dir = ragtune_testkit::scratch("classify-methods");
    let source = common::topics_jsonl(&dir);
    for (method, peft) in common::METHODS {
        let extra = format!("{peft}\n");
        let mut toml = common::tiny_toml(&source, &dir, method, "");
        toml.push_str(&extra);
        let config = common::config(&toml);
        assert_eq!(config.method_name(), *method);
        let (model, before, losses, trained) = train(&config);
        let head = |n: &str| n.starts_with("classifier.");
        let first: f64 = losses[..3].iter().sum::<f64>() / 3.0;
        let last: f64 = losses[losses.len() - 3..].iter().sum::<f64>() / 3.0;
        assert!(last < first, "{method}: loss did not fall: {losses:?}");
        for name in before.keys() {
            let is_adapter = name.starts_with("peft.");
            let updates = trained.contains(name);
            if *method == "full" {
                assert!(!is_adapter);
                if name.starts_with("bert.pooler.") {
                    assert!(!updates, "full: the unused pooler {name} trains");
                }
            } else {
                assert_eq!(
                    updates,
                    is_adapter || head(name),
                    "{method}: {name} trains = {updates}"
                );
            }
            if !updates {
                assert!(
                    !changed(&before, &model, name),
                    "{method}: frozen {name} changed"
                );
            }
        }
        assert!(
            trained.iter().any(|n| head(n)),
            "{method}: the head does not train"
        );
        let moved: Vec<&String> = trained
            .iter()
            .filter(|n| !head(n) && changed(&before, &model, n))
            .collect();
        assert!(!moved.is_empty(), "{method}: nothing but the head changed");
    }
}

#[test]
fn frozen_layers_do_not_change() {
    let dir = ragtune_testkit::scratch("classify-freeze");
    let source = common::topics_jsonl(&dir);
    let mut toml = common::tiny_toml(&source, &dir, "freeze", "");
    toml = toml.replace(
        "pooling = \"mean\"",
        "pooling = \"mean\"\nfreeze_layers = 1",
    );
    let (model, before, _, trained) = train(&common::config(&toml));
    for name in before.keys() {
        let lower =
            name.starts_with("bert.embeddings.") || name.starts_with("bert.encoder.layer.0.");
        if lower {
            assert!(!trained.contains(name), "{name} should be frozen");
            assert!(!changed(&before, &model, name), "frozen {name} changed");
        }
    }
    assert!(changed(
        &before,
        &model,
        "bert.encoder.layer.1.attention.self.query.weight"
    ));
    assert!(changed(&before, &model, "classifier.weight"));
}

#[test]
fn layer_decay_gives_each_layer_its_rate() {
    let dir = ragtune_testkit::scratch("classify-llrd");
    let source = common::topics_jsonl(&dir);
    let toml = common::tiny_toml(&source, &dir, "llrd", "").replace(
        "[trainer.optimizer]\nlr = 1e-3",
        "[trainer.optimizer]\nlr = 1e-3\nlayer_decay = 0.8",
    );
    let config = common::config(&toml);
    let model = Classifier::new(&config, 3, Device::Cpu).unwrap();
    let trainer = trainer_config(&config, 2).unwrap();
    let plan = ParamPlan::new(model.var_store().variables(), &trainer.optimizer).unwrap();
    let scale: HashMap<&str, f64> = plan
        .trainable
        .iter()
        .map(|p| (p.name.as_str(), p.lr_scale))
        .collect();
    let close = |name: &str, want: f64| {
        let got = scale[name];
        assert!(
            (got - want).abs() < 1e-12,
            "{name}: lr x {got}, expected {want}"
        );
    };
    // bert-tiny has two layers: the trainer's decay gives layer i of n the rate lr * 0.8^(n - i),
    // so the top layer 0.8, the one below 0.64, the embeddings 0.512; the head, above the layers,
    // gets head.lr = 1e-2, ten times the base rate, with no decay.
    close("bert.encoder.layer.1.attention.self.query.weight", 0.8);
    close("bert.encoder.layer.0.attention.self.query.weight", 0.64);
    close("bert.embeddings.word_embeddings.weight", 0.512);
    close("classifier.weight", 10.0);
    close("classifier.bias", 10.0);
    let decay: HashMap<&str, f64> = plan
        .trainable
        .iter()
        .map(|p| (p.name.as_str(), p.weight_decay))
        .collect();
    assert_eq!(decay["classifier.bias"], 0.0);
}

#[test]
fn regression_head_learns() {
    let dir = ragtune_testkit::scratch("classify-regression");
    let source = common::sentiment_jsonl(&dir);
    let toml = common::tiny_toml(&source, &dir, "regression", "")
        .replace("task = \"classification\"", "task = \"regression\"")
        .replace(
            "format = \"jsonl\"",
            "format = \"jsonl\"\nlabel_field = \"score\"",
        )
        .replace("max_steps = 16", "max_steps = 40")
        .replace("[trainer.eval]", "[trainer.eval]\nmetric = \"mse\"");
    let config = common::config(&toml);
    let report = ragtune_classify::run(&config, Device::Cpu).unwrap();
    let test = report.test.as_ref().unwrap();
    let variance = 2.0 / 3.0; // targets -1, 0, 1 in equal shares
    assert!(
        test.mse.unwrap() < variance,
        "test MSE {:?} is no better than the mean",
        test.mse
    );
    assert!(
        test.pearson.unwrap() > 0.3,
        "test Pearson r {:?}",
        test.pearson
    );
    assert!(test.accuracy.is_none() && test.per_class.is_empty());
    let evaluated = ragtune_classify::evaluate(&config, Device::Cpu).unwrap();
    assert!((evaluated.test.mse.unwrap() - test.mse.unwrap()).abs() < 1e-6);
}

fn error_of(toml: &str) -> String {
    ClassifyConfig::from_toml_str(toml, Path::new("bad.toml"), &[])
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_configs_and_rows_name_what_is_wrong() {
    let dir = ragtune_testkit::scratch("classify-errors");
    let source = common::topics_jsonl(&dir);
    let good = common::tiny_toml(&source, &dir, "errors", "");

    let typo = error_of(&good.replace("pooling = \"mean\"", "poling = \"cls\""));
    assert!(
        typo.contains("bad.toml")
            && typo.contains("poling")
            && typo.contains("did you mean `pooling`"),
        "{typo}"
    );

    let peft = error_of(&format!("{good}\n[peft]\nmethod = \"lora\"\nrank = 4\n"));
    assert!(peft.contains("peft") && peft.contains("rank"), "{peft}");

    let method = error_of(&format!("{good}\n[peft]\nmethod = \"lorra\"\n"));
    assert!(method.contains("lorra"), "{method}");

    let metric = error_of(&good.replace("[trainer.eval]", "[trainer.eval]\nmetric = \"ndcg@10\""));
    assert!(
        metric.contains("trainer.eval.metric") && metric.contains("macro_f1"),
        "{metric}"
    );

    let fractions = error_of(&good.replace("[0.6, 0.2, 0.2]", "[0.6, 0.2, 0.3]"));
    assert!(fractions.contains("data.fractions"), "{fractions}");

    let dropout = error_of(&good.replace("dropout = 0.1", "dropout = 1.5"));
    assert!(dropout.contains("head.dropout"), "{dropout}");

    // Errors found once the model or data is read.
    let run_error = |toml: &str| {
        ragtune_classify::run(&common::config(toml), Device::Cpu)
            .unwrap_err()
            .to_string()
    };
    let freeze = run_error(&good.replace(
        "pooling = \"mean\"",
        "pooling = \"mean\"\nfreeze_layers = 5",
    ));
    assert!(
        freeze.contains("model.freeze_layers") && freeze.contains("2 layers"),
        "{freeze}"
    );
    let pooler = run_error(&good.replace("pooling = \"mean\"", "pooling = \"pooler\""));
    assert!(
        pooler.contains("model.pooling") && pooler.contains("pooler"),
        "{pooler}"
    );
    let prompt = run_error(&format!(
        "{good}\n[peft]\nmethod = \"prompt_tuning\"\nnum_virtual_tokens = 500\n"
    ));
    assert!(prompt.contains("peft.num_virtual_tokens"), "{prompt}");

    let bad_rows = dir.join("bad.jsonl");
    std::fs::write(
        &bad_rows,
        "{\"text\": \"fine\", \"label\": \"a\"}\n{\"text\": \"no label here\"}\n",
    )
    .unwrap();
    let row = run_error(&good.replace(
        &source.display().to_string(),
        &bad_rows.display().to_string(),
    ));
    assert!(
        row.contains("bad.jsonl") && row.contains("line 2") && row.contains("`label`"),
        "{row}"
    );

    let regression = run_error(
        &good
            .replace("task = \"classification\"", "task = \"regression\"")
            .replace(
                &source.display().to_string(),
                &common::topics_jsonl(&dir).display().to_string(),
            ),
    );
    assert!(
        regression.contains("line 1") && regression.contains("not a number"),
        "{regression}"
    );
}
