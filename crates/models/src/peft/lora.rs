//! LoRA: `y = W x + s · B A dropout(x)` with `A: [r, in]`, `B: [out, r]` and `s = alpha / r`
//! (rsLoRA: `alpha / sqrt(r)`). DoRA (optional) also learns a per-row magnitude `m` and rescales
//! the adapted weight to it, `m · (W + s B A) / ‖W + s B A‖`, the norm treated as a constant in
//! the backward pass as the paper and Python PEFT do.

use super::targets::{find_linear, llama_path, AdapterHost, DefaultTargets, TargetModules};
use super::{copy_into, peft_key};
use crate::llama::DecoderAdapter;
use crate::{ModelError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    pub r: i64,
    #[serde(default = "default_alpha")]
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    /// The model type's default (PEFT's: `q_proj`/`v_proj` on the Llama, `query`/`value` on
    /// BERT) when unset; an adapter's own config holds the resolved targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_modules: Option<TargetModules>,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub use_dora: bool,
}

fn default_alpha() -> f64 {
    16.0
}

impl LoraConfig {
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }

    /// `adapter_config.json` as Python PEFT writes it for a causal LM (encoders replace the
    /// task type).
    pub fn to_peft_json(&self) -> Value {
        json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": null,
            "inference_mode": true,
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "lora_dropout": self.lora_dropout,
            "target_modules": self.target_modules.as_ref().map(TargetModules::to_json),
            "use_rslora": self.use_rslora,
            "use_dora": self.use_dora,
            "bias": "none",
            "fan_in_fan_out": false,
            "init_lora_weights": true,
            "modules_to_save": null,
        })
    }

    /// Reads the fields ragtune supports from a PEFT `adapter_config.json`, refusing settings it
    /// would silently get wrong.
    pub fn from_peft_json(v: &Value, file: &Path) -> Result<Self> {
        let bad = |m: String| ModelError::format(file, m);
        if v.get("bias")
            .and_then(Value::as_str)
            .is_some_and(|b| b != "none")
        {
            return Err(bad(
                "LoRA with trained biases (bias != \"none\") is not supported".into(),
            ));
        }
        for unsupported in ["rank_pattern", "alpha_pattern"] {
            if v.get(unsupported)
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty())
            {
                return Err(bad(format!("`{unsupported}` is not supported")));
            }
        }
        if v.get("fan_in_fan_out").and_then(Value::as_bool) == Some(true) {
            return Err(bad(
                "fan_in_fan_out is not supported (Llama and BERT projections are [out, in])".into(),
            ));
        }
        let target_modules =
            serde_json::from_value(v.get("target_modules").cloned().unwrap_or(Value::Null))
                .map_err(|e| bad(format!("target_modules: {e}")))?;
        let target_modules: Option<TargetModules> = target_modules;
        Ok(LoraConfig {
            r: v.get("r")
                .and_then(Value::as_i64)
                .ok_or_else(|| bad("`r` is missing".into()))?,
            lora_alpha: v.get("lora_alpha").and_then(Value::as_f64).unwrap_or(8.0),
            lora_dropout: v.get("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0),
            target_modules,
            use_rslora: v
                .get("use_rslora")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            use_dora: v.get("use_dora").and_then(Value::as_bool).unwrap_or(false),
        })
    }
}

#[derive(Debug)]
struct LoraLayer {
    path: String,
    a: Tensor,
    b: Tensor,
    magnitude: Option<Tensor>,
}

#[derive(Debug)]
pub struct LoraAdapter {
    pub config: LoraConfig,
    pub var_store: nn::VarStore,
    /// By full module name (`model.layers.0.self_attn.q_proj`, `encoder.layer.0.attention.self.query`).
    layers: HashMap<String, LoraLayer>,
    training: AtomicBool,
}

impl LoraAdapter {
    /// A = Kaiming-uniform (as `nn.Linear`), B = 0, DoRA magnitude = row norms of W: the
    /// adapted model starts equal to the base.
    pub fn new<H: AdapterHost>(mut config: LoraConfig, model: &H, device: Device) -> Result<Self> {
        let targets = config
            .target_modules
            .get_or_insert_with(|| DefaultTargets::names(model.default_targets().lora))
            .clone();
        if config.r <= 0 {
            return Err(ModelError::Invalid(format!(
                "LoRA rank r = {}, expected > 0",
                config.r
            )));
        }
        if !(0.0..1.0).contains(&config.lora_dropout) {
            return Err(ModelError::Invalid(format!(
                "lora_dropout = {}, expected in [0, 1)",
                config.lora_dropout
            )));
        }
        let var_store = nn::VarStore::new(device);
        let mut layers = HashMap::new();
        for (path, base) in targets.select(model)? {
            let (out_dim, in_dim) = base.ws.size2()?;
            let mut p = var_store.root();
            for part in path.split('.') {
                p = &p / part;
            }
            let bound = 1.0 / (in_dim as f64).sqrt();
            let a = (&p / "lora_A").var(
                "weight",
                &[config.r, in_dim],
                nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            );
            let b = (&p / "lora_B").var("weight", &[out_dim, config.r], nn::Init::Const(0.0));
            let magnitude = config.use_dora.then(|| {
                let norms = tch::no_grad(|| {
                    base.ws
                        .to_kind(Kind::Float)
                        .norm_scalaropt_dim(2.0, [1], false)
                        .to_device(device)
                });
                (&p / "lora_magnitude_vector").var_copy("weight", &norms)
            });
            layers.insert(
                path.clone(),
                LoraLayer {
                    path,
                    a,
                    b,
                    magnitude,
                },
            );
        }
        Ok(LoraAdapter {
            config,
            var_store,
            layers,
            training: AtomicBool::new(false),
        })
    }

