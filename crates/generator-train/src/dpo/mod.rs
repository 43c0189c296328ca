//! DPO on preference pairs (question + passages, chosen, rejected), on the shared trainer.
//!
//! The policy is an adapter on the frozen base (fresh, or an SFT adapter trained further). The
//! reference is the base with the adapter off — no second copy of the model in memory — or the
//! SFT adapter as it was before DPO (a frozen second copy of the adapter only). Its log-probs are
//! either computed once and cached in Parquet ([`crate::ref_cache`]) or computed at every step.
//!
//! Rewards are TRL's implicit ones, `beta * (log pi(y|x) - log pi_ref(y|x))` summed over the
//! answer tokens, logged under TRL's names (`rewards/chosen`, `rewards/accuracies`, ...).

use crate::config::GeneratorConfig;
use crate::loss::{dpo_loss, sequence_logps, DpoLossKind, DpoOutput};
use crate::prompt::PromptBuilder;
use crate::ref_cache;
use crate::sft::{collate, SftExample, LOSS_CHUNK};
use crate::{GeneratorError, Result};
use ragtune_data::Preference;
use ragtune_models::llama_load::CausalLm;
use ragtune_models::peft::{self, Peft};
use ragtune_trainer::precision::autocast_bf16;
use ragtune_trainer::{Metrics, RunSummary, Trainer};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

mod recipe;
pub use recipe::{run, DpoReport, HeldOut};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpoSettings {
    pub beta: f64,
    pub loss: DpoLossKind,
    /// Training pairs: a dataset folder holding `preferences.parquet`, or the file itself.
    pub train_pairs: Option<PathBuf>,
    /// Held-out pairs (made from val/test questions) for reward accuracy before and after DPO.
    pub eval_pairs: Option<PathBuf>,
    /// Use at most this many training pairs.
    pub max_train_pairs: Option<usize>,
    /// Start from this SFT adapter folder and keep training it (none: a fresh `[peft]` adapter).
    pub sft_adapter: Option<PathBuf>,
    /// The model the rewards are measured against during training.
    pub reference: ReferenceModel,
    /// How the training reference log-probs are obtained.
    pub reference_logps: ReferenceLogps,
    /// The Parquet cache of reference log-probs (default: `<run dir>/reference_logps.parquet`).
    pub cache: Option<PathBuf>,
    /// Pairs per forward pass for reference and held-out log-probs.
    pub eval_batch_size: usize,
    /// Print the reward metrics above the progress bar every this many steps.
    pub log_every: u64,
}

