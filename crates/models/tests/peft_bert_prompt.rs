//! Prompt tuning and prefix tuning on BERT, in Python PEFT's format: adapters made by ragtune load
//! in `PeftModel.from_pretrained(AutoModel.from_pretrained(base), dir)` (which builds
//! `PeftModelForFeatureExtraction`) with the same last hidden state on a padded batch, adapters
//! made by Python PEFT load in ragtune with the same output, a text initialization equals PEFT's
//! `TEXT` one, sentence pooling covers the virtual tokens as sentence-transformers does, and
//! training moves the adapter only.

use ragtune_models::bert::BertModel;
use ragtune_models::checkpoint::load_safetensors;
use ragtune_models::encoder::SentenceEncoder;
use ragtune_models::peft::encoder::merge_and_unload;
use ragtune_models::peft::{EncoderPeft, PeftConfig};
use ragtune_models::tokenize::{BertTokenizer, EncodedBatch};
use ragtune_testkit::{asset, reference, scratch};
use serde_json::json;
use std::path::Path;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

const TEXTS: [&str; 4] = [
    "Where do I apply for a building permit in Zaragoza?",
    "Permits are issued by the city council's urban planning office after review.",
    "How long does it take?",
    "A minor works licence usually takes about a month, a major one longer, depending on the project.",
];

const INIT_TEXT: &str = "Which passage answers this question?";

fn load(dir: &Path) -> (nn::VarStore, BertModel) {
    let (mut vs, model) = BertModel::from_pretrained(dir, Device::Cpu, Kind::Float).unwrap();
    vs.freeze();
    (vs, model)
}

fn tokenizer(dir: &Path) -> BertTokenizer {
    BertTokenizer::from_file(&dir.join("tokenizer.json"), 64).unwrap()
}

/// Texts of different lengths, so the batch has padding.
fn batch(dir: &Path) -> EncodedBatch {
    tokenizer(dir).encode_batch(&TEXTS, Device::Cpu).unwrap()
}

/// The ids PEFT's `TEXT` initialization takes: the tokenizer's, special tokens included.
fn init_ids(dir: &Path) -> Vec<i64> {
    tokenizer(dir).tokenize(&[INIT_TEXT]).unwrap().remove(0).ids
}

fn hidden(model: &BertModel, batch: &EncodedBatch) -> Tensor {
    tch::no_grad(|| model.forward_t(&batch.as_input(), false))
}

/// Max abs difference at the output's real positions (padding is defined by neither side).
fn masked_diff(a: &Tensor, b: &Tensor, mask: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "output shapes differ");
    let mask = mask.unsqueeze(-1).to_kind(Kind::Float);
    ((a - b) * mask).abs().max().double_value(&[])
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn parse(text: &str) -> PeftConfig {
    toml::from_str(text).unwrap()
}

/// Moves every adapter variable off its initialization, so that a misread table shows.
fn perturb(adapter: &EncoderPeft, seed: i64) {
    tch::manual_seed(seed);
    tch::no_grad(|| {
        for (_, mut var) in adapter.var_store().variables() {
            let noise = Tensor::randn(var.size(), (Kind::Float, Device::Cpu)) * 0.05;
            let _ = var.f_add_(&noise).unwrap();
        }
    });
}

fn configs() -> Vec<(&'static str, PeftConfig)> {
    vec![
        (
            "prompt",
            parse("method = \"prompt_tuning\"\nnum_virtual_tokens = 5"),
        ),
        (
            "prompt_text",
            parse(&format!(
                "method = \"prompt_tuning\"\nnum_virtual_tokens = 12\ninit_text = \"{INIT_TEXT}\""
            )),
        ),
        (
            "prefix",
            parse("method = \"prefix_tuning\"\nnum_virtual_tokens = 4\nprefix_projection = false"),
        ),
        // Trained through the MLP; saved as its output table.
        (
            "prefix_mlp",
            parse("method = \"prefix_tuning\"\nnum_virtual_tokens = 3\nencoder_hidden_size = 32"),
        ),
    ]
}

