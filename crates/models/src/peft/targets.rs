//! Which projections an adapter wraps, chosen as Python PEFT chooses them: a list of names matches
//! a module whose full name equals a name or ends with `.name`; a single string is a regular
//! expression that must match the whole module name (`model.layers.3.self_attn.q_proj`);
//! `"all-linear"` takes every projection of the decoder layers (never the LM head).

use crate::llama::Llama;
use crate::{ModelError, Result};
use serde::{Deserialize, Serialize};

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

    /// `(layer, module, full name)` of every projection of `model` these targets select; an error
    /// when there is none, since an adapter that wraps nothing trains nothing.
    pub fn select(&self, model: &Llama) -> Result<Vec<(usize, &'static str, String)>> {
        let mut out = vec![];
        for layer in 0..model.layers.len() {
            for module in LLAMA_PROJECTIONS {
                let path = format!("model.layers.{layer}.{module}");
                if self.matches(&path)? {
                    out.push((layer, module, path));
                }
            }
        }
        if out.is_empty() {
            return Err(ModelError::Invalid(format!(
                "target_modules {self:?} match no projection of the Llama (names look like model.layers.0.self_attn.q_proj)"
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

/// The `nn::Linear` of projection `module` in layer `layer`.
pub fn projection<'a>(model: &'a Llama, layer: usize, module: &str) -> Option<&'a tch::nn::Linear> {
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
