//! `Trainer`: owns the bookkeeping of a run — step counting, gradient accumulation, clipping, the
//! schedule, mixed precision, seeding, logging, evaluation cadence, early stopping and
//! checkpoints — while the recipe keeps the model, the data and the loss in its own hands:
//!
//! ```ignore
//! let mut trainer = Trainer::new(config, &vs, train.len())?;   // resumes when a checkpoint exists
//! while !trainer.finished() {
//!     trainer.train_step(
//!         |batch| model.loss(&train.collate(batch.indices), /* train = */ true),
//!         || evaluate(&model, &valid),                        // called only when an eval is due
//!     )?;
//! }
//! let summary = trainer.finish()?;
//! ```

use crate::adamw::{clip_grad_norm, grad_norm, AdamW};
use crate::checkpoint::{Checkpoint, CheckpointManager, STATE_FILE};
use crate::config::TrainerConfig;
use crate::early_stopping::EarlyStopping;
use crate::metrics::MetricsLog;
use crate::params::ParamPlan;
use crate::precision::autocast_bf16;
use crate::progress::Progress;
use crate::rng::{caller_rng, seed_torch, DataCursor, RngState, Sampler};
use crate::schedule::Schedule;
use crate::{Result, TrainerError};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::nn::VarStore;
use tch::{Device, Tensor};

/// Evaluation results by metric name.
pub type Metrics = BTreeMap<String, f64>;

const MODEL_FILE: &str = "model.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const STATE_FORMAT: u32 = 1;

/// What the loss closure gets for one micro-batch.
#[derive(Debug)]
pub struct MicroBatch<'a> {
    /// Indices into the training set, in this epoch's (shuffled) order.
    pub indices: &'a [usize],
    /// The run's checkpointed RNG, for any sampling the loss needs (negatives, masking, ...).
    pub rng: &'a mut ChaCha8Rng,
    /// The optimizer step this micro-batch belongs to (from 0) and its place in the accumulation.
    pub step: u64,
    pub micro: usize,
}

/// What one optimizer step did.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// Optimizer steps done, counting this one.
    pub step: u64,
    /// Mean loss over the step's micro-batches.
    pub loss: f64,
    /// The base learning rate this step used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub eval: Option<Metrics>,
    pub checkpoint: Option<PathBuf>,
    /// The run is over (last step, or early stopping).
    pub finished: bool,
}

/// The end of a run.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub steps: u64,
    pub stopped_early: bool,
    pub last_checkpoint: Option<PathBuf>,
    /// The checkpoint with the best eval metric, and its value.
    pub best_checkpoint: Option<PathBuf>,
    pub best_value: Option<f64>,
    pub metrics_path: PathBuf,
}

/// Everything a checkpoint holds besides the weights and the optimizer's moments.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    pub format: u32,
    /// Optimizer steps done.
    pub step: u64,
    pub examples_seen: u64,
    pub cursor: DataCursor,
    pub schedule: Schedule,
    pub base_lr: f64,
    /// Per-parameter AdamW step counts (the moments are in optimizer.safetensors).
    pub optimizer_steps: BTreeMap<String, u64>,
    pub seed: u64,
    /// The caller's RNG (`Trainer::rng`).
    pub rng: RngState,
    /// How torch's generators are restored (they are reseeded, see `rng`).
    pub torch_rng: String,
    pub early_stopping: EarlyStopping,
    pub best_checkpoint_step: Option<u64>,
    pub stopped_early: bool,
    /// The config of the run that wrote this checkpoint, for the record.
    pub config: TrainerConfig,
}

pub struct Trainer {
    config: TrainerConfig,
    device: Device,
    bf16: bool,
    /// Every variable of the VarStore, for saving and restoring the weights.
    variables: HashMap<String, Tensor>,
    frozen: Vec<String>,
    optimizer: AdamW,
    schedule: Schedule,
    sampler: Sampler,
    rng: ChaCha8Rng,
    step: u64,
    examples_seen: u64,
    early_stopping: EarlyStopping,
    best_checkpoint_step: Option<u64>,
    stopped_early: bool,
    resumed_from: Option<u64>,
    checkpoints: CheckpointManager,
    last_checkpoint: Option<PathBuf>,
    metrics: MetricsLog,
    progress: Progress,
    started: Instant,
    /// Examples seen when this process started (for throughput).
    examples_at_start: u64,
}

