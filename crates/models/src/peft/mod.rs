//! Parameter-efficient fine-tuning of the Llama decoder and the BERT encoder: LoRA (with rsLoRA
//! and DoRA), IA3, bottleneck adapters (Houlsby or Pfeiffer placement), prefix tuning and prompt
//! tuning; saved and loaded in Hugging Face PEFT's format
//! (`adapter_config.json` + `adapter_model.safetensors`, keys such as
//! `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight` for the Llama and
//! `base_model.model.encoder.layer.0.attention.self.query.lora_A.weight` for BERT's `AutoModel`).
//!
//! Every adapter keeps its variables in a `VarStore` of its own, so the base model's store can be
//! frozen and the optimizer sees adapter variables only. LoRA, IA3 and bottleneck adapters act
//! through the Llama's [`DecoderAdapter`](crate::llama::DecoderAdapter) hook ([`Peft`]) or BERT's
//! [`EncoderAdapter`](crate::bert::EncoderAdapter) hook ([`EncoderPeft`]); prefix tuning puts
//! learned keys and values before the real tokens' in every attention layer (the Llama's KV cache);
//! prompt tuning prepends learned input embeddings.

pub mod bottleneck;
pub mod encoder;
pub mod format;
pub mod ia3;
pub mod lora;
pub mod prefix;
pub mod prompt;
pub mod targets;

use crate::llama::{KvCache, Llama};
use crate::{ModelError, Result};
use std::path::Path;
use std::rc::Rc;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

pub use bottleneck::{BottleneckAdapter, BottleneckConfig, BottleneckHost, Placement, Sublayer};
pub use encoder::EncoderPeft;
pub use format::{ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};
pub use ia3::{Ia3Adapter, Ia3Config};
pub use lora::{LoraAdapter, LoraConfig};
pub use prefix::{PrefixAdapter, PrefixConfig};
pub use prompt::{PromptAdapter, PromptConfig};

/// The PEFT method and its settings, as it appears in TOML configs (`method = "lora"`, ...).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum PeftConfig {
    Lora(LoraConfig),
    Ia3(Ia3Config),
    PrefixTuning(PrefixConfig),
    PromptTuning(PromptConfig),
    Bottleneck(BottleneckConfig),
}

/// One adapter on a Llama.
#[derive(Debug, Clone)]
pub enum Peft {
    Lora(Rc<LoraAdapter>),
    Ia3(Rc<Ia3Adapter>),
    Prefix(Rc<PrefixAdapter>),
    Prompt(Rc<PromptAdapter>),
    Bottleneck(Rc<BottleneckAdapter>),
}

impl Peft {
    /// A freshly initialized adapter for `model` (LoRA B = 0, IA3 = 1: the model is unchanged).
    /// `init_text_ids` are the token ids prompt tuning starts its soft prompt from.
    pub fn new(
        config: &PeftConfig,
        model: &Llama,
        device: Device,
        init_text_ids: Option<&[i64]>,
    ) -> Result<Self> {
        Ok(match config {
            PeftConfig::Lora(c) => Peft::Lora(Rc::new(LoraAdapter::new(c.clone(), model, device)?)),
            PeftConfig::Ia3(c) => Peft::Ia3(Rc::new(Ia3Adapter::new(c.clone(), model, device)?)),
            PeftConfig::PrefixTuning(c) => Peft::Prefix(Rc::new(PrefixAdapter::new(
                c.clone(),
                &model.config,
                device,
            )?)),
            PeftConfig::PromptTuning(c) => Peft::Prompt(Rc::new(PromptAdapter::new(
                c.clone(),
                model,
                device,
                init_text_ids,
            )?)),
            PeftConfig::Bottleneck(c) => Peft::Bottleneck(Rc::new(BottleneckAdapter::new(
                c.clone(),
                BottleneckHost::llama(&model.config),
                device,
            )?)),
        })
    }

