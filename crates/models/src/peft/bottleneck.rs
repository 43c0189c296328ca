//! Bottleneck adapters (Houlsby et al., 2019; Pfeiffer et al., 2021): a small MLP with a
//! residual, `h + up(f(down(a)))`, on a sublayer's output `h` before the model's own residual add
//! (and, in BERT, its layer norm). Houlsby placement puts one after attention and one after the
//! feed-forward block; Pfeiffer placement only after the feed-forward block.
//!
//! The semantics are AdapterHub's (`adapters` 1.3: `DoubleSeqBnConfig` = Houlsby, `SeqBnConfig` =
//! Pfeiffer, both with `residual_before_ln = True`): the adapter's residual is the sublayer output
//! `h`; its input `a` is `h` itself for Houlsby, and for Pfeiffer (`original_ln_before = True`)
//! what the layer would compute next from `h` (BERT: `LayerNorm(h + x)`, the Llama: `h + x`),
//! after which the layer still adds and normalizes as usual. Defaults as there: swish for
//! Houlsby, ReLU for Pfeiffer, reduction factor 16. Initialization is AdapterHub's
//! `init_weights = "mam_adapter"`: Kaiming-uniform down-projection with zero bias, zero
//! up-projection, so a fresh adapter leaves the model unchanged. (A parity test against
//! `adapters` is not possible here: it requires transformers 4.57.)
//!
//! PEFT has no bottleneck adapters, so the files are ragtune's own, in PEFT's layout:
//! `adapter_config.json` with `"peft_type": "BOTTLENECK"` (plus `placement`, `bottleneck_size`,
//! `non_linearity`, `original_ln_before`, `hidden_size`, `num_layers`) and `adapter_model.safetensors` with
//! `base_model.model.<sublayer>.bottleneck.adapter_{down,up}.{weight,bias}`, where `<sublayer>` is
//! `encoder.layer.N.attention.output` / `encoder.layer.N.output` for BERT and
//! `model.layers.N.self_attn` / `model.layers.N.mlp` for the Llama. Python PEFT cannot load them.

