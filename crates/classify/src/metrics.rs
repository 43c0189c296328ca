//! Predictions over a split and what they score: the eval crate's accuracy, macro-F1 and
//! per-class precision and recall (sklearn's definitions), percentile-bootstrap intervals for
//! accuracy and macro-F1 over the test items, and MSE / MAE / Pearson's r for regression.

use crate::config::{ReportConfig, Task};
use crate::data::Example;
use crate::model::Classifier;
use crate::Result;
use ragtune_eval::classification::classification_report;
use ragtune_eval::significance::paired_bootstrap;
use ragtune_models::tokenize::{EncodedBatch, TokenizedText};
use ragtune_trainer::Metrics;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

/// A split tokenized once, with each example's training target.
#[derive(Debug)]
pub struct EncodedSplit {
    pub tokens: Vec<TokenizedText>,
    /// The label's index in the label set (classification) or 0.
    pub label_index: Vec<i64>,
    /// The number to regress onto (regression) or 0.
    pub target: Vec<f32>,
}

impl EncodedSplit {
    pub fn new(model: &Classifier, examples: &[Example], labels: &[String]) -> Result<Self> {
        let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
        let tokens = model.encoder().tokenizer().tokenize(&texts)?;
        let label_index = examples
            .iter()
            .map(|e| labels.binary_search(&e.label).map_or(0, |i| i as i64))
            .collect();
        let target = examples
            .iter()
            .map(|e| e.target.unwrap_or(0.0) as f32)
            .collect();
        Ok(Self {
            tokens,
            label_index,
            target,
        })
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The padded batch of `indices` and its targets (label indices, or floats for regression).
    pub fn collate(
        &self,
        indices: &[usize],
        pad_id: i64,
        task: Task,
        device: Device,
    ) -> (EncodedBatch, Tensor) {
        let rows: Vec<&TokenizedText> = indices.iter().map(|&i| &self.tokens[i]).collect();
        let batch = EncodedBatch::pad(&rows, pad_id, device);
        let targets = match task {
            Task::Classification => Tensor::from_slice(
                &indices
                    .iter()
                    .map(|&i| self.label_index[i])
                    .collect::<Vec<_>>(),
            ),
            Task::Regression => {
                Tensor::from_slice(&indices.iter().map(|&i| self.target[i]).collect::<Vec<_>>())
            }
        };
        (batch, targets.to_device(device))
    }
}

/// The model's outputs over a split (no dropout, no gradients) and the mean loss.
#[derive(Debug, Clone)]
pub struct Predictions {
    pub loss: f64,
    /// Predicted label index (classification).
    pub label_index: Vec<usize>,
    /// Predicted number (regression).
    pub value: Vec<f64>,
}

/// Runs `model` over `split` in batches of `batch_size` texts sorted by length (little padding).
pub fn predict(model: &Classifier, split: &EncodedSplit, batch_size: usize) -> Result<Predictions> {
    let device = model.encoder().device();
    let pad_id = model.encoder().tokenizer().pad_id();
    let mut order: Vec<usize> = (0..split.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(split.tokens[i].ids.len()));
    let mut label_index = vec![0usize; split.len()];
    let mut value = vec![0f64; split.len()];
    let mut loss_sum = 0.0;
    tch::no_grad(|| -> Result<()> {
        for chunk in order.chunks(batch_size.max(1)) {
            let (batch, targets) = split.collate(chunk, pad_id, model.task(), device);
            let logits = model.forward(&batch, false);
            loss_sum += model.loss(&logits, &targets).double_value(&[]) * chunk.len() as f64;
            let logits = logits.to_device(Device::Cpu).to_kind(Kind::Float);
            match model.task() {
                Task::Classification => {
                    let best = Vec::<i64>::try_from(logits.argmax(-1, false))?;
                    for (&i, b) in chunk.iter().zip(best) {
                        label_index[i] = b as usize;
                    }
                }
                Task::Regression => {
                    let values = Vec::<f32>::try_from(logits.squeeze_dim(-1).contiguous())?;
                    for (&i, v) in chunk.iter().zip(values) {
                        value[i] = v as f64;
                    }
                }
            }
        }
        Ok(())
    })?;
    Ok(Predictions {
        loss: loss_sum / split.len().max(1) as f64,
        label_index,
        value,
    })
}

/// One label's row of the per-class table (sklearn's `precision_recall_fscore_support`).
#[derive(Debug, Clone, Serialize)]
pub struct ClassScores {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

/// A percentile-bootstrap interval of a statistic over resampled items.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
    pub confidence: f64,
    pub resamples: usize,
}

/// What a split scores.
#[derive(Debug, Clone, Serialize)]
pub struct Scores {
    pub examples: usize,
    pub loss: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub macro_f1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_ci: Option<Interval>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub macro_f1_ci: Option<Interval>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub per_class: Vec<ClassScores>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mse: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pearson: Option<f64>,
}

impl Scores {
    /// The numbers the trainer logs and early-stops on, with `val_loss` for the loss.
    pub fn as_metrics(&self) -> Metrics {
        let mut metrics = Metrics::from([("val_loss".to_string(), self.loss)]);
        for (name, value) in [
            ("accuracy", self.accuracy),
            ("macro_f1", self.macro_f1),
            ("mse", self.mse),
            ("mae", self.mae),
            ("pearson", self.pearson),
        ] {
            if let Some(value) = value {
                metrics.insert(name.to_string(), value);
            }
        }
        metrics
    }
}

/// Scores `predictions` against `examples`; with `intervals`, bootstrap intervals too.
pub fn score(
    task: Task,
    examples: &[Example],
    labels: &[String],
    predictions: &Predictions,
    intervals: Option<&ReportConfig>,
) -> Result<Scores> {
    let mut scores = Scores {
        examples: examples.len(),
        loss: predictions.loss,
        accuracy: None,
        macro_f1: None,
        accuracy_ci: None,
        macro_f1_ci: None,
        per_class: Vec::new(),
        mse: None,
        mae: None,
        pearson: None,
    };
    match task {
        Task::Classification => {
            let y_true: Vec<&str> = examples.iter().map(|e| e.label.as_str()).collect();
            let y_pred: Vec<&str> = predicted_labels(predictions, labels);
            let report = classification_report(&y_true, &y_pred, 0.0)?;
            scores.accuracy = Some(report.accuracy);
            scores.macro_f1 = Some(report.macro_avg.f1);
            scores.per_class = report
                .labels
                .iter()
                .zip(&report.per_label)
                .zip(&report.support)
                .map(|((label, prf), &support)| ClassScores {
                    label: label.clone(),
                    precision: prf.precision,
                    recall: prf.recall,
                    f1: prf.f1,
                    support,
                })
                .collect();
            if let Some(config) = intervals {
                let correct: Vec<f64> = y_true
                    .iter()
                    .zip(&y_pred)
                    .map(|(t, p)| f64::from(u8::from(t == p)))
                    .collect();
                // The paired bootstrap of (correct - 0) is the bootstrap of accuracy itself.
                let zeros = vec![0.0; correct.len()];
                let accuracy = paired_bootstrap(
                    &zeros,
                    &correct,
                    config.bootstrap_resamples,
                    config.confidence,
                    config.bootstrap_seed,
                )?;
                scores.accuracy_ci = Some(Interval {
                    low: accuracy.ci_low,
                    high: accuracy.ci_high,
                    confidence: config.confidence,
                    resamples: config.bootstrap_resamples,
                });
                scores.macro_f1_ci = Some(macro_f1_interval(&y_true, &y_pred, config)?);
            }
        }
        Task::Regression => {
            let truth: Vec<f64> = examples.iter().map(|e| e.target.unwrap_or(0.0)).collect();
            let n = truth.len().max(1) as f64;
            let errors: Vec<f64> = truth
                .iter()
                .zip(&predictions.value)
                .map(|(t, p)| p - t)
                .collect();
            scores.mse = Some(errors.iter().map(|e| e * e).sum::<f64>() / n);
            scores.mae = Some(errors.iter().map(|e| e.abs()).sum::<f64>() / n);
            scores.pearson = Some(pearson(&truth, &predictions.value));
        }
    }
    Ok(scores)
}

/// The predicted label names, in example order.
pub fn predicted_labels<'a>(predictions: &Predictions, labels: &'a [String]) -> Vec<&'a str> {
    predictions
        .label_index
        .iter()
        .map(|&i| labels.get(i).map_or("", String::as_str))
        .collect()
}

