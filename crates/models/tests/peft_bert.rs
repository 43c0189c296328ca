//! Encoder adapters made by ragtune (LoRA by names, by regex and with rsLoRA + DoRA on all linear
//! layers, IA3) on BERT are saved in PEFT's format, loaded by Python's `PeftModel.from_pretrained`
//! on transformers' `BertModel` (`AutoModel`), and must give our hidden states; reloading gives the
//! same adapter, merged weights give the adapted model with no adapter, and the base stays frozen.

use ragtune_models::bert::BertModel;
use ragtune_models::checkpoint::load_safetensors;
use ragtune_models::peft::encoder::merge_and_unload;
use ragtune_models::peft::{EncoderPeft, PeftConfig};
use ragtune_models::tokenize::{BertTokenizer, EncodedBatch};
use ragtune_testkit::{asset, reference, scratch};
use serde_json::json;
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

fn load(dir: &Path) -> (nn::VarStore, BertModel) {
    let (mut vs, model) = BertModel::from_pretrained(dir, Device::Cpu, Kind::Float).unwrap();
    vs.freeze();
    (vs, model)
}

/// Two texts of different lengths, so the batch has padding.
fn batch(dir: &Path) -> EncodedBatch {
    let tokenizer = BertTokenizer::from_file(&dir.join("tokenizer.json"), 64).unwrap();
    tokenizer
        .encode_batch(
            &[
                "Where do I apply for a building permit in Zaragoza?",
                "Permits are issued by the city council's urban planning office after review.",
            ],
            Device::Cpu,
        )
        .unwrap()
}

