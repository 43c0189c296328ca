//! `TrainerConfig`: every knob of a run, deserializable from TOML. Every field has a default, so a
//! recipe's TOML names only what it changes.
//!
//! ```toml
//! run_name = "retriever-faq"
//! batch_size = 32
//! grad_accum_steps = 2
//! epochs = 3.0
//! precision = "auto"
//!
//! [optimizer]
//! lr = 5e-5
//! weight_decay = 0.01
//! layer_decay = 0.9
//!
//! [schedule]
//! kind = "cosine"
//! warmup_ratio = 0.1
//!
//! [eval]
//! every_steps = 100
//! metric = "ndcg@10"
//! higher_is_better = true
//! patience = 3
//!
//! [checkpoint]
//! every_steps = 100
//! keep_last = 2
//! ```

use crate::precision::Precision;
use crate::schedule::ScheduleKind;
use crate::{Result, TrainerError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainerConfig {
    /// The run's folder is `<runs_dir>/<run_name>/` (metrics.jsonl, checkpoints/).
    pub run_name: String,
    pub runs_dir: PathBuf,
    /// Seeds torch (per micro-step, see `rng`) and the data order.
    pub seed: u64,
    /// Examples per micro-batch (one call of the loss closure).
    pub batch_size: usize,
    /// Micro-batches per optimizer step; the effective batch is `batch_size * grad_accum_steps`.
    pub grad_accum_steps: usize,
    /// Length of the run in passes over the training set (fractions allowed), unless `max_steps` is set.
    pub epochs: f64,
    /// Length of the run in optimizer steps; overrides `epochs`.
    pub max_steps: Option<u64>,
    /// Train on only the first this many examples of the training set (quick runs, benchmarks on
    /// a subset that a peer can reproduce); the whole set when unset.
    pub limit_examples: Option<usize>,
    /// Shuffle the training set each epoch (from `seed` and the epoch number).
    pub shuffle: bool,
    /// Drop the last micro-batch of an epoch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// Clip the global L2 norm of the gradients to this value (like `torch.nn.utils.clip_grad_norm_`).
    pub max_grad_norm: Option<f64>,
    pub precision: Precision,
    /// Continue from the newest checkpoint in the run folder, if there is one.
    pub resume: bool,
    /// Show a progress bar (it is hidden anyway when stderr is not a terminal).
    pub progress: bool,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
    pub eval: EvalConfig,
    pub checkpoint: CheckpointConfig,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        TrainerConfig {
            run_name: "run".into(),
            runs_dir: "runs".into(),
            seed: 42,
            batch_size: 8,
            grad_accum_steps: 1,
            epochs: 1.0,
            max_steps: None,
            limit_examples: None,
            shuffle: true,
            drop_last: false,
            max_grad_norm: Some(1.0),
            precision: Precision::Auto,
            resume: true,
            progress: true,
            optimizer: OptimizerConfig::default(),
            schedule: ScheduleConfig::default(),
            eval: EvalConfig::default(),
            checkpoint: CheckpointConfig::default(),
        }
    }
}

/// AdamW and the parameter groups it sees. Patterns are regular expressions matched anywhere in
/// the parameter's name (as in the VarStore: Hugging Face names such as `encoder.layer.3.attention.self.query.weight`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerConfig {
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
    /// Layer-wise learning-rate decay: layer `i` of `n` gets `lr * layer_decay^(n - i)`, the
    /// embeddings `lr * layer_decay^(n + 1)`, everything above the layers (heads, final norm) `lr`.
    /// 1.0 turns it off.
    pub layer_decay: f64,
    /// Finds a parameter's layer number: the first capture group must be the number.
    pub layer_pattern: String,
    /// Parameters below the first layer (they get the lowest rate under layer decay).
    pub embedding_pattern: String,
    /// Newly added heads, which get `lr * head_lr_multiplier`.
    pub head_patterns: Vec<String>,
    pub head_lr_multiplier: f64,
    /// Parameters without weight decay (biases and norms by default).
    pub no_decay_patterns: Vec<String>,
    /// Parameters to freeze: `requires_grad` off and no optimizer state.
    pub freeze_patterns: Vec<String>,
    /// When set, only parameters matching one of these train; all others are frozen (as for PEFT).
    pub trainable_patterns: Option<Vec<String>>,
    /// torch's fused AdamW kernel (`AdamW(fused=True)`): one pass per parameter instead of ten;
    /// `false` follows torch's default single-tensor path operation by operation.
    pub fused: bool,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            lr: 5e-5,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            layer_decay: 1.0,
            layer_pattern: r"(?:^|\.)(?:layer|layers|h|blocks)\.(\d+)\.".into(),
            embedding_pattern: r"(?:^|\.)(?:embeddings|embed_tokens|wte|wpe)\.".into(),
            head_patterns: Vec::new(),
            head_lr_multiplier: 1.0,
            no_decay_patterns: vec![
                r"(?:^|\.)bias$".into(),
                r"(?i)norm".into(),
                r"(?:^|\.)ln_".into(),
            ],
            freeze_patterns: Vec::new(),
            trainable_patterns: None,
            fused: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    pub kind: ScheduleKind,
    /// Warm-up length in optimizer steps; overrides `warmup_ratio`.
    pub warmup_steps: Option<u64>,
    /// Warm-up length as a fraction of the run's optimizer steps (rounded up, as transformers does).
    pub warmup_ratio: f64,
    /// Cosine only: transformers' `num_cycles` (0.5 = a single half-cosine from the peak down to 0).
    pub num_cycles: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            kind: ScheduleKind::Linear,
            warmup_steps: None,
            warmup_ratio: 0.0,
            num_cycles: 0.5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Evaluate every this many optimizer steps (and at the end of the run). None: only at the end.
    pub every_steps: Option<u64>,
    /// The metric that picks the best checkpoint and drives early stopping.
    pub metric: Option<String>,
    pub higher_is_better: bool,
    /// Stop after this many evaluations without an improvement of more than `min_delta`.
    pub patience: Option<u32>,
    pub min_delta: f64,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            every_steps: None,
            metric: None,
            higher_is_better: true,
            patience: None,
            min_delta: 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Save every this many optimizer steps (and at the end of the run). None: only at the end.
    pub every_steps: Option<u64>,
    /// How many of the newest checkpoints to keep (the best one is kept on top of these).
    pub keep_last: usize,
    /// Save a checkpoint whenever the eval metric improves, and never delete the best one.
    pub keep_best: bool,
    /// Save frozen parameters too. Turn off when most weights are frozen (PEFT): checkpoints then
    /// hold only the trained ones, and resuming needs the frozen ones loaded as at the start.
    pub save_frozen: bool,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            every_steps: Some(500),
            keep_last: 2,
            keep_best: true,
            save_frozen: true,
        }
    }
}

