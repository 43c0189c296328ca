//! The joint objectives on score tensors: LM-supervised retrieval (a KL divergence between the
//! LM's preference over the top-k and the retriever's) and the RAG-sequence marginal likelihood.
//!
//! The LM's scores are plain tensors that gradients never reach; the retriever's scores stay on
//! the query tower's graph. (A public implementation builds its retriever scores with
//! `torch.tensor(..., requires_grad=True)`, cutting them off the encoder, and so trains nothing.)

use crate::config::KlDirection;
use crate::{JointError, Result};
use ragtune_retrieval::Similarity;
use tch::{Kind, Tensor};

fn same_shape(a: &Tensor, b: &Tensor, what: &str) -> Result<()> {
    if a.size() != b.size() || a.dim() != 2 {
        return Err(JointError::Invalid(format!(
            "{what}: retriever and LM scores must both be [questions, k], got {:?} and {:?}",
            a.size(),
            b.size()
        )));
    }
    Ok(())
}

/// The retriever's scores of each question's candidates: `queries [B, dim]` against
/// `passages [B, k, dim]`, as `[B, k]` in float32. Cosine normalises both sides (the passages of a
/// cosine index already are).
pub fn candidate_scores(queries: &Tensor, passages: &Tensor, similarity: Similarity) -> Tensor {
    let (q, p) = (queries.to_kind(Kind::Float), passages.to_kind(Kind::Float));
    let (q, p) = match similarity {
        Similarity::Dot => (q, p),
        Similarity::Cosine => (
            ragtune_models::pooling::l2_normalize(&q),
            ragtune_models::pooling::l2_normalize(&p),
        ),
    };
    p.matmul(&q.unsqueeze(2)).squeeze_dim(2)
}

/// LSR: `Q = softmax(lm_scores / τ_lm)`, `P = softmax(retriever_scores / τ_r)` over each row's
/// candidates, and the KL divergence in `direction`, summed over the batch. `lm_scores` are the
/// length-normalised answer log-likelihoods (a raw sequence probability would make Q uniform).
pub fn lsr_loss(
    retriever_scores: &Tensor,
    lm_scores: &Tensor,
    retriever_temperature: f64,
    lm_temperature: f64,
    direction: KlDirection,
) -> Result<Tensor> {
    same_shape(retriever_scores, lm_scores, "LSR")?;
    let log_p = (retriever_scores.to_kind(Kind::Float) / retriever_temperature)
        .log_softmax(-1, Kind::Float);
    let log_q =
        (lm_scores.to_kind(Kind::Float).detach() / lm_temperature).log_softmax(-1, Kind::Float);
    let kl = match direction {
        KlDirection::TargetToRetriever => log_q.exp() * (&log_q - &log_p),
        KlDirection::RetrieverToTarget => log_p.exp() * (&log_p - &log_q),
    };
    Ok(kl.sum(Kind::Float))
}

/// The entropy of the retriever's distribution over each row's candidates, `[B]` (in nats; log k
/// is uniform, 0 is one passage taking all the mass).
pub fn retriever_entropy(retriever_scores: &Tensor, temperature: f64) -> Tensor {
    let log_p = (retriever_scores.to_kind(Kind::Float) / temperature).log_softmax(-1, Kind::Float);
    -(log_p.exp() * &log_p).sum_dim_intlist(-1, false, Kind::Float)
}

/// RAG-sequence: `−Σ_b log Σ_d softmax(s_b / τ)_d · p(y_b | q_b, d)` in log space, where
/// `answer_logps [B, k]` holds each candidate's summed answer log-probability `log p(y | q, d)`.
pub fn marginal_nll(
    retriever_scores: &Tensor,
    answer_logps: &Tensor,
    retriever_temperature: f64,
) -> Result<Tensor> {
    same_shape(retriever_scores, answer_logps, "RAG-sequence")?;
    let log_p = (retriever_scores.to_kind(Kind::Float) / retriever_temperature)
        .log_softmax(-1, Kind::Float);
    let joint = log_p + answer_logps.to_kind(Kind::Float);
    Ok(-joint.logsumexp([-1], false).sum(Kind::Float))
}
