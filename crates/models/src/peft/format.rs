//! Python PEFT's on-disk format: `adapter_config.json` (the method and its settings, `peft_type`
//! naming the method) and `adapter_model.safetensors` (adapter weights only, by PEFT key names).
//! Bottleneck adapters, which PEFT lacks, use the same two files with `"peft_type": "BOTTLENECK"`.

use super::{BottleneckAdapter, Ia3Config, LoraConfig, PeftConfig, PrefixAdapter, PromptAdapter};
use crate::checkpoint::{atomic_write, load_safetensors, save_safetensors};
use crate::{ModelError, Result};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// The task types an adapter for a decoder may declare (PEFT writes `null` for a bare model).
pub const DECODER_TASKS: &[&str] = &["CAUSAL_LM"];
/// ... and for an encoder (`PeftModel` on `AutoModel` writes `null`).
pub const ENCODER_TASKS: &[&str] = &["FEATURE_EXTRACTION"];

/// `adapter_config.json` as JSON, with its path.
pub fn read_config_json(dir: &Path) -> Result<(PathBuf, Value)> {
    let path = dir.join(ADAPTER_CONFIG_FILE);
    let bytes = std::fs::read(&path).map_err(|e| ModelError::io(&path, e))?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ModelError::format(&path, format!("not JSON: {e}")))?;
    Ok((path, v))
}

/// The method and settings of an adapter config whose `task_type` is null or one of `tasks`.
pub fn parse_config(v: &Value, path: &Path, tasks: &[&str]) -> Result<PeftConfig> {
    if let Some(task) = v.get("task_type").and_then(Value::as_str) {
        if !tasks.contains(&task) {
            return Err(ModelError::format(
                path,
                format!("task_type `{task}`: this model takes adapters for {tasks:?} (or null)"),
            ));
        }
    }
    match v.get("peft_type").and_then(Value::as_str) {
        Some("LORA") => Ok(PeftConfig::Lora(LoraConfig::from_peft_json(v, path)?)),
        Some("IA3") => Ok(PeftConfig::Ia3(Ia3Config::from_peft_json(v, path)?)),
        Some("PREFIX_TUNING") => Ok(PeftConfig::PrefixTuning(PrefixAdapter::from_peft_json(
            v, path,
        )?)),
        Some("PROMPT_TUNING") => Ok(PeftConfig::PromptTuning(PromptAdapter::from_peft_json(
            v, path,
        )?)),
        Some("BOTTLENECK") => Ok(PeftConfig::Bottleneck(BottleneckAdapter::from_peft_json(
            v, path,
        )?)),
        Some(other) => Err(ModelError::format(
            path,
            format!(
                "peft_type `{other}` is not supported (LORA, IA3, PREFIX_TUNING, PROMPT_TUNING, BOTTLENECK)"
            ),
        )),
        None => Err(ModelError::format(path, "`peft_type` is missing")),
    }
}

/// The config of a decoder adapter folder.
pub fn read_config(dir: &Path) -> Result<PeftConfig> {
    let (path, v) = read_config_json(dir)?;
    parse_config(&v, &path, DECODER_TASKS)
}

pub fn read_weights(dir: &Path, device: Device) -> Result<HashMap<String, Tensor>> {
    let path = dir.join(ADAPTER_WEIGHTS_FILE);
    if !path.exists() {
        let bin = dir.join("adapter_model.bin");
        if bin.exists() {
            crate::checkpoint::refuse_pickle(&bin)?;
        }
    }
    load_safetensors(&path, device)
}

/// Both files, each written atomically.
pub fn write(dir: &Path, config: &Value, tensors: &[(String, Tensor)]) -> Result<()> {
    let detached: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.detach().to_device(Device::Cpu).contiguous()))
        .collect();
    save_safetensors(&dir.join(ADAPTER_WEIGHTS_FILE), &detached)?;
    let text = serde_json::to_vec_pretty(config).map_err(|e| ModelError::Invalid(e.to_string()))?;
    atomic_write(&dir.join(ADAPTER_CONFIG_FILE), &text)
}

/// Tensors in the file that the adapter has no place for mean the config and the weights disagree.
pub fn reject_unused(
    tensors: &HashMap<String, Tensor>,
    used: &HashSet<String>,
    file: &Path,
) -> Result<()> {
    let mut extra: Vec<&String> = tensors.keys().filter(|k| !used.contains(*k)).collect();
    if extra.is_empty() {
        return Ok(());
    }
    extra.sort();
    Err(ModelError::format(
        file,
        format!(
            "tensors the adapter config has no place for: {:?}",
            &extra[..extra.len().min(5)]
        ),
    ))
}
