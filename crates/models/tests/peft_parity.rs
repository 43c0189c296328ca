//! Adapters made by ragtune (LoRA, LoRA + rsLoRA + DoRA on all linear layers, IA3, prefix tuning
//! through its MLP, prompt tuning from text) are saved in PEFT's format, loaded by Python's
//! `PeftModel.from_pretrained` on transformers' Llama, and must give our logits; reloading gives
//! the same adapter, and merged LoRA/IA3 weights give the adapted logits with no adapter.

use ragtune_models::checkpoint::load_safetensors;
use ragtune_models::gguf_convert::convert_gguf_to_hf;
use ragtune_models::llama::Llama;
use ragtune_models::llama_load::{load_hf_folder, CausalLm};
use ragtune_models::peft::{self, Peft, PeftConfig};
use ragtune_testkit::{asset, reference, scratch};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};

fn converted() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch("peft-model").join("smollm2-hf");
        let gguf = asset("smollm2-135m-instruct").join("SmolLM2-135M-Instruct.Q4_1.gguf");
        convert_gguf_to_hf(&gguf, &dir).expect("conversion");
        dir
    })
}

fn load() -> CausalLm {
    let mut lm = load_hf_folder(converted(), Device::Cpu, Kind::Float).unwrap();
    lm.var_store.freeze();
    lm
}

fn logits(model: &Llama, adapter: Option<&Peft>, ids: &Tensor) -> Tensor {
    tch::no_grad(|| model.logits(&peft::forward_hidden(model, adapter, ids, None).unwrap()))
        .squeeze_dim(0)
}

/// Moves every adapter variable away from its no-op initialization, so that a key PEFT misses
/// or misreads changes the logits.
fn perturb(adapter: &Peft, seed: i64) {
    tch::manual_seed(seed);
    tch::no_grad(|| {
        for (name, mut var) in adapter.var_store().variables() {
            let noise = Tensor::randn(var.size(), (Kind::Float, Device::Cpu));
            if name.contains("ia3_l") || name.contains("magnitude") {
                let _ = var.f_mul_(&(noise * 0.1 + 1.0)).unwrap();
            } else if name.contains("lora_B") {
                var.f_copy_(&(noise * 0.02)).unwrap();
            } else {
                let _ = var.f_add_(&(noise * 0.01)).unwrap();
            }
        }
    });
}

fn configs() -> Vec<(&'static str, PeftConfig)> {
    let parse = |t: &str| -> PeftConfig { toml::from_str(t).unwrap() };
    vec![
        ("lora_qv", parse("method = \"lora\"\nr = 4\nlora_alpha = 8\ntarget_modules = [\"q_proj\", \"v_proj\"]")),
        (
            "lora_dora_rs",
            parse("method = \"lora\"\nr = 8\nlora_alpha = 16\nuse_rslora = true\nuse_dora = true\ntarget_modules = \"all-linear\""),
        ),
        (
            "lora_regex",
            parse("method = \"lora\"\nr = 2\nlora_alpha = 4\ntarget_modules = 'model\\.layers\\.(0|1|2)\\.mlp\\.(up|down)_proj'"),
        ),
        ("ia3", parse("method = \"ia3\"")),
        ("prefix", parse("method = \"prefix_tuning\"\nnum_virtual_tokens = 5\nencoder_hidden_size = 32")),
        ("prompt", parse("method = \"prompt_tuning\"\nnum_virtual_tokens = 6\ninit_text = \"Answer the question:\"")),
    ]
}

#[test]
fn adapters_load_in_python_peft_with_the_same_logits_and_merge() {
    let mut lm = load();
    let ids_vec = lm
        .tokenizer
        .encode("Where do I apply for a building permit in Zaragoza?", true)
        .unwrap();
    let ids = Tensor::from_slice(&ids_vec).unsqueeze(0);
    let init_ids = lm.tokenizer.encode("Answer the question:", false).unwrap();
    let work = scratch("peft-parity");
    let dir = work.join("adapters");
    let mut ours = vec![];
    let mut dirs = serde_json::Map::new();
    for (seed, (name, config)) in configs().into_iter().enumerate() {
        let adapter = Peft::new(&config, &lm.model, Device::Cpu, Some(&init_ids)).unwrap();
        assert!(adapter.trainable_parameters() > 0);
        perturb(&adapter, seed as i64);
        adapter.attach(&mut lm.model);
        let before = logits(&lm.model, Some(&adapter), &ids);
        let out = dir.join(name);
        adapter.save(&out).unwrap();
        // Reloaded (from disk, as Python would) the adapter computes the same thing.
        let reloaded = Peft::load(&out, &lm.model, Device::Cpu).unwrap();
        reloaded.attach(&mut lm.model);
        let after = logits(&lm.model, Some(&reloaded), &ids);
        assert!(
            (&before - &after).abs().max().double_value(&[]) < 1e-5,
            "{name}: reload changed the logits"
        );
        lm.model.set_adapter(None);
        ours.push((name, before));
        dirs.insert(name.to_string(), json!(out));
    }
    let base = logits(&lm.model, None, &ids);

    let file = work.join("reference.safetensors");
    let answer = reference(
        "peft_ref.py",
        &json!({"op": "logits", "model_dir": converted(), "adapters": dirs, "input_ids": ids_vec, "out": file}),
    );
    let expected = load_safetensors(&file, Device::Cpu).unwrap();
    let base_diff = (&base - &expected["base"]).abs().max().double_value(&[]);
    assert!(base_diff < 1e-3, "base logits differ by {base_diff}");
    for (name, logits) in &ours {
        let diff = (logits - &expected[*name]).abs().max().double_value(&[]);
        let moved = (logits - &base).abs().max().double_value(&[]);
        println!("{name}: max |Δlogit| vs PEFT = {diff:.2e} (adapter moved logits by {moved:.2e}, virtual tokens {})", answer["virtual"][name]);
        assert!(
            moved > 1e-2,
            "{name}: the adapter does not change the model, so the test proves nothing"
        );
        assert!(diff < 2e-3, "{name}: max abs logit diff vs PEFT {diff}");
    }

    // merge_and_unload: the plain model with merged weights gives the adapter's logits.
    for name in ["lora_dora_rs", "ia3"] {
        let mut fresh = load();
        let adapter = Peft::load(&dir.join(name), &fresh.model, Device::Cpu).unwrap();
        adapter.merge_and_unload(&mut fresh.model).unwrap();
        assert!(fresh.model.adapter().is_none());
        let merged = logits(&fresh.model, None, &ids);
        let want = &ours.iter().find(|(n, _)| *n == name).unwrap().1;
        let diff = (&merged - want).abs().max().double_value(&[]);
        println!("{name}: merged vs adapter max |Δlogit| = {diff:.2e}");
        assert!(
            diff < 2e-3,
            "{name}: merged model differs from the adapter by {diff}"
        );
    }
}
