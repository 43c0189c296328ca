//! Contrastive and distillation losses for dense retrievers, on tch tensors.
//!
//! Scores are similarities (higher is closer). Every loss takes scores rather than embeddings, so
//! the same code serves bi-encoders (a matrix product of pooled vectors) and ColBERT (MaxSim).

use crate::{Result, RetrieverError};
use tch::{Kind, Reduction, Tensor};

/// The temperature of InfoNCE that sentence-transformers' MultipleNegativesRankingLoss uses
/// (its `scale` of 20 is 1 / 0.05).
pub const DEFAULT_TEMPERATURE: f64 = 0.05;

/// How two pooled embeddings are compared (shared with the retrieval crate's indexes).
pub use ragtune_retrieval::Similarity;

fn check_scores(scores: &Tensor, rows: i64, what: &str) -> Result<()> {
    let size = scores.size();
    if size.len() != 2 || size[0] != rows || size[1] < rows {
        return Err(RetrieverError::Invalid(format!(
            "{what}: scores must be [queries, passages] with at least one passage per query \
             (the positives first), got {size:?} for {rows} queries"
        )));
    }
    Ok(())
}

/// InfoNCE over in-batch and hard negatives: `scores [B, P]` holds each query's similarity to every
/// passage of the batch, the first `B` columns being the queries' own positives in order
/// (`scores[i][i]` is query i's positive) and any further columns hard negatives shared by all
/// queries. The loss is the mean cross-entropy of `scores / temperature` against the diagonal.
pub fn info_nce(scores: &Tensor, temperature: f64) -> Result<Tensor> {
    let batch = scores.size().first().copied().unwrap_or(0);
    check_scores(scores, batch, "InfoNCE")?;
    check_temperature(temperature)?;
    let targets = Tensor::arange(batch, (Kind::Int64, scores.device()));
    Ok((scores / temperature).cross_entropy_for_logits(&targets))
}

/// Symmetric InfoNCE: the mean of query→passage InfoNCE (over all columns) and passage→query
/// InfoNCE, where each positive passage must pick its own query among the batch's queries.
pub fn symmetric_info_nce(scores: &Tensor, temperature: f64) -> Result<Tensor> {
    let batch = scores.size().first().copied().unwrap_or(0);
    let forward = info_nce(scores, temperature)?;
    let targets = Tensor::arange(batch, (Kind::Int64, scores.device()));
    let backward =
        (scores.narrow(1, 0, batch).tr() / temperature).cross_entropy_for_logits(&targets);
    Ok((forward + backward) / 2.0)
}

/// Margin-MSE (Hofstätter et al., 2020): the student's margin between positive and negative
/// scores regresses onto the teacher's. All four tensors have the same shape (`[B]` or `[B, N]`).
pub fn margin_mse(
    student_positive: &Tensor,
    student_negative: &Tensor,
    teacher_positive: &Tensor,
    teacher_negative: &Tensor,
) -> Result<Tensor> {
    let shape = student_positive.size();
    for (name, t) in [
        ("student_negative", student_negative),
        ("teacher_positive", teacher_positive),
        ("teacher_negative", teacher_negative),
    ] {
        if t.size() != shape {
            return Err(RetrieverError::Invalid(format!(
                "Margin-MSE: {name} has shape {:?}, student_positive {shape:?}",
                t.size()
            )));
        }
    }
    let student = student_positive - student_negative;
    let teacher = (teacher_positive - teacher_negative).to_kind(student.kind());
    Ok(student.mse_loss(&teacher, Reduction::Mean))
}

/// KL distillation over each query's candidate list: `KL(softmax(teacher / τ) ‖ softmax(student / τ))`,
/// summed over candidates and averaged over queries (`batchmean`), times τ² so that gradients keep
/// their scale as the temperature changes (Hinton et al., 2015).
pub fn kl_distillation(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    if student.size() != teacher.size() || student.dim() != 2 {
        return Err(RetrieverError::Invalid(format!(
            "KL distillation: student {:?} and teacher {:?} scores must both be [queries, candidates]",
            student.size(),
            teacher.size()
        )));
    }
    check_temperature(temperature)?;
    let log_student = (student / temperature).log_softmax(-1, Kind::Float);
    let log_teacher = (teacher.to_kind(Kind::Float) / temperature).log_softmax(-1, Kind::Float);
    let pointwise = log_teacher.exp() * (&log_teacher - log_student);
    let queries = student.size()[0] as f64;
    Ok(pointwise.sum(Kind::Float) / queries * temperature * temperature)
}

fn check_temperature(temperature: f64) -> Result<()> {
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(RetrieverError::Invalid(format!(
            "temperature {temperature}: it must be a positive number"
        )));
    }
    Ok(())
}
