//! Early stopping with patience on one evaluation metric; its state goes into every checkpoint.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    pub higher_is_better: bool,
    /// Evaluations without improvement before stopping; None never stops.
    pub patience: Option<u32>,
    /// An improvement must beat the best by more than this.
    pub min_delta: f64,
    pub best: Option<f64>,
    pub best_step: Option<u64>,
    pub evals_without_improvement: u32,
}

/// What one evaluation meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub improved: bool,
    pub should_stop: bool,
}

impl EarlyStopping {
    pub fn new(higher_is_better: bool, patience: Option<u32>, min_delta: f64) -> Self {
        EarlyStopping {
            higher_is_better,
            patience,
            min_delta,
            best: None,
            best_step: None,
            evals_without_improvement: 0,
        }
    }

    /// Records `value` measured after optimizer step `step`. A NaN never counts as an improvement.
    pub fn observe(&mut self, step: u64, value: f64) -> Verdict {
        let improved = match self.best {
            None => !value.is_nan(),
            Some(best) if self.higher_is_better => value > best + self.min_delta,
            Some(best) => value < best - self.min_delta,
        };
        if improved {
            self.best = Some(value);
            self.best_step = Some(step);
            self.evals_without_improvement = 0;
        } else {
            self.evals_without_improvement += 1;
        }
        let should_stop = self
            .patience
            .is_some_and(|p| self.evals_without_improvement >= p);
        Verdict {
            improved,
            should_stop,
        }
    }
}
