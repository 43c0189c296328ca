//! PEFT on the BERT encoder: LoRA (with rsLoRA and DoRA), IA3, bottleneck adapters, prompt tuning
//! and prefix tuning, carried by a [`BertModel`] (see [`BertModel::set_adapter`]). The files are
//! Python PEFT's for transformers' `BertModel` (`AutoModel`):
//! `PeftModel.from_pretrained(AutoModel.from_pretrained(base), dir)` loads them. LoRA and IA3 are
//! saved with `task_type` null and keys such as
//! `base_model.model.encoder.layer.0.attention.self.query.lora_A.weight`. Prompt and prefix tuning
//! are saved with `task_type` `FEATURE_EXTRACTION` and the one key `prompt_embeddings`: only that
//! task type makes `from_pretrained` build `PeftModelForFeatureExtraction`, whose forward adds the
//! virtual tokens; the plain `PeftModel` it builds for `null` runs the base model and ignores them.

use super::format::{self, ENCODER_TASKS};
use super::targets::bert_path;
use super::{
    BottleneckAdapter, BottleneckHost, Ia3Adapter, LoraAdapter, PeftConfig, PrefixAdapter,
    PromptAdapter, Sublayer, ADAPTER_WEIGHTS_FILE,
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
    Prompt(PromptAdapter),
    Prefix(PrefixAdapter),
}

/// What Python PEFT needs in `task_type` to run prompt and prefix tuning on an encoder.
const PROMPT_LEARNING_TASK: &str = "FEATURE_EXTRACTION";

impl EncoderPeft {
    /// A freshly initialized adapter for `model`. LoRA, IA3 and bottleneck adapters leave it
    /// unchanged (LoRA B = 0, IA3 = 1, bottleneck up-projection = 0); prompt and prefix tuning
    /// start at random. A prompt-tuning config with `init_text` needs that text's token ids:
    /// use [`new_with_init_text`](Self::new_with_init_text).
    pub fn new(config: &PeftConfig, model: &BertModel, device: Device) -> Result<Self> {
        Self::new_with_init_text(config, model, device, None)
    }

    /// As [`new`](Self::new); `init_text_ids` are the tokens of a prompt-tuning `init_text`, as
    /// Python PEFT takes them: the tokenizer's ids of the text with its special tokens
    /// (`[CLS] ... [SEP]` for BERT), repeated or cut to `num_virtual_tokens`.
    pub fn new_with_init_text(
        config: &PeftConfig,
        model: &BertModel,
        device: Device,
        init_text_ids: Option<&[i64]>,
    ) -> Result<Self> {
        Ok(match config {
            PeftConfig::Lora(c) => EncoderPeft::Lora(LoraAdapter::new(c.clone(), model, device)?),
            PeftConfig::Ia3(c) => EncoderPeft::Ia3(Ia3Adapter::new(c.clone(), model, device)?),
            PeftConfig::Bottleneck(c) => EncoderPeft::Bottleneck(BottleneckAdapter::new(
                c.clone(),
                BottleneckHost::bert(&model.config),
                device,
            )?),
            PeftConfig::PromptTuning(c) => {
                if c.init_text.is_some() && init_text_ids.is_none() {
                    return Err(ModelError::Invalid(
                        "prompt tuning: `init_text` is set but its token ids were not given; build the adapter with EncoderPeft::new_with_init_text and the tokenizer's ids of the text (or drop `init_text` for a random start)"
                            .into(),
                    ));
                }
                EncoderPeft::Prompt(PromptAdapter::from_word_embeddings(
                    c.clone(),
                    &model.embeddings.word_embeddings.ws,
                    device,
                    init_text_ids,
                )?)
            }
            PeftConfig::PrefixTuning(c) => {
                let heads = model.config.num_attention_heads;
                EncoderPeft::Prefix(PrefixAdapter::with_shape(
                    c.clone(),
                    model.config.num_hidden_layers,
                    heads,
                    model.config.hidden_size / heads,
                    device,
                )?)
            }
        })
    }

