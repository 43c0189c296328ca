//! GradCache (Gao et al., 2021): contrastive losses over large batches in bounded memory.
//!
//! The loss of a contrastive batch couples every query with every passage, so a plain backward pass
//! keeps the activations of the whole batch alive at once. GradCache splits the work in three:
//! 1. encode every chunk without building a graph, keeping only the representations;
//! 2. compute the loss on those representations (now leaves) and its gradient with respect to them;
//! 3. re-encode each chunk with a graph and backpropagate the cached gradient through it alone.
//!
//! Parameter gradients are those of the full-batch loss; peak activation memory is one chunk's.
//! Dropout must draw the same masks in steps 1 and 3, so each chunk runs under its own seed.

use crate::{Result, RetrieverError};
use tch::{Kind, Tensor};

/// One side of a contrastive batch (queries, or passages): `chunks` pieces, and a function that
/// encodes piece `i` into `[rows, ...]` representations. It must be deterministic given the seed
/// that GradCache sets before each call.
pub struct Side<'a> {
    pub chunks: usize,
    pub encode: Box<dyn Fn(usize) -> Result<Tensor> + 'a>,
}

impl<'a> Side<'a> {
    pub fn new(chunks: usize, encode: impl Fn(usize) -> Result<Tensor> + 'a) -> Self {
        Self {
            chunks,
            encode: Box::new(encode),
        }
    }
}

/// Runs the three GradCache steps: afterwards every parameter the encoders used holds (adds to its
/// `.grad()`) the gradient of `loss(side representations)`. `seed` fixes the random state of each
/// chunk's two runs (pass the step number, say); returns the loss value.
pub fn backward(
    sides: &[Side],
    seed: i64,
    loss: impl FnOnce(&[Tensor]) -> Result<Tensor>,
) -> Result<f64> {
    let chunk_seed = |side: usize, chunk: usize| {
        seed.wrapping_mul(1_000_003)
            .wrapping_add((side as i64) << 32)
            .wrapping_add(chunk as i64)
    };

    let mut cached: Vec<Vec<Tensor>> = Vec::with_capacity(sides.len());
    for (s, side) in sides.iter().enumerate() {
        let mut chunks = Vec::with_capacity(side.chunks);
        for c in 0..side.chunks {
            tch::manual_seed(chunk_seed(s, c));
            let reps = tch::no_grad(|| (side.encode)(c))?;
            chunks.push(reps.detach());
        }
        cached.push(chunks);
    }

    let leaves: Vec<Tensor> = cached
        .iter()
        .map(|chunks| Tensor::cat(chunks, 0).set_requires_grad(true))
        .collect();
    let loss_value = loss(&leaves)?;
    if loss_value.numel() != 1 {
        return Err(RetrieverError::Invalid(format!(
            "GradCache: the loss must be a scalar, got shape {:?}",
            loss_value.size()
        )));
    }
    loss_value.backward();
    let value = loss_value.double_value(&[]);

    for (s, side) in sides.iter().enumerate() {
        let grad = leaves[s].grad();
        if !grad.defined() {
            // The loss did not use this side; its encoder gets no gradient, as in a plain backward.
            continue;
        }
        let mut offset = 0;
        for (c, cached_chunk) in cached[s].iter().enumerate() {
            let rows = cached_chunk.size()[0];
            let chunk_grad = grad.narrow(0, offset, rows);
            offset += rows;
            tch::manual_seed(chunk_seed(s, c));
            let reps = (side.encode)(c)?;
            if reps.size() != cached_chunk.size() {
                return Err(RetrieverError::Invalid(format!(
                    "GradCache: side {s} chunk {c} encoded to {:?} with a graph but {:?} without",
                    reps.size(),
                    cached_chunk.size()
                )));
            }
            // d/dθ of sum(reps * g) is exactly g backpropagated through this chunk's graph.
            (reps.to_kind(Kind::Float) * chunk_grad.to_kind(Kind::Float))
                .sum(Kind::Float)
                .backward();
        }
    }
    Ok(value)
}

/// Splits `0..rows` into consecutive ranges of at most `chunk_size` rows.
pub fn chunk_ranges(rows: usize, chunk_size: usize) -> Vec<std::ops::Range<usize>> {
    let size = chunk_size.max(1);
    (0..rows)
        .step_by(size)
        .map(|start| start..(start + size).min(rows))
        .collect()
}