impl Trainer {
    /// Sets up a run over a training set of `train_len` examples for the variables of `vs`: groups
    /// the parameters (freezing some), builds AdamW and the schedule, and — when `config.resume` is on
    /// and the run folder holds a checkpoint — restores weights, optimizer, RNG and data cursor from it.
    pub fn new(config: TrainerConfig, vs: &VarStore, train_len: usize) -> Result<Self> {
        config.validate()?;
        // Indices past the limit are never drawn, so the run sees the first `limit_examples` only.
        let train_len = config.effective_len(train_len);
        if train_len == 0 || (config.drop_last && train_len < config.batch_size) {
            return Err(TrainerError::Config(format!(
                "the training set has {train_len} examples, too few for one batch of {}",
                config.batch_size
            )));
        }
        let device = vs.device();
        let variables = vs.variables();
        let plan = ParamPlan::new(
            variables
                .iter()
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect(),
            &config.optimizer,
        )?;
        let frozen = plan.frozen.clone();
        let optimizer = AdamW::new(plan.trainable, config.optimizer.betas, config.optimizer.eps)
            .with_fused(config.optimizer.fused);
        let total_steps = config.total_steps(train_len);
        let schedule = Schedule::new(
            config.schedule.kind,
            config.schedule.warmup_steps,
            config.schedule.warmup_ratio,
            total_steps,
            config.schedule.num_cycles,
        );
        let run_dir = config.run_dir();
        std::fs::create_dir_all(&run_dir).map_err(|e| TrainerError::io(&run_dir, e))?;
        let checkpoints =
            CheckpointManager::new(run_dir.join("checkpoints"), config.checkpoint.keep_last);
        let latest = if config.resume {
            checkpoints.latest()?
        } else {
            None
        };
        let metrics_path = run_dir.join("metrics.jsonl");
        let metrics = match &latest {
            Some(checkpoint) => MetricsLog::resume(&metrics_path, checkpoint.step)?,
            None => MetricsLog::create(&metrics_path)?,
        };
        let sampler = Sampler::new(
            train_len,
            config.batch_size,
            config.drop_last,
            config.shuffle,
            config.seed,
            DataCursor {
                epoch: 0,
                position: 0,
            },
        );
        let mut trainer = Trainer {
            bf16: config.precision.uses_bf16(device),
            device,
            variables,
            frozen,
            optimizer,
            schedule,
            sampler,
            rng: caller_rng(config.seed),
            step: 0,
            examples_seen: 0,
            early_stopping: EarlyStopping::new(
                config.eval.higher_is_better,
                config.eval.patience,
                config.eval.min_delta,
            ),
            best_checkpoint_step: None,
            stopped_early: false,
            resumed_from: None,
            checkpoints,
            last_checkpoint: None,
            metrics,
            progress: Progress::new(total_steps, 0, config.progress),
            started: Instant::now(),
            examples_at_start: 0,
            config,
        };
        if let Some(checkpoint) = latest {
            trainer.restore(&checkpoint, train_len)?;
            trainer.metrics.append(&json!({
                "type": "resume", "step": trainer.step, "checkpoint": checkpoint.path,
            }))?;
        } else {
            trainer.metrics.append(&json!({
                "type": "start", "step": 0, "total_steps": total_steps, "train_examples": train_len,
                "bf16": trainer.bf16, "device": format!("{device:?}"),
                "trainable_tensors": trainer.optimizer.params().count(),
                "frozen_tensors": trainer.frozen.len(),
            }))?;
        }
        trainer.progress = Progress::new(total_steps, trainer.step, trainer.config.progress);
        Ok(trainer)
    }