#[test]
fn prompt_and_prefix_adapters_match_python_peft_both_ways() {
    let dir = asset("bert-tiny");
    let work = scratch("peft-bert-prompt");
    let batch = batch(&dir);
    let ids = init_ids(&dir);
    let (_vs, mut model) = load(&dir);
    let base = hidden(&model, &batch);

    // Ours, saved, reloaded, then run by Python PEFT.
    let mut ours = vec![];
    let mut dirs = serde_json::Map::new();
    let mut text_init = None;
    for (seed, (name, config)) in configs().into_iter().enumerate() {
        let init = matches!(&config, PeftConfig::PromptTuning(c) if c.init_text.is_some());
        let adapter = EncoderPeft::new_with_init_text(
            &config,
            &model,
            Device::Cpu,
            init.then_some(ids.as_slice()),
        )
        .unwrap();
        assert!(adapter.trainable_parameters() > 0);
        if init {
            let EncoderPeft::Prompt(p) = &adapter else {
                unreachable!()
            };
            text_init = Some(p.embeddings().detach().copy());
        }
        perturb(&adapter, seed as i64);
        let out = work.join("ours").join(name);
        adapter.save(&out).unwrap();
        model.set_adapter(Some(adapter));
        let before = hidden(&model, &batch);
        let mask = model.output_mask(&batch.attention_mask);
        model.set_adapter(Some(EncoderPeft::load(&out, &model, Device::Cpu).unwrap()));
        let after = hidden(&model, &batch);
        assert!(
            masked_diff(&before, &after, &mask) < 1e-6,
            "{name}: reloading changed the hidden states"
        );
        let virtual_tokens = model.virtual_tokens();
        model.set_adapter(None);
        let saved: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("adapter_config.json")).unwrap())
                .unwrap();
        assert_eq!(saved["task_type"], json!("FEATURE_EXTRACTION"));
        ours.push((name, before, mask, virtual_tokens));
        dirs.insert(name.to_string(), json!(out));
    }
    let file = work.join("reference.safetensors");
    reference(
        "peft_bert_ref.py",
        &json!({
            "op": "hidden",
            "model_dir": dir,
            "adapters": dirs,
            "input_ids": Vec::<Vec<i64>>::try_from(&batch.input_ids).unwrap(),
            "attention_mask": Vec::<Vec<i64>>::try_from(&batch.attention_mask).unwrap(),
            "out": file,
        }),
    );
    let expected = load_safetensors(&file, Device::Cpu).unwrap();
    for (name, h, mask, virtual_tokens) in &ours {
        let want = &expected[*name];
        let d = masked_diff(h, want, mask);
        // The text tokens' states, past any virtual tokens, against the base model's.
        let text = h.narrow(1, *virtual_tokens, base.size()[1]);
        let moved = masked_diff(&text, &base, &batch.attention_mask);
        println!(
            "ours {name}: max |Δh| vs PEFT = {d:.2e} over {:?} (adapter moved h by {moved:.2e})",
            h.size()
        );
        assert!(
            moved > 1e-2,
            "{name}: the adapter does not change the model"
        );
        assert!(d <= 1e-5, "{name}: max abs hidden-state diff vs PEFT {d}");
    }

    // sentence-transformers' mean pooling of PEFT's output, against our SentenceEncoder's.
    let mut encoder = SentenceEncoder::load(&dir, Device::Cpu, Kind::Float).unwrap();
    for name in ["prompt_text", "prefix"] {
        let adapter =
            EncoderPeft::load(&work.join("ours").join(name), encoder.model(), Device::Cpu).unwrap();
        encoder.model_mut().set_adapter(Some(adapter));
        let pooled = encoder.encode(&TEXTS).unwrap();
        let d = max_diff(&pooled, &expected[&format!("{name}.mean")]);
        println!("ours {name}: mean-pooled embedding max |Δ| vs PEFT + extended mask = {d:.2e}");
        assert!(d <= 1e-5, "{name}: pooled embedding differs by {d}");
        let tokens = encoder.token_embeddings(&TEXTS[..1]).unwrap().remove(0);
        let h = &ours.iter().find(|o| o.0 == name).unwrap();
        let first_text = h.1.get(0).narrow(0, h.3, tokens.ids.len() as i64);
        let d = max_diff(&tokens.embeddings, &first_text);
        assert!(
            d <= 1e-5,
            "{name}: token embeddings are not the text tokens' states ({d})"
        );
    }

    // Python PEFT's own adapters (its initialization, its save), loaded by ragtune.
    let specs = json!({
        "py_prompt": {"method": "prompt", "num_virtual_tokens": 6, "perturb": true},
        "py_prompt_text": {"method": "prompt", "num_virtual_tokens": 12, "init_text": INIT_TEXT},
        "py_prefix": {"method": "prefix", "num_virtual_tokens": 4, "perturb": true},
        "py_prefix_mlp": {"method": "prefix", "num_virtual_tokens": 2, "prefix_projection": true},
    });
    let mut specs = specs.as_object().unwrap().clone();
    for (name, spec) in specs.iter_mut() {
        spec["dir"] = json!(work.join("python").join(name));
    }
    let file = work.join("python.safetensors");
    reference(
        "peft_bert_ref.py",
        &json!({
            "op": "make",
            "model_dir": dir,
            "adapters": specs,
            "seed": 11,
            "input_ids": Vec::<Vec<i64>>::try_from(&batch.input_ids).unwrap(),
            "attention_mask": Vec::<Vec<i64>>::try_from(&batch.attention_mask).unwrap(),
            "out": file,
        }),
    );
    let python = load_safetensors(&file, Device::Cpu).unwrap();
    let d = max_diff(text_init.as_ref().unwrap(), &python["py_prompt_text.init"]);
    println!("TEXT init: max |Δ| vs PEFT = {d:.2e}");
    assert!(
        d <= 1e-6,
        "the text initialization differs from PEFT's by {d}"
    );
    for name in specs.keys() {
        let adapter =
            EncoderPeft::load(&work.join("python").join(name), &model, Device::Cpu).unwrap();
        model.set_adapter(Some(adapter));
        let h = hidden(&model, &batch);
        let mask = model.output_mask(&batch.attention_mask);
        let d = masked_diff(&h, &python[name.as_str()], &mask);
        println!(
            "python {name}: max |Δh| vs PEFT = {d:.2e} over {:?}",
            h.size()
        );
        assert!(d <= 1e-5, "{name}: max abs hidden-state diff vs PEFT {d}");
        model.set_adapter(None);
    }
}

