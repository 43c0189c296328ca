//! The tokenizer of a causal language model together with what generation needs beside it:
//! special tokens (BOS, EOS, padding) and the chat template. Reads and writes the Hugging Face
//! files (`tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`).

use crate::chat::ChatTemplate;
use crate::checkpoint::atomic_write;
use crate::{ModelError, Result};
use serde_json::{json, Value};
use std::path::Path;
use tokenizers::Tokenizer;

#[derive(Debug, Clone, PartialEq)]
pub struct SpecialTokens {
    pub bos_token: Option<String>,
    pub eos_token: String,
    pub pad_token: Option<String>,
    pub unk_token: Option<String>,
    /// Whether encoding with special tokens prepends BOS (false for SmolLM2).
    pub add_bos_token: bool,
}

#[derive(Clone)]
pub struct LlamaTokenizer {
    pub tokenizer: Tokenizer,
    pub special: SpecialTokens,
    /// The Jinja source, kept verbatim so exported folders carry it.
    pub chat_template: Option<String>,
    pub model_max_length: Option<i64>,
    eos_id: i64,
    pad_id: i64,
    bos_id: Option<i64>,
}

impl std::fmt::Debug for LlamaTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaTokenizer")
            .field("special", &self.special)
            .field("vocab_size", &self.tokenizer.get_vocab_size(true))
            .finish()
    }
}

impl LlamaTokenizer {
    /// Resolves the special tokens' ids; padding falls back to EOS when the model names none.
    pub fn new(
        tokenizer: Tokenizer,
        special: SpecialTokens,
        chat_template: Option<String>,
        model_max_length: Option<i64>,
    ) -> Result<Self> {
        let id_of = |tok: &str| -> Result<i64> {
            tokenizer.token_to_id(tok).map(i64::from).ok_or_else(|| {
                ModelError::Invalid(format!("special token `{tok}` is not in the vocabulary"))
            })
        };
        let eos_id = id_of(&special.eos_token)?;
        let pad_id = match &special.pad_token {
            Some(p) => id_of(p)?,
            None => eos_id,
        };
        let bos_id = special.bos_token.as_deref().map(id_of).transpose()?;
        Ok(LlamaTokenizer {
            tokenizer,
            special,
            chat_template,
            model_max_length,
            eos_id,
            pad_id,
            bos_id,
        })
    }

    /// Reads `tokenizer.json` and `tokenizer_config.json` from a Hugging Face model folder.
    pub fn from_hf_folder(dir: &Path) -> Result<Self> {
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| {
            ModelError::format(&tok_path, format!("not a loadable tokenizer.json: {e}"))
        })?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: Value = match std::fs::read(&cfg_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| ModelError::format(&cfg_path, format!("invalid JSON: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({}),
            Err(e) => return Err(ModelError::io(&cfg_path, e)),
        };
        // Tokens may be plain strings or AddedToken objects ({"content": ...}).
        let token = |key: &str| -> Option<String> {
            match cfg.get(key)? {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
                _ => None,
            }
        };
        let eos_token = token("eos_token").ok_or_else(|| {
            ModelError::format(
                &cfg_path,
                "field `eos_token` is missing; generation could never stop",
            )
        })?;
        let special = SpecialTokens {
            bos_token: token("bos_token"),
            eos_token,
            pad_token: token("pad_token"),
            unk_token: token("unk_token"),
            add_bos_token: cfg
                .get("add_bos_token")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        };
        let chat_template = cfg
            .get("chat_template")
            .and_then(Value::as_str)
            .map(str::to_string);
        let model_max_length = cfg.get("model_max_length").and_then(Value::as_i64);
        Self::new(tokenizer, special, chat_template, model_max_length)
    }

    /// Writes `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json` into `dir`.
    pub fn save_hf_files(&self, dir: &Path) -> Result<()> {
        let tok_path = dir.join("tokenizer.json");
        let serialized = self
            .tokenizer
            .to_string(true)
            .map_err(|e| ModelError::format(&tok_path, format!("serializing: {e}")))?;
        atomic_write(&tok_path, serialized.as_bytes())?;

        let mut map = serde_json::Map::new();
        let mut put = |key: &str, value: &Option<String>| {
            if let Some(v) = value {
                map.insert(key.to_string(), json!(v));
            }
        };
        put("bos_token", &self.special.bos_token);
        put("eos_token", &Some(self.special.eos_token.clone()));
        put("pad_token", &self.special.pad_token);
        put("unk_token", &self.special.unk_token);
        let special_map = Value::Object(map.clone());

        let mut cfg = map;
        cfg.insert("add_bos_token".into(), json!(self.special.add_bos_token));
        cfg.insert("add_eos_token".into(), json!(false));
        cfg.insert("clean_up_tokenization_spaces".into(), json!(false));
        cfg.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
        if let Some(n) = self.model_max_length {
            cfg.insert("model_max_length".into(), json!(n));
        }
        if let Some(t) = &self.chat_template {
            cfg.insert("chat_template".into(), json!(t));
        }
        write_json(&dir.join("tokenizer_config.json"), &Value::Object(cfg))?;
        write_json(&dir.join("special_tokens_map.json"), &special_map)
    }

    pub fn eos_token_id(&self) -> i64 {
        self.eos_id
    }

    /// The padding id (EOS when the model has no padding token).
    pub fn pad_token_id(&self) -> i64 {
        self.pad_id
    }

    pub fn bos_token_id(&self) -> Option<i64> {
        self.bos_id
    }

    /// Token ids of `text`. Special-token strings in the text (`<|im_start|>`) become their ids.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<i64>> {
        let enc = self
            .tokenizer
            .encode(text, add_special_tokens)
            .map_err(|e| ModelError::Invalid(format!("tokenizing {text:?}: {e}")))?;
        Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
    }

    pub fn decode(&self, ids: &[i64], skip_special_tokens: bool) -> Result<String> {
        let ids: Vec<u32> = ids
            .iter()
            .map(|&i| {
                u32::try_from(i)
                    .map_err(|_| ModelError::Invalid(format!("token id {i} is negative")))
            })
            .collect::<Result<_>>()?;
        self.tokenizer
            .decode(&ids, skip_special_tokens)
            .map_err(|e| ModelError::Invalid(format!("decoding {} ids: {e}", ids.len())))
    }

    /// The model's chat template as a ChatML formatter; an error if there is none or it is not ChatML.
    pub fn chat_template(&self) -> Result<ChatTemplate> {
        match &self.chat_template {
            Some(src) => ChatTemplate::from_jinja(src),
            None => Err(ModelError::Unsupported(
                "this model has no chat template; pass the prompt without one (--no-chat-template)"
                    .into(),
            )),
        }
    }
}

pub(crate) fn write_json(path: &Path, value: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| ModelError::format(path, format!("serializing: {e}")))?;
    text.push('\n');
    atomic_write(path, text.as_bytes())
}
