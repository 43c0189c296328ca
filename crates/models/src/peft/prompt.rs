//! Prompt tuning: `num_virtual_tokens` learned input embeddings in front of every sequence,
//! initialized from the embeddings of a text (repeated to length) or at random.

use super::copy_into;
use crate::llama::Llama;
use crate::{ModelError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use tch::nn;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptConfig {
    pub num_virtual_tokens: i64,
    /// Text whose token embeddings start the soft prompt (random N(0, 1) when unset).
    #[serde(default)]
    pub init_text: Option<String>,
}

#[derive(Debug)]
pub struct PromptAdapter {
    pub config: PromptConfig,
    pub var_store: nn::VarStore,
    embedding: Tensor,
}

impl PromptAdapter {
    /// `init_text_ids`: the tokens of `config.init_text` (the caller owns the tokenizer).
    pub fn new(
        config: PromptConfig,
        model: &Llama,
        device: Device,
        init_text_ids: Option<&[i64]>,
    ) -> Result<Self> {
        Self::from_word_embeddings(config, &model.embed_tokens.ws, device, init_text_ids)
    }

    /// For any model whose input embeddings are `word_embeddings` (`[vocab, hidden]`): the soft
    /// prompt lives in that space, and a text initialization copies rows of it.
    pub fn from_word_embeddings(
        config: PromptConfig,
        word_embeddings: &Tensor,
        device: Device,
        init_text_ids: Option<&[i64]>,
    ) -> Result<Self> {
        let n = config.num_virtual_tokens;
        if n <= 0 {
            return Err(ModelError::Invalid(format!(
                "prompt tuning: num_virtual_tokens = {n}, expected > 0"
            )));
        }
        let var_store = nn::VarStore::new(device);
        let hidden = word_embeddings.size()[1];
        let embedding = match init_text_ids {
            Some([]) => {
                return Err(ModelError::Invalid(
                    "prompt tuning: the init text has no tokens".into(),
                ))
            }
            Some(ids) => {
                let ids: Vec<i64> = ids.iter().copied().cycle().take(n as usize).collect();
                let init = tch::no_grad(|| {
                    word_embeddings
                        .index_select(
                            0,
                            &Tensor::from_slice(&ids).to_device(word_embeddings.device()),
                        )
                        .to_kind(Kind::Float)
                        .to_device(device)
                });
                (var_store.root() / "prompt_encoder" / "embedding").var_copy("weight", &init)
            }
            None => (var_store.root() / "prompt_encoder" / "embedding").var(
                "weight",
                &[n, hidden],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            ),
        };
        Ok(PromptAdapter {
            config,
            var_store,
            embedding,
        })
    }

    /// `[virtual, hidden]`.
    pub fn embeddings(&self) -> Tensor {
        self.embedding.shallow_clone()
    }

    pub fn to_peft_json(&self) -> Value {
        // Saved as RANDOM: the initialization no longer matters once trained, and PEFT would
        // otherwise ask for a tokenizer path when the adapter is loaded for training.
        json!({
            "peft_type": "PROMPT_TUNING",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": null,
            "inference_mode": true,
            "num_virtual_tokens": self.config.num_virtual_tokens,
            "token_dim": self.embedding.size()[1],
            "num_transformer_submodules": 1,
            "prompt_tuning_init": "RANDOM",
        })
    }

    pub fn from_peft_json(v: &Value, file: &Path) -> Result<PromptConfig> {
        let n = v
            .get("num_virtual_tokens")
            .and_then(Value::as_i64)
            .ok_or_else(|| ModelError::format(file, "`num_virtual_tokens` is missing"))?;
        Ok(PromptConfig {
            num_virtual_tokens: n,
            init_text: None,
        })
    }

    pub fn peft_tensors(&self) -> Vec<(String, Tensor)> {
        vec![(
            "prompt_embeddings".to_string(),
            self.embedding.shallow_clone(),
        )]
    }

    pub fn load_peft_tensors(&self, tensors: &HashMap<String, Tensor>, file: &Path) -> Result<()> {
        copy_into(
            &self.embedding,
            tensors.get("prompt_embeddings"),
            "prompt_embeddings",
            file,
        )?;
        super::format::reject_unused(
            tensors,
            &HashSet::from(["prompt_embeddings".to_string()]),
            file,
        )
    }
}
