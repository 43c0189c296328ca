//! Exported folders load in sentence-transformers and embed as ragtune does (cosine >= 0.9999).

use ragtune_models::pooling::{Pooling, PoolingMode};
use ragtune_retriever_train::export::save_sentence_transformers;
use ragtune_retriever_train::model::{Architecture, BiEncoder, Embedder, ModelConfig};
use serde_json::json;
use tch::{Device, Kind, Tensor};

#[test]
fn sentence_transformers_loads_the_export_and_agrees() {
    let dir = ragtune_testkit::scratch("retriever-export");
    let texts = [
        "How long does a building permit take?",
        "Fees are paid at the town hall.",
        "short",
    ];
    let dpr_config = ModelConfig {
        base: ragtune_testkit::asset("bert-tiny"),
        architecture: Architecture::Dpr,
        max_length: 64,
        ..Default::default()
    };
    // bert-tiny has no sentence-transformers files: the export writes them (CLS pooling, no Normalize).
    let dpr = BiEncoder::load(&dpr_config, Device::Cpu, Kind::Float).unwrap();
    let dpr_dir = dir.join("dpr");
    dpr.save(&dpr_dir).unwrap();
    // Mean pooling plus Normalize, as all-MiniLM-L6-v2 has, on the same tiny weights.
    let mut normalized =
        ragtune_models::encoder::SentenceEncoder::load(&dpr_config.base, Device::Cpu, Kind::Float)
            .unwrap();
    normalized.set_pooling(Pooling::new(PoolingMode::Mean, true));
    normalized.set_max_length(64).unwrap();
    let normalized_dir = dir.join("mean-normalize");
    save_sentence_transformers(&normalized, &normalized_dir).unwrap();

    let folders = [
        dpr_dir.display().to_string(),
        normalized_dir.display().to_string(),
    ];
    let expected = ragtune_testkit::reference(
        "retriever_export.py",
        &json!({"folders": folders, "texts": texts}),
    );
    let ours = [
        dpr.encode_passages(&texts).unwrap(),
        normalized.encode(&texts).unwrap(),
    ];
    for (folder, ours) in folders.iter().zip(ours) {
        let theirs: Vec<Vec<f64>> =
            serde_json::from_value(expected["embeddings"][folder].clone()).unwrap();
        let flat: Vec<f32> = theirs.iter().flatten().map(|&v| v as f32).collect();
        let theirs = Tensor::from_slice(&flat).view([texts.len() as i64, -1]);
        let cosine = Tensor::cosine_similarity(&ours, &theirs, 1, 1e-12);
        let worst = cosine.min().double_value(&[]);
        assert!(worst >= 0.9999, "{folder}: cosine {worst}");
        let norms = (&ours - &theirs).abs().max().double_value(&[]);
        assert!(norms < 1e-3, "{folder}: max |difference| {norms}");
    }
    let modules: Vec<String> =
        serde_json::from_value(expected["modules"][&folders[1]].clone()).unwrap();
    assert_eq!(modules, ["Transformer", "Pooling", "Normalize"]);
    let modules: Vec<String> =
        serde_json::from_value(expected["modules"][&folders[0]].clone()).unwrap();
    assert_eq!(modules, ["Transformer", "Pooling"]);
}

#[test]
fn separate_towers_train_as_one_var_store() {
    let config = ModelConfig {
        base: ragtune_testkit::asset("bert-tiny"),
        architecture: Architecture::Dpr,
        shared_towers: false,
        max_length: 32,
        ..Default::default()
    };
    let model = BiEncoder::load(&config, Device::Cpu, Kind::Float).unwrap();
    let single = model.query_tower().var_store().variables().len();
    let joint = model.var_store().variables();
    assert_eq!(joint.len(), 2 * single);
    assert!(joint.contains_key("query.embeddings.word_embeddings.weight"));
    assert!(joint.contains_key("passage.encoder.layer.0.attention.self.query.weight"));
    // Same storage: a change through the joint store is seen by the tower.
    let name = "passage.embeddings.LayerNorm.bias";
    let _filled = tch::no_grad(|| joint[name].shallow_clone().fill_(0.5));
    let tower = model.passage_tower().var_store().variables();
    assert_eq!(
        tower["embeddings.LayerNorm.bias"]
            .mean(Kind::Float)
            .double_value(&[]),
        0.5
    );
    assert_ne!(
        model.query_tower().var_store().variables()["embeddings.LayerNorm.bias"]
            .mean(Kind::Float)
            .double_value(&[]),
        0.5
    );
    let bad = ModelConfig {
        architecture: Architecture::Contriever,
        ..config
    };
    assert!(BiEncoder::load(&bad, Device::Cpu, Kind::Float)
        .unwrap_err()
        .to_string()
        .contains("shared"));
}
