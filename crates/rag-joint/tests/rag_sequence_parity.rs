//! `rag_sequence::backward` (the marginal likelihood's gradient accumulated over chunks of
//! passages, in two passes) against one plain autograd graph of the same loss in torch
//! (tests/reference/joint_rag_sequence.py: transformers' BertModel as the query tower, Python
//! PEFT's LoRA on transformers' Llama as the generator): the loss and the gradient of every
//! query-tower and LoRA parameter, with the adapter trained and frozen.

use ragtune_generator_train::sft::SftExample;
use ragtune_models::checkpoint::load_safetensors;
use ragtune_models::encoder::SentenceEncoder;
use ragtune_models::llama_load::load_causal_lm;
use ragtune_models::peft::{Peft, PeftConfig};
use ragtune_models::pooling::Pooling;
use ragtune_rag_joint::losses::candidate_scores;
use ragtune_rag_joint::rag_sequence::{backward, Generator};
use ragtune_retrieval::Similarity;
use ragtune_testkit::{asset, reference, scratch};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

const TEMPERATURE: f64 = 0.1;
/// Our float32 gradients against torch's float64 ones, relative to each tensor's largest value
/// (when above 1). LoRA's are as close as float32 gets: torch's own float32 run of the reference
/// differs from its float64 one by up to 1.3e-5 on them (the tower's: 3e-6).
const TOWER_TOLERANCE: f64 = 1e-5;
const LORA_TOLERANCE: f64 = 3e-5;

/// A 1-layer random Llama (hidden 32) with SmolLM2's tokenizer, as a Hugging Face folder (as
/// crates/cli/tests/common builds it, with its embeddings scaled down).
fn tiny_generator(dir: &Path) -> PathBuf {
    use ragtune_models::llama::{Llama, LlamaConfig};
    let config: LlamaConfig = serde_json::from_value(json!({
        "vocab_size": 49152, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
        "tie_word_embeddings": true, "rms_norm_eps": 1e-5, "model_type": "llama", "hidden_act": "silu"
    }))
    .unwrap();
    tch::manual_seed(0);
    let var_store = tch::nn::VarStore::new(Device::Cpu);
    let model = Llama::new(&var_store.root(), &config).unwrap();
    // Smaller (tied) embeddings than the helper's, so the logits are tame and the answer
    // log-probs of a question's passages close enough for the posterior to spread over them.
    tch::no_grad(|| {
        let mut embed = var_store.variables()["model.embed_tokens.weight"].shallow_clone();
        let _ = embed.f_mul_scalar_(0.2).unwrap();
    });
    let gguf = ragtune_models::gguf::GgufFile::open(
        &asset("smollm2-135m-instruct").join("SmolLM2-135M-Instruct.Q4_1.gguf"),
    )
    .unwrap();
    let lm = ragtune_models::llama_load::CausalLm {
        config,
        var_store,
        model,
        tokenizer: ragtune_models::gguf_tokenizer::tokenizer_from_gguf(&gguf).unwrap(),
    };
    let out = dir.join("tiny-llama");
    ragtune_models::peft::save_hf_folder(&lm, &out).unwrap();
    out
}

/// Token ids below the tiny Llama's vocabulary, from a fixed linear congruential sequence.
struct Ids(u64);

impl Ids {
    fn take(&mut self, n: usize) -> Vec<i64> {
        (0..n)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((self.0 >> 33) % 49152) as i64
            })
            .collect()
    }
}

/// `B × k` examples: each question has one answer (4 and 2 tokens) after prompts of 5 to 9 ids,
/// so that every chunk of two pads.
fn examples(b: usize, k: usize) -> Vec<Vec<SftExample>> {
    let mut ids = Ids(42);
    (0..b)
        .map(|q| {
            let answer = ids.take(if q == 0 { 4 } else { 2 });
            (0..k)
                .map(|d| {
                    let prompt_len = 5 + (q * k + d) * 3 % 5;
                    let mut input_ids = ids.take(prompt_len);
                    input_ids.extend(&answer);
                    SftExample {
                        id: format!("q{q}-d{d}"),
                        input_ids,
                        prompt_len,
                    }
                })
                .collect()
        })
        .collect()
}