use super::{copy_into, peft_key};
use crate::{ModelError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use tch::nn::{self, Module};
use tch::{Device, Tensor};

/// The two places in a transformer layer where a bottleneck adapter can sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sublayer {
    /// The self-attention block's output.
    Attention,
    /// The feed-forward block's output.
    FeedForward,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// After attention and after the feed-forward block.
    #[default]
    Houlsby,
    /// After the feed-forward block only.
    Pfeiffer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonLinearity {
    Relu,
    /// SiLU, `x · sigmoid(x)`.
    Swish,
    Gelu,
    Tanh,
}

impl NonLinearity {
    fn apply(self, xs: &Tensor) -> Tensor {
        match self {
            NonLinearity::Relu => xs.relu(),
            NonLinearity::Swish => xs.silu(),
            NonLinearity::Gelu => xs.gelu("none"),
            NonLinearity::Tanh => xs.tanh(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BottleneckConfig {
    #[serde(default)]
    pub placement: Placement,
    /// Bottleneck width = hidden size / reduction factor (AdapterHub's default, 16).
    #[serde(default = "default_reduction")]
    pub reduction_factor: i64,
    /// An explicit bottleneck width, overriding `reduction_factor`.
    #[serde(default)]
    pub bottleneck_size: Option<i64>,
    /// Swish for Houlsby and ReLU for Pfeiffer when unset, as in AdapterHub.
    #[serde(default)]
    pub non_linearity: Option<NonLinearity>,
    /// Feed the adapter what the layer computes next from the sublayer output (AdapterHub's
    /// `original_ln_before`); true for Pfeiffer and false for Houlsby when unset.
    #[serde(default)]
    pub original_ln_before: Option<bool>,
}

fn default_reduction() -> i64 {
    16
}

impl BottleneckConfig {
    pub fn size(&self, hidden: i64) -> Result<i64> {
        let size = match self.bottleneck_size {
            Some(s) => s,
            None if self.reduction_factor > 0 => (hidden / self.reduction_factor).max(1),
            None => {
                return Err(ModelError::Invalid(format!(
                    "bottleneck adapter: reduction_factor = {}, expected > 0",
                    self.reduction_factor
                )))
            }
        };
        if size <= 0 {
            return Err(ModelError::Invalid(format!(
                "bottleneck adapter: bottleneck_size = {size}, expected > 0"
            )));
        }
        Ok(size)
    }

    pub fn activation(&self) -> NonLinearity {
        self.non_linearity.unwrap_or(match self.placement {
            Placement::Houlsby => NonLinearity::Swish,
            Placement::Pfeiffer => NonLinearity::Relu,
        })
    }

    pub fn ln_before(&self) -> bool {
        self.original_ln_before
            .unwrap_or(self.placement == Placement::Pfeiffer)
    }

    pub fn sublayers(&self) -> &'static [Sublayer] {
        match self.placement {
            Placement::Houlsby => &[Sublayer::Attention, Sublayer::FeedForward],
            Placement::Pfeiffer => &[Sublayer::FeedForward],
        }
    }
}

/// Where the adapters go in a model: its depth, width and the name of each sublayer.
#[derive(Debug, Clone, Copy)]
pub struct BottleneckHost {
    pub num_layers: usize,
    pub hidden_size: i64,
    /// Hugging Face module name of a sublayer (the adapter's keys go under it).
    pub sublayer_path: fn(usize, Sublayer) -> String,
}

impl BottleneckHost {
    pub fn bert(config: &crate::bert::BertConfig) -> Self {
        BottleneckHost {
            num_layers: config.num_hidden_layers as usize,
            hidden_size: config.hidden_size,
            sublayer_path: |i, s| match s {
                Sublayer::Attention => format!("encoder.layer.{i}.attention.output"),
                Sublayer::FeedForward => format!("encoder.layer.{i}.output"),
            },
        }
    }

    pub fn llama(config: &crate::llama::LlamaConfig) -> Self {
        BottleneckHost {
            num_layers: config.num_hidden_layers as usize,
            hidden_size: config.hidden_size,
            sublayer_path: |i, s| match s {
                Sublayer::Attention => format!("model.layers.{i}.self_attn"),
                Sublayer::FeedForward => format!("model.layers.{i}.mlp"),
            },
        }
    }
}

#[derive(Debug)]
struct Block {
    path: String,
    down: nn::Linear,
    up: nn::Linear,
}

#[derive(Debug)]
pub struct BottleneckAdapter {
    pub config: BottleneckConfig,
    pub var_store: nn::VarStore,
    blocks: HashMap<(usize, SublayerKey), Block>,
    activation: NonLinearity,
    size: i64,
    host: BottleneckHost,
}

/// `Sublayer` as a map key.
type SublayerKey = bool;

fn key(layer: usize, sublayer: Sublayer) -> (usize, SublayerKey) {
    (layer, sublayer == Sublayer::Attention)
}

impl BottleneckAdapter {
    pub fn new(config: BottleneckConfig, host: BottleneckHost, device: Device) -> Result<Self> {
        let size = config.size(host.hidden_size)?;
        let var_store = nn::VarStore::new(device);
        let mut blocks = HashMap::new();
        let zero = nn::LinearConfig {
            ws_init: nn::Init::Const(0.0),
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        };
        let kaiming = nn::LinearConfig {
            bs_init: Some(nn::Init::Const(0.0)),
            ..Default::default()
        };
        for layer in 0..host.num_layers {
            for &sublayer in config.sublayers() {
                let path = format!("{}.bottleneck", (host.sublayer_path)(layer, sublayer));
                let mut p = var_store.root();
                for part in path.split('.') {
                    p = &p / part;
                }
                let down = nn::linear(&p / "adapter_down", host.hidden_size, size, kaiming);
                let up = nn::linear(&p / "adapter_up", size, host.hidden_size, zero);
                blocks.insert(key(layer, sublayer), Block { path, down, up });
            }
        }
        Ok(BottleneckAdapter {
            activation: config.activation(),
            config,
            var_store,
            blocks,
            size,
            host,
        })
    }

    /// `xs + up(f(down(a)))` for the adapter at (`layer`, `sublayer`), `a` being `xs` or, with
    /// `original_ln_before`, `next(xs)` (the layer's own residual add and norm); `None` where there
    /// is no adapter.
    pub fn forward_sublayer(
        &self,
        layer: usize,
        sublayer: Sublayer,
        xs: &Tensor,
        next: &dyn Fn(&Tensor) -> Tensor,
    ) -> Option<Tensor> {
        let block = self.blocks.get(&key(layer, sublayer))?;
        let input = if self.config.ln_before() {
            next(xs)
        } else {
            xs.shallow_clone()
        };
        let x = input.to_kind(block.down.ws.kind());
        let delta = block
            .up
            .forward(&self.activation.apply(&block.down.forward(&x)));
        Some(xs + delta.to_kind(xs.kind()))
    }

    pub fn to_peft_json(&self) -> Value {
        json!({
            "peft_type": "BOTTLENECK",
            "format": "ragtune (PEFT has no bottleneck adapters)",
            "task_type": null,
            "base_model_name_or_path": null,
            "inference_mode": true,
            "placement": self.config.placement,
            "bottleneck_size": self.size,
            "reduction_factor": self.config.reduction_factor,
            "non_linearity": self.activation,
            "original_ln_before": self.config.ln_before(),
            "hidden_size": self.host.hidden_size,
            "num_layers": self.host.num_layers,
        })
    }

    /// The config of a saved adapter; its `hidden_size` and `num_layers` are checked against the
    /// model when the weights are loaded.
    pub fn from_peft_json(v: &Value, file: &Path) -> Result<BottleneckConfig> {
        let field = |name: &str| v.get(name).cloned().unwrap_or(Value::Null);
        let bad =
            |name: &str, e: serde_json::Error| ModelError::format(file, format!("{name}: {e}"));
        let size = v
            .get("bottleneck_size")
            .and_then(Value::as_i64)
            .ok_or_else(|| ModelError::format(file, "`bottleneck_size` is missing"))?;
        Ok(BottleneckConfig {
            placement: serde_json::from_value(field("placement"))
                .map_err(|e| bad("placement", e))?,
            reduction_factor: v
                .get("reduction_factor")
                .and_then(Value::as_i64)
                .unwrap_or_else(default_reduction),
            bottleneck_size: Some(size),
            non_linearity: serde_json::from_value(field("non_linearity"))
                .map_err(|e| bad("non_linearity", e))?,
            original_ln_before: v.get("original_ln_before").and_then(Value::as_bool),
        })
    }

    pub fn peft_tensors(&self) -> Vec<(String, Tensor)> {
        let mut blocks: Vec<&Block> = self.blocks.values().collect();
        blocks.sort_by(|a, b| a.path.cmp(&b.path));
        let mut out = vec![];
        for b in blocks {
            for (name, linear) in [("adapter_down", &b.down), ("adapter_up", &b.up)] {
                out.push((
                    peft_key(&b.path, &format!("{name}.weight")),
                    linear.ws.shallow_clone(),
                ));
                let bias = linear.bs.as_ref().expect("bottleneck layers have biases");
                out.push((
                    peft_key(&b.path, &format!("{name}.bias")),
                    bias.shallow_clone(),
                ));
            }
        }
        out
    }

    pub fn load_peft_tensors(&self, tensors: &HashMap<String, Tensor>, file: &Path) -> Result<()> {
        let mut used = HashSet::new();
        for (name, var) in self.peft_tensors() {
            copy_into(&var, tensors.get(&name), &name, file)?;
            used.insert(name);
        }
        super::format::reject_unused(tensors, &used, file)
    }

    /// Checks a saved config's model shape against the model it is loaded onto.
    pub(crate) fn check_host(v: &Value, host: &BottleneckHost, file: &Path) -> Result<()> {
        for (name, want) in [
            ("hidden_size", host.hidden_size),
            ("num_layers", host.num_layers as i64),
        ] {
            if let Some(got) = v.get(name).and_then(Value::as_i64) {
                if got != want {
                    return Err(ModelError::format(
                        file,
                        format!("bottleneck adapter for {name} = {got}, the model has {want}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl crate::llama::DecoderAdapter for BottleneckAdapter {
    fn project(
        &self,
        _layer: usize,
        _module: &str,
        _xs: &Tensor,
        _base: &nn::Linear,
    ) -> Option<Tensor> {
        None
    }

    fn after_sublayer(
        &self,
        layer: usize,
        sublayer: Sublayer,
        xs: &Tensor,
        residual_add: &dyn Fn(&Tensor) -> Tensor,
    ) -> Option<Tensor> {
        self.forward_sublayer(layer, sublayer, xs, residual_add)
    }
}
