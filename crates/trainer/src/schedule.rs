//! Learning-rate schedules: linear warm-up, then linear decay, cosine decay or constant — the
//! formulas of transformers' `get_{linear,cosine,constant}_schedule_with_warmup`.
//!
//! As with transformers' `LambdaLR`, optimizer step `s` (counting from 0) runs at
//! `base_lr * factor(s)`, so with warm-up the first step has a learning rate of 0.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    Constant,
    Linear,
    Cosine,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub num_cycles: f64,
}

impl Schedule {
    /// Warm-up from `warmup_steps`, or else `ceil(total_steps * warmup_ratio)` as transformers does.
    pub fn new(
        kind: ScheduleKind,
        warmup_steps: Option<u64>,
        warmup_ratio: f64,
        total_steps: u64,
        num_cycles: f64,
    ) -> Self {
        let warmup_steps =
            warmup_steps.unwrap_or_else(|| (total_steps as f64 * warmup_ratio).ceil() as u64);
        Schedule {
            kind,
            warmup_steps,
            total_steps,
            num_cycles,
        }
    }

    /// The multiplier of the base learning rate at optimizer step `step` (from 0).
    pub fn factor(&self, step: u64) -> f64 {
        let step = step as f64;
        let warmup = self.warmup_steps as f64;
        if step < warmup {
            return step / warmup.max(1.0);
        }
        let total = self.total_steps as f64;
        match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Linear => (0f64).max((total - step) / (total - warmup).max(1.0)),
            ScheduleKind::Cosine => {
                let progress = (step - warmup) / (total - warmup).max(1.0);
                (0f64).max(
                    0.5 * (1.0 + (std::f64::consts::PI * self.num_cycles * 2.0 * progress).cos()),
                )
            }
        }
    }
}