/// A float tensor's values as nested JSON arrays of its shape.
fn nested(t: &Tensor) -> Value {
    fn nest(values: &[f64], shape: &[i64]) -> Value {
        match shape {
            [] | [_] => json!(values),
            [n, rest @ ..] => Value::Array(
                values
                    .chunks(values.len() / *n as usize)
                    .map(|c| nest(c, rest))
                    .collect(),
            ),
        }
    }
    let flat: Vec<f64> = Vec::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap();
    nest(&flat, &t.size())
}

fn int_rows(t: &Tensor) -> Value {
    let (rows, cols) = t.size2().unwrap();
    let flat: Vec<i64> = Vec::try_from(t.flatten(0, -1)).unwrap();
    json!(flat
        .chunks(cols.max(1) as usize)
        .take(rows as usize)
        .collect::<Vec<_>>())
}

/// Every gradient in `ours` equals torch's (`expected["<case>/<name>"]`) to `tolerance`, relative
/// to the tensor's largest torch value when that is above 1 (and, with `nonzero`, is not all
/// zero); returns how many tensors were compared.
fn assert_grads_match(
    ours: &HashMap<String, Tensor>,
    expected: &HashMap<String, Tensor>,
    case: &str,
    tolerance: f64,
    nonzero: bool,
) -> usize {
    let mut names: Vec<&String> = ours.keys().collect();
    names.sort();
    let mut worst = 0f64;
    for name in &names {
        let grad = ours[*name].grad();
        assert!(
            grad.defined(),
            "{case}: ragtune left {name} without a gradient"
        );
        let want = expected
            .get(&format!("{case}/{name}"))
            .unwrap_or_else(|| panic!("{case}: torch has no gradient for {name}"));
        assert_eq!(grad.size(), want.size(), "{case}: {name} shape");
        let diff = (grad.to_kind(Kind::Double) - want)
            .abs()
            .max()
            .double_value(&[]);
        let scale = want.abs().max().double_value(&[]);
        assert!(
            diff <= tolerance * scale.max(1.0),
            "{case}: {name}: max |Δ| {diff:.3e} against torch (max |torch grad| {scale:.3e})"
        );
        assert!(
            !nonzero || scale > 0.0,
            "{case}: {name}: torch's gradient is all zero"
        );
        worst = worst.max(diff / scale.max(1.0));
    }
    println!(
        "{case}: worst scaled gradient difference {worst:.2e} over {} tensors",
        names.len()
    );
    names.len()
}

fn zero_grads(vars: &HashMap<String, Tensor>) {
    for var in vars.values() {
        let mut var = var.shallow_clone();
        var.zero_grad();
    }
}

