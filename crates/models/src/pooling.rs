//! Pooling token embeddings into one sentence embedding, as sentence-transformers does.
//!
//! A sentence-transformers folder says how to pool in `modules.json` (the module list),
//! `1_Pooling/config.json` (the modes) and the presence of a `Normalize` module; a plain BERT
//! folder gets sentence-transformers' default for such folders: mean pooling, no normalization.

use crate::{ModelError, Result};
use serde_json::Value;
use std::path::Path;
use tch::{Kind, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolingMode {
    /// The first token's ([CLS]) hidden state.
    Cls,
    /// The mean over real tokens.
    Mean,
    /// The element-wise max over real tokens.
    Max,
    /// The sum over real tokens divided by the square root of their count.
    MeanSqrtLen,
}

impl PoolingMode {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "cls" => PoolingMode::Cls,
            "mean" => PoolingMode::Mean,
            "max" => PoolingMode::Max,
            "mean_sqrt_len_tokens" => PoolingMode::MeanSqrtLen,
            _ => return None,
        })
    }
}

/// Modes (concatenated in order when there are several) and whether to L2-normalize the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pooling {
    pub modes: Vec<PoolingMode>,
    pub normalize: bool,
}

impl Default for Pooling {
    fn default() -> Self {
        Self {
            modes: vec![PoolingMode::Mean],
            normalize: false,
        }
    }
}

/// sentence-transformers' legacy boolean keys, in the order its `Pooling` concatenates them.
const LEGACY_KEYS: &[(&str, &str)] = &[
    ("pooling_mode_cls_token", "cls"),
    ("pooling_mode_max_tokens", "max"),
    ("pooling_mode_mean_tokens", "mean"),
    ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens"),
    ("pooling_mode_weightedmean_tokens", "weightedmean"),
    ("pooling_mode_lasttoken", "lasttoken"),
];

impl Pooling {
    pub fn new(mode: PoolingMode, normalize: bool) -> Self {
        Self {
            modes: vec![mode],
            normalize,
        }
    }

    /// Reads a sentence-transformers folder's pooling; `Ok(None)` when `dir` has no `modules.json`.
    pub fn from_sentence_transformers(dir: &Path) -> Result<Option<Self>> {
        let modules_path = dir.join("modules.json");
        if !modules_path.is_file() {
            return Ok(None);
        }
        let modules = read_json(&modules_path)?;
        let modules = modules
            .as_array()
            .ok_or_else(|| ModelError::format(&modules_path, "expected a JSON list of modules"))?;
        let mut pooling = None;
        let mut normalize = false;
        for (index, module) in modules.iter().enumerate() {
            let kind = module.get("type").and_then(Value::as_str).unwrap_or("");
            let folder = module.get("path").and_then(Value::as_str).unwrap_or("");
            match kind.rsplit('.').next().unwrap_or("") {
                "Transformer" => {}
                "Pooling" => {
                    let config_path = dir.join(folder).join("config.json");
                    pooling = Some(Self::modes_from_config(&config_path)?);
                }
                "Normalize" => normalize = true,
                other => {
                    return Err(ModelError::format(
                        &modules_path,
                        format!(
                            "module {index} is `{other}` ({kind}); ragtune handles Transformer, Pooling and Normalize"
                        ),
                    ))
                }
            }
        }
        let modes = pooling.ok_or_else(|| {
            ModelError::format(&modules_path, "no Pooling module, so no sentence embedding")
        })?;
        Ok(Some(Self { modes, normalize }))
    }

    fn modes_from_config(path: &Path) -> Result<Vec<PoolingMode>> {
        let config = read_json(path)?;
        let names: Vec<String> = match config.get("pooling_mode") {
            Some(Value::String(name)) => vec![name.clone()],
            Some(Value::Array(names)) => names
                .iter()
                .map(|n| n.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| ModelError::format(path, "`pooling_mode` must list strings"))?,
            Some(_) => {
                return Err(ModelError::format(
                    path,
                    "`pooling_mode` must be a string or a list",
                ))
            }
            None => {
                let active: Vec<String> = LEGACY_KEYS
                    .iter()
                    .filter(|(key, _)| config.get(*key).and_then(Value::as_bool) == Some(true))
                    .map(|(_, name)| name.to_string())
                    .collect();
                if active.is_empty() {
                    vec!["mean".into()]
                } else {
                    active
                }
            }
        };
        names
            .iter()
            .map(|name| {
                PoolingMode::from_name(name).ok_or_else(|| {
                    ModelError::format(
                        path,
                        format!("pooling mode `{name}` is not supported (cls, mean, max, mean_sqrt_len_tokens are)"),
                    )
                })
            })
            .collect()
    }

    /// Pools `[batch, seq, hidden]` token embeddings under a `[batch, seq]` 0/1 mask into
    /// `[batch, hidden * modes]`, in float32 whatever the input kind (as sentence-transformers
    /// accumulates), normalized when configured.
    pub fn pool(&self, token_embeddings: &Tensor, attention_mask: &Tensor) -> Tensor {
        let hidden = token_embeddings.to_kind(Kind::Float);
        let parts: Vec<Tensor> = self
            .modes
            .iter()
            .map(|mode| match mode {
                PoolingMode::Cls => cls_pool(&hidden),
                PoolingMode::Mean => mean_pool(&hidden, attention_mask),
                PoolingMode::Max => max_pool(&hidden, attention_mask),
                PoolingMode::MeanSqrtLen => {
                    let (sum, count) = masked_sum(&hidden, attention_mask);
                    sum / count.sqrt()
                }
            })
            .collect();
        let pooled = if parts.len() == 1 {
            parts.into_iter().next().expect("one part")
        } else {
            Tensor::cat(&parts, -1)
        };
        if self.normalize {
            l2_normalize(&pooled)
        } else {
            pooled
        }
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| ModelError::format(path, format!("invalid JSON: {e}")))
}

/// Sum over real tokens and their count (clamped at 1e-9, as sentence-transformers does).
fn masked_sum(hidden: &Tensor, attention_mask: &Tensor) -> (Tensor, Tensor) {
    let mask = attention_mask.unsqueeze(-1).to_kind(hidden.kind());
    let sum = (hidden * &mask).sum_dim_intlist(1, false, hidden.kind());
    let count = mask
        .sum_dim_intlist(1, false, hidden.kind())
        .clamp_min(1e-9);
    (sum, count)
}

/// The hidden state of the first token, which with right padding is always [CLS].
pub fn cls_pool(hidden: &Tensor) -> Tensor {
    hidden.select(1, 0)
}

/// Mean over real tokens: `sum(h * mask) / max(sum(mask), 1e-9)`.
pub fn mean_pool(hidden: &Tensor, attention_mask: &Tensor) -> Tensor {
    let (sum, count) = masked_sum(hidden, attention_mask);
    sum / count
}

/// Element-wise max over real tokens (padding is set to -inf first).
pub fn max_pool(hidden: &Tensor, attention_mask: &Tensor) -> Tensor {
    let padding = attention_mask.eq(0).unsqueeze(-1);
    hidden
        .masked_fill(&padding, f64::NEG_INFINITY)
        .amax([1], false)
}

/// `x / max(||x||, 1e-12)` along the last dimension, as `torch.nn.functional.normalize`.
pub fn l2_normalize(xs: &Tensor) -> Tensor {
    let norm = xs.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12);
    xs / norm
}
