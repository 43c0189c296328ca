//! Paired significance for "system B beats system A" on any per-query metric: a paired bootstrap
//! (confidence interval of the mean difference, and a bootstrap p-value) and a paired
//! randomization test. Both are seeded and deterministic.
//!
//! Definitions (d_i = b_i - a_i, observed statistic = mean(d)):
//! - Bootstrap: `n_resamples` resamples of the query indices with replacement; the CI is the
//!   percentile interval of the resampled mean differences (linear interpolation between order
//!   statistics, as numpy's default percentile and `scipy.stats.bootstrap(method="percentile")`);
//!   the one-sided p-value is (1 + #{resampled mean difference <= 0}) / (n_resamples + 1), i.e.
//!   Koehn's "how often does B fail to win", smoothed so it is never 0.
//! - Randomization: under the null each pair may be swapped, i.e. each d_i's sign flipped. When
//!   2^n <= `n_resamples` all 2^n sign patterns are enumerated (exact test); otherwise
//!   `n_resamples` random patterns are drawn and p = (1 + #{null >= observed}) / (n_resamples + 1).
//!   Comparisons allow a relative slack of 100 machine epsilons. This is exactly
//!   `scipy.stats.permutation_test(..., permutation_type="samples", statistic=mean difference)`.

use crate::error::{check_parallel, EvalError, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// The alternative hypothesis of a randomization test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Alternative {
    /// B's mean is greater than A's.
    Greater,
    /// The means differ (twice the smaller one-sided p, capped at 1).
    TwoSided,
}

/// Result of [`paired_bootstrap`].
#[derive(Debug, Clone, Serialize)]
pub struct BootstrapResult {
    pub mean_a: f64,
    pub mean_b: f64,
    /// mean(b - a).
    pub mean_difference: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub confidence: f64,
    /// One-sided p-value for "B beats A".
    pub p_value: f64,
    pub n_resamples: usize,
}

/// Result of [`paired_randomization_test`].
#[derive(Debug, Clone, Serialize)]
pub struct RandomizationResult {
    /// mean(b - a).
    pub mean_difference: f64,
    pub p_value: f64,
    /// True when all 2^n sign patterns were enumerated.
    pub exact: bool,
    /// Null samples used (2^n when exact).
    pub n_resamples: usize,
}

fn differences(a: &[f64], b: &[f64]) -> Result<Vec<f64>> {
    check_parallel("paired scores of system A and system B", a.len(), b.len())?;
    if a.is_empty() {
        return Err(EvalError::Empty("paired significance test".into()));
    }
    if a.iter().chain(b).any(|v| !v.is_finite()) {
        return Err(EvalError::Invalid(
            "paired scores must be finite numbers".into(),
        ));
    }
    Ok(b.iter().zip(a).map(|(y, x)| y - x).collect())
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// numpy's default (linear) percentile of sorted values, `q` in 0..=1.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let lower = position.floor() as usize;
    let upper = position.ceil() as usize;
    let fraction = position - lower as f64;
    sorted[lower] + (sorted[upper] - sorted[lower]) * fraction
}

/// Paired bootstrap of mean(b) - mean(a) over the same queries.
pub fn paired_bootstrap(
    a: &[f64],
    b: &[f64],
    n_resamples: usize,
    confidence: f64,
    seed: u64,
) -> Result<BootstrapResult> {
    let diffs = differences(a, b)?;
    if n_resamples == 0 || !(0.0..1.0).contains(&confidence) || confidence <= 0.0 {
        return Err(EvalError::Invalid(format!(
            "bootstrap needs n_resamples >= 1 and 0 < confidence < 1 (got {n_resamples}, {confidence})"
        )));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let n = diffs.len();
    let mut resampled: Vec<f64> = (0..n_resamples)
        .map(|_| (0..n).map(|_| diffs[rng.gen_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    resampled.sort_by(f64::total_cmp);
    let not_better = resampled.iter().filter(|&&d| d <= 0.0).count();
    let tail = (1.0 - confidence) / 2.0;
    Ok(BootstrapResult {
        mean_a: mean(a),
        mean_b: mean(b),
        mean_difference: mean(&diffs),
        ci_low: percentile(&resampled, tail),
        ci_high: percentile(&resampled, 1.0 - tail),
        confidence,
        p_value: (1 + not_better) as f64 / (n_resamples + 1) as f64,
        n_resamples,
    })
}

/// Paired randomization (sign-flip permutation) test of mean(b - a).
pub fn paired_randomization_test(
    a: &[f64],
    b: &[f64],
    n_resamples: usize,
    alternative: Alternative,
    seed: u64,
) -> Result<RandomizationResult> {
    let diffs = differences(a, b)?;
    if n_resamples == 0 {
        return Err(EvalError::Invalid(
            "randomization test needs n_resamples >= 1".into(),
        ));
    }
    let n = diffs.len();
    let observed = mean(&diffs);
    let slack = (observed * f64::EPSILON * 100.0).abs();
    let exact = n < 63 && (1u64 << n) <= n_resamples as u64;
    let signed_mean = |signs: &dyn Fn(usize) -> bool| -> f64 {
        diffs
            .iter()
            .enumerate()
            .map(|(i, &d)| if signs(i) { -d } else { d })
            .sum::<f64>()
            / n as f64
    };
    let null: Vec<f64> = if exact {
        (0..(1u64 << n))
            .map(|pattern| signed_mean(&|i| pattern >> i & 1 == 1))
            .collect()
    } else {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n_resamples)
            .map(|_| {
                let flips: Vec<bool> = (0..n).map(|_| rng.gen_bool(0.5)).collect();
                signed_mean(&|i| flips[i])
            })
            .collect()
    };
    let adjustment = usize::from(!exact);
    let total = (null.len() + adjustment) as f64;
    let greater =
        (null.iter().filter(|&&v| v >= observed - slack).count() + adjustment) as f64 / total;
    let p_value = match alternative {
        Alternative::Greater => greater,
        Alternative::TwoSided => {
            let less = (null.iter().filter(|&&v| v <= observed + slack).count() + adjustment)
                as f64
                / total;
            (2.0 * greater.min(less)).min(1.0)
        }
    };
    Ok(RandomizationResult {
        mean_difference: observed,
        p_value,
        exact,
        n_resamples: null.len(),
    })
}