#[test]
fn training_prompt_or_prefix_tuning_moves_only_the_adapter() {
    let dir = asset("bert-tiny");
    let batch = batch(&dir);
    for (name, config) in configs() {
        if let PeftConfig::PromptTuning(c) = &config {
            if c.init_text.is_some() {
                continue;
            }
        }
        let (vs, mut model) = load(&dir);
        let base_before: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.detach().copy()))
            .collect();
        let adapter = EncoderPeft::new(&config, &model, Device::Cpu).unwrap();
        let adapter_before: Vec<Tensor> = adapter
            .var_store()
            .trainable_variables()
            .iter()
            .map(|t| t.detach().copy())
            .collect();
        model.set_adapter(Some(adapter));
        let adapter = model.adapter().unwrap();
        let mut opt = nn::Adam::default()
            .build(adapter.var_store(), 1e-2)
            .unwrap();
        for step in 0..3 {
            let out = model.forward_t(&batch.as_input(), true);
            let mask = model
                .output_mask(&batch.attention_mask)
                .unsqueeze(-1)
                .to_kind(Kind::Float);
            let loss = (out * mask).pow_tensor_scalar(2).mean(Kind::Float);
            opt.zero_grad();
            loss.backward();
            for (var, t) in vs.variables() {
                assert!(
                    !t.grad().defined(),
                    "{name}: base variable {var} got a gradient"
                );
            }
            for t in adapter.var_store().trainable_variables() {
                assert!(
                    t.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0,
                    "{name}: an adapter variable got no gradient at step {step}"
                );
            }
            opt.step();
        }
        for (after, before) in adapter
            .var_store()
            .trainable_variables()
            .iter()
            .zip(&adapter_before)
        {
            assert!(
                max_diff(after, before) > 0.0,
                "{name}: training left the adapter as it was"
            );
        }
        let now = vs.variables();
        for (var, before) in &base_before {
            assert_eq!(
                max_diff(&now[var], before),
                0.0,
                "{name}: base variable {var} changed"
            );
        }
    }
}

#[test]
fn prompt_learning_on_bert_refuses_what_it_cannot_do() {
    let dir = asset("bert-tiny");
    let (_vs, mut model) = load(&dir);
    let with_text =
        parse("method = \"prompt_tuning\"\nnum_virtual_tokens = 4\ninit_text = \"hello\"");
    let err = EncoderPeft::new(&with_text, &model, Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("new_with_init_text"), "{err}");

    // A null task type would make Python PEFT ignore the virtual tokens.
    let work = scratch("peft-bert-prompt-refuse");
    let adapter = EncoderPeft::new(
        &parse("method = \"prompt_tuning\"\nnum_virtual_tokens = 4"),
        &model,
        Device::Cpu,
    )
    .unwrap();
    adapter.save(&work).unwrap();
    let config_file = work.join("adapter_config.json");
    let mut saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_file).unwrap()).unwrap();
    saved["task_type"] = serde_json::Value::Null;
    std::fs::write(&config_file, serde_json::to_vec(&saved).unwrap()).unwrap();
    let err = EncoderPeft::load(&work, &model, Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("FEATURE_EXTRACTION"), "{err}");

    model.set_adapter(Some(adapter));
    let err = merge_and_unload(&mut model).unwrap_err();
    assert!(err.to_string().contains("only LoRA and IA3 merge"), "{err}");
    assert!(
        model.adapter().is_some(),
        "a failed merge keeps the adapter"
    );
}