fn hidden(model: &BertModel, batch: &EncodedBatch) -> Tensor {
    tch::no_grad(|| model.forward_t(&batch.as_input(), false))
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Moves every adapter variable away from its no-op initialization, so that a key PEFT misses or
/// misreads changes the hidden states.
fn perturb(adapter: &EncoderPeft, seed: i64) {
    tch::manual_seed(seed);
    tch::no_grad(|| {
        for (name, mut var) in adapter.var_store().variables() {
            let noise = Tensor::randn(var.size(), (Kind::Float, Device::Cpu));
            if name.contains("ia3_l") || name.contains("magnitude") {
                let _ = var.f_mul_(&(noise * 0.2 + 1.0)).unwrap();
            } else if name.contains("lora_B") {
                var.f_copy_(&(noise * 0.1)).unwrap();
            } else {
                let _ = var.f_add_(&(noise * 0.05)).unwrap();
            }
        }
    });
}

fn parse(text: &str) -> PeftConfig {
    toml::from_str(text).unwrap()
}

/// Per adapter: name, hidden states, pooler output (when the model has a pooler).
type Outputs = Vec<(String, Tensor, Option<Tensor>)>;

/// Saves, reloads and checks each adapter; returns the base's hidden states, each adapter's
/// outputs and the adapter folders.
fn run_ours(
    model_dir: &Path,
    configs: &[(&str, PeftConfig)],
    work: &Path,
    batch: &EncodedBatch,
) -> (Tensor, Outputs, serde_json::Map<String, serde_json::Value>) {
    let (_vs, mut model) = load(model_dir);
    let base = hidden(&model, batch);
    let mut ours = vec![];
    let mut dirs = serde_json::Map::new();
    for (seed, (name, config)) in configs.iter().enumerate() {
        let adapter = EncoderPeft::new(config, &model, Device::Cpu).unwrap();
        assert!(adapter.trainable_parameters() > 0);
        perturb(&adapter, seed as i64);
        let out = work.join(name);
        adapter.save(&out).unwrap();
        model.set_adapter(Some(adapter));
        let before = hidden(&model, batch);
        let pooled = tch::no_grad(|| model.pooler_output_t(&before, false));
        let reloaded = EncoderPeft::load(&out, &model, Device::Cpu).unwrap();
        model.set_adapter(Some(reloaded));
        let after = hidden(&model, batch);
        assert!(
            max_diff(&before, &after) < 1e-6,
            "{name}: reload changed the hidden states"
        );
        model.set_adapter(None);
        ours.push((name.to_string(), before, pooled));
        dirs.insert(name.to_string(), json!(out));
    }
    (base, ours, dirs)
}

fn compare_with_peft(
    model_dir: &Path,
    tag: &str,
    configs: &[(&str, PeftConfig)],
    work: &Path,
) -> Outputs {
    let batch = batch(model_dir);
    let (base, ours, dirs) = run_ours(model_dir, configs, &work.join("adapters"), &batch);
    let file = work.join("reference.safetensors");
    let answer = reference(
        "peft_bert_ref.py",
        &json!({
            "op": "hidden",
            "model_dir": model_dir,
            "adapters": dirs,
            "input_ids": Vec::<Vec<i64>>::try_from(&batch.input_ids).unwrap(),
            "attention_mask": Vec::<Vec<i64>>::try_from(&batch.attention_mask).unwrap(),
            "out": file,
        }),
    );
    let expected = load_safetensors(&file, Device::Cpu).unwrap();
    // Padding positions are not compared: neither side defines them.
    let mask = batch.attention_mask.unsqueeze(-1).to_kind(Kind::Float);
    let diff = |a: &Tensor, b: &Tensor| max_diff(&(a * &mask), &(b * &mask));
    let base_diff = diff(&base, &expected["base"]);
    assert!(base_diff < 1e-5, "base hidden states differ by {base_diff}");
    for (name, h, pooled) in &ours {
        let d = diff(h, &expected[name.as_str()]);
        let moved = diff(h, &base);
        println!(
            "{tag} {name}: max |Δh| vs PEFT = {d:.2e} (adapter moved h by {moved:.2e}; PEFT missing {})",
            answer["missing"][name]
        );
        assert!(
            moved > 1e-2,
            "{name}: the adapter does not change the model"
        );
        assert!(d <= 1e-5, "{name}: max abs hidden-state diff vs PEFT {d}");
        if let (Some(p), Some(want)) = (pooled, expected.get(&format!("{name}.pooler"))) {
            let d = max_diff(p, want);
            println!("{tag} {name}: pooler output max |Δ| vs PEFT = {d:.2e}");
            assert!(
                d <= 1e-5,
                "{name}: pooler output differs from PEFT's by {d}"
            );
        }
    }
    ours
}

#[test]
fn bert_tiny_adapters_load_in_python_peft_with_the_same_hidden_states_and_merge() {
    let dir = asset("bert-tiny");
    let configs = vec![
        // No targets: PEFT's defaults for BERT (query, value), written out in the config.
        ("lora_default", parse("method = \"lora\"\nr = 4\nlora_alpha = 8")),
        (
            "lora_dora_rs",
            parse("method = \"lora\"\nr = 8\nlora_alpha = 16\nuse_rslora = true\nuse_dora = true\ntarget_modules = \"all-linear\""),
        ),
        (
            "lora_regex",
            parse("method = \"lora\"\nr = 2\nlora_alpha = 4\ntarget_modules = 'encoder\\.layer\\.1\\.(intermediate|output)\\.dense'"),
        ),
        // PEFT's defaults for BERT: key, value, output.dense (the last as feed-forward).
        ("ia3", parse("method = \"ia3\"")),
    ];
    let work = scratch("peft-bert-tiny");
    let ours = compare_with_peft(&dir, "peft-bert-tiny", &configs, &work);

    let saved = |name: &str| -> serde_json::Value {
        let file = work.join("adapters").join(name).join("adapter_config.json");
        serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap()
    };
    assert_eq!(
        saved("lora_default")["target_modules"],
        json!(["query", "value"])
    );
    assert_eq!(saved("ia3")["feedforward_modules"], json!(["output.dense"]));
    assert_eq!(saved("ia3")["task_type"], serde_json::Value::Null);

    // merge_and_unload: the plain model with merged weights gives the adapter's hidden states.
    let batch = batch(&dir);
    for name in ["lora_dora_rs", "ia3"] {
        let (_vs, mut fresh) = load(&dir);
        let path = work.join("adapters").join(name);
        let adapter = EncoderPeft::load(&path, &fresh, Device::Cpu).unwrap();
        fresh.set_adapter(Some(adapter));
        merge_and_unload(&mut fresh).unwrap();
        assert!(fresh.adapter().is_none());
        let merged = hidden(&fresh, &batch);
        let want = &ours.iter().find(|(n, _, _)| n == name).unwrap().1;
        let d = max_diff(&merged, want);
        println!("{name}: merged vs adapter max |Δh| = {d:.2e}");
        assert!(
            d < 1e-5,
            "{name}: merged model differs from the adapter by {d}"
        );
    }
}

#[test]
fn minilm_lora_on_every_dense_layer_matches_peft_including_the_pooler() {
    let configs = vec![(
        "lora_dense_dora",
        parse("method = \"lora\"\nr = 4\nlora_alpha = 8\nuse_dora = true\ntarget_modules = [\"dense\"]"),
    )];
    let work = scratch("peft-minilm");
    compare_with_peft(&asset("all-MiniLM-L6-v2"), "peft-minilm", &configs, &work);
}

/// The model owns its adapter (no `Rc`), so a BERT with an adapter can still move to another
/// thread, as a plain one can.
#[test]
fn a_bert_with_an_adapter_stays_send() {
    fn assert_send<T: Send>() {}
    assert_send::<BertModel>();
    assert_send::<ragtune_models::encoder::SentenceEncoder>();
}

#[test]
fn under_lora_only_the_adapter_gets_gradients() {
    let dir = asset("bert-tiny");
    let (vs, mut model) = load(&dir);
    let adapter = EncoderPeft::new(
        &parse("method = \"lora\"\nr = 4\nlora_dropout = 0.1\ntarget_modules = \"all-linear\""),
        &model,
        Device::Cpu,
    )
    .unwrap();
    perturb(&adapter, 7);
    model.set_adapter(Some(adapter));
    let batch = batch(&dir);
    let loss = model
        .forward_t(&batch.as_input(), true)
        .pow_tensor_scalar(2)
        .mean(Kind::Float);
    loss.backward();
    for (name, t) in vs.variables() {
        assert!(!t.grad().defined(), "base variable {name} got a gradient");
    }
    let adapter = model.adapter().unwrap();
    for (name, t) in adapter.var_store().variables() {
        assert!(
            t.grad().defined(),
            "adapter variable {name} has no gradient"
        );
        assert!(
            t.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0,
            "{name}: zero gradient"
        );
    }
}
