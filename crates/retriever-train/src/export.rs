//! Export to a folder that `sentence_transformers.SentenceTransformer(path)` loads as it is:
//! `config.json`, `model.safetensors` (Hugging Face names), the tokenizer files, `modules.json`,
//! `1_Pooling/config.json`, `sentence_bert_config.json`, and a `2_Normalize` module when the
//! encoder normalizes.
//!
//! The module files are written from the encoder's actual pooling and maximum length (DPR's [CLS]
//! pooling differs from its base's, and a plain BERT base has no module files at all).
//!
//! An encoder that carries a PEFT adapter ([`crate::adapters`]) is written merged (the adapter
//! folded into the weights, the model itself untouched), and the adapter goes, in PEFT's format,
//! to `adapter/` inside the folder.

use crate::adapters::{is_adapter_variable, ADAPTER_DIR};
use crate::{Result, RetrieverError};
use ragtune_models::checkpoint::{atomic_write, save_safetensors};
use ragtune_models::encoder::SentenceEncoder;
use ragtune_models::pooling::PoolingMode;
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use tch::Kind;

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialize");
    Ok(atomic_write(path, text.as_bytes())?)
}

/// Saves `encoder` as a sentence-transformers folder at `dir`.
pub fn save_sentence_transformers(encoder: &SentenceEncoder, dir: &Path) -> Result<()> {
    encoder.save_pretrained(dir)?;
    if encoder.model().adapter().is_some() {
        save_merged(encoder, dir)?;
    }
    let pooling = encoder.pooling();
    let mode = |m: PoolingMode| pooling.modes.contains(&m);
    if pooling.modes.is_empty() {
        return Err(RetrieverError::Invalid(
            "the encoder has no pooling mode to export".into(),
        ));
    }
    write_json(
        &dir.join("1_Pooling/config.json"),
        &json!({
            "word_embedding_dimension": encoder.model().hidden_size(),
            "pooling_mode_cls_token": mode(PoolingMode::Cls),
            "pooling_mode_mean_tokens": mode(PoolingMode::Mean),
            "pooling_mode_max_tokens": mode(PoolingMode::Max),
            "pooling_mode_mean_sqrt_len_tokens": mode(PoolingMode::MeanSqrtLen),
            "pooling_mode_weightedmean_tokens": false,
            "pooling_mode_lasttoken": false,
            "include_prompt": true,
        }),
    )?;
    let mut modules = vec![
        json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
        json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
    ];
    let normalize_dir = dir.join("2_Normalize");
    if pooling.normalize {
        std::fs::create_dir_all(&normalize_dir)
            .map_err(|e| RetrieverError::io(&normalize_dir, e))?;
        modules.push(json!({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}));
    } else if normalize_dir.exists() {
        std::fs::remove_dir_all(&normalize_dir)
            .map_err(|e| RetrieverError::io(&normalize_dir, e))?;
    }
    write_json(&dir.join("modules.json"), &json!(modules))?;
    write_json(
        &dir.join("sentence_bert_config.json"),
        &json!({"max_seq_length": encoder.max_length(), "do_lower_case": false}),
    )?;
    Ok(())
}

/// Replaces the `model.safetensors` that `save_pretrained` wrote (base plus `peft.` variables) by
/// the merged base weights, and writes the adapter to `dir/adapter`.
fn save_merged(encoder: &SentenceEncoder, dir: &Path) -> Result<()> {
    let adapter = encoder
        .model()
        .adapter()
        .expect("called for encoders with an adapter");
    let merged: HashMap<String, tch::Tensor> = adapter
        .merged_weights(encoder.model())?
        .into_iter()
        .collect();
    let mut tensors: Vec<(String, tch::Tensor)> = encoder
        .var_store()
        .variables()
        .into_iter()
        .filter(|(name, _)| !is_adapter_variable(name))
        .map(|(name, t)| {
            let t = merged
                .get(&name)
                .unwrap_or(&t)
                .detach()
                .to_kind(Kind::Float);
            (name, t)
        })
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    save_safetensors(&dir.join("model.safetensors"), &tensors)?;
    adapter.save(&dir.join(ADAPTER_DIR))?;
    Ok(())
}
