//! Bottleneck adapters (Houlsby and Pfeiffer placement) on BERT and the Llama: a fresh adapter
//! leaves the model exactly as it was (zero up-projection), the adapter saves and loads in its
//! own PEFT-style format, and training moves only the adapter and lowers the loss.

use ragtune_models::bert::BertModel;
use ragtune_models::llama::{Llama, LlamaConfig};
use ragtune_models::peft::{self, EncoderPeft, Peft, PeftConfig};
use ragtune_models::tokenize::{BertTokenizer, EncodedBatch};
use ragtune_testkit::{asset, scratch};
use serde_json::{json, Value};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

fn parse(text: &str) -> PeftConfig {
    toml::from_str(text).unwrap()
}

fn houlsby() -> PeftConfig {
    parse("method = \"bottleneck\"\nplacement = \"houlsby\"\nreduction_factor = 8")
}

fn pfeiffer() -> PeftConfig {
    parse("method = \"bottleneck\"\nplacement = \"pfeiffer\"\nbottleneck_size = 12\nnon_linearity = \"gelu\"")
}

fn bert() -> (nn::VarStore, BertModel) {
    let (mut vs, model) =
        BertModel::from_pretrained(&asset("bert-tiny"), Device::Cpu, Kind::Float).unwrap();
    vs.freeze();
    (vs, model)
}

fn batch() -> EncodedBatch {
    let tokenizer =
        BertTokenizer::from_file(&asset("bert-tiny").join("tokenizer.json"), 64).unwrap();
    tokenizer
        .encode_batch(
            &[
                "Where do I apply for a building permit?",
                "The city council issues permits after a review of the plans.",
                "short",
            ],
            Device::Cpu,
        )
        .unwrap()
}

fn tiny_llama() -> (nn::VarStore, Llama) {
    let config: LlamaConfig = serde_json::from_value(json!({
        "vocab_size": 300, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": true,
        "rms_norm_eps": 1e-5, "model_type": "llama", "hidden_act": "silu"
    }))
    .unwrap();
    tch::manual_seed(0);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = Llama::new(&vs.root(), &config).unwrap();
    vs.freeze();
    (vs, model)
}

fn llama_ids() -> Tensor {
    Tensor::from_slice(&[5i64, 17, 42, 9, 100, 7, 250, 3, 64, 11, 12, 13]).unsqueeze(0)
}