    /// Reads an adapter folder written by ragtune or by Python PEFT.
    pub fn load(dir: &Path, model: &Llama, device: Device) -> Result<Self> {
        let (path, json) = format::read_config_json(dir)?;
        let config = format::parse_config(&json, &path, format::DECODER_TASKS)?;
        if let PeftConfig::Bottleneck(_) = config {
            BottleneckAdapter::check_host(&json, &BottleneckHost::llama(&model.config), &path)?;
        }
        let adapter = Peft::new(&config, model, device, None)?;
        let tensors = format::read_weights(dir, device)?;
        let weights = dir.join(ADAPTER_WEIGHTS_FILE);
        match &adapter {
            Peft::Lora(a) => a.load_peft_tensors(&tensors, &weights)?,
            Peft::Ia3(a) => a.load_peft_tensors(&tensors, &weights)?,
            Peft::Prefix(a) => a.load_peft_tensors(&tensors, &weights)?,
            Peft::Prompt(a) => a.load_peft_tensors(&tensors, &weights)?,
            Peft::Bottleneck(a) => a.load_peft_tensors(&tensors, &weights)?,
        }
        Ok(adapter)
    }

    /// Writes `adapter_config.json` and `adapter_model.safetensors` (atomically) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        let (config, tensors) = match self {
            Peft::Lora(a) => (a.config.to_peft_json(), a.peft_tensors()),
            Peft::Ia3(a) => (a.config.to_peft_json(), a.peft_tensors()),
            Peft::Prefix(a) => (a.to_peft_json(), a.peft_tensors()),
            Peft::Prompt(a) => (a.to_peft_json(), a.peft_tensors()),
            Peft::Bottleneck(a) => {
                let mut json = a.to_peft_json();
                json["task_type"] = "CAUSAL_LM".into();
                (json, a.peft_tensors())
            }
        };
        format::write(dir, &config, &tensors)
    }

    pub fn var_store(&self) -> &nn::VarStore {
        match self {
            Peft::Lora(a) => &a.var_store,
            Peft::Ia3(a) => &a.var_store,
            Peft::Prefix(a) => &a.var_store,
            Peft::Prompt(a) => &a.var_store,
            Peft::Bottleneck(a) => &a.var_store,
        }
    }

    /// Number of trainable adapter values.
    pub fn trainable_parameters(&self) -> i64 {
        count_trainable(self.var_store())
    }

    /// LoRA dropout is on only while training.
    pub fn set_training(&self, training: bool) {
        if let Peft::Lora(a) = self {
            a.set_training(training)
        }
    }

    /// Folds LoRA or IA3 into the base weights (`merge_and_unload`) and takes the adapter off the
    /// model, which then computes alone what base + adapter computed.
    pub fn merge_and_unload(&self, model: &mut Llama) -> Result<()> {
        match self {
            Peft::Lora(a) => a.merge_into(model)?,
            Peft::Ia3(a) => a.merge_into(model)?,
            Peft::Prefix(_) | Peft::Prompt(_) | Peft::Bottleneck(_) => {
                return Err(ModelError::Unsupported(
                    "merging prefix tuning, prompt tuning or bottleneck adapters into the weights (only LoRA and IA3 merge)"
                        .into(),
                ))
            }
        }
        model.set_adapter(None);
        Ok(())
    }

    /// Puts the adapter on `model` (LoRA and IA3 hook into its projections, bottleneck adapters
    /// into its sublayer outputs; prefix and prompt tuning act through [`forward_hidden`] and
    /// leave the model as it is).
    pub fn attach(&self, model: &mut Llama) {
        match self {
            Peft::Lora(a) => model.set_adapter(Some(a.clone())),
            Peft::Ia3(a) => model.set_adapter(Some(a.clone())),
            Peft::Bottleneck(a) => model.set_adapter(Some(a.clone())),
            Peft::Prefix(_) | Peft::Prompt(_) => model.set_adapter(None),
        }
    }
}

