//! A bi-encoder trained with a LoRA adapter (`[model.peft]`): only the adapter trains (no
//! gradients and no optimizer state for the base), the loss falls, and the export loads in Python
//! both as `PeftModel.from_pretrained(AutoModel.from_pretrained(base), dir/adapter)` and as the
//! merged `SentenceTransformer(dir)`, each giving our embeddings (cosine >= 0.9999).

use ragtune_retriever_train::adapters::is_adapter_variable;
use ragtune_retriever_train::losses::info_nce;
use ragtune_retriever_train::model::{BiEncoder, Embedder, ModelConfig};
use ragtune_trainer::{AdamW, OptimizerConfig, ParamPlan};
use serde_json::json;
use tch::{Device, Kind, Tensor};

fn config() -> ModelConfig {
    ModelConfig {
        base: ragtune_testkit::asset("bert-tiny"),
        max_length: 64,
        peft: Some(
            toml::from_str(
                "method = \"lora\"\nr = 4\nlora_alpha = 8\ntarget_modules = [\"query\", \"value\", \"dense\"]",
            )
            .unwrap(),
        ),
        ..Default::default()
    }
}

fn cosines(ours: &Tensor, theirs: &serde_json::Value) -> f64 {
    let rows: Vec<Vec<f64>> = serde_json::from_value(theirs.clone()).unwrap();
    let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
    let theirs = Tensor::from_slice(&flat).view([rows.len() as i64, -1]);
    Tensor::cosine_similarity(ours, &theirs, 1, 1e-12)
        .min()
        .double_value(&[])
}

#[test]
fn a_lora_bi_encoder_trains_only_the_adapter_and_exports_in_peft_format() {
    let model = BiEncoder::load(&config(), Device::Cpu, Kind::Float).unwrap();
    let queries = [
        "How long does a building permit take?",
        "Where are fees paid?",
        "Who inspects the works?",
        "Can I build a terrace?",
    ];
    let passages = [
        "A building permit takes about three months.",
        "Fees are paid at the town hall.",
        "A municipal inspector checks the works.",
        "Terraces need a minor works licence.",
    ];
    let zero_shot = model.encode_queries(&queries).unwrap();

    let variables = model.var_store().variables();
    let plan = ParamPlan::new(model.var_store().variables(), &OptimizerConfig::default()).unwrap();
    assert!(!plan.trainable.is_empty());
    for p in &plan.trainable {
        assert!(is_adapter_variable(&p.name), "{} would train", p.name);
    }
    let adapter_count = variables.keys().filter(|n| is_adapter_variable(n)).count();
    assert_eq!(plan.trainable.len(), adapter_count);
    let base: Vec<(String, Tensor)> = variables
        .iter()
        .filter(|(n, _)| !is_adapter_variable(n))
        .map(|(n, t)| (n.clone(), t.copy()))
        .collect();

    let mut optimizer = AdamW::new(plan.trainable, (0.9, 0.999), 1e-8);
    let mut losses = vec![];
    for _ in 0..12 {
        let q = model.forward_queries(&queries, false).unwrap();
        let p = model.forward_passages(&passages, false).unwrap();
        let loss = info_nce(&model.similarity().matrix(&q, &p), 0.05).unwrap();
        optimizer.zero_grad();
        loss.backward();
        for (name, _) in &base {
            assert!(
                !variables[name].grad().defined(),
                "base variable {name} got a gradient"
            );
        }
        optimizer.step(5e-3).unwrap();
        losses.push(loss.double_value(&[]));
    }
    println!("InfoNCE losses: {losses:.4?}");
    assert!(
        losses[11] < 0.7 * losses[0],
        "loss did not fall: {losses:?}"
    );
    for (name, before) in &base {
        let d = (before - &variables[name]).abs().max().double_value(&[]);
        assert_eq!(d, 0.0, "base variable {name} changed");
    }
    let ours = model.encode_queries(&queries).unwrap();
    let moved = (&ours - &zero_shot).abs().max().double_value(&[]);
    assert!(moved > 1e-3, "training did not change the embeddings");

    let dir = ragtune_testkit::scratch("retriever-peft").join("model");
    model.save(&dir).unwrap();
    let answer = ragtune_testkit::reference(
        "retriever_peft.py",
        &json!({
            "base": config().base,
            "adapter": dir.join("adapter"),
            "merged": dir,
            "texts": queries,
            "max_length": 64,
            "pooling": "mean",
            "normalize": false,
        }),
    );
    let peft = cosines(&ours, &answer["peft"]);
    let merged = cosines(&ours, &answer["merged"]);
    println!("min cosine vs PeftModel: {peft:.7}, vs merged SentenceTransformer: {merged:.7}");
    assert!(peft >= 0.9999, "PEFT route: cosine {peft}");
    assert!(merged >= 0.9999, "merged route: cosine {merged}");
}

#[test]
fn retrievers_refuse_adapters_that_do_not_merge() {
    for peft in [
        "method = \"bottleneck\"",
        "method = \"prompt_tuning\"\nnum_virtual_tokens = 4",
        "method = \"prefix_tuning\"\nnum_virtual_tokens = 4",
    ] {
        let mut config = config();
        config.peft = Some(toml::from_str(peft).unwrap());
        let err = BiEncoder::load(&config, Device::Cpu, Kind::Float)
            .unwrap_err()
            .to_string();
        assert!(err.contains("LoRA or IA3"), "{peft}: {err}");
    }
}
