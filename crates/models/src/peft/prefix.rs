//! Prefix tuning: learned keys and values for `num_virtual_tokens` extra positions in front of
//! every layer's attention. While training, the prefixes come from a small embedding through the
//! reparameterization MLP (`Linear → tanh → Linear`), which keeps optimization stable; saving
//! stores the MLP's output, `prompt_embeddings: [num_virtual_tokens, layers·2·kv_heads·head_dim]`,
//! as Python PEFT does, and a loaded adapter uses that table directly.

use super::copy_into;
use crate::llama::LlamaConfig;
use crate::{ModelError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixConfig {
    pub num_virtual_tokens: i64,
    /// Train through the reparameterization MLP.
    #[serde(default = "yes")]
    pub prefix_projection: bool,
    /// Hidden size of that MLP (PEFT's `encoder_hidden_size`; the key/value width when unset).
    #[serde(default)]
    pub encoder_hidden_size: Option<i64>,
}

fn yes() -> bool {
    true
}

#[derive(Debug)]
struct Projection {
    embedding: Tensor,
    first: nn::Linear,
    second: nn::Linear,
}

#[derive(Debug)]
pub struct PrefixAdapter {
    pub config: PrefixConfig,
    pub var_store: nn::VarStore,
    /// `[virtual, layers·2·token_dim]` when there is no projection, `[virtual, token_dim]` with one.
    embedding: Tensor,
    projection: Option<Projection>,
    layers: i64,
    kv_heads: i64,
    head_dim: i64,
}

impl PrefixAdapter {
    pub fn new(config: PrefixConfig, model: &LlamaConfig, device: Device) -> Result<Self> {
        Self::with_shape(
            config,
            model.num_hidden_layers,
            model.num_key_value_heads,
            model.head_dim,
            device,
        )
    }

    /// For any attention stack of `layers` layers with `kv_heads` key/value heads of `head_dim`.
    pub fn with_shape(
        config: PrefixConfig,
        layers: i64,
        kv_heads: i64,
        head_dim: i64,
        device: Device,
    ) -> Result<Self> {
        if config.num_virtual_tokens <= 0 {
            return Err(ModelError::Invalid(format!(
                "prefix tuning: num_virtual_tokens = {}, expected > 0",
                config.num_virtual_tokens
            )));
        }
        let var_store = nn::VarStore::new(device);
        let root = var_store.root();
        let token_dim = kv_heads * head_dim;
        let table = layers * 2 * token_dim;
        let n = config.num_virtual_tokens;
        let (embedding, projection) = if config.prefix_projection {
            let hidden = config.encoder_hidden_size.unwrap_or(token_dim);
            let p = &root / "prompt_encoder";
            let embedding = (&p / "embedding").var(
                "weight",
                &[n, token_dim],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            );
            let first = nn::linear(&p / "transform" / 0, token_dim, hidden, Default::default());
            let second = nn::linear(&p / "transform" / 2, hidden, table, Default::default());
            (
                embedding.shallow_clone(),
                Some(Projection {
                    embedding,
                    first,
                    second,
                }),
            )
        } else {
            let embedding = (&root / "prompt_encoder" / "embedding").var(
                "weight",
                &[n, table],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            );
            (embedding, None)
        };
        Ok(PrefixAdapter {
            config,
            var_store,
            embedding,
            projection,
            layers,
            kv_heads,
            head_dim,
        })
    }

    /// `[virtual, layers·2·token_dim]`: the per-layer keys and values, flattened.
    pub fn table(&self) -> Tensor {
        match &self.projection {
            Some(p) => p.second.forward(&p.first.forward(&p.embedding).tanh()),
            None => self.embedding.shallow_clone(),
        }
    }

    /// Per layer `(keys, values)`, each `[batch, kv_heads, virtual, head_dim]`, in PEFT's layout.
    pub fn key_values(&self, batch: i64, kind: Kind) -> Vec<(Tensor, Tensor)> {
        let n = self.config.num_virtual_tokens;
        let kv = self
            .table()
            .to_kind(kind)
            .view([n, self.layers * 2, self.kv_heads, self.head_dim])
            .permute([1, 2, 0, 3]);
        let expand = |t: Tensor| {
            t.unsqueeze(0)
                .expand([batch, self.kv_heads, n, self.head_dim], false)
        };
        (0..self.layers)
            .map(|i| (expand(kv.get(2 * i)), expand(kv.get(2 * i + 1))))
            .collect()
    }

    pub fn to_peft_json(&self) -> Value {
        json!({
            "peft_type": "PREFIX_TUNING",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": null,
            "inference_mode": true,
            "num_virtual_tokens": self.config.num_virtual_tokens,
            "num_layers": self.layers,
            "num_attention_heads": self.kv_heads,
            "token_dim": self.kv_heads * self.head_dim,
            "encoder_hidden_size": self.config.encoder_hidden_size.unwrap_or(self.kv_heads * self.head_dim),
            "prefix_projection": self.config.prefix_projection,
            "num_transformer_submodules": 1,
        })
    }

    pub fn from_peft_json(v: &Value, file: &Path) -> Result<PrefixConfig> {
        let n = v
            .get("num_virtual_tokens")
            .and_then(Value::as_i64)
            .ok_or_else(|| ModelError::format(file, "`num_virtual_tokens` is missing"))?;
        // A saved prefix is the MLP's output: loaded adapters use the table as it is.
        Ok(PrefixConfig {
            num_virtual_tokens: n,
            prefix_projection: false,
            encoder_hidden_size: None,
        })
    }

    pub fn peft_tensors(&self) -> Vec<(String, Tensor)> {
        vec![(
            "prompt_embeddings".to_string(),
            tch::no_grad(|| self.table().detach()),
        )]
    }

    pub fn load_peft_tensors(&self, tensors: &HashMap<String, Tensor>, file: &Path) -> Result<()> {
        if self.projection.is_some() {
            return Err(ModelError::Invalid(
                "a prefix adapter is loaded without its projection MLP".into(),
            ));
        }
        copy_into(
            &self.embedding,
            tensors.get("prompt_embeddings"),
            "prompt_embeddings",
            file,
        )?;
        super::format::reject_unused(
            tensors,
            &HashSet::from(["prompt_embeddings".to_string()]),
            file,
        )
    }
}