impl TrainerConfig {
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Self> {
        let config: TrainerConfig = toml::from_str(text).map_err(|e| {
            TrainerError::format(
                origin,
                crate::config_errors::with_suggestion(&e.to_string()),
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainerError::io(path, e))?;
        Self::from_toml_str(&text, path)
    }

    /// `<runs_dir>/<run_name>`.
    pub fn run_dir(&self) -> PathBuf {
        self.runs_dir.join(&self.run_name)
    }

    /// The examples a run over a training set of `train_len` uses (`limit_examples` applied).
    pub fn effective_len(&self, train_len: usize) -> usize {
        self.limit_examples.map_or(train_len, |n| n.min(train_len))
    }

    /// Micro-batches in one pass over `train_len` examples (`limit_examples` applied).
    pub fn micro_batches_per_epoch(&self, train_len: usize) -> u64 {
        let train_len = self.effective_len(train_len);
        let full = train_len / self.batch_size;
        let partial = !self.drop_last && train_len % self.batch_size != 0;
        (full + usize::from(partial)) as u64
    }

    /// Optimizer steps of the whole run.
    pub fn total_steps(&self, train_len: usize) -> u64 {
        if let Some(steps) = self.max_steps {
            return steps;
        }
        let micro = self.micro_batches_per_epoch(train_len) as f64 * self.epochs;
        (micro / self.grad_accum_steps as f64).ceil() as u64
    }

    /// Checks the values that serde cannot, naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: &str| Err(TrainerError::Config(format!("`{field}` {why}")));
        if self.run_name.is_empty() || self.run_name.contains(['/', '\\']) {
            return bad(
                "run_name",
                "must be a non-empty name without path separators",
            );
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1");
        }
        if self.limit_examples == Some(0) {
            return bad("limit_examples", "must be at least 1 (or left out for all)");
        }
        if self.grad_accum_steps == 0 {
            return bad("grad_accum_steps", "must be at least 1");
        }
        if self.max_steps.is_none() && !positive(self.epochs) {
            return bad("epochs", "must be a positive number (or set max_steps)");
        }
        if self.max_grad_norm.is_some_and(|n| !positive(n)) {
            return bad(
                "max_grad_norm",
                "must be positive (or left out to disable clipping)",
            );
        }
        let o = &self.optimizer;
        if !positive(o.lr) {
            return bad("optimizer.lr", "must be a positive number");
        }
        if !(0.0..1.0).contains(&o.betas.0) || !(0.0..1.0).contains(&o.betas.1) {
            return bad("optimizer.betas", "must both lie in [0, 1)");
        }
        if !positive(o.eps) {
            return bad("optimizer.eps", "must be positive");
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            return bad("optimizer.weight_decay", "must be zero or positive");
        }
        if !(o.layer_decay > 0.0 && o.layer_decay <= 1.0) {
            return bad("optimizer.layer_decay", "must lie in (0, 1]");
        }
        if !positive(o.head_lr_multiplier) {
            return bad("optimizer.head_lr_multiplier", "must be positive");
        }
        if !(0.0..=1.0).contains(&self.schedule.warmup_ratio) {
            return bad("schedule.warmup_ratio", "must lie in [0, 1]");
        }
        if self.eval.every_steps == Some(0) {
            return bad("eval.every_steps", "must be at least 1");
        }
        if self.checkpoint.every_steps == Some(0) {
            return bad("checkpoint.every_steps", "must be at least 1");
        }
        if self.eval.patience.is_some() && self.eval.metric.is_none() {
            return bad(
                "eval.patience",
                "needs `eval.metric` to know what should improve",
            );
        }
        if self.checkpoint.keep_last == 0 {
            return bad(
                "checkpoint.keep_last",
                "must be at least 1 (resuming needs the newest checkpoint)",
            );
        }
        Ok(())
    }
}

/// Finite and above zero (false for NaN).
fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}
