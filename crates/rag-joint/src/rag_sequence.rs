//! RAG-sequence marginal likelihood (Lewis et al., 2020; EMDR²-style end-to-end training):
//! `loss = −log Σ_{d ∈ top-k} P(d | q) · p(y | q, d)`, with gradients into the query tower and,
//! when it trains, the generator's adapter.
//!
//! A question needs k generator forwards. Keeping all k graphs would hold k copies of the
//! generator's activations, so the gradient is accumulated over passages instead:
//!
//! 1. every `log p(y | q, d)` is computed without a graph;
//! 2. the loss is built on those values (as leaves) and the retriever's scores, and one backward
//!    gives the query tower its gradient and each passage its weight `∂loss/∂log p(y | q, d)`;
//! 3. each chunk of passages is run again with a graph and `Σ weight · log p(y | q, d)` is
//!    back-propagated, which adds exactly the generator's share of the gradient.
//!
//! Memory then holds one chunk of generator graphs at a time. Both passes reseed torch per chunk,
//! so adapter dropout draws the same masks in each.

use crate::losses::marginal_nll;
use crate::scoring::answer_logps;
use crate::{JointError, Result};
use ragtune_generator_train::sft::SftExample;
use ragtune_models::llama_load::CausalLm;
use ragtune_models::peft::Peft;
use tch::{Device, Kind, Tensor};

/// The generator side of the loss.
pub struct Generator<'a> {
    pub lm: &'a CausalLm,
    /// The adapter (attached to `lm` already when it is LoRA or IA3).
    pub adapter: Option<&'a Peft>,
    /// Whether gradients reach the adapter.
    pub trains: bool,
    /// Generator forwards with a graph at once.
    pub chunk: usize,
}

/// Computes the loss of one batch, `retriever_scores [B, k]` (on the query tower's graph) with
/// `examples[b][d]` the prompt of question b with its passage d and the answer, and runs its
/// backward scaled by `scale` (1 / gradient-accumulation steps). Returns the unscaled loss value.
/// `seed` fixes torch's generator for each chunk of generator forwards.
pub fn backward(
    retriever_scores: &Tensor,
    examples: &[Vec<SftExample>],
    generator: &Generator,
    retriever_temperature: f64,
    scale: f64,
    seed: i64,
    device: Device,
) -> Result<f64> {
    let (b, k) = retriever_scores
        .size2()
        .map_err(|_| JointError::Invalid("retriever scores must be [questions, k]".into()))?;
    if examples.len() as i64 != b || examples.iter().any(|row| row.len() as i64 != k) {
        return Err(JointError::Invalid(format!(
            "RAG-sequence: {b}×{k} retriever scores for examples of shape {}×{:?}",
            examples.len(),
            examples.first().map(Vec::len)
        )));
    }
    if generator.trains && generator.adapter.is_none() {
        return Err(JointError::Invalid(
            "RAG-sequence: the generator trains through an adapter, and none is given".into(),
        ));
    }
    if !generator.trains && !retriever_scores.requires_grad() {
        return Err(JointError::Invalid(
            "RAG-sequence: nothing to train (the retriever scores carry no graph and the \
             generator is frozen)"
                .into(),
        ));
    }
    let flat: Vec<&SftExample> = examples.iter().flatten().collect();
    let chunks: Vec<&[&SftExample]> = flat.chunks(generator.chunk.max(1)).collect();
    let forward = |i: usize, chunk: &[&SftExample]| -> Result<Tensor> {
        tch::manual_seed(seed.wrapping_mul(1_000_003).wrapping_add(i as i64));
        Ok(answer_logps(generator.lm, generator.adapter, chunk, device)?.0)
    };

    // 1. log p(y | q, d) for every passage, without a graph.
    let values = tch::no_grad(|| -> Result<Tensor> {
        let parts = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| forward(i, c))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 0).view([b, k]))
    })?;

    // 2. The loss on those values: the query tower's gradient, and each passage's weight.
    let logps = values.detach().set_requires_grad(generator.trains);
    let loss = marginal_nll(retriever_scores, &logps, retriever_temperature)?;
    let value = loss.double_value(&[]);
    (loss * scale).backward();
    if !generator.trains {
        return Ok(value);
    }
    let weights = logps.grad().view([-1]).to_kind(Kind::Float);

    // 3. The generator's share, one chunk of graphs at a time.
    let mut start = 0i64;
    for (i, chunk) in chunks.iter().enumerate() {
        let n = chunk.len() as i64;
        let logps = forward(i, chunk)?;
        (logps * weights.narrow(0, start, n))
            .sum(Kind::Float)
            .backward();
        start += n;
    }
    Ok(value)
}
