//! Loading a Llama causal LM with its tokenizer, from a GGUF file (dequantized) or a Hugging Face
//! folder (`config.json`, `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`).

use crate::checkpoint::load_safetensors;
use crate::gguf::GgufFile;
use crate::gguf_tokenizer::tokenizer_from_gguf;
use crate::llama::{Llama, LlamaConfig};
use crate::llama_tokenizer::LlamaTokenizer;
use crate::{ModelError, Result};
use std::collections::HashMap;
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

/// A ready-to-run model: its variables (trainable, HF-named), the module tree and its tokenizer.
pub struct CausalLm {
    pub config: LlamaConfig,
    pub var_store: nn::VarStore,
    pub model: Llama,
    pub tokenizer: LlamaTokenizer,
}

/// Loads from a `.gguf` file or a Hugging Face folder onto `device`, in `kind` (Float or BFloat16).
pub fn load_causal_lm(path: &Path, device: Device, kind: Kind) -> Result<CausalLm> {
    if !matches!(kind, Kind::Float | Kind::BFloat16 | Kind::Half) {
        return Err(ModelError::Invalid(format!(
            "model dtype {kind:?}: expected Float, BFloat16 or Half"
        )));
    }
    if path.is_dir() {
        load_hf_folder(path, device, kind)
    } else if path.is_file() {
        load_gguf(path, device, kind)
    } else {
        Err(ModelError::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such GGUF file or Hugging Face model folder",
            ),
        ))
    }
}

pub fn load_gguf(path: &Path, device: Device, kind: Kind) -> Result<CausalLm> {
    let gguf = GgufFile::open(path)?;
    let config = LlamaConfig::from_gguf(&gguf)?;
    let tokenizer = tokenizer_from_gguf(&gguf)?;
    let tensors: HashMap<String, Tensor> =
        hf_tensors_from_gguf(&gguf, &config)?.into_iter().collect();
    build(config, tokenizer, &tensors, path, device, kind)
}

pub fn load_hf_folder(dir: &Path, device: Device, kind: Kind) -> Result<CausalLm> {
    let config = LlamaConfig::from_hf_file(&dir.join("config.json"))?;
    let tokenizer = LlamaTokenizer::from_hf_folder(dir)?;
    let weights = dir.join("model.safetensors");
    if !weights.exists() {
        return Err(ModelError::format(
            dir,
            "no model.safetensors (sharded checkpoints are not supported)",
        ));
    }
    let tensors = load_safetensors(&weights, Device::Cpu)?;
    build(config, tokenizer, &tensors, &weights, device, kind)
}

fn build(
    config: LlamaConfig,
    tokenizer: LlamaTokenizer,
    tensors: &HashMap<String, Tensor>,
    source: &Path,
    device: Device,
    kind: Kind,
) -> Result<CausalLm> {
    let mut var_store = nn::VarStore::new(device);
    let model = Llama::new(&var_store.root(), &config)?;
    load_weights(&mut var_store, tensors, source, config.tie_word_embeddings)?;
    if kind != Kind::Float {
        var_store.set_kind(kind);
    }
    Ok(CausalLm {
        config,
        var_store,
        model,
        tokenizer,
    })
}

/// Copies `tensors` into the store's variables by name, checking every shape. Tensors the model
/// has no variable for are an error (a mismatched checkpoint), except rotary caches and a tied head.
pub fn load_weights(
    var_store: &mut nn::VarStore,
    tensors: &HashMap<String, Tensor>,
    source: &Path,
    tied: bool,
) -> Result<()> {
    let variables = var_store.variables();
    for (name, var) in &variables {
        let src = tensors.get(name).ok_or_else(|| ModelError::MissingTensor {
            path: source.to_path_buf(),
            name: name.clone(),
        })?;
        if src.size() != var.size() {
            return Err(ModelError::Shape {
                path: source.to_path_buf(),
                name: name.clone(),
                expected: var.size(),
                actual: src.size(),
            });
        }
        let mut var = var.shallow_clone();
        tch::no_grad(|| var.f_copy_(&src.to_kind(var.kind()).to_device(var.device())))?;
    }
    let unexpected: Vec<&String> = tensors
        .keys()
        .filter(|k| !variables.contains_key(*k))
        .filter(|k| !(k.contains("rotary_emb.inv_freq") || (tied && *k == "lm_head.weight")))
        .collect();
    if !unexpected.is_empty() {
        return Err(ModelError::format(
            source,
            format!("tensors the Llama model has no place for: {unexpected:?}"),
        ));
    }
    Ok(())
}