#[test]
fn rag_sequence_backward_matches_one_torch_graph() {
    let work = scratch("rag-sequence-parity");
    let bert = asset("bert-tiny");
    let tower = SentenceEncoder::load(&bert, Device::Cpu, Kind::Float).unwrap();
    // A plain BERT folder pools as sentence-transformers does: the mean over real tokens.
    assert_eq!(tower.pooling(), &Pooling::default());
    let texts = [
        "Where do I apply for a building permit?",
        "Opening hours of the library",
    ];
    let batch = tower.tokenize_batch(&texts).unwrap();
    let (b, k) = (2usize, 3usize);
    tch::manual_seed(5);
    let passages = Tensor::randn(
        [b as i64, k as i64, tower.dim()],
        (Kind::Float, Device::Cpu),
    );

    let generator = tiny_generator(&work);
    let mut lm = load_causal_lm(&generator, Device::Cpu, Kind::Float).unwrap();
    lm.var_store.freeze();
    let config: PeftConfig =
        toml::from_str("method = \"lora\"\nr = 4\nlora_alpha = 8\ntarget_modules = \"all-linear\"")
            .unwrap();
    let adapter = Peft::new(&config, &lm.model, Device::Cpu, None).unwrap();
    // Both A and B away from their initialization, so that both get a gradient.
    tch::manual_seed(6);
    let mut lora: Vec<(String, Tensor)> = adapter.var_store().variables().into_iter().collect();
    lora.sort_by(|x, y| x.0.cmp(&y.0));
    tch::no_grad(|| {
        for (_, var) in &mut lora {
            var.copy_(&(Tensor::randn(var.size(), (Kind::Float, Device::Cpu)) * 0.2));
        }
    });
    adapter.attach(&mut lm.model);
    let adapter_dir = work.join("adapter");
    adapter.save(&adapter_dir).unwrap();

    let examples = examples(b, k);
    let grads_file = work.join("grads.safetensors");
    let expected = reference(
        "joint_rag_sequence.py",
        &json!({
            "bert": bert, "generator": generator, "adapter": adapter_dir, "out": grads_file,
            "batch": {
                "input_ids": int_rows(&batch.input_ids),
                "attention_mask": int_rows(&batch.attention_mask),
                "token_type_ids": int_rows(&batch.token_type_ids),
            },
            "passages": nested(&passages),
            "temperature": TEMPERATURE,
            "examples": examples.iter().map(|row| row.iter().map(|e| json!({
                "input_ids": e.input_ids, "prompt_len": e.prompt_len,
            })).collect::<Vec<_>>()).collect::<Vec<_>>(),
        }),
    );
    let expected_grads = load_safetensors(&grads_file, Device::Cpu).unwrap();
    let tower_vars = tower.var_store().variables();
    let lora_vars = adapter.var_store().variables();
    println!(
        "torch answer log-probs: {}",
        expected["trains"]["answer_logps"]
    );

    for (case, trains) in [("trains", true), ("frozen", false)] {
        zero_grads(&tower_vars);
        zero_grads(&lora_vars);
        let queries = tower.forward_t(&batch, false);
        let scores = candidate_scores(&queries, &passages, Similarity::Cosine);
        let generator = Generator {
            lm: &lm,
            adapter: Some(&adapter),
            trains,
            chunk: 2,
        };
        let loss = backward(
            &scores,
            &examples,
            &generator,
            TEMPERATURE,
            1.0,
            0,
            Device::Cpu,
        )
        .unwrap();
        let want = expected[case]["loss"].as_f64().unwrap();
        assert!(
            (loss - want).abs() <= 1e-6 * want.abs().max(1.0),
            "{case}: loss {loss}, torch {want}"
        );
        let mut compared =
            assert_grads_match(&tower_vars, &expected_grads, case, TOWER_TOLERANCE, false);
        if trains {
            compared += assert_grads_match(&lora_vars, &expected_grads, case, LORA_TOLERANCE, true);
            assert!(!lora_vars.is_empty());
        } else {
            for (name, var) in &lora_vars {
                let grad = var.grad();
                assert!(
                    !grad.defined() || grad.abs().max().double_value(&[]) == 0.0,
                    "frozen: LoRA {name} got a gradient"
                );
            }
            let no_grad = expected[case]["no_grad"].as_array().unwrap();
            assert_eq!(
                no_grad.len(),
                lora_vars.len(),
                "frozen: torch's LoRA without gradients"
            );
        }
        // Torch has a gradient for nothing that we did not compare.
        let prefix = format!("{case}/");
        let theirs = expected_grads.keys().filter(|n| n.starts_with(&prefix));
        assert_eq!(theirs.count(), compared, "{case}: torch's gradients");
        println!(
            "{case}: loss {loss} (torch {want}), {} tower and {} LoRA gradients compared",
            tower_vars.len(),
            if trains { lora_vars.len() } else { 0 }
        );
    }
}
