//! The classification recipe, top to bottom: read and split the examples, build the encoder with
//! its head (and adapter), set the trainer's parameter groups (head rate, layer-wise decay,
//! frozen layers), train with early stopping on validation, go back to the best checkpoint, score
//! validation and test, save the model and write the report. [`evaluate`] scores a saved model.

use crate::config::{ClassifyConfig, PoolingChoice, Task};
use crate::data::{self, Splits};
use crate::metrics::{self, EncodedSplit, Scores};
use crate::model::{Classifier, HeadMeta, ENCODER_PREFIX, HEAD_PREFIX};
use crate::report::{self, ClassifyReport, SplitSizes};
use crate::{ClassifyError, Result};
use ragtune_trainer::{load_checkpoint_weights, StepReport, Trainer, TrainerConfig};
use serde::Serialize;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use tch::Device;

/// The model folder inside the run folder.
pub const MODEL_DIR: &str = "model";
pub const PREDICTIONS_FILE: &str = "predictions.jsonl";

/// Trains and evaluates as `config` says; resumes from the run folder's newest checkpoint.
pub fn run(config: &ClassifyConfig, device: Device) -> Result<ClassifyReport> {
    run_with_hook(config, device, |_| {})
}

/// As [`run`], calling `after_step` after every optimizer step (progress, or a test that stops
/// the process at a chosen step).
pub fn run_with_hook(
    config: &ClassifyConfig,
    device: Device,
    mut after_step: impl FnMut(&StepReport),
) -> Result<ClassifyReport> {
    config.validate()?;
    report::reset_peak_rss();
    let started = Instant::now();

    // 1. The examples, split (stratified by label for classification).
    let splits = data::load(&config.data, config.task)?;
    let outputs = match config.task {
        Task::Classification if splits.labels.len() < 2 => {
            return Err(ClassifyError::Invalid(format!(
                "{}: {} label(s); classification needs at least 2",
                config.data.source.display(),
                splits.labels.len()
            )))
        }
        Task::Classification => splits.labels.len() as i64,
        Task::Regression => 1,
    };

    // 2. Encoder, head and adapter; every text tokenized once.
    let model = Classifier::new(config, outputs, device)?;
    let train = EncodedSplit::new(&model, &splits.train, &splits.labels)?;
    let val = EncodedSplit::new(&model, &splits.val, &splits.labels)?;
    let pad_id = model.encoder().tokenizer().pad_id();
    let eval_batch = config.trainer.batch_size.max(32);

    // 3. The trainer, with this recipe's parameter groups.
    let layers = model.encoder().model().config.num_hidden_layers;
    let trainer_config = trainer_config(config, layers)?;
    let lr = trainer_config.optimizer.lr;
    let mut trainer = Trainer::new(trainer_config, model.var_store(), train.len())?;
    let trainable_parameters: i64 = trainer
        .optimizer()
        .params()
        .map(|p| p.tensor.numel() as i64)
        .sum();
    trainer.println(format!(
        "classify ({}): {} trainable of {} parameters, {} train / {} val / {} test examples",
        config.method_name(),
        trainable_parameters,
        model.total_parameters(),
        splits.train.len(),
        splits.val.len(),
        splits.test.len()
    ));

    // 4. Train; only steps without an evaluation or a checkpoint are timed.
    let mut step_seconds = Vec::new();
    while !trainer.finished() {
        let step_started = Instant::now();
        let step = trainer.train_step(
            |batch| {
                let (input, targets) = train.collate(batch.indices, pad_id, config.task, device);
                let logits = model.forward(&input, true);
                Ok::<_, ClassifyError>(model.loss(&logits, &targets))
            },
            || {
                let predictions = metrics::predict(&model, &val, eval_batch)?;
                let scores =
                    metrics::score(config.task, &splits.val, &splits.labels, &predictions, None)?;
                Ok::<_, ClassifyError>(scores.as_metrics())
            },
        )?;
        if step.eval.is_none() && step.checkpoint.is_none() {
            step_seconds.push(step_started.elapsed().as_secs_f64());
        }
        after_step(&step);
    }
    let resumed_from = trainer.resumed_from();
    let summary = trainer.finish()?;
    let train_seconds = started.elapsed().as_secs_f64();

    // 5. The best validation checkpoint's weights (frozen ones never changed), then scores.
    let best_step = match &summary.best_checkpoint {
        Some(best) => {
            load_checkpoint_weights(model.var_store(), best)?;
            best_step_of(best)
        }
        None => None,
    };
    let val_predictions = metrics::predict(&model, &val, eval_batch)?;
    let validation = metrics::score(
        config.task,
        &splits.val,
        &splits.labels,
        &val_predictions,
        None,
    )?;
    let (test, test_predictions) = if splits.test.is_empty() {
        (None, None)
    } else {
        let encoded = EncodedSplit::new(&model, &splits.test, &splits.labels)?;
        let predictions = metrics::predict(&model, &encoded, eval_batch)?;
        let scores = metrics::score(
            config.task,
            &splits.test,
            &splits.labels,
            &predictions,
            Some(&config.report),
        )?;
        (Some(scores), Some(predictions))
    };

    // 6. The model, the predictions and the report.
    let run_dir = config.run_dir();
    let model_dir = run_dir.join(MODEL_DIR);
    model.save(
        &model_dir,
        &HeadMeta {
            task: config.task,
            labels: splits.labels.clone(),
            pooling: config.model.pooling,
            dropout: config.head.dropout,
            base: config.model.base.clone(),
            max_length: model.encoder().max_length(),
            method: config.method_name().into(),
        },
    )?;
    let predictions_path = run_dir.join(PREDICTIONS_FILE);
    let mut rows = prediction_rows("val", &splits, &splits.val, &val_predictions, config.task);
    if let Some(p) = &test_predictions {
        rows.extend(prediction_rows(
            "test",
            &splits,
            &splits.test,
            p,
            config.task,
        ));
    }
    report::write_jsonl(&predictions_path, &rows)?;
    let report = ClassifyReport {
        run_dir,
        task: config.task,
        method: config.method_name().into(),
        base: config.model.base.clone(),
        labels: splits.labels.len(),
        split: SplitSizes {
            train: splits.train.len(),
            val: splits.val.len(),
            test: splits.test.len(),
            stratified: splits.report.stratified,
            seed: config.data.split_seed,
        },
        trainable_parameters,
        total_parameters: model.total_parameters(),
        lr,
        steps: summary.steps,
        resumed_from,
        stopped_early: summary.stopped_early,
        best_step,
        mean_step_seconds: (!step_seconds.is_empty())
            .then(|| step_seconds.iter().sum::<f64>() / step_seconds.len() as f64),
        timed_steps: step_seconds.len(),
        train_seconds,
        peak_rss_bytes: report::peak_rss_bytes(),
        validation,
        test,
        model_dir,
        predictions: predictions_path,
        config: config.clone(),
    };
    report.write()?;
    Ok(report)
}