impl Default for DpoSettings {
    fn default() -> Self {
        DpoSettings {
            beta: 0.1,
            loss: DpoLossKind::Sigmoid,
            train_pairs: None,
            eval_pairs: None,
            max_train_pairs: None,
            sft_adapter: None,
            reference: ReferenceModel::Base,
            reference_logps: ReferenceLogps::Cached,
            cache: None,
            eval_batch_size: 8,
            log_every: 5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceModel {
    /// The base model with the adapter off.
    Base,
    /// The SFT adapter (`sft_adapter`) as loaded, before any DPO step.
    Sft,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceLogps {
    /// Computed once before training, kept in the Parquet cache and reused while valid.
    Cached,
    /// Computed at every step with the reference adapter (or none) swapped in, without gradients.
    PerStep,
}

#[derive(Debug, Clone)]
pub struct PairExample {
    pub id: String,
    pub chosen: SftExample,
    pub rejected: SftExample,
    /// Reference log-probs of chosen and rejected, filled by [`fill_reference`].
    pub reference: Option<(f64, f64)>,
}

/// The preferences of a dataset folder (its `preferences.parquet`) or of a Parquet file.
pub fn read_preferences(path: &Path) -> Result<Vec<Preference>> {
    let file = if path.is_dir() {
        ragtune_data::dataset::table_path::<Preference>(path)
    } else {
        path.to_path_buf()
    };
    if !file.is_file() {
        return Err(GeneratorError::Config {
            path: file,
            message: "no preferences table here (make one with `ragtune generator make-pairs`)"
                .into(),
        });
    }
    Ok(ragtune_data::read_table::<Preference>(&file)?)
}

/// Tokenizes pairs; the preference's `context` (passages separated by blank lines) goes in the prompt.
pub fn build_pairs(prefs: &[Preference], builder: &PromptBuilder) -> Result<Vec<PairExample>> {
    prefs
        .iter()
        .map(|p| {
            let passages: Vec<String> = p
                .context
                .as_deref()
                .map(|c| {
                    c.split("\n\n")
                        .filter(|s| !s.trim().is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let chosen = builder.encode(&p.prompt, &passages, Some(&p.chosen))?;
            let rejected = builder.encode(&p.prompt, &passages, Some(&p.rejected))?;
            // The max-length policy cuts more context before the longer answer; both answers must
            // follow the same prompt (as TRL's shared prompt_ids), so both get the shorter one.
            let prompt = if chosen.prompt.len() <= rejected.prompt.len() {
                chosen.prompt
            } else {
                rejected.prompt
            };
            let one = |answer: Vec<i64>| SftExample {
                id: p.id.clone(),
                input_ids: prompt.iter().copied().chain(answer).collect(),
                prompt_len: prompt.len(),
            };
            Ok(PairExample {
                id: p.id.clone(),
                chosen: one(chosen.answer),
                rejected: one(rejected.answer),
                reference: None,
            })
        })
        .collect()
}

/// Summed completion log-probs and lengths of chosen and rejected for `pairs`, as tensors `[n]`,
/// under `lm` with `adapter` (attached already for LoRA/IA3). Chosen and rejected go through one
/// forward pass together, as TRL's `concatenated_forward` does.
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

/// Turns off gradients for every variable of `adapter` (a reference adapter must not train).
pub fn freeze_adapter(adapter: &Peft) {
    for (_, v) in adapter.var_store().variables() {
        let _ = v.set_requires_grad(false);
    }
}

/// Runs `f` with `adapter` on the model (none: the bare base), then puts back what was there.
pub fn with_adapter<T>(
    lm: &mut CausalLm,
    adapter: Option<&Peft>,
    f: impl FnOnce(&CausalLm) -> T,
) -> T {
    let previous = lm.model.adapter().cloned();
    match adapter {
        Some(a) => a.attach(&mut lm.model),
        None => lm.model.set_adapter(None),
    }
    let out = f(lm);
    lm.model.set_adapter(previous);
    out
}

/// Log-probs of chosen and rejected `[n]` each under `adapter`, without gradients.
fn logps_without_grad(
    lm: &mut CausalLm,
    adapter: Option<&Peft>,
    pairs: &[&PairExample],
    device: Device,
    bf16: bool,
) -> Result<(Tensor, Tensor)> {
    with_adapter(lm, adapter, |lm| {
        tch::no_grad(|| {
            autocast_bf16(device, bf16, || {
                let [c, r, _, _] = pair_logps(lm, adapter, pairs, device)?;
                Ok((c.to_kind(Kind::Double), r.to_kind(Kind::Double)))
            })
        })
    })
}

/// What [`fill_reference`] did with the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub reused: usize,
    pub computed: usize,
}

/// Fills every pair's reference log-probs under `reference` (an adapter, or none for the base).
/// With `cache`, rows whose key (`fingerprint` + the pair's tokens) matches are reused and the
/// new ones are added to the file.
#[allow(clippy::too_many_arguments)]
pub fn fill_reference(
    lm: &mut CausalLm,
    reference: Option<&Peft>,
    fingerprint: &str,
    pairs: &mut [PairExample],
    cache: Option<&Path>,
    batch_size: usize,
    device: Device,
    bf16: bool,
    mut on_batch: impl FnMut(usize),
) -> Result<CacheStats> {
    let mut rows = match cache {
        Some(path) => ref_cache::read(path)?,
        None => Default::default(),
    };
    let keys: Vec<(String, String)> = pairs
        .iter()
        .map(|p| {
            (
                p.id.clone(),
                ref_cache::pair_key(
                    fingerprint,
                    &p.chosen.input_ids,
                    p.chosen.prompt_len,
                    &p.rejected.input_ids,
                    p.rejected.prompt_len,
                ),
            )
        })
        .collect();
    let mut stats = CacheStats::default();
    let mut missing = vec![];
    for (i, (p, key)) in pairs.iter_mut().zip(&keys).enumerate() {
        match rows.get(key) {
            Some(&v) => {
                p.reference = Some(v);
                stats.reused += 1;
            }
            None => missing.push(i),
        }
    }
    for chunk in missing.chunks(batch_size.max(1)) {
        let batch: Vec<&PairExample> = chunk.iter().map(|&i| &pairs[i]).collect();
        let (c, r) = logps_without_grad(lm, reference, &batch, device, bf16)?;
        let (c, r) = (Vec::<f64>::try_from(c)?, Vec::<f64>::try_from(r)?);
        for (k, &i) in chunk.iter().enumerate() {
            pairs[i].reference = Some((c[k], r[k]));
            rows.insert(keys[i].clone(), (c[k], r[k]));
        }
        stats.computed += chunk.len();
        on_batch(chunk.len());
    }
    if let Some(path) = cache {
        if stats.computed > 0 {
            ref_cache::write(path, &rows)?;
        }
    }
    Ok(stats)
}

/// The fingerprint of a reference: the base weights, the reference adapter (if any), the dtype
/// and whether log-probs are taken under bf16 autocast.
pub fn reference_fingerprint(
    model: &Path,
    adapter: Option<&Path>,
    kind: Kind,
    bf16: bool,
) -> Result<String> {
    Ok(format!(
        "model={};adapter={};kind={kind:?};bf16={bf16};chunk={LOSS_CHUNK}",
        ref_cache::weights_fingerprint(model)?,
        match adapter {
            Some(a) => ref_cache::weights_fingerprint(a)?,
            None => "none".into(),
        }
    ))
}

fn reference_tensors(pairs: &[&PairExample], device: Device) -> Result<(Tensor, Tensor)> {
    let mut c = Vec::with_capacity(pairs.len());
    let mut r = Vec::with_capacity(pairs.len());
    for p in pairs {
        let (a, b) = p.reference.ok_or_else(|| {
            GeneratorError::Invalid(format!("pair {}: no reference log-probs", p.id))
        })?;
        c.push(a);
        r.push(b);
    }
    let t = |v: Vec<f64>| {
        Tensor::from_slice(&v)
            .to_kind(Kind::Float)
            .to_device(device)
    };
    Ok((t(c), t(r)))
}

/// The DPO loss (and rewards) of a batch under the policy (base + `adapter`, attached), against
/// the given reference log-probs `[n]`; also returns the policy log-probs (detached).
pub fn dpo_against(
    lm: &CausalLm,
    adapter: Option<&Peft>,
    pairs: &[&PairExample],
    settings: &DpoSettings,
    reference: (&Tensor, &Tensor),
    device: Device,
) -> Result<(DpoOutput, Tensor, Tensor)> {
    let [pc, pr, cl, rl] = pair_logps(lm, adapter, pairs, device)?;
    let (rc, rr) = (
        reference.0.to_kind(pc.kind()).to_device(device),
        reference.1.to_kind(pc.kind()).to_device(device),
    );
    let out = dpo_loss(settings.loss, settings.beta, &pc, &pr, &rc, &rr, &cl, &rl);
    Ok((out, pc.detach(), pr.detach()))
}

/// The DPO loss (and rewards) of a batch under the policy, against each pair's stored reference.
pub fn batch_dpo(
    lm: &CausalLm,
    adapter: Option<&Peft>,
    pairs: &[&PairExample],
    settings: &DpoSettings,
    device: Device,
) -> Result<DpoOutput> {
    let (rc, rr) = reference_tensors(pairs, device)?;
    Ok(dpo_against(lm, adapter, pairs, settings, (&rc, &rr), device)?.0)
}

/// Running sums of the per-pair quantities TRL logs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RewardMetrics {
    pub pairs: usize,
    pub loss: f64,
    pub chosen: f64,
    pub rejected: f64,
    pub accuracy: f64,
    pub margin: f64,
    pub logps_chosen: f64,
    pub logps_rejected: f64,
}

impl RewardMetrics {
    fn add(&mut self, out: &DpoOutput, pc: &Tensor, pr: &Tensor) -> Result<()> {
        let v = |t: &Tensor| -> Result<Vec<f64>> {
            Ok(Vec::<f64>::try_from(t.detach().to_kind(Kind::Double))?)
        };
        let (losses, c, r) = (
            v(&out.losses)?,
            v(&out.chosen_rewards)?,
            v(&out.rejected_rewards)?,
        );
        let (lc, lr) = (v(pc)?, v(pr)?);
        for i in 0..losses.len() {
            self.pairs += 1;
            self.loss += losses[i];
            self.chosen += c[i];
            self.rejected += r[i];
            // As TRL: strictly greater (equal rewards, as of a model against itself, count 0).
            self.accuracy += f64::from(u8::from(c[i] > r[i]));
            self.margin += c[i] - r[i];
            self.logps_chosen += lc[i];
            self.logps_rejected += lr[i];
        }
        Ok(())
    }

    /// Means, under TRL's names (with `prefix`, e.g. `eval/`).
    pub fn means(&self, prefix: &str) -> Metrics {
        let n = self.pairs.max(1) as f64;
        let mut m = BTreeMap::new();
        for (name, v) in [
            ("loss", self.loss),
            ("rewards/chosen", self.chosen),
            ("rewards/rejected", self.rejected),
            ("rewards/accuracies", self.accuracy),
            ("rewards/margins", self.margin),
            ("logps/chosen", self.logps_chosen),
            ("logps/rejected", self.logps_rejected),
        ] {
            m.insert(format!("{prefix}{name}"), v / n);
        }
        m
    }
}

/// Rewards of `policy` (none: the base) on `pairs` against their stored reference log-probs.
pub fn evaluate_pairs(
    lm: &mut CausalLm,
    policy: Option<&Peft>,
    pairs: &[PairExample],
    settings: &DpoSettings,
    device: Device,
    bf16: bool,
) -> Result<RewardMetrics> {
    if let Some(p) = policy {
        p.set_training(false);
    }
    let mut metrics = RewardMetrics::default();
    for chunk in pairs.chunks(settings.eval_batch_size.max(1)) {
        let batch: Vec<&PairExample> = chunk.iter().collect();
        let (rc, rr) = reference_tensors(&batch, device)?;
        let (out, pc, pr) = with_adapter(lm, policy, |lm| {
            tch::no_grad(|| {
                autocast_bf16(device, bf16, || {
                    dpo_against(lm, policy, &batch, settings, (&rc, &rr), device)
                })
            })
        })?;
        metrics.add(&out, &pc, &pr)?;
    }
    Ok(metrics)
}

/// Trains `policy` with DPO on `pairs` (whose reference log-probs are filled unless
/// `settings.reference_logps` is `PerStep`, where `reference` — an adapter or none for the base —
/// is swapped in at every step). `eval_pairs` (references filled) are scored when the trainer's
/// eval cadence says so. Base weights are frozen: no gradient, no AdamW state.
pub fn train(
    config: &GeneratorConfig,
    lm: &mut CausalLm,
    policy: &Peft,
    reference: Option<&Peft>,
    pairs: &[PairExample],
    eval_pairs: &[PairExample],
    device: Device,
) -> Result<RunSummary> {
    let settings = &config.dpo;
    if pairs.is_empty() {
        return Err(GeneratorError::Invalid("no training pairs".into()));
    }
    let per_step = settings.reference_logps == ReferenceLogps::PerStep;
    if !per_step {
        if let Some(p) = pairs.iter().find(|p| p.reference.is_none()) {
            return Err(GeneratorError::Invalid(format!(
                "pair {}: no cached reference log-probs",
                p.id
            )));
        }
    }
    lm.var_store.freeze();
    if let Some(r) = reference {
        for (name, v) in r.var_store().variables() {
            if v.requires_grad() {
                return Err(GeneratorError::Invalid(format!(
                    "the reference adapter's `{name}` is trainable; freeze it first"
                )));
            }
        }
    }
    policy.attach(&mut lm.model);
    let mut trainer = Trainer::new(config.trainer.clone(), policy.var_store(), pairs.len())?;
    let bf16 = trainer.uses_bf16();
    let lm = RefCell::new(lm);
    let started = std::time::Instant::now();
    let mut tokens = 0i64;
    let mut since_log = RewardMetrics::default();
    while !trainer.finished() {
        policy.set_training(true);
        let mut step = RewardMetrics::default();
        let report = trainer.train_step(
            |batch| -> Result<Tensor> {
                let rows: Vec<&PairExample> = batch.indices.iter().map(|&i| &pairs[i]).collect();
                tokens += rows
                    .iter()
                    .map(|p| (p.chosen.input_ids.len() + p.rejected.input_ids.len()) as i64)
                    .sum::<i64>();
                let mut lm = lm.borrow_mut();
                let (rc, rr) = if per_step {
                    // Already under the trainer's autocast, so reference and policy share a dtype.
                    with_adapter(&mut lm, reference, |lm| {
                        tch::no_grad(|| -> Result<(Tensor, Tensor)> {
                            let [c, r, _, _] = pair_logps(lm, reference, &rows, device)?;
                            Ok((c, r))
                        })
                    })?
                } else {
                    reference_tensors(&rows, device)?
                };
                let (out, pc, pr) =
                    dpo_against(&lm, Some(policy), &rows, settings, (&rc, &rr), device)?;
                step.add(&out, &pc, &pr)?;
                Ok(out.loss())
            },
            || -> Result<Metrics> {
                if eval_pairs.is_empty() {
                    return Ok(Metrics::new());
                }
                let mut lm = lm.borrow_mut();
                let m = evaluate_pairs(&mut lm, Some(policy), eval_pairs, settings, device, bf16)?;
                Ok(m.means("eval/"))
            },
        )?;
        let means = step.means("");
        let mut record = json!({"type": "dpo", "step": report.step});
        for (k, v) in &means {
            record[k] = json!(v);
        }
        trainer.log(&record)?;
        for (sum, add) in [
            (&mut since_log.loss, step.loss),
            (&mut since_log.chosen, step.chosen),
            (&mut since_log.rejected, step.rejected),
            (&mut since_log.accuracy, step.accuracy),
            (&mut since_log.margin, step.margin),
            (&mut since_log.logps_chosen, step.logps_chosen),
            (&mut since_log.logps_rejected, step.logps_rejected),
        ] {
            *sum += add;
        }
        since_log.pairs += step.pairs;
        if report.step % settings.log_every.max(1) == 0 || report.finished {
            let m = since_log.means("");
            trainer.println(format!(
                "step {} loss {:.4} rewards/accuracies {:.3} rewards/margins {:.4} rewards/chosen {:.4} rewards/rejected {:.4} logps/chosen {:.2} logps/rejected {:.2} lr {:.2e} ({:.1} tokens/s)",
                report.step,
                m["loss"],
                m["rewards/accuracies"],
                m["rewards/margins"],
                m["rewards/chosen"],
                m["rewards/rejected"],
                m["logps/chosen"],
                m["logps/rejected"],
                report.lr,
                tokens as f64 / started.elapsed().as_secs_f64()
            ));
            since_log = RewardMetrics::default();
        }
    }
    policy.set_training(false);
    Ok(trainer.finish()?)
}