    /// Reads an adapter folder written by ragtune or by Python PEFT for a `BertModel`.
    pub fn load(dir: &Path, model: &BertModel, device: Device) -> Result<Self> {
        let (path, json) = format::read_config_json(dir)?;
        let config = format::parse_config(&json, &path, ENCODER_TASKS)?;
        match config {
            PeftConfig::Bottleneck(_) => {
                BottleneckAdapter::check_host(&json, &BottleneckHost::bert(&model.config), &path)?
            }
            PeftConfig::PrefixTuning(_) => check_prefix_shape(&json, model, &path)?,
            _ => {}
        }
        if matches!(
            config,
            PeftConfig::PromptTuning(_) | PeftConfig::PrefixTuning(_)
        ) && json.get("task_type").and_then(Value::as_str) != Some(PROMPT_LEARNING_TASK)
        {
            return Err(ModelError::format(
                &path,
                format!(
                    "a prompt- or prefix-tuning adapter for an encoder needs `task_type` `{PROMPT_LEARNING_TASK}`: with null, Python PEFT builds a plain PeftModel that ignores the virtual tokens, so the file may never have been trained through them (save it from a model made with task_type={PROMPT_LEARNING_TASK})"
                ),
            ));
        }
        let adapter = EncoderPeft::new(&config, model, device)?;
        let tensors = format::read_weights(dir, device)?;
        let weights = dir.join(ADAPTER_WEIGHTS_FILE);
        match &adapter {
            EncoderPeft::Lora(a) => a.load_peft_tensors(&tensors, &weights)?,
            EncoderPeft::Ia3(a) => a.load_peft_tensors(&tensors, &weights)?,
            EncoderPeft::Bottleneck(a) => a.load_peft_tensors(&tensors, &weights)?,
            EncoderPeft::Prompt(a) => a.load_peft_tensors(&tensors, &weights)?,
            EncoderPeft::Prefix(a) => a.load_peft_tensors(&tensors, &weights)?,
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
            EncoderPeft::Prompt(a) => (a.to_peft_json(), a.peft_tensors()),
            EncoderPeft::Prefix(a) => (a.to_peft_json(), a.peft_tensors()),
        };
        config["task_type"] = match self {
            EncoderPeft::Prompt(_) | EncoderPeft::Prefix(_) => PROMPT_LEARNING_TASK.into(),
            _ => Value::Null,
        };
        config["base_model_name_or_path"] = base_model.map_or(Value::Null, Value::from);
        format::write(dir, &config, &tensors)
    }

    pub fn var_store(&self) -> &nn::VarStore {
        match self {
            EncoderPeft::Lora(a) => &a.var_store,
            EncoderPeft::Ia3(a) => &a.var_store,
            EncoderPeft::Bottleneck(a) => &a.var_store,
            EncoderPeft::Prompt(a) => &a.var_store,
            EncoderPeft::Prefix(a) => &a.var_store,
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
            _ => Err(not_mergeable()),
        }
    }

    /// Folds LoRA or IA3 into `model`'s weights; the other methods do not merge.
    fn merge_into(&self, model: &BertModel) -> Result<()> {
        match self {
            EncoderPeft::Lora(a) => a.merge_into(model),
            EncoderPeft::Ia3(a) => a.merge_into(model),
            _ => Err(not_mergeable()),
        }
    }
}

fn not_mergeable() -> ModelError {
    ModelError::Unsupported(
        "merging a bottleneck, prompt-tuning or prefix-tuning adapter into the weights (only LoRA and IA3 merge; keep the adapter on the model instead)"
            .into(),
    )
}

/// A saved prefix is a table of keys and values laid out by the saving model's layers and heads;
/// a table for another layout could have the same size and still be read wrongly.
fn check_prefix_shape(json: &Value, model: &BertModel, path: &Path) -> Result<()> {
    let c = &model.config;
    for (key, want) in [
        ("num_layers", c.num_hidden_layers),
        ("num_attention_heads", c.num_attention_heads),
        ("token_dim", c.hidden_size),
    ] {
        if let Some(got) = json.get(key).and_then(Value::as_i64) {
            if got != want {
                return Err(ModelError::format(
                    path,
                    format!("`{key}` = {got}, but this BERT has {want}: the prefix was trained for another model"),
                ));
            }
        }
    }
    Ok(())
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
            _ => None,
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