/// The trainer's config for `config` on an encoder of `layers` layers: the `[peft]` learning rate,
/// the head's rate on `classifier.*` (`head.lr`, else the base rate times
/// `trainer.optimizer.head_lr_multiplier`; layer decay leaves the head alone), the
/// embeddings and the lowest `model.freeze_layers` layers frozen, the pooler frozen when the
/// head does not read it, early stopping on `val_loss` unless another metric is named (its
/// direction follows the metric), and checkpoints without the frozen weights, which are the base
/// folder's and are loaded from it on resume.
pub fn trainer_config(config: &ClassifyConfig, layers: i64) -> Result<TrainerConfig> {
    let mut trainer = config.trainer.clone();
    let optimizer = &mut trainer.optimizer;
    if let Some(lr) = config.peft.as_ref().and_then(|p| p.lr) {
        optimizer.lr = lr;
    }
    optimizer.head_patterns.push(format!(r"^{HEAD_PREFIX}\."));
    if let Some(head_lr) = config.head.lr {
        optimizer.head_lr_multiplier = head_lr / optimizer.lr;
    }
    let freeze = config.model.freeze_layers;
    if freeze as i64 > layers {
        return Err(ClassifyError::Invalid(format!(
            "`model.freeze_layers` = {freeze}, but the encoder has {layers} layers"
        )));
    }
    if freeze > 0 {
        let lower: Vec<String> = (0..freeze).map(|i| i.to_string()).collect();
        // Matches the encoder's own variables and the adapter's parts on those layers alike.
        optimizer
            .freeze_patterns
            .push(r"(?:^|\.)embeddings\.".into());
        optimizer.freeze_patterns.push(format!(
            r"(?:^|\.)encoder\.layer\.(?:{})\.",
            lower.join("|")
        ));
    }
    if config.model.pooling != PoolingChoice::Pooler {
        optimizer
            .freeze_patterns
            .push(format!(r"^{ENCODER_PREFIX}\.pooler\."));
    }
    let metric = trainer
        .eval
        .metric
        .get_or_insert_with(|| "val_loss".into())
        .clone();
    trainer.eval.higher_is_better = matches!(metric.as_str(), "accuracy" | "macro_f1" | "pearson");
    trainer.checkpoint.save_frozen = false;
    trainer
        .validate()
        .map_err(|e| ClassifyError::Invalid(format!("trainer: {e}")))?;
    Ok(trainer)
}

