//! Support shared by generator-train's integration tests: tiny random Llamas and synthetic examples.
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use ragtune_generator_train::sft::SftExample;
use ragtune_models::llama::{Llama, LlamaConfig};
use ragtune_models::llama_load::CausalLm;
use ragtune_testkit::asset;
use serde_json::json;
use tch::{nn, Device};

/// A Llama of `layers` layers with grouped-query attention (hidden/8 heads, half as many KV heads).
pub fn tiny_config(vocab_size: i64, hidden_size: i64, layers: i64) -> LlamaConfig {
    let heads = hidden_size / 8;
    serde_json::from_value(json!({
        "vocab_size": vocab_size, "hidden_size": hidden_size, "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": heads / 2,
        "tie_word_embeddings": true, "rms_norm_eps": 1e-5, "model_type": "llama", "hidden_act": "silu"
    }))
    .unwrap()
}

/// Seeded random weights for `config` on the CPU.
pub fn tiny_llama_with(config: &LlamaConfig) -> (nn::VarStore, Llama) {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Llama::new(&vs.root(), config).unwrap();
    (vs, model)
}

/// 2 layers, hidden 32, a 300-token vocabulary: enough for loss and gradient checks.
pub fn tiny_llama() -> (nn::VarStore, Llama) {
    tiny_llama_with(&tiny_config(300, 32, 2))
}

/// A tiny Llama wrapped with SmolLM2's real tokenizer (from its GGUF), for recipes that tokenize text.
pub fn tiny_causal_lm(config: LlamaConfig) -> CausalLm {
    let (var_store, model) = tiny_llama_with(&config);
    let gguf = ragtune_models::gguf::GgufFile::open(
        &asset("smollm2-135m-instruct").join("SmolLM2-135M-Instruct.Q4_1.gguf"),
    )
    .unwrap();
    CausalLm {
        config,
        var_store,
        model,
        tokenizer: ragtune_models::gguf_tokenizer::tokenizer_from_gguf(&gguf).unwrap(),
    }
}

/// Examples of the given (length, prompt length), with token ids in 3..293.
pub fn synthetic_examples(lengths: &[(usize, usize)]) -> Vec<SftExample> {
    lengths
        .iter()
        .enumerate()
        .map(|(k, &(n, p))| SftExample {
            id: format!("e{k}"),
            input_ids: (0..n)
                .map(|t| 3 + ((k * 37 + t * 11) % 290) as i64)
                .collect(),
            prompt_len: p,
        })
        .collect()
}