    fn restore(&mut self, checkpoint: &Checkpoint, train_len: usize) -> Result<()> {
        let state_path = checkpoint.path.join(STATE_FILE);
        let text =
            std::fs::read_to_string(&state_path).map_err(|e| TrainerError::io(&state_path, e))?;
        let state: TrainerState = serde_json::from_str(&text)
            .map_err(|e| TrainerError::format(&state_path, e.to_string()))?;
        if state.format != STATE_FORMAT {
            return Err(TrainerError::format(
                &state_path,
                format!(
                    "checkpoint format {} is not the supported {STATE_FORMAT}",
                    state.format
                ),
            ));
        }
        let trainable: Vec<String> = self.optimizer.params().map(|p| p.name.clone()).collect();
        // Frozen weights may be left out of checkpoints (`checkpoint.save_frozen = false`).
        copy_weights(
            &self.variables,
            &checkpoint.path.join(MODEL_FILE),
            self.device,
            |name| trainable.iter().any(|t| t == name),
        )?;
        let optimizer_path = checkpoint.path.join(OPTIMIZER_FILE);
        let moments = ragtune_models::checkpoint::load_safetensors(&optimizer_path, self.device)?;
        self.optimizer
            .load_state(&moments, &state.optimizer_steps, &optimizer_path)?;
        self.rng = state
            .rng
            .restore()
            .map_err(|e| TrainerError::format(&state_path, e))?;
        self.sampler = Sampler::new(
            train_len,
            self.config.batch_size,
            self.config.drop_last,
            self.config.shuffle,
            self.config.seed,
            state.cursor,
        );
        self.step = state.step;
        self.examples_seen = state.examples_seen;
        self.examples_at_start = state.examples_seen;
        self.early_stopping = state.early_stopping;
        self.best_checkpoint_step = state.best_checkpoint_step;
        self.stopped_early = state.stopped_early;
        self.resumed_from = Some(state.step);
        self.last_checkpoint = Some(checkpoint.path.clone());
        Ok(())
    }

    /// One optimizer step: `grad_accum_steps` micro-batches through `loss_fn` (under bf16 autocast
    /// when enabled, torch reseeded for each), backward, clipping, AdamW at the scheduled rate, a
    /// metrics line; then `eval_fn` (without gradients) when an evaluation is due, early stopping,
    /// and a checkpoint when one is due or the metric improved. A non-finite loss or gradient norm
    /// stops with `TrainerError::NonFinite` before the weights change.
    pub fn train_step<E>(
        &mut self,
        mut loss_fn: impl FnMut(MicroBatch<'_>) -> std::result::Result<Tensor, E>,
        mut eval_fn: impl FnMut() -> std::result::Result<Metrics, E>,
    ) -> Result<StepReport>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if self.finished() {
            return Err(TrainerError::Config(format!(
                "train_step called after the run finished (step {} of {})",
                self.step,
                self.total_steps()
            )));
        }
        let accum = self.config.grad_accum_steps;
        self.optimizer.zero_grad();
        let mut loss_sum = 0.0;
        for micro in 0..accum {
            let indices = self.sampler.next_batch();
            seed_torch(self.config.seed, self.step, micro as u64);
            let batch = MicroBatch {
                indices: &indices,
                rng: &mut self.rng,
                step: self.step,
                micro,
            };
            let loss = autocast_bf16(self.device, self.bf16, || loss_fn(batch))
                .map_err(TrainerError::caller)?;
            if loss.numel() != 1 {
                return Err(TrainerError::Config(format!(
                    "the loss closure returned a tensor of shape {:?}; it must return a scalar",
                    loss.size()
                )));
            }
            let value = loss.double_value(&[]);
            if !value.is_finite() {
                self.optimizer.zero_grad();
                return Err(self.non_finite("loss", value));
            }
            loss_sum += value;
            (loss / accum as f64).backward();
            self.examples_seen += indices.len() as u64;
        }
        let grads = self.optimizer.grads();
        let norm = match self.config.max_grad_norm {
            Some(max_norm) => clip_grad_norm(&grads, max_norm),
            None => grad_norm(&grads),
        };
        if !norm.is_finite() {
            self.optimizer.zero_grad();
            return Err(self.non_finite("gradient norm", norm));
        }
        let lr = self.config.optimizer.lr * self.schedule.factor(self.step);
        self.optimizer.step(lr)?;
        self.optimizer.zero_grad();
        self.step += 1;
        let loss = loss_sum / accum as f64;

        let elapsed = self.started.elapsed().as_secs_f64();
        let examples_per_s =
            (self.examples_seen - self.examples_at_start) as f64 / elapsed.max(1e-9);
        self.metrics.append(&json!({
            "type": "train", "step": self.step, "epoch": self.epoch_progress(), "loss": loss, "lr": lr,
            "grad_norm": norm, "examples": self.examples_seen, "examples_per_s": examples_per_s,
            "elapsed_s": elapsed,
        }))?;
        self.progress.update(self.step, loss, examples_per_s);

        let last_step = self.step >= self.total_steps();
        let eval_due = self
            .config
            .eval
            .every_steps
            .is_some_and(|n| self.step % n == 0)
            || (last_step
                && (self.config.eval.every_steps.is_some() || self.config.eval.metric.is_some()));
        let mut improved = false;
        let eval = if eval_due {
            let results = tch::no_grad(|| autocast_bf16(self.device, self.bf16, &mut eval_fn))
                .map_err(TrainerError::caller)?;
            let mut record = json!({ "type": "eval", "step": self.step });
            for (name, value) in &results {
                record[name] = json!(value);
            }
            self.metrics.append(&record)?;
            if let Some(metric) = self.config.eval.metric.clone() {
                let value = *results
                    .get(&metric)
                    .ok_or_else(|| TrainerError::MissingMetric {
                        step: self.step,
                        metric: metric.clone(),
                        available: results.keys().cloned().collect::<Vec<_>>().join(", "),
                    })?;
                let verdict = self.early_stopping.observe(self.step, value);
                improved = verdict.improved;
                if verdict.should_stop {
                    self.stopped_early = true;
                    self.metrics.append(&json!({
                        "type": "early_stop", "step": self.step, "metric": metric,
                        "best": self.early_stopping.best, "best_step": self.early_stopping.best_step,
                    }))?;
                }
            }
            self.progress
                .println(format!("step {}: {}", self.step, format_metrics(&results)));
            Some(results)
        } else {
            None
        };

        let finished = self.finished();
        let checkpoint_due = self
            .config
            .checkpoint
            .every_steps
            .is_some_and(|n| self.step % n == 0)
            || (improved && self.config.checkpoint.keep_best)
            || finished;
        let checkpoint = if checkpoint_due {
            if improved && self.config.checkpoint.keep_best {
                self.best_checkpoint_step = Some(self.step);
            }
            Some(self.save_checkpoint()?)
        } else {
            None
        };
        Ok(StepReport {
            step: self.step,
            loss,
            lr,
            grad_norm: norm,
            eval,
            checkpoint,
            finished,
        })
    }

