//! PEFT on the BERT encoder: LoRA (with rsLoRA and DoRA), IA3 and bottleneck adapters, carried by
//! a [`BertModel`] (see [`BertModel::set_adapter`]). LoRA and IA3 files are Python PEFT's for
//! transformers' `BertModel` (`AutoModel`): `PeftModel.from_pretrained(AutoModel.from_pretrained(base),
//! dir)` loads them, with `task_type` null and keys such as
//! `base_model.model.encoder.layer.0.attention.self.query.lora_A.weight`.

use super::format::{self, ENCODER_TASKS};
use super::targets::bert_path;
use super::{
    BottleneckAdapter, BottleneckHost, Ia3Adapter, LoraAdapter, PeftConfig, Sublayer,
    ADAPTER_WEIGHTS_FILE,
};
use crate::bert::{BertModel, EncoderAdapter};
use crate::{ModelError, Result};
use serde_json::Value;
use std::path::Path;
use tch::nn;
use tch::{Device, Tensor};

/// One adapter on a BERT.
#[derive(Debug)]
pub enum EncoderPeft {
    Lora(LoraAdapter),
    Ia3(Ia3Adapter),
    Bottleneck(BottleneckAdapter),
}

impl EncoderPeft {
    /// A freshly initialized adapter for `model`, which it leaves unchanged (LoRA B = 0, IA3 = 1,
    /// bottleneck up-projection = 0). Prefix and prompt tuning are decoder-only here.
    pub fn new(config: &PeftConfig, model: &BertModel, device: Device) -> Result<Self> {
        Ok(match config {
            PeftConfig::Lora(c) => EncoderPeft::Lora(LoraAdapter::new(c.clone(), model, device)?),
            PeftConfig::Ia3(c) => EncoderPeft::Ia3(Ia3Adapter::new(c.clone(), model, device)?),
            PeftConfig::Bottleneck(c) => EncoderPeft::Bottleneck(BottleneckAdapter::new(
                c.clone(),
                BottleneckHost::bert(&model.config),
                device,
            )?),
            PeftConfig::PrefixTuning(_) | PeftConfig::PromptTuning(_) => {
                return Err(ModelError::Unsupported(
                    "prefix and prompt tuning on the BERT encoder (use LoRA, IA3 or a bottleneck adapter)"
                        .into(),
                ))
            }
        })
    }

    /// Reads an adapter folder written by ragtune or by Python PEFT for a `BertModel`.
    pub fn load(dir: &Path, model: &BertModel, device: Device) -> Result<Self> {
        let (path, json) = format::read_config_json(dir)?;
        let config = format::parse_config(&json, &path, ENCODER_TASKS)?;
        if let PeftConfig::Bottleneck(_) = config {
            BottleneckAdapter::check_host(&json, &BottleneckHost::bert(&model.config), &path)?;
        }
        let adapter = EncoderPeft::new(&config, model, device)?;
        let tensors = format::read_weights(dir, device)?;
        let weights = dir.join(ADAPTER_WEIGHTS_FILE);
        match &adapter {
            EncoderPeft::Lora(a) => a.load_peft_tensors(&tensors, &weights)?,
            EncoderPeft::Ia3(a) => a.load_peft_tensors(&tensors, &weights)?,
            EncoderPeft::Bottleneck(a) => a.load_peft_tensors(&tensors, &weights)?,
        }
        Ok(adapter)
    }

    /// Writes `adapter_config.json` and `adapter_model.safetensors` (atomically) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.save_with_base(dir, None)
    }

    /// As [`save`](Self::save), recording `base_model_name_or_path` (which lets
    /// transformers and sentence-transformers find the base from the adapter folder alone).
    pub fn save_with_base(&self, dir: &Path, base_model: Option<&str>) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        let (mut config, tensors) = match self {
            EncoderPeft::Lora(a) => (a.config.to_peft_json(), a.peft_tensors()),
            EncoderPeft::Ia3(a) => (a.config.to_peft_json(), a.peft_tensors()),
            EncoderPeft::Bottleneck(a) => (a.to_peft_json(), a.peft_tensors()),
        };
        config["task_type"] = Value::Null;
        config["base_model_name_or_path"] = base_model.map_or(Value::Null, Value::from);
        format::write(dir, &config, &tensors)
    }

    pub fn var_store(&self) -> &nn::VarStore {
        match self {
            EncoderPeft::Lora(a) => &a.var_store,
            EncoderPeft::Ia3(a) => &a.var_store,
            EncoderPeft::Bottleneck(a) => &a.var_store,
        }
    }

    /// Number of trainable adapter values.
    pub fn trainable_parameters(&self) -> i64 {
        super::count_trainable(self.var_store())
    }

    /// What merging would write, without touching `model`: the changed weights (and IA3-scaled
    /// biases) by Hugging Face variable name (`encoder.layer.0.attention.self.query.weight`).
    pub fn merged_weights(&self, model: &BertModel) -> Result<Vec<(String, Tensor)>> {
        match self {
            EncoderPeft::Lora(a) => a.merged_weights(model),
            EncoderPeft::Ia3(a) => a.merged_weights(model),
            EncoderPeft::Bottleneck(_) => Err(ModelError::Unsupported(
                "merging a bottleneck adapter into the weights (only LoRA and IA3 merge)".into(),
            )),
        }
    }

    /// Folds LoRA or IA3 into `model`'s weights; bottleneck adapters do not merge.
    fn merge_into(&self, model: &BertModel) -> Result<()> {
        match self {
            EncoderPeft::Lora(a) => a.merge_into(model),
            EncoderPeft::Ia3(a) => a.merge_into(model),
            EncoderPeft::Bottleneck(_) => Err(ModelError::Unsupported(
                "merging a bottleneck adapter into the weights (only LoRA and IA3 merge)".into(),
            )),
        }
    }
}

/// `merge_and_unload` for BERT: folds the model's LoRA or IA3 adapter into its weights and takes
/// it off, so the plain model computes what base + adapter computed. Returns the adapter.
pub fn merge_and_unload(model: &mut BertModel) -> Result<EncoderPeft> {
    let adapter = model
        .set_adapter(None)
        .ok_or_else(|| ModelError::Invalid("the model carries no adapter to merge".into()))?;
    if let Err(e) = adapter.merge_into(model) {
        model.set_adapter(Some(adapter));
        return Err(e);
    }
    Ok(adapter)
}

impl EncoderAdapter for EncoderPeft {
    fn project(
        &self,
        layer: Option<usize>,
        module: &str,
        xs: &Tensor,
        base: &nn::Linear,
        train: bool,
    ) -> Option<Tensor> {
        match self {
            EncoderPeft::Lora(a) => a.forward_module(&bert_path(layer, module), xs, base, train),
            EncoderPeft::Ia3(a) => a.forward_module(&bert_path(layer, module), xs, base),
            EncoderPeft::Bottleneck(_) => None,
        }
    }

    fn after_sublayer(
        &self,
        layer: usize,
        sublayer: Sublayer,
        xs: &Tensor,
        add_and_norm: &dyn Fn(&Tensor) -> Tensor,
        _train: bool,
    ) -> Option<Tensor> {
        match self {
            EncoderPeft::Bottleneck(a) => a.forward_sublayer(layer, sublayer, xs, add_and_norm),
            _ => None,
        }
    }
}
