//! The reranker's losses on cross-encoder logits: pointwise binary cross-entropy, listwise
//! softmax cross-entropy over each query's positive and negatives, and Margin-MSE onto a teacher.
//!
//! A batch of triplets scores as a `[rows, 1 + max negatives]` matrix, the positive in column 0,
//! with `valid` false where a row has fewer negatives than the widest row.

use crate::{Result, RetrieverError};
use tch::{Kind, Reduction, Tensor};

fn check_shapes(logits: &Tensor, valid: &Tensor, what: &str) -> Result<(i64, i64)> {
    let size = logits.size();
    if size.len() != 2 || size[1] < 1 || valid.size() != size {
        return Err(RetrieverError::Invalid(format!(
            "{what}: logits must be [rows, 1 + negatives] with a mask of the same shape, got \
             {size:?} and {:?}",
            valid.size()
        )));
    }
    Ok((size[0], size[1]))
}

/// Mean binary cross-entropy with logits over every valid pair: the positive (column 0) labelled
/// 1, the negatives 0, as `torch.nn.BCEWithLogitsLoss` over the flattened pairs.
pub fn binary_cross_entropy(logits: &Tensor, valid: &Tensor) -> Result<Tensor> {
    let (rows, columns) = check_shapes(logits, valid, "binary cross-entropy")?;
    let labels = Tensor::zeros([rows, columns], (Kind::Float, logits.device()));
    let _ = labels.narrow(1, 0, 1).fill_(1.0);
    let mask = valid.to_kind(Kind::Float);
    let per_pair = logits
        .to_kind(Kind::Float)
        .binary_cross_entropy_with_logits(&labels, None::<Tensor>, None::<Tensor>, Reduction::None);
    Ok((per_pair * &mask).sum(Kind::Float) / mask.sum(Kind::Float))
}

/// Mean over rows of the softmax cross-entropy of `logits / temperature` with the positive
/// (column 0) as the target, invalid columns left out of the softmax: the listwise loss of
/// sentence-transformers' `MultipleNegativesRankingLoss` for cross-encoders (scale = 1 / temperature).
pub fn listwise_softmax(logits: &Tensor, valid: &Tensor, temperature: f64) -> Result<Tensor> {
    let (rows, _) = check_shapes(logits, valid, "listwise softmax cross-entropy")?;
    if temperature.is_nan() || temperature <= 0.0 {
        return Err(RetrieverError::Invalid(format!(
            "listwise temperature {temperature}: it must be positive"
        )));
    }
    // -inf would make a NaN gradient nowhere (column 0 is always valid), but a finite floor
    // keeps the softmax well away from overflow under bf16 autocast too.
    let scaled =
        (logits.to_kind(Kind::Float) / temperature).masked_fill(&valid.logical_not(), -1e4);
    let targets = Tensor::zeros([rows], (Kind::Int64, logits.device()));
    Ok(scaled.cross_entropy_for_logits(&targets))
}

/// Margin-MSE (Hofstätter et al., 2020) over every valid negative: the mean squared difference
/// between the student's margin (positive − negative) and the teacher's, the teacher's scores
/// multiplied by `teacher_scale` first.
pub fn margin_mse(
    logits: &Tensor,
    teacher: &Tensor,
    valid: &Tensor,
    teacher_scale: f64,
) -> Result<Tensor> {
    let (_, columns) = check_shapes(logits, valid, "Margin-MSE")?;
    if teacher.size() != logits.size() {
        return Err(RetrieverError::Invalid(format!(
            "Margin-MSE: teacher scores {:?} do not match the logits {:?}",
            teacher.size(),
            logits.size()
        )));
    }
    if columns < 2 {
        return Err(RetrieverError::Invalid(
            "Margin-MSE needs at least one negative per row".into(),
        ));
    }
    let logits = logits.to_kind(Kind::Float);
    let teacher = teacher.to_kind(Kind::Float) * teacher_scale;
    let margin = |s: &Tensor| s.narrow(1, 0, 1) - s.narrow(1, 1, columns - 1);
    let mask = valid.narrow(1, 1, columns - 1).to_kind(Kind::Float);
    let squared = (margin(&logits) - margin(&teacher)).square() * &mask;
    Ok(squared.sum(Kind::Float) / mask.sum(Kind::Float).clamp_min(1.0))
}