    fn non_finite(&mut self, what: &'static str, value: f64) -> TrainerError {
        // The error itself matters more than logging it, so a failed log write is not reported.
        // Numbered as the train records are: step n is the n-th optimizer step.
        let step = self.step + 1;
        let _ = self.metrics.append(&json!({
            "type": "error", "step": step, "error": format!("non-finite {what}"),
        }));
        TrainerError::NonFinite {
            what,
            value,
            step,
            last_checkpoint: self.last_checkpoint.clone(),
        }
    }

    /// Writes a checkpoint of the current step now (the loop does this by itself when one is due).
    pub fn save_checkpoint(&mut self) -> Result<PathBuf> {
        let state = TrainerState {
            format: STATE_FORMAT,
            step: self.step,
            examples_seen: self.examples_seen,
            cursor: self.sampler.cursor(),
            schedule: self.schedule,
            base_lr: self.config.optimizer.lr,
            optimizer_steps: self.optimizer.steps(),
            seed: self.config.seed,
            rng: RngState::capture(&self.rng),
            torch_rng: "reseeded before every micro-batch from (seed, step, micro-batch)".into(),
            early_stopping: self.early_stopping.clone(),
            best_checkpoint_step: self.best_checkpoint_step,
            stopped_early: self.stopped_early,
            config: self.config.clone(),
        };
        let mut weights: Vec<(String, Tensor)> = self
            .variables
            .iter()
            .filter(|(name, _)| self.config.checkpoint.save_frozen || !self.frozen.contains(name))
            .map(|(name, t)| (name.clone(), t.shallow_clone()))
            .collect();
        weights.sort_by(|a, b| a.0.cmp(&b.0));
        let moments = self.optimizer.state_tensors();
        let checkpoint = self.checkpoints.save(self.step, |dir| {
            ragtune_models::checkpoint::save_safetensors(&dir.join(MODEL_FILE), &weights)?;
            ragtune_models::checkpoint::save_safetensors(&dir.join(OPTIMIZER_FILE), &moments)?;
            let json = serde_json::to_vec_pretty(&state).expect("the trainer state serializes");
            ragtune_models::checkpoint::atomic_write(&dir.join(STATE_FILE), &json)?;
            Ok(())
        })?;
        self.checkpoints.prune(self.best_checkpoint_step)?;
        self.metrics.append(&json!({
            "type": "checkpoint", "step": self.step, "path": checkpoint.path,
            "best": self.best_checkpoint_step == Some(self.step),
        }))?;
        self.last_checkpoint = Some(checkpoint.path.clone());
        Ok(checkpoint.path)
    }

