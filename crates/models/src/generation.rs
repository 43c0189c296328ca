//! Autoregressive generation with a KV cache: greedy or temperature/top-p sampling, batched with
//! left padding (positions count real tokens only, padding is masked out), stopping on EOS.

use crate::llama::{KvCache, Llama};
use crate::{ModelError, Result};
use rand::{Rng, SeedableRng};
use tch::{Kind, Tensor};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// Always the most likely token (ties go to the lowest id, like torch.argmax).
    Greedy,
    /// Softmax at `temperature`, then sampling from the smallest set of tokens whose probability
    /// reaches `top_p` (nucleus sampling; `top_p = 1` keeps the whole vocabulary).
    TopP { temperature: f64, top_p: f64 },
}

impl Sampling {
    /// Greedy at temperature 0, nucleus sampling otherwise; rejects nonsense values.
    pub fn from_temperature(temperature: f64, top_p: f64) -> Result<Self> {
        if !(temperature >= 0.0 && temperature.is_finite()) {
            return Err(ModelError::Invalid(format!(
                "temperature {temperature}: expected a finite number ≥ 0"
            )));
        }
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ModelError::Invalid(format!(
                "top_p {top_p}: expected 0 < top_p ≤ 1"
            )));
        }
        Ok(if temperature == 0.0 {
            Sampling::Greedy
        } else {
            Sampling::TopP { temperature, top_p }
        })
    }
}

#[derive(Debug, Clone)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Row `i` of a batch samples from its own generator seeded with `seed + i`, so a prompt's
    /// output depends on its seed, not on what else is in the batch.
    pub seed: u64,
    /// Generation of a row stops at any of these.
    pub eos_token_ids: Vec<i64>,
    pub pad_token_id: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The new tokens, without the EOS that ended them.
    pub tokens: Vec<i64>,
    /// True when EOS ended the row, false when `max_new_tokens` did.
    pub stopped_on_eos: bool,
}

/// Left-pads `prompts` into `([batch, max_len] ids, [batch, max_len] 0/1 mask)` on `device`.
pub fn left_pad(prompts: &[Vec<i64>], pad_token_id: i64, device: tch::Device) -> (Tensor, Tensor) {
    let max_len = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(prompts.len() * max_len);
    let mut mask = Vec::with_capacity(prompts.len() * max_len);
    for p in prompts {
        let pad = max_len - p.len();
        ids.extend(std::iter::repeat_n(pad_token_id, pad).chain(p.iter().copied()));
        mask.extend(std::iter::repeat_n(0i64, pad).chain(std::iter::repeat_n(1, p.len())));
    }
    let shape = [prompts.len() as i64, max_len as i64];
    (
        Tensor::from_slice(&ids).reshape(shape).to_device(device),
        Tensor::from_slice(&mask).reshape(shape).to_device(device),
    )
}

/// Generates a continuation for every prompt (token ids, without padding), batched. Row `i`
/// samples with seed `config.seed + i`.
pub fn generate(
    model: &Llama,
    prompts: &[Vec<i64>],
    config: &GenerationConfig,
) -> Result<Vec<Generated>> {
    let seeds: Vec<u64> = (0..prompts.len() as u64)
        .map(|i| config.seed.wrapping_add(i))
        .collect();
    generate_seeded(model, prompts, &seeds, config)
}

