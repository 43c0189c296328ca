//! Which parameters train, and how: layer-wise learning-rate decay, no weight decay on biases and
//! norms, and frozen layers — all decided from the parameters' names.

use crate::config::OptimizerConfig;
use crate::{Result, TrainerError};
use regex::Regex;
use std::collections::{BTreeMap, HashMap};
use tch::Tensor;

/// One trainable parameter with its own learning-rate multiplier and weight decay.
#[derive(Debug)]
pub struct TrainableParam {
    pub name: String,
    pub tensor: Tensor,
    /// Multiplies the scheduled learning rate (layer decay times head multiplier).
    pub lr_scale: f64,
    pub weight_decay: f64,
}

/// The outcome of grouping a model's variables.
#[derive(Debug)]
pub struct ParamPlan {
    /// Sorted by name, which fixes the order of every reduction over parameters.
    pub trainable: Vec<TrainableParam>,
    /// Names of the frozen floating-point parameters (no gradient, no optimizer state).
    pub frozen: Vec<String>,
}

fn compile(patterns: &[String], field: &str) -> Result<Vec<Regex>> {
    patterns
        .iter()
        .map(|p| {
            Regex::new(p).map_err(|e| {
                TrainerError::Config(format!("`optimizer.{field}`: pattern `{p}`: {e}"))
            })
        })
        .collect()
}

impl ParamPlan {
    /// Groups `variables` (as from `VarStore::variables()`) by the rules of `config`, and turns
    /// `requires_grad` off for the frozen ones. Integer tensors (position ids, ...) are ignored, and
    /// variables that already have `requires_grad` off stay frozen.
    pub fn new(variables: HashMap<String, Tensor>, config: &OptimizerConfig) -> Result<Self> {
        let layer_re = Regex::new(&config.layer_pattern)
            .map_err(|e| TrainerError::Config(format!("`optimizer.layer_pattern`: {e}")))?;
        if layer_re.captures_len() < 2 {
            return Err(TrainerError::Config(
                "`optimizer.layer_pattern` needs a capture group for the layer number".into(),
            ));
        }
        let embedding_re = Regex::new(&config.embedding_pattern)
            .map_err(|e| TrainerError::Config(format!("`optimizer.embedding_pattern`: {e}")))?;
        let head_res = compile(&config.head_patterns, "head_patterns")?;
        let no_decay_res = compile(&config.no_decay_patterns, "no_decay_patterns")?;
        let freeze_res = compile(&config.freeze_patterns, "freeze_patterns")?;
        let trainable_res = config
            .trainable_patterns
            .as_deref()
            .map(|p| compile(p, "trainable_patterns"))
            .transpose()?;

        let sorted: BTreeMap<String, Tensor> = variables
            .into_iter()
            .filter(|(_, t)| t.is_floating_point())
            .collect();
        let layer_of = |name: &str| -> Option<u64> {
            layer_re
                .captures(name)
                .and_then(|c| c.get(1))
                .and_then(|m| m.as_str().parse().ok())
        };
        let layers = sorted
            .keys()
            .filter_map(|n| layer_of(n))
            .max()
            .map_or(0, |m| m + 1);

        let mut plan = ParamPlan {
            trainable: Vec::new(),
            frozen: Vec::new(),
        };
        for (name, mut tensor) in sorted {
            let matches = |res: &[Regex]| res.iter().any(|r| r.is_match(&name));
            let frozen = !tensor.requires_grad()
                || matches(&freeze_res)
                || trainable_res.as_deref().is_some_and(|res| !matches(res));
            if frozen {
                tensor = tensor.set_requires_grad(false);
                drop(tensor);
                plan.frozen.push(name);
                continue;
            }
            // Layer ids: embeddings 0, layer i -> i + 1, everything above the layers -> layers + 1.
            let depth_below_top = if let Some(layer) = layer_of(&name) {
                layers - layer
            } else if embedding_re.is_match(&name) {
                layers + 1
            } else {
                0
            };
            let mut lr_scale = config.layer_decay.powi(depth_below_top as i32);
            if matches(&head_res) {
                lr_scale *= config.head_lr_multiplier;
            }
            let weight_decay = if matches(&no_decay_res) {
                0.0
            } else {
                config.weight_decay
            };
            plan.trainable.push(TrainableParam {
                name,
                tensor,
                lr_scale,
                weight_decay,
            });
        }
        if plan.trainable.is_empty() {
            return Err(TrainerError::Config(format!(
                "no trainable parameters left out of {} (check `optimizer.freeze_patterns` / `trainable_patterns`)",
                plan.frozen.len()
            )));
        }
        Ok(plan)
    }

    /// One line per (lr multiplier, weight decay) group: how many tensors and scalars it holds.
    pub fn summary(&self) -> String {
        let mut groups: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
        for p in &self.trainable {
            let entry = groups
                .entry((format!("{:.4}", p.lr_scale), format!("{}", p.weight_decay)))
                .or_default();
            entry.0 += 1;
            entry.1 += p.tensor.numel();
        }
        let mut out = String::from("lr x   weight_decay  tensors  params\n");
        for ((lr, wd), (tensors, numel)) in groups.iter().rev() {
            out.push_str(&format!("{lr:<6} {wd:<13} {tensors:>7}  {numel:>10}\n"));
        }
        out.push_str(&format!("frozen tensors: {}\n", self.frozen.len()));
        out
    }
}

/// Registers every variable of `from` in `into` under `prefix.` (same storage; trainable stays
/// trainable), so one trainer sees the variables of several models: two retriever towers, or a
/// query tower and a generator's adapter.
pub fn share_variables(into: &tch::nn::VarStore, prefix: &str, from: &tch::nn::VarStore) {
    let mut named: Vec<(String, Tensor)> = from.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, tensor) in named {
        // tch refuses dots in a variable name, so the dotted name becomes a path of sub-paths.
        let mut parts = name.split('.').collect::<Vec<_>>();
        let last = parts.pop().expect("a variable has a name");
        let path = parts
            .iter()
            .fold(into.root() / prefix, |path, part| path / *part);
        let trainable = tensor.requires_grad();
        let _registered = path.add(last, tensor.shallow_clone(), trainable);
    }
}
