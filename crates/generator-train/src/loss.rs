//! Losses over the 49k-token vocabulary without materializing `[batch, seq, vocab]` logits: only
//! the positions that predict a completion token go through the LM head, `chunk` rows at a time.
//! DPO losses follow TRL 1.16's `DPOTrainer` (sigmoid, hinge, IPO with per-token averages).

use crate::{GeneratorError, Result};
use ragtune_models::llama::Llama;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Hidden states that predict completion tokens, `[n, hidden]`, the tokens they predict `[n]`,
/// and the batch row of each `[n]`. `completion_mask[b, t]` marks tokens of the answer; position
/// `t - 1` predicts token `t`.
fn completion_positions(
    hidden: &Tensor,
    input_ids: &Tensor,
    completion_mask: &Tensor,
) -> (Tensor, Tensor, Tensor) {
    let (b, t, h) = hidden.size3().expect("[batch, seq, hidden]");
    let targets = completion_mask.narrow(1, 1, t - 1).to_kind(Kind::Bool);
    let flat = targets.reshape([-1]).nonzero().squeeze_dim(1);
    let states = hidden
        .narrow(1, 0, t - 1)
        .reshape([-1, h])
        .index_select(0, &flat);
    let tokens = input_ids
        .narrow(1, 1, t - 1)
        .reshape([-1])
        .index_select(0, &flat);
    let rows = Tensor::arange(b, (Kind::Int64, hidden.device()))
        .unsqueeze(1)
        .expand([b, t - 1], false)
        .reshape([-1])
        .index_select(0, &flat);
    (states, tokens, rows)
}

/// Log-probability of each completion token under `model`'s head, `[n]`, in f32, chunked.
fn token_logps(model: &Llama, states: &Tensor, tokens: &Tensor, chunk: i64) -> Tensor {
    let n = states.size()[0];
    let mut parts = vec![];
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let logits = model
            .logits(&states.narrow(0, start, len))
            .to_kind(Kind::Float);
        let logp = logits.log_softmax(-1, Kind::Float);
        parts.push(
            logp.gather(1, &tokens.narrow(0, start, len).unsqueeze(1), false)
                .squeeze_dim(1),
        );
        start += len;
    }
    if parts.is_empty() {
        return Tensor::zeros([0], (Kind::Float, states.device()));
    }
    Tensor::cat(&parts, 0)
}

/// Mean cross-entropy over completion tokens only (prompt and padding masked), and their count.
pub fn completion_loss(
    model: &Llama,
    hidden: &Tensor,
    input_ids: &Tensor,
    completion_mask: &Tensor,
    chunk: i64,
) -> Result<(Tensor, i64)> {
    let (states, tokens, _) = completion_positions(hidden, input_ids, completion_mask);
    let n = tokens.size()[0];
    if n == 0 {
        return Err(GeneratorError::Invalid(
            "a batch without any answer token".into(),
        ));
    }
    Ok((
        -token_logps(model, &states, &tokens, chunk).mean(Kind::Float),
        n,
    ))
}

/// Summed log-probability of each row's completion `[batch]` and its token count `[batch]`.
pub fn sequence_logps(
    model: &Llama,
    hidden: &Tensor,
    input_ids: &Tensor,
    completion_mask: &Tensor,
    chunk: i64,
) -> (Tensor, Tensor) {
    let b = hidden.size()[0];
    let (states, tokens, rows) = completion_positions(hidden, input_ids, completion_mask);
    let logps = token_logps(model, &states, &tokens, chunk);
    let sums = Tensor::zeros([b], (Kind::Float, hidden.device())).index_add(0, &rows, &logps);
    let counts = Tensor::zeros([b], (Kind::Float, hidden.device())).index_add(
        0,
        &rows,
        &Tensor::ones_like(&logps),
    );
    (sums, counts)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DpoLossKind {
    Sigmoid,
    Hinge,
    Ipo,
}

/// Per-pair DPO losses and the implicit rewards TRL logs.
#[derive(Debug)]
pub struct DpoOutput {
    pub losses: Tensor,
    pub chosen_rewards: Tensor,
    pub rejected_rewards: Tensor,
}

impl DpoOutput {
    pub fn loss(&self) -> Tensor {
        self.losses.mean(Kind::Float)
    }

    /// Share of pairs whose chosen reward beats the rejected one.
    pub fn reward_accuracy(&self) -> f64 {
        self.chosen_rewards
            .gt_tensor(&self.rejected_rewards)
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[])
    }

    pub fn reward_margin(&self) -> f64 {
        (&self.chosen_rewards - &self.rejected_rewards)
            .mean(Kind::Float)
            .double_value(&[])
    }
}

/// Summed completion log-probs of policy and reference for chosen and rejected answers `[batch]`,
/// and the completion lengths (IPO averages per token, as TRL does).
#[allow(clippy::too_many_arguments)]
pub fn dpo_loss(
    kind: DpoLossKind,
    beta: f64,
    policy_chosen: &Tensor,
    policy_rejected: &Tensor,
    reference_chosen: &Tensor,
    reference_rejected: &Tensor,
    chosen_len: &Tensor,
    rejected_len: &Tensor,
) -> DpoOutput {
    let chosen_ratio = policy_chosen - reference_chosen;
    let rejected_ratio = policy_rejected - reference_rejected;
    let delta = &chosen_ratio - &rejected_ratio;
    let losses = match kind {
        DpoLossKind::Sigmoid => -(&delta * beta).log_sigmoid(),
        DpoLossKind::Hinge => (-(&delta * beta) + 1.0).relu(),
        DpoLossKind::Ipo => {
            let avg = &chosen_ratio / chosen_len.clamp_min(1.0)
                - &rejected_ratio / rejected_len.clamp_min(1.0);
            (avg - 1.0 / (2.0 * beta)).square()
        }
    };
    DpoOutput {
        losses,
        chosen_rewards: (chosen_ratio * beta).detach(),
        rejected_rewards: (rejected_ratio * beta).detach(),
    }
}