/// Like `generate`, with each row's sampling seed given (`config.seed` is ignored), so callers that
/// reorder prompts into batches keep every prompt's sample reproducible.
pub fn generate_seeded(
    model: &Llama,
    prompts: &[Vec<i64>],
    row_seeds: &[u64],
    config: &GenerationConfig,
) -> Result<Vec<Generated>> {
    if row_seeds.len() != prompts.len() {
        return Err(ModelError::Invalid(format!(
            "{} seeds for {} prompts",
            row_seeds.len(),
            prompts.len()
        )));
    }
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        return Err(ModelError::Invalid(format!("prompt {i} has no tokens")));
    }
    let vocab = model.config.vocab_size;
    if let Some(bad) = prompts.iter().flatten().find(|&&t| t < 0 || t >= vocab) {
        return Err(ModelError::Invalid(format!(
            "token id {bad} is outside the vocabulary (size {vocab})"
        )));
    }
    let mut results: Vec<Generated> = prompts
        .iter()
        .map(|_| Generated {
            tokens: Vec::new(),
            stopped_on_eos: false,
        })
        .collect();
    if prompts.is_empty() || config.max_new_tokens == 0 {
        return Ok(results);
    }
    let device = model.embed_tokens.ws.device();
    let mut rngs: Vec<rand::rngs::StdRng> = row_seeds
        .iter()
        .map(|&s| rand::rngs::StdRng::seed_from_u64(s))
        .collect();
    tch::no_grad(|| {
        let (ids, mut mask) = left_pad(prompts, config.pad_token_id, device);
        let mut cache = KvCache::new(&model.config);
        let mut hidden = model.forward_hidden(&ids, Some(&mask), None, Some(&mut cache))?;
        let batch = prompts.len() as i64;
        let mut done = vec![false; prompts.len()];
        for step in 0..config.max_new_tokens {
            let last = hidden.select(1, hidden.size()[1] - 1);
            let logits = model.logits(&last).to_kind(Kind::Float);
            let next = choose(&logits, config.sampling, &mut rngs)?;
            let mut fed = Vec::with_capacity(next.len());
            for (row, &token) in next.iter().enumerate() {
                if done[row] {
                    fed.push(config.pad_token_id);
                } else if config.eos_token_ids.contains(&token) {
                    done[row] = true;
                    results[row].stopped_on_eos = true;
                    fed.push(config.pad_token_id);
                } else {
                    results[row].tokens.push(token);
                    fed.push(token);
                }
            }
            if done.iter().all(|&d| d) || step + 1 == config.max_new_tokens {
                break;
            }
            let fed = Tensor::from_slice(&fed)
                .reshape([batch, 1])
                .to_device(device);
            mask = Tensor::cat(
                &[&mask, &Tensor::ones([batch, 1], (Kind::Int64, device))],
                1,
            );
            hidden = model.forward_hidden(&fed, Some(&mask), None, Some(&mut cache))?;
        }
        Ok(results)
    })
}

/// The next token of every row of `logits` (`[batch, vocab]`, f32).
fn choose(
    logits: &Tensor,
    sampling: Sampling,
    rngs: &mut [rand::rngs::StdRng],
) -> Result<Vec<i64>> {
    match sampling {
        Sampling::Greedy => {
            let ids = logits.argmax(-1, false).to_device(tch::Device::Cpu);
            Ok(Vec::<i64>::try_from(&ids)?)
        }
        Sampling::TopP { temperature, top_p } => {
            let probs = (logits / temperature)
                .softmax(-1, Kind::Float)
                .to_device(tch::Device::Cpu);
            let (batch, vocab) = probs.size2()?;
            let flat = Vec::<f32>::try_from(&probs.reshape([-1]))?;
            Ok((0..batch as usize)
                .map(|row| {
                    let p = &flat[row * vocab as usize..(row + 1) * vocab as usize];
                    sample_top_p(p, top_p, &mut rngs[row])
                })
                .collect())
        }
    }
}

/// Samples from the nucleus of `probs`: tokens by falling probability until their sum reaches
/// `top_p` (at least one token), renormalised.
fn sample_top_p(probs: &[f32], top_p: f64, rng: &mut impl Rng) -> i64 {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_unstable_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    let mut kept = 0;
    let mut mass = 0.0f64;
    for &i in &order {
        kept += 1;
        mass += probs[i] as f64;
        if mass >= top_p {
            break;
        }
    }
    let mut target = rng.gen::<f64>() * mass;
    for &i in &order[..kept] {
        target -= probs[i] as f64;
        if target < 0.0 {
            return i as i64;
        }
    }
    order[kept - 1] as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_p_keeps_only_the_nucleus_and_is_seeded() {
        let probs = [0.05f32, 0.6, 0.3, 0.05];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let t = sample_top_p(&probs, 0.85, &mut rng);
            assert!(t == 1 || t == 2, "token {t} is outside the 0.85 nucleus");
        }
        let draw = |seed| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            (0..20)
                .map(|_| sample_top_p(&probs, 1.0, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert!(Sampling::from_temperature(-1.0, 0.9).is_err());
        assert!(Sampling::from_temperature(0.7, 0.0).is_err());
        assert_eq!(
            Sampling::from_temperature(0.0, 1.0).unwrap(),
            Sampling::Greedy
        );
    }

    #[test]
    fn left_pad_aligns_prompts_right() {
        let (ids, mask) = left_pad(&[vec![5, 6, 7], vec![9]], 0, tch::Device::Cpu);
        assert_eq!(
            Vec::<i64>::try_from(&ids.reshape([-1])).unwrap(),
            [5, 6, 7, 0, 0, 9]
        );
        assert_eq!(
            Vec::<i64>::try_from(&mask.reshape([-1])).unwrap(),
            [1, 1, 1, 0, 0, 1]
        );
    }
}
