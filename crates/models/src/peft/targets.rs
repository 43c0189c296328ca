//! Which projections an adapter wraps, chosen as Python PEFT chooses them: a list of names matches
//! a module whose full name equals a name or ends with `.name`; a single string is a regular
//! expression that must match the whole module name (`model.layers.3.self_attn.q_proj`,
//! `encoder.layer.0.attention.self.query`); `"all-linear"` takes every linear layer of the model
//! that is not an output head (the Llama's LM head is never wrapped; BERT's pooler is, as PEFT does).

use crate::bert::BertModel;
use crate::llama::Llama;
use crate::{ModelError, Result};
use serde::{Deserialize, Serialize};
use tch::nn;

/// The projections of one decoder layer, by their Hugging Face names.
pub const LLAMA_PROJECTIONS: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

/// The linear layers of one BERT layer, by their Hugging Face names (relative to `encoder.layer.N`).
pub const BERT_PROJECTIONS: [&str; 6] = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
];

/// BERT's pooler, outside the layer stack. Python's `AutoModel` always builds one, so PEFT wraps it
/// whenever the targets match `pooler.dense` (`"dense"`, `"all-linear"`).
pub const BERT_POOLER: &str = "pooler.dense";

/// A model whose linear layers adapters can wrap, each named as in Hugging Face (the names PEFT
/// matches targets against and writes its keys under).
pub trait AdapterHost {
    /// Every wrappable linear layer: `(full module name, layer)`, in model order.
    fn linear_modules(&self) -> Vec<(String, &nn::Linear)>;
    /// An example module name, for error messages.
    fn example_module(&self) -> &'static str;
    /// PEFT's default targets for this model type when a config names none: LoRA's, IA3's, and
    /// IA3's feed-forward subset (`TRANSFORMERS_MODELS_TO_*_TARGET_MODULES_MAPPING`).
    fn default_targets(&self) -> DefaultTargets;
}

/// Module names PEFT targets by default for one model type.
#[derive(Debug, Clone, Copy)]
pub struct DefaultTargets {
    pub lora: &'static [&'static str],
    pub ia3: &'static [&'static str],
    pub ia3_feedforward: &'static [&'static str],
}

impl DefaultTargets {
    pub fn names(list: &[&str]) -> TargetModules {
        TargetModules::Names(list.iter().map(|s| s.to_string()).collect())
    }
}

impl AdapterHost for Llama {
    fn linear_modules(&self) -> Vec<(String, &nn::Linear)> {
        let mut out = vec![];
        for layer in 0..self.layers.len() {
            for module in LLAMA_PROJECTIONS {
                let linear = projection(self, layer, module).expect("Llama projections exist");
                out.push((llama_path(layer, module), linear));
            }
        }
        out
    }

    fn example_module(&self) -> &'static str {
        "model.layers.0.self_attn.q_proj"
    }

    fn default_targets(&self) -> DefaultTargets {
        DefaultTargets {
            lora: &["q_proj", "v_proj"],
            ia3: &["k_proj", "v_proj", "down_proj"],
            ia3_feedforward: &["down_proj"],
        }
    }
}

impl AdapterHost for BertModel {
    fn linear_modules(&self) -> Vec<(String, &nn::Linear)> {
        self.linear_modules()
    }

    fn example_module(&self) -> &'static str {
        "encoder.layer.0.attention.self.query"
    }

    fn default_targets(&self) -> DefaultTargets {
        DefaultTargets {
            lora: &["query", "value"],
            ia3: &["key", "value", "output.dense"],
            ia3_feedforward: &["output.dense"],
        }
    }
}

/// `model.layers.{layer}.{module}`.
pub fn llama_path(layer: usize, module: &str) -> String {
    format!("model.layers.{layer}.{module}")
}

/// `encoder.layer.{layer}.{module}`, or `module` itself for modules outside the stack (the pooler).
pub fn bert_path(layer: Option<usize>, module: &str) -> String {
    match layer {
        Some(i) => format!("encoder.layer.{i}.{module}"),
        None => module.to_string(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// Module names or name suffixes (`["q_proj", "v_proj"]`).
    Names(Vec<String>),
    /// A regular expression over the full module name, or `"all-linear"`.
    Pattern(String),
}

impl TargetModules {
    pub fn matches(&self, module_path: &str) -> Result<bool> {
        Ok(match self {
            TargetModules::Names(names) => names
                .iter()
                .any(|n| module_path == n || module_path.ends_with(&format!(".{n}"))),
            TargetModules::Pattern(p) if p == "all-linear" => true,
            TargetModules::Pattern(p) => regex::Regex::new(&format!("^(?:{p})$"))
                .map_err(|e| ModelError::Invalid(format!("target_modules regex `{p}`: {e}")))?
                .is_match(module_path),
        })
    }

    /// `(full name, layer)` of every linear layer of `model` these targets select; an error when
    /// there is none, since an adapter that wraps nothing trains nothing.
    pub fn select<'a, H: AdapterHost>(
        &self,
        model: &'a H,
    ) -> Result<Vec<(String, &'a nn::Linear)>> {
        let mut out = vec![];
        for (path, linear) in model.linear_modules() {
            if self.matches(&path)? {
                out.push((path, linear));
            }
        }
        if out.is_empty() {
            return Err(ModelError::Invalid(format!(
                "target_modules {self:?} match no linear layer of the model (names look like {})",
                model.example_module()
            )));
        }
        Ok(out)
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            TargetModules::Names(n) => serde_json::json!(n),
            TargetModules::Pattern(p) => serde_json::json!(p),
        }
    }
}

/// The linear layer of `model` named `path`.
pub fn find_linear<'a, H: AdapterHost>(model: &'a H, path: &str) -> Option<&'a nn::Linear> {
    model
        .linear_modules()
        .into_iter()
        .find(|(p, _)| p == path)
        .map(|(_, l)| l)
}

/// The `nn::Linear` of projection `module` in layer `layer`.
pub fn projection<'a>(model: &'a Llama, layer: usize, module: &str) -> Option<&'a nn::Linear> {
    let l = model.layers.get(layer)?;
    Some(match module {
        "self_attn.q_proj" => &l.self_attn.q_proj,
        "self_attn.k_proj" => &l.self_attn.k_proj,
        "self_attn.v_proj" => &l.self_attn.v_proj,
        "self_attn.o_proj" => &l.self_attn.o_proj,
        "mlp.gate_proj" => &l.mlp.gate_proj,
        "mlp.up_proj" => &l.mlp.up_proj,
        "mlp.down_proj" => &l.mlp.down_proj,
        _ => return None,
    })
}
