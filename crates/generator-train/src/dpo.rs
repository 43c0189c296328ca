//! DPO on preference pairs (prompt + passages, chosen, rejected). The reference model is the base
//! model itself with the adapter off: its log-probs are computed once, before training, and kept
//! (no second copy of the model in memory, no second forward per step).

use crate::loss::{dpo_loss, sequence_logps, DpoLossKind, DpoOutput};
use crate::prompt::PromptBuilder;
use crate::sft::{collate, SftExample, LOSS_CHUNK};
use crate::{GeneratorError, Result};
use ragtune_data::Preference;
use ragtune_models::llama_load::CausalLm;
use ragtune_models::peft::{self, Peft};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpoSettings {
    pub beta: f64,
    pub loss: DpoLossKind,
}

impl Default for DpoSettings {
    fn default() -> Self {
        DpoSettings {
            beta: 0.1,
            loss: DpoLossKind::Sigmoid,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PairExample {
    pub id: String,
    pub chosen: SftExample,
    pub rejected: SftExample,
    /// Reference log-probs of chosen and rejected, filled by [`reference_logps`].
    pub reference: Option<(f64, f64)>,
}

/// Tokenizes pairs; the preference's `context` (passages separated by blank lines) goes in the prompt.
pub fn build_pairs(prefs: &[Preference], builder: &PromptBuilder) -> Result<Vec<PairExample>> {
    prefs
        .iter()
        .map(|p| {
            let passages: Vec<String> = p
                .context
                .as_deref()
                .map(|c| c.split("\n\n").map(str::to_string).collect())
                .unwrap_or_default();
            let one = |answer: &str| -> Result<SftExample> {
                let enc = builder.encode(&p.prompt, &passages, Some(answer))?;
                let prompt_len = enc.prompt.len();
                let mut input_ids = enc.prompt;
                input_ids.extend(enc.answer);
                Ok(SftExample {
                    id: p.id.clone(),
                    input_ids,
                    prompt_len,
                })
            };
            Ok(PairExample {
                id: p.id.clone(),
                chosen: one(&p.chosen)?,
                rejected: one(&p.rejected)?,
                reference: None,
            })
        })
        .collect()
}

/// Summed completion log-probs and lengths of chosen and rejected for `pairs`, as tensors `[n]`.
pub fn pair_logps(
    lm: &CausalLm,
    adapter: Option<&Peft>,
    pairs: &[&PairExample],
    device: Device,
) -> Result<[Tensor; 4]> {
    let rows: Vec<&SftExample> = pairs
        .iter()
        .map(|p| &p.chosen)
        .chain(pairs.iter().map(|p| &p.rejected))
        .collect();
    let (ids, attention, completion) = collate(&rows, lm.tokenizer.pad_token_id(), device);
    let hidden = peft::forward_hidden(&lm.model, adapter, &ids, Some(&attention))?;
    let (sums, counts) = sequence_logps(&lm.model, &hidden, &ids, &completion, LOSS_CHUNK);
    let n = pairs.len() as i64;
    Ok([
        sums.narrow(0, 0, n),
        sums.narrow(0, n, n),
        counts.narrow(0, 0, n),
        counts.narrow(0, n, n),
    ])
}

/// Fills each pair's reference log-probs with the model as it is now, adapter off (call it before
/// attaching the adapter or after `set_adapter(None)`).
pub fn reference_logps(
    lm: &CausalLm,
    pairs: &mut [PairExample],
    batch_size: usize,
    device: Device,
) -> Result<()> {
    if lm.model.adapter().is_some() {
        return Err(GeneratorError::Invalid(
            "reference log-probs need the adapter off".into(),
        ));
    }
    for chunk in pairs.chunks_mut(batch_size.max(1)) {
        let refs: Vec<&PairExample> = chunk.iter().collect();
        let [c, r, _, _] = tch::no_grad(|| pair_logps(lm, None, &refs, device))?;
        let c = Vec::<f64>::try_from(c.to_kind(Kind::Double))?;
        let r = Vec::<f64>::try_from(r.to_kind(Kind::Double))?;
        for (p, (c, r)) in chunk.iter_mut().zip(c.into_iter().zip(r)) {
            p.reference = Some((c, r));
        }
    }
    Ok(())
}

/// The DPO loss (and rewards) of a batch of pairs under the policy (base + `adapter`).
pub fn batch_dpo(
    lm: &CausalLm,
    adapter: Option<&Peft>,
    pairs: &[&PairExample],
    settings: &DpoSettings,
    device: Device,
) -> Result<DpoOutput> {
    let mut reference = Vec::with_capacity(pairs.len() * 2);
    for p in pairs {
        let (c, r) = p.reference.ok_or_else(|| {
            GeneratorError::Invalid(format!("pair {}: no reference log-probs", p.id))
        })?;
        reference.push((c, r));
    }
    let rc = Tensor::from_slice(&reference.iter().map(|x| x.0 as f32).collect::<Vec<_>>())
        .to_device(device);
    let rr = Tensor::from_slice(&reference.iter().map(|x| x.1 as f32).collect::<Vec<_>>())
        .to_device(device);
    let [pc, pr, cl, rl] = pair_logps(lm, adapter, pairs, device)?;
    Ok(dpo_loss(
        settings.loss,
        settings.beta,
        &pc,
        &pr,
        &rc,
        &rr,
        &cl,
        &rl,
    ))
}