/// Final hidden states of the real tokens, `[batch, seq, hidden]`, of `model` with `peft` active
/// (attach LoRA/IA3 first with [`Peft::attach`]). `attention_mask` is `[batch, seq]`. Prefix and
/// prompt tuning see the learned tokens first, always attended, as Python PEFT runs them.
pub fn forward_hidden(
    model: &Llama,
    peft: Option<&Peft>,
    input_ids: &Tensor,
    attention_mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, t) = input_ids.size2().map_err(|_| {
        ModelError::Invalid(format!(
            "input_ids must be [batch, seq], got {:?}",
            input_ids.size()
        ))
    })?;
    let device = input_ids.device();
    let mask = attention_mask
        .map(Tensor::shallow_clone)
        .unwrap_or_else(|| Tensor::ones([b, t], (Kind::Int64, device)));
    let with_virtual = |n: i64| {
        Tensor::cat(
            &[
                Tensor::ones([b, n], (mask.kind(), device)),
                mask.shallow_clone(),
            ],
            1,
        )
    };
    match peft {
        Some(Peft::Prefix(a)) => {
            let mut cache = KvCache::from_layers(a.key_values(b, model.embed_tokens.ws.kind()));
            model.forward_hidden(
                input_ids,
                Some(&with_virtual(a.config.num_virtual_tokens)),
                None,
                Some(&mut cache),
            )
        }
        Some(Peft::Prompt(a)) => {
            let n = a.config.num_virtual_tokens;
            let embeds = model.embed_tokens.forward(input_ids);
            let prompt = a
                .embeddings()
                .to_kind(embeds.kind())
                .unsqueeze(0)
                .expand([b, n, embeds.size()[2]], false);
            let hidden = model.forward_hidden_from_embeds(
                &Tensor::cat(&[prompt, embeds], 1),
                Some(&with_virtual(n)),
                None,
                None,
            )?;
            Ok(hidden.narrow(1, n, t))
        }
        _ => model.forward_hidden(input_ids, attention_mask, None, None),
    }
}

/// A copy of `src` in `var` (shapes checked), for loading adapter weights by name.
pub(crate) fn copy_into(var: &Tensor, src: Option<&Tensor>, name: &str, file: &Path) -> Result<()> {
    let src = src.ok_or_else(|| ModelError::MissingTensor {
        path: file.to_path_buf(),
        name: name.to_string(),
    })?;
    if src.size() != var.size() {
        return Err(ModelError::Shape {
            path: file.to_path_buf(),
            name: name.to_string(),
            expected: var.size(),
            actual: src.size(),
        });
    }
    let mut var = var.shallow_clone();
    tch::no_grad(|| var.f_copy_(&src.to_kind(var.kind()).to_device(var.device())))?;
    Ok(())
}

/// `base_model.model.` + the module's Hugging Face name: where PEFT keeps a tuner layer's weights.
pub(crate) fn peft_key(module_path: &str, suffix: &str) -> String {
    format!("base_model.model.{module_path}.{suffix}")
}

/// Writes `lm` as a Hugging Face folder (config.json, model.safetensors in f32, tokenizer files),
/// e.g. after [`Peft::merge_and_unload`]; transformers loads it with `AutoModelForCausalLM`.
pub fn save_hf_folder(lm: &crate::llama_load::CausalLm, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    crate::checkpoint::save_var_store(
        &lm.var_store,
        &dir.join("model.safetensors"),
        Some(Kind::Float),
    )?;
    crate::llama_tokenizer::write_json(&dir.join("config.json"), &lm.config.to_hf_json("float32"))?;
    lm.tokenizer.save_hf_files(dir)
}

/// Number of trainable values in an adapter's variable store (the base model's are never in it).
pub(crate) fn count_trainable(var_store: &nn::VarStore) -> i64 {
    var_store
        .trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}
