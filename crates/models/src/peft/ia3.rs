//! IA3: learned rescaling vectors. On attention projections (keys, values) the output is scaled,
//! `y = l ⊙ (W x)`; on feed-forward modules (`down_proj`) the input is, `y = W (l ⊙ x)`, as in
//! Python PEFT (`ia3_l` of shape `[out, 1]` or `[1, in]`, initialized to ones). A scaled output
//! scales the bias too, as PEFT's layer does (BERT's projections have biases, the Llama's do not).

use super::targets::{find_linear, llama_path, AdapterHost, DefaultTargets, TargetModules};
use super::{copy_into, peft_key};
use crate::llama::DecoderAdapter;
use crate::{ModelError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ia3Config {
    /// The model type's default when unset, as in PEFT (Llama: `k_proj`, `v_proj`, `down_proj`;
    /// BERT: `key`, `value`, `output.dense`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_modules: Option<TargetModules>,
    /// The subset of `target_modules` whose input (not output) is rescaled (default: `down_proj`
    /// on the Llama, `output.dense` on BERT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedforward_modules: Option<TargetModules>,
}

impl Ia3Config {
    pub fn to_peft_json(&self) -> Value {
        json!({
            "peft_type": "IA3",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": null,
            "inference_mode": true,
            "target_modules": self.target_modules.as_ref().map(TargetModules::to_json),
            "feedforward_modules": self.feedforward_modules.as_ref().map(TargetModules::to_json),
            "fan_in_fan_out": false,
            "init_ia3_weights": true,
            "modules_to_save": null,
        })
    }

    pub fn from_peft_json(v: &Value, file: &Path) -> Result<Self> {
        let field = |name: &str| -> Result<Option<TargetModules>> {
            match v.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => serde_json::from_value(x.clone())
                    .map(Some)
                    .map_err(|e| ModelError::format(file, format!("{name}: {e}"))),
            }
        };
        Ok(Ia3Config {
            target_modules: field("target_modules")?,
            feedforward_modules: field("feedforward_modules")?,
        })
    }
}

#[derive(Debug)]
struct Ia3Layer {
    path: String,
    scale: Tensor,
    feedforward: bool,
}

#[derive(Debug)]
pub struct Ia3Adapter {
    pub config: Ia3Config,
    pub var_store: nn::VarStore,
    /// By full module name.
    layers: HashMap<String, Ia3Layer>,
}

impl Ia3Adapter {
    pub fn new<H: AdapterHost>(mut config: Ia3Config, model: &H, device: Device) -> Result<Self> {
        let defaults = model.default_targets();
        let targets = config
            .target_modules
            .get_or_insert_with(|| DefaultTargets::names(defaults.ia3))
            .clone();
        let feedforward_modules = config
            .feedforward_modules
            .get_or_insert_with(|| DefaultTargets::names(defaults.ia3_feedforward))
            .clone();
        let var_store = nn::VarStore::new(device);
        let mut layers = HashMap::new();
        for (path, base) in targets.select(model)? {
            let (out_dim, in_dim) = base.ws.size2()?;
            let feedforward = feedforward_modules.matches(&path)?;
            let mut p = var_store.root();
            for part in path.split('.') {
                p = &p / part;
            }
            let shape = if feedforward {
                [1, in_dim]
            } else {
                [out_dim, 1]
            };
            let scale = p.var("ia3_l", &shape, nn::Init::Const(1.0));
            layers.insert(
                path.clone(),
                Ia3Layer {
                    path,
                    scale,
                    feedforward,
                },
            );
        }
        Ok(Ia3Adapter {
            config,
            var_store,
            layers,
        })
    }

    pub fn peft_tensors(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<&Ia3Layer> = self.layers.values().collect();
        v.sort_by(|x, y| x.path.cmp(&y.path));
        v.into_iter()
            .map(|l| (peft_key(&l.path, "ia3_l"), l.scale.shallow_clone()))
            .collect()
    }

    pub fn load_peft_tensors(&self, tensors: &HashMap<String, Tensor>, file: &Path) -> Result<()> {
        let mut used = HashSet::new();
        for (name, var) in self.peft_tensors() {
            copy_into(&var, tensors.get(&name), &name, file)?;
            used.insert(name);
        }
        super::format::reject_unused(tensors, &used, file)
    }

    /// The merged weights (and scaled biases) without touching the model, by variable name.
    pub fn merged_weights<H: AdapterHost>(&self, model: &H) -> Result<Vec<(String, Tensor)>> {
        tch::no_grad(|| {
            let mut layers: Vec<&Ia3Layer> = self.layers.values().collect();
            layers.sort_by(|x, y| x.path.cmp(&y.path));
            let mut out = vec![];
            for l in layers {
                let base = find_linear(model, &l.path)
                    .ok_or_else(|| ModelError::Invalid(format!("the model has no {}", l.path)))?;
                let scale = l.scale.to_device(base.ws.device());
                let w = (base.ws.to_kind(Kind::Float) * &scale).to_kind(base.ws.kind());
                out.push((format!("{}.weight", l.path), w));
                if let (false, Some(bias)) = (l.feedforward, &base.bs) {
                    let b = (bias.to_kind(Kind::Float) * scale.flatten(0, -1)).to_kind(bias.kind());
                    out.push((format!("{}.bias", l.path), b));
                }
            }
            Ok(out)
        })
    }

    /// Folds the scales into the weights: columns of W for feed-forward modules, rows (and the
    /// bias) otherwise.
    pub fn merge_into<H: AdapterHost>(&self, model: &H) -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            for l in self.layers.values() {
                let base = find_linear(model, &l.path)
                    .ok_or_else(|| ModelError::Invalid(format!("the model has no {}", l.path)))?;
                let mut w = base.ws.shallow_clone();
                let _scaled = w.f_mul_(&l.scale.to_kind(w.kind()).to_device(w.device()))?;
                if let (false, Some(bias)) = (l.feedforward, &base.bs) {
                    let mut b = bias.shallow_clone();
                    let scale = l
                        .scale
                        .flatten(0, -1)
                        .to_kind(b.kind())
                        .to_device(b.device());
                    let _scaled = b.f_mul_(&scale)?;
                }
            }
            Ok(())
        })
    }
}

impl Ia3Adapter {
    /// The rescaled output of module `path`; `None` when the adapter does not wrap it.
    pub fn forward_module(&self, path: &str, xs: &Tensor, base: &nn::Linear) -> Option<Tensor> {
        let l = self.layers.get(path)?;
        let scale = l.scale.flatten(0, -1);
        Some(if l.feedforward {
            base.forward(&(xs.to_kind(Kind::Float) * scale).to_kind(xs.kind()))
        } else {
            let out = base.forward(xs);
            (out.to_kind(Kind::Float) * scale).to_kind(xs.kind())
        })
    }
}

impl DecoderAdapter for Ia3Adapter {
    fn project(
        &self,
        layer: usize,
        module: &str,
        xs: &Tensor,
        base: &nn::Linear,
    ) -> Option<Tensor> {
        self.forward_module(&llama_path(layer, module), xs, base)
    }
}