fn llama_logits(model: &Llama, adapter: Option<&Peft>) -> Tensor {
    let hidden = peft::forward_hidden(model, adapter, &llama_ids(), None).unwrap();
    model.logits(&hidden)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn perturb(vs: &nn::VarStore, seed: i64) {
    tch::manual_seed(seed);
    tch::no_grad(|| {
        for (_, mut var) in vs.variables() {
            let noise = Tensor::randn(var.size(), (Kind::Float, Device::Cpu)) * 0.1;
            let _ = var.f_add_(&noise).unwrap();
        }
    });
}

#[test]
fn fresh_bottleneck_adapters_leave_bert_and_the_llama_unchanged() {
    let (_vs, mut model) = bert();
    let batch = batch();
    let base = tch::no_grad(|| model.forward_t(&batch.as_input(), false));
    for (name, config, blocks) in [("houlsby", houlsby(), 4), ("pfeiffer", pfeiffer(), 2)] {
        let adapter = EncoderPeft::new(&config, &model, Device::Cpu).unwrap();
        // Two layers of bert-tiny; four tensors (down/up weight and bias) per adapter block.
        assert_eq!(adapter.var_store().variables().len(), blocks * 4, "{name}");
        model.set_adapter(Some(adapter));
        let with = tch::no_grad(|| model.forward_t(&batch.as_input(), false));
        let d = max_diff(&base, &with);
        println!("bert {name}: fresh adapter max |Δh| = {d:e}");
        assert_eq!(d, 0.0, "bert {name}: a fresh adapter changed the model");
        // Once trained (here: perturbed) it does change it.
        perturb(model.adapter().unwrap().var_store(), 1);
        let moved = max_diff(
            &base,
            &tch::no_grad(|| model.forward_t(&batch.as_input(), false)),
        );
        assert!(
            moved > 1e-2,
            "bert {name}: the adapter has no effect ({moved})"
        );
        model.set_adapter(None);
    }

    let (_vs, mut llama) = tiny_llama();
    let base = tch::no_grad(|| llama_logits(&llama, None));
    for (name, config) in [("houlsby", houlsby()), ("pfeiffer", pfeiffer())] {
        let adapter = Peft::new(&config, &llama, Device::Cpu, None).unwrap();
        adapter.attach(&mut llama);
        let d = max_diff(
            &base,
            &tch::no_grad(|| llama_logits(&llama, Some(&adapter))),
        );
        println!("llama {name}: fresh adapter max |Δlogit| = {d:e}");
        assert_eq!(d, 0.0, "llama {name}: a fresh adapter changed the model");
        perturb(adapter.var_store(), 2);
        let moved = max_diff(
            &base,
            &tch::no_grad(|| llama_logits(&llama, Some(&adapter))),
        );
        assert!(
            moved > 1e-3,
            "llama {name}: the adapter has no effect ({moved})"
        );
        llama.set_adapter(None);
    }
}

/// Pfeiffer's adapter reads the layer's own add-and-norm of the sublayer output
/// (`original_ln_before`); switching that off, with the same weights, gives another model.
#[test]
fn pfeiffer_feeds_the_adapter_the_normalized_sum() {
    let (_vs, mut model) = bert();
    let batch = batch();
    let mut outputs = vec![];
    for ln_before in [true, false] {
        let config = parse(&format!(
            "method = \"bottleneck\"\nplacement = \"pfeiffer\"\noriginal_ln_before = {ln_before}"
        ));
        let adapter = EncoderPeft::new(&config, &model, Device::Cpu).unwrap();
        perturb(adapter.var_store(), 9);
        model.set_adapter(Some(adapter));
        outputs.push(tch::no_grad(|| model.forward_t(&batch.as_input(), false)));
    }
    let d = max_diff(&outputs[0], &outputs[1]);
    assert!(d > 1e-3, "original_ln_before made no difference ({d})");
}

#[test]
fn bottleneck_adapters_save_and_load_in_their_own_format() {
    let work = scratch("peft-bottleneck-files");
    let (_vs, mut model) = bert();
    let batch = batch();
    for (name, config) in [("houlsby", houlsby()), ("pfeiffer", pfeiffer())] {
        let adapter = EncoderPeft::new(&config, &model, Device::Cpu).unwrap();
        perturb(adapter.var_store(), 3);
        let dir = work.join(format!("bert-{name}"));
        adapter.save(&dir).unwrap();
        model.set_adapter(Some(adapter));
        let before = tch::no_grad(|| model.forward_t(&batch.as_input(), false));
        let json: Value =
            serde_json::from_slice(&std::fs::read(dir.join("adapter_config.json")).unwrap())
                .unwrap();
        assert_eq!(json["peft_type"], "BOTTLENECK");
        assert_eq!(json["placement"], name);
        assert_eq!(json["original_ln_before"], name == "pfeiffer");
        let tensors = ragtune_models::checkpoint::load_safetensors(
            &dir.join("adapter_model.safetensors"),
            Device::Cpu,
        )
        .unwrap();
        assert!(tensors
            .contains_key("base_model.model.encoder.layer.1.output.bottleneck.adapter_up.weight"));
        assert_eq!(
            tensors.contains_key(
                "base_model.model.encoder.layer.0.attention.output.bottleneck.adapter_down.bias"
            ),
            name == "houlsby"
        );
        let reloaded = EncoderPeft::load(&dir, &model, Device::Cpu).unwrap();
        model.set_adapter(Some(reloaded));
        let after = tch::no_grad(|| model.forward_t(&batch.as_input(), false));
        assert_eq!(
            max_diff(&before, &after),
            0.0,
            "{name}: reload changed the model"
        );
        model.set_adapter(None);
    }
    // An adapter for bert-tiny (hidden 128) does not fit all-MiniLM-L6-v2 (hidden 384).
    let (_mvs, minilm) =
        BertModel::from_pretrained(&asset("all-MiniLM-L6-v2"), Device::Cpu, Kind::Float).unwrap();
    let err = EncoderPeft::load(&work.join("bert-houlsby"), &minilm, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("adapter_config.json") && err.contains("hidden_size = 128"),
        "{err}"
    );
    // Bottleneck adapters do not merge.
    let (_vs, mut fresh) = bert();
    let adapter = EncoderPeft::load(&work.join("bert-houlsby"), &fresh, Device::Cpu).unwrap();
    fresh.set_adapter(Some(adapter));
    assert!(peft::encoder::merge_and_unload(&mut fresh).is_err());
    assert!(
        fresh.adapter().is_some(),
        "a failed merge keeps the adapter on"
    );

    let (_vs, mut llama) = tiny_llama();
    let adapter = Peft::new(&houlsby(), &llama, Device::Cpu, None).unwrap();
    perturb(adapter.var_store(), 4);
    adapter.attach(&mut llama);
    let before = tch::no_grad(|| llama_logits(&llama, Some(&adapter)));
    let dir = work.join("llama-houlsby");
    adapter.save(&dir).unwrap();
    let reloaded = Peft::load(&dir, &llama, Device::Cpu).unwrap();
    reloaded.attach(&mut llama);
    let after = tch::no_grad(|| llama_logits(&llama, Some(&reloaded)));
    assert_eq!(
        max_diff(&before, &after),
        0.0,
        "llama: reload changed the model"
    );
    assert!(reloaded.merge_and_unload(&mut llama).is_err());
}

#[test]
fn training_a_bottleneck_adapter_moves_only_the_adapter_and_lowers_the_loss() {
    // BERT, Houlsby: pull the mean-pooled embeddings towards fixed random targets.
    let (vs, mut model) = bert();
    let base_weights: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.copy()))
        .collect();
    model.set_adapter(Some(
        EncoderPeft::new(&houlsby(), &model, Device::Cpu).unwrap(),
    ));
    let batch = batch();
    tch::manual_seed(5);
    let target = Tensor::randn([3, 128], (Kind::Float, Device::Cpu));
    let mask = batch.attention_mask.unsqueeze(-1).to_kind(Kind::Float);
    let mut opt = nn::Adam::default()
        .build(model.adapter().unwrap().var_store(), 1e-2)
        .unwrap();
    let mut losses = vec![];
    for step in 0..15 {
        let h = model.forward_t(&batch.as_input(), false);
        let pooled = (h * &mask).sum_dim_intlist(1, false, Kind::Float)
            / mask.sum_dim_intlist(1, false, Kind::Float);
        let loss = (pooled - &target).pow_tensor_scalar(2).mean(Kind::Float);
        opt.zero_grad();
        loss.backward();
        if step == 0 {
            for (name, t) in vs.variables() {
                assert!(!t.grad().defined(), "base variable {name} got a gradient");
            }
            for (name, t) in model.adapter().unwrap().var_store().variables() {
                assert!(
                    t.grad().defined(),
                    "adapter variable {name} has no gradient"
                );
            }
        }
        opt.step();
        losses.push(loss.double_value(&[]));
    }
    println!("bert houlsby losses: {losses:.4?}");
    assert!(
        losses[14] < 0.8 * losses[0],
        "loss did not fall: {losses:?}"
    );
    for (name, before) in &base_weights {
        assert_eq!(
            max_diff(before, &vs.variables()[name]),
            0.0,
            "base variable {name} changed"
        );
    }

    // The Llama, Pfeiffer: next-token cross-entropy on one sequence.
    let (lvs, mut llama) = tiny_llama();
    let adapter = Peft::new(&pfeiffer(), &llama, Device::Cpu, None).unwrap();
    adapter.attach(&mut llama);
    let mut opt = nn::Adam::default()
        .build(adapter.var_store(), 1e-2)
        .unwrap();
    let ids = llama_ids();
    let mut losses = vec![];
    for _ in 0..15 {
        let logits = llama_logits(&llama, Some(&adapter));
        let n = ids.size()[1] - 1;
        let loss = logits
            .narrow(1, 0, n)
            .reshape([n, -1])
            .cross_entropy_for_logits(&ids.narrow(1, 1, n).reshape([n]));
        opt.zero_grad();
        loss.backward();
        opt.step();
        losses.push(loss.double_value(&[]));
    }
    println!("llama pfeiffer losses: {losses:.4?}");
    assert!(
        losses[14] < 0.8 * losses[0],
        "loss did not fall: {losses:?}"
    );
    for (name, t) in lvs.variables() {
        assert!(
            !t.grad().defined(),
            "Llama base variable {name} got a gradient"
        );
    }
}