/// Macro-F1 is not a mean over items, so its interval resamples items and recomputes it each time;
/// percentiles interpolate linearly between order statistics, as numpy's default does.
fn macro_f1_interval(y_true: &[&str], y_pred: &[&str], config: &ReportConfig) -> Result<Interval> {
    let n = y_true.len();
    let mut rng = StdRng::seed_from_u64(config.bootstrap_seed);
    let mut values = Vec::with_capacity(config.bootstrap_resamples);
    let (mut t, mut p) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..config.bootstrap_resamples {
        t.clear();
        p.clear();
        for _ in 0..n {
            let i = rng.gen_range(0..n);
            t.push(y_true[i]);
            p.push(y_pred[i]);
        }
        values.push(classification_report(&t, &p, 0.0)?.macro_avg.f1);
    }
    values.sort_by(f64::total_cmp);
    let tail = (1.0 - config.confidence) / 2.0;
    Ok(Interval {
        low: percentile(&values, tail),
        high: percentile(&values, 1.0 - tail),
        confidence: config.confidence,
        resamples: config.bootstrap_resamples,
    })
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let (lower, upper) = (position.floor() as usize, position.ceil() as usize);
    sorted[lower] + (sorted[upper] - sorted[lower]) * (position - lower as f64)
}

/// Pearson's r; 0 when either side is constant (r is undefined there).
fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (mean_a, mean_b) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut cov, mut var_a, mut var_b) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        cov += (x - mean_a) * (y - mean_b);
        var_a += (x - mean_a).powi(2);
        var_b += (y - mean_b).powi(2);
    }
    if var_a == 0.0 || var_b == 0.0 {
        0.0
    } else {
        cov / (var_a * var_b).sqrt()
    }
}
