//! Classification metrics as scikit-learn computes them (`accuracy_score`,
//! `precision_recall_fscore_support`, `confusion_matrix`), for string labels.
//!
//! Labels are the sorted union of the true and predicted labels, as sklearn's `unique_labels`.
//! `zero_division` is the value used when a ratio's denominator is 0: a label never predicted
//! (precision) or never true (recall). sklearn's default `"warn"` behaves as 0.0, which is our
//! default too. F1 is computed as 2·TP / (2·TP + FP + FN), as sklearn >= 1.3 does, so it is only
//! undefined when TP = FP = FN = 0, which cannot happen for a label in the union. Macro averages are
//! plain means over the labels (macro F1 is the mean of per-label F1s, not the F of the macro P and
//! R); weighted averages weight by support (true count); micro averages pool the counts.

use crate::error::{check_parallel, EvalError, Result};
use serde::Serialize;
use std::collections::BTreeSet;

/// Precision, recall and F1 for one label or one averaging scheme.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Prf {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// Everything sklearn's classification report holds.
#[derive(Debug, Clone, Serialize)]
pub struct ClassificationReport {
    /// Sorted label set; rows and columns of `confusion` follow it.
    pub labels: Vec<String>,
    /// `confusion[i][j]`: items of true label i predicted as label j.
    pub confusion: Vec<Vec<usize>>,
    pub per_label: Vec<Prf>,
    /// True count per label.
    pub support: Vec<usize>,
    pub accuracy: f64,
    pub micro: Prf,
    pub macro_avg: Prf,
    pub weighted: Prf,
}

fn ratio(num: usize, den: usize, zero_division: f64) -> f64 {
    if den == 0 {
        zero_division
    } else {
        num as f64 / den as f64
    }
}

fn prf(tp: usize, fp: usize, fn_: usize, zero_division: f64) -> Prf {
    Prf {
        precision: ratio(tp, tp + fp, zero_division),
        recall: ratio(tp, tp + fn_, zero_division),
        f1: ratio(2 * tp, 2 * tp + fp + fn_, zero_division),
    }
}

/// Accuracy, per-label and averaged precision/recall/F1, and the confusion matrix.
pub fn classification_report<S: AsRef<str>>(
    y_true: &[S],
    y_pred: &[S],
    zero_division: f64,
) -> Result<ClassificationReport> {
    check_parallel("true and predicted labels", y_true.len(), y_pred.len())?;
    if y_true.is_empty() {
        return Err(EvalError::Empty("classification".into()));
    }
    let labels: Vec<String> = y_true
        .iter()
        .chain(y_pred)
        .map(|l| l.as_ref().to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let index = |l: &str| {
        labels
            .binary_search_by(|x| x.as_str().cmp(l))
            .expect("label in set")
    };
    let mut confusion = vec![vec![0usize; labels.len()]; labels.len()];
    for (t, p) in y_true.iter().zip(y_pred) {
        confusion[index(t.as_ref())][index(p.as_ref())] += 1;
    }
    let n = y_true.len();
    let mut per_label = Vec::with_capacity(labels.len());
    let mut support = Vec::with_capacity(labels.len());
    let (mut tp_sum, mut fp_sum, mut fn_sum) = (0, 0, 0);
    for i in 0..labels.len() {
        let tp = confusion[i][i];
        let true_count: usize = confusion[i].iter().sum();
        let predicted_count: usize = confusion.iter().map(|row| row[i]).sum();
        let (fp, fn_) = (predicted_count - tp, true_count - tp);
        per_label.push(prf(tp, fp, fn_, zero_division));
        support.push(true_count);
        tp_sum += tp;
        fp_sum += fp;
        fn_sum += fn_;
    }
    let mean = |weights: &[f64]| -> Prf {
        let total: f64 = weights.iter().sum();
        let avg = |get: fn(&Prf) -> f64| -> f64 {
            if total == 0.0 {
                return zero_division;
            }
            per_label
                .iter()
                .zip(weights)
                .map(|(p, w)| get(p) * w)
                .sum::<f64>()
                / total
        };
        Prf {
            precision: avg(|p| p.precision),
            recall: avg(|p| p.recall),
            f1: avg(|p| p.f1),
        }
    };
    let macro_avg = mean(&vec![1.0; labels.len()]);
    let weighted = mean(&support.iter().map(|&s| s as f64).collect::<Vec<_>>());
    Ok(ClassificationReport {
        accuracy: tp_sum as f64 / n as f64,
        micro: prf(tp_sum, fp_sum, fn_sum, zero_division),
        macro_avg,
        weighted,
        labels,
        confusion,
        per_label,
        support,
    })
}