    pub fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }

    /// The tensors under the names Python PEFT saves them with.
    pub fn peft_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![];
        for l in self.sorted_layers() {
            out.push((peft_key(&l.path, "lora_A.weight"), l.a.shallow_clone()));
            out.push((peft_key(&l.path, "lora_B.weight"), l.b.shallow_clone()));
            if let Some(m) = &l.magnitude {
                out.push((
                    peft_key(&l.path, "lora_magnitude_vector"),
                    m.shallow_clone(),
                ));
            }
        }
        out
    }

    fn sorted_layers(&self) -> Vec<&LoraLayer> {
        let mut v: Vec<&LoraLayer> = self.layers.values().collect();
        v.sort_by(|x, y| x.path.cmp(&y.path));
        v
    }

    pub fn load_peft_tensors(&self, tensors: &HashMap<String, Tensor>, file: &Path) -> Result<()> {
        let mut used = HashSet::new();
        for (name, var) in self.peft_tensors() {
            copy_into(&var, tensors.get(&name), &name, file)?;
            used.insert(name);
        }
        super::format::reject_unused(tensors, &used, file)
    }

    /// The weight change `s · B A` of one layer (for DoRA, the full adapted weight minus W).
    fn delta(&self, l: &LoraLayer, w: &Tensor) -> Tensor {
        let lora = l.b.matmul(&l.a) * self.config.scaling();
        match &l.magnitude {
            None => lora,
            Some(m) => {
                let adapted = w.to_kind(Kind::Float) + lora;
                let norm = adapted.norm_scalaropt_dim(2.0, [1], true);
                &adapted * (m.unsqueeze(1) / norm) - w.to_kind(Kind::Float)
            }
        }
    }

    /// The merged weights without touching the model: `(module.weight, W + ΔW)` for every
    /// wrapped module, for writing a merged checkpoint while training goes on.
    pub fn merged_weights<H: AdapterHost>(&self, model: &H) -> Result<Vec<(String, Tensor)>> {
        tch::no_grad(|| {
            let mut out = vec![];
            for l in self.sorted_layers() {
                let base = find_linear(model, &l.path)
                    .ok_or_else(|| ModelError::Invalid(format!("the model has no {}", l.path)))?;
                let w = base.ws.to_kind(Kind::Float);
                let delta = self.delta(l, &base.ws).to_device(w.device());
                out.push((
                    format!("{}.weight", l.path),
                    (w + delta).to_kind(base.ws.kind()),
                ));
            }
            Ok(out)
        })
    }

    /// Folds the adapter into the base weights (`merge_and_unload`): afterwards the plain model
    /// computes what base + adapter computed. Detach the adapter from the model before using it.
    pub fn merge_into<H: AdapterHost>(&self, model: &H) -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            for l in self.layers.values() {
                let base = find_linear(model, &l.path)
                    .ok_or_else(|| ModelError::Invalid(format!("the model has no {}", l.path)))?;
                let delta = self.delta(l, &base.ws);
                let mut w = base.ws.shallow_clone();
                let _merged = w.f_add_(&delta.to_kind(w.kind()).to_device(w.device()))?;
            }
            Ok(())
        })
    }
}

impl LoraAdapter {
    /// `base(x)` plus the adapter's contribution for module `path`; `None` when the adapter does
    /// not wrap that module. Dropout applies when `training`.
    pub fn forward_module(
        &self,
        path: &str,
        xs: &Tensor,
        base: &nn::Linear,
        training: bool,
    ) -> Option<Tensor> {
        let l = self.layers.get(path)?;
        let out = base.forward(xs);
        let dropout = training && self.config.lora_dropout > 0.0;
        let dropped = if dropout {
            crate::dropout::dropout(xs, self.config.lora_dropout, true)
        } else {
            xs.shallow_clone()
        };
        let x = dropped.to_kind(l.a.kind());
        let lora =
            x.linear::<Tensor>(&l.a, None).linear::<Tensor>(&l.b, None) * self.config.scaling();
        Some(match &l.magnitude {
            None => out + lora.to_kind(xs.kind()),
            Some(m) => {
                let w = base.ws.to_kind(Kind::Float);
                let lora_w = l.b.matmul(&l.a).detach() * self.config.scaling();
                let norm = (w + lora_w).norm_scalaropt_dim(2.0, [1], false).detach();
                let scale = (m / norm).view([1, -1]);
                // PEFT rescales the base output without its bias (the bias is not part of W).
                let base_no_bias = if dropout {
                    dropped.linear::<Tensor>(&base.ws, None)
                } else {
                    match &base.bs {
                        Some(bias) => &out - bias,
                        None => out.shallow_clone(),
                    }
                };
                let extra = (&scale - 1.0) * base_no_bias.to_kind(Kind::Float) + scale * lora;
                out + extra.to_kind(xs.kind())
            }
        })
    }
}

impl DecoderAdapter for LoraAdapter {
    fn project(
        &self,
        layer: usize,
        module: &str,
        xs: &Tensor,
        base: &nn::Linear,
    ) -> Option<Tensor> {
        let training = self.training.load(Ordering::Relaxed);
        self.forward_module(&llama_path(layer, module), xs, base, training)
    }
}