fn best_step_of(checkpoint: &std::path::Path) -> Option<u64> {
    checkpoint
        .file_name()?
        .to_str()?
        .strip_prefix("step-")?
        .parse()
        .ok()
}

fn prediction_rows(
    split: &str,
    splits: &Splits,
    examples: &[data::Example],
    predictions: &metrics::Predictions,
    task: Task,
) -> Vec<serde_json::Value> {
    let labels = metrics::predicted_labels(predictions, &splits.labels);
    examples
        .iter()
        .enumerate()
        .map(|(i, e)| match task {
            Task::Classification => json!({
                "split": split, "id": e.id, "text": e.text, "label": e.label, "predicted": labels[i],
            }),
            Task::Regression => json!({
                "split": split, "id": e.id, "text": e.text, "target": e.target,
                "predicted": predictions.value[i],
            }),
        })
        .collect()
}

/// What `ragtune classify eval` measures: a saved model on the test split of its config.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub model_dir: PathBuf,
    pub method: String,
    pub test: Scores,
}

/// Scores the model saved in the run folder of `config` on the test split (the same split `run`
/// made), and writes `eval.json` beside it.
pub fn evaluate(config: &ClassifyConfig, device: Device) -> Result<EvalReport> {
    config.validate()?;
    let model_dir = config.run_dir().join(MODEL_DIR);
    let (model, meta) = Classifier::load(&model_dir, device)?;
    if meta.task != config.task {
        return Err(ClassifyError::Invalid(format!(
            "{}: the saved model is for {:?}, the config says `task` = {:?}",
            model_dir.display(),
            meta.task,
            config.task
        )));
    }
    let splits = data::load(&config.data, config.task)?;
    if splits.labels != meta.labels {
        return Err(ClassifyError::Invalid(format!(
            "{}: the saved head has {} labels, the data of `data.source` gives {}; evaluate on the data it was trained for",
            model_dir.display(),
            meta.labels.len(),
            splits.labels.len()
        )));
    }
    if splits.test.is_empty() {
        return Err(ClassifyError::Invalid(
            "the test split is empty (`data.fractions` gives it 0)".into(),
        ));
    }
    let test = EncodedSplit::new(&model, &splits.test, &splits.labels)?;
    let predictions = metrics::predict(&model, &test, config.trainer.batch_size.max(32))?;
    let scores = metrics::score(
        config.task,
        &splits.test,
        &splits.labels,
        &predictions,
        Some(&config.report),
    )?;
    let report = EvalReport {
        model_dir,
        method: meta.method,
        test: scores,
    };
    let json = serde_json::to_vec_pretty(&report).expect("the eval report serializes");
    ragtune_models::checkpoint::atomic_write(&config.run_dir().join("eval.json"), &json)?;
    Ok(report)
}