    /// Closes the run: a summary line in metrics.jsonl, the progress bar finished.
    pub fn finish(mut self) -> Result<RunSummary> {
        let summary = RunSummary {
            steps: self.step,
            stopped_early: self.stopped_early,
            last_checkpoint: self.last_checkpoint.clone(),
            best_checkpoint: self
                .best_checkpoint_step
                .map(|s| self.checkpoints.path_for(s)),
            best_value: self.early_stopping.best,
            metrics_path: self.metrics.path().to_path_buf(),
        };
        self.metrics.append(&json!({
            "type": "summary", "step": self.step, "stopped_early": summary.stopped_early,
            "best_step": self.best_checkpoint_step, "best_value": summary.best_value,
            "elapsed_s": self.started.elapsed().as_secs_f64(),
        }))?;
        self.progress.finish();
        Ok(summary)
    }

    /// The run is over: all steps done, or early stopping fired.
    pub fn finished(&self) -> bool {
        self.stopped_early || self.step >= self.total_steps()
    }

    /// Optimizer steps done.
    pub fn step(&self) -> u64 {
        self.step
    }

    pub fn total_steps(&self) -> u64 {
        self.schedule.total_steps
    }

    /// The step of the checkpoint this run resumed from, if it did.
    pub fn resumed_from(&self) -> Option<u64> {
        self.resumed_from
    }

    /// Epochs done, as a fraction.
    pub fn epoch_progress(&self) -> f64 {
        let cursor = self.sampler.cursor();
        cursor.epoch as f64 + cursor.position as f64 / self.sampler.len() as f64
    }

    pub fn cursor(&self) -> DataCursor {
        self.sampler.cursor()
    }

    /// The run's checkpointed RNG, for use outside the loss closure.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// Whether the forward passes run under bf16 autocast.
    pub fn uses_bf16(&self) -> bool {
        self.bf16
    }

    pub fn config(&self) -> &TrainerConfig {
        &self.config
    }

    pub fn optimizer(&self) -> &AdamW {
        &self.optimizer
    }

    pub fn frozen(&self) -> &[String] {
        &self.frozen
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    pub fn early_stopping(&self) -> &EarlyStopping {
        &self.early_stopping
    }

    pub fn checkpoints(&self) -> &CheckpointManager {
        &self.checkpoints
    }

    /// The run folder, `<runs_dir>/<run_name>`.
    pub fn run_dir(&self) -> PathBuf {
        self.config.run_dir()
    }

    /// Prints a line above the progress bar.
    pub fn println(&self, message: impl AsRef<str>) {
        self.progress.println(message);
    }

    /// Appends a recipe's own record (e.g. DPO rewards of the step just done) to metrics.jsonl.
    pub fn log(&mut self, record: &serde_json::Value) -> Result<()> {
        self.metrics.append(record)
    }
}

fn format_metrics(metrics: &Metrics) -> String {
    metrics
        .iter()
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect::<Vec<_>>()
        .join("  ")
}

/// Loads the weights of a checkpoint folder (or a `model.safetensors`) into the variables of `vs`
/// that it holds; returns how many it set. For evaluating the best checkpoint after a run.
pub fn load_checkpoint_weights(vs: &VarStore, checkpoint: &Path) -> Result<usize> {
    let path = if checkpoint.is_dir() {
        checkpoint.join(MODEL_FILE)
    } else {
        checkpoint.to_path_buf()
    };
    copy_weights(&vs.variables(), &path, vs.device(), |_| false)
}

/// Copies the tensors of the safetensors file `path` into the same-named `variables`; a variable
/// for which `required` holds must be in the file. Returns how many were set.
fn copy_weights(
    variables: &HashMap<String, Tensor>,
    path: &Path,
    device: Device,
    required: impl Fn(&str) -> bool,
) -> Result<usize> {
    let weights = ragtune_models::checkpoint::load_safetensors(path, device)?;
    let mut set = 0;
    tch::no_grad(|| -> Result<()> {
        for (name, variable) in variables {
            match weights.get(name) {
                Some(saved) if saved.size() == variable.size() => {
                    variable.shallow_clone().copy_(saved);
                    set += 1;
                }
                Some(saved) => {
                    return Err(TrainerError::format(
                        path,
                        format!(
                            "`{name}` has shape {:?}, the model {:?}",
                            saved.size(),
                            variable.size()
                        ),
                    ))
                }
                None if required(name) => {
                    return Err(TrainerError::format(
                        path,
                        format!("tensor `{name}` is missing"),
                    ))
                }
                None => {}
            }
        }
        Ok(())
    })?;
    Ok(set)
}