/// The GGUF file's tensors as Hugging Face `LlamaForCausalLM` tensors: dequantized to f32 on the
/// CPU, torch `[out, in]` shapes, HF names, and llama.cpp's Q/K row permutation undone.
pub fn hf_tensors_from_gguf(
    gguf: &GgufFile,
    config: &LlamaConfig,
) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::with_capacity(gguf.tensors.len());
    for info in &gguf.tensors {
        let (hf_name, heads) = hf_name(&info.name, config).ok_or_else(|| {
            ModelError::Unsupported(format!(
                "{}: tensor `{}` has no counterpart in LlamaForCausalLM",
                gguf.path().display(),
                info.name
            ))
        })?;
        let mut tensor = gguf.tensor(&info.name, Device::Cpu)?;
        if let Some(n_head) = heads {
            tensor = unpermute_rope_rows(&tensor, n_head)
                .map_err(|m| gguf.error(format!("tensor `{}`: {m}", info.name)))?;
        }
        out.push((hf_name, tensor));
    }
    Ok(out)
}

/// HF name for a GGUF tensor name, and the head count whose RoPE permutation must be undone.
fn hf_name(gguf_name: &str, config: &LlamaConfig) -> Option<(String, Option<i64>)> {
    match gguf_name {
        "token_embd.weight" => return Some(("model.embed_tokens.weight".into(), None)),
        "output_norm.weight" => return Some(("model.norm.weight".into(), None)),
        "output.weight" => return Some(("lm_head.weight".into(), None)),
        _ => {}
    }
    let rest = gguf_name.strip_prefix("blk.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: i64 = layer.parse().ok()?;
    let (module, heads) = match suffix {
        "attn_norm.weight" => ("input_layernorm.weight", None),
        "ffn_norm.weight" => ("post_attention_layernorm.weight", None),
        "attn_q.weight" => ("self_attn.q_proj.weight", Some(config.num_attention_heads)),
        "attn_k.weight" => ("self_attn.k_proj.weight", Some(config.num_key_value_heads)),
        "attn_v.weight" => ("self_attn.v_proj.weight", None),
        "attn_output.weight" => ("self_attn.o_proj.weight", None),
        "ffn_gate.weight" => ("mlp.gate_proj.weight", None),
        "ffn_up.weight" => ("mlp.up_proj.weight", None),
        "ffn_down.weight" => ("mlp.down_proj.weight", None),
        _ => return None,
    };
    Some((format!("model.layers.{layer}.{module}"), heads))
}

/// llama.cpp stores Q and K rows interleaved per head for its RoPE; rotate-half RoPE needs the
/// halves back together: `(n_head, head_dim/2, 2, in)` with axes 1 and 2 swapped.
fn unpermute_rope_rows(w: &Tensor, n_head: i64) -> std::result::Result<Tensor, String> {
    let size = w.size();
    let [out, inp] = size[..] else {
        return Err(format!("expected a matrix, got shape {size:?}"));
    };
    if n_head <= 0 || out % (2 * n_head) != 0 {
        return Err(format!(
            "{out} rows do not split into {n_head} heads of even size"
        ));
    }
    Ok(w.reshape([n_head, out / n_head / 2, 2, inp])
        .transpose(1, 2)
        .reshape([out, inp]))
}
