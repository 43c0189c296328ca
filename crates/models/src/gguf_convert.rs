//! GGUF → Hugging Face folder that transformers loads with `AutoModelForCausalLM` and
//! `AutoTokenizer`: config.json, model.safetensors (f32), tokenizer files, generation_config.json.

use crate::checkpoint::save_safetensors;
use crate::gguf::GgufFile;
use crate::gguf_tokenizer::tokenizer_from_gguf;
use crate::llama::LlamaConfig;
use crate::llama_load::hf_tensors_from_gguf;
use crate::llama_tokenizer::write_json;
use crate::{ModelError, Result};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct ConversionSummary {
    pub config: LlamaConfig,
    pub tensors: usize,
    pub parameters: i64,
    /// GGUF tensor types and how many tensors had each (e.g. Q4_1: 210).
    pub source_types: BTreeMap<String, usize>,
    pub vocab_size: usize,
    pub chat_template: bool,
}

pub fn convert_gguf_to_hf(gguf_path: &Path, out_dir: &Path) -> Result<ConversionSummary> {
    let gguf = GgufFile::open(gguf_path)?;
    let config = LlamaConfig::from_gguf(&gguf)?;
    let tokenizer = tokenizer_from_gguf(&gguf)?;
    let tensors = hf_tensors_from_gguf(&gguf, &config)?;
    std::fs::create_dir_all(out_dir).map_err(|e| ModelError::io(out_dir, e))?;

    save_safetensors(&out_dir.join("model.safetensors"), &tensors)?;
    write_json(&out_dir.join("config.json"), &config.to_hf_json("float32"))?;
    tokenizer.save_hf_files(out_dir)?;
    let eos = match config.eos_token_ids.as_slice() {
        [one] => json!(one),
        many => json!(many),
    };
    write_json(
        &out_dir.join("generation_config.json"),
        &json!({
            "bos_token_id": config.bos_token_id,
            "eos_token_id": eos,
            "pad_token_id": config.pad_token_id,
        }),
    )?;

    let mut source_types = BTreeMap::new();
    for t in &gguf.tensors {
        *source_types.entry(t.ggml_type.name()).or_insert(0) += 1;
    }
    Ok(ConversionSummary {
        tensors: tensors.len(),
        parameters: tensors.iter().map(|(_, t)| t.numel() as i64).sum(),
        source_types,
        vocab_size: tokenizer.tokenizer.get_vocab_size(true),
        chat_template: tokenizer.chat_template.is_some(),
        config,
    })
}
