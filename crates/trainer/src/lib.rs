//! The shared training loop: AdamW with saved state, schedules, mixed precision, atomic checkpoints
//! that resume exactly, and logging.
//!
//! It provides the pieces a recipe (retriever, generator or joint training) puts together in one
//! file, top to bottom, and knows nothing of datasets or the CLI:
//!
//! - [`TrainerConfig`]: every knob, from TOML.
//! - [`ParamPlan`] and [`AdamW`]: parameter groups by name (layer-wise learning-rate decay, no weight
//!   decay on biases and norms, frozen layers) and an AdamW that matches `torch.optim.AdamW` and
//!   whose state goes into checkpoints; [`clip_grad_norm`].
//! - [`Schedule`]: warm-up then linear, cosine or constant, as transformers computes them.
//! - [`precision::autocast_bf16`]: bf16 autocast on CUDA and CPU, master weights in fp32.
//! - [`rng`]: per-micro-batch torch seeding, per-epoch shuffling, a checkpointed ChaCha8 RNG.
//! - [`CheckpointManager`], [`MetricsLog`], [`Progress`], [`EarlyStopping`].
//! - [`Trainer`]: owns step counting, accumulation, clipping, logging, evaluation cadence and
//!   checkpointing, and calls the recipe's loss closure for every micro-batch.

pub mod adamw;
pub mod checkpoint;
pub mod config;
pub mod config_errors;
pub mod early_stopping;
pub mod error;
pub mod metrics;
pub mod params;
pub mod precision;
pub mod progress;
pub mod rng;
pub mod schedule;
pub mod trainer;

pub use adamw::{clip_grad_norm, grad_norm, AdamW};
pub use checkpoint::{Checkpoint, CheckpointManager};
pub use config::{CheckpointConfig, EvalConfig, OptimizerConfig, ScheduleConfig, TrainerConfig};
pub use early_stopping::{EarlyStopping, Verdict};
pub use error::{Result, TrainerError};
pub use metrics::MetricsLog;
pub use params::{ParamPlan, TrainableParam};
pub use precision::Precision;
pub use progress::Progress;
pub use rand_chacha::ChaCha8Rng;
pub use rng::{DataCursor, Sampler};
pub use schedule::{Schedule, ScheduleKind};
pub use trainer::{
    load_checkpoint_weights, Metrics, MicroBatch, RunSummary, StepReport, Trainer, TrainerState,
};
