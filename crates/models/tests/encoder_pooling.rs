//! Pooling against sentence-transformers' own Pooling and Normalize modules (asked at test time
//! through `tests/reference/bert_ref.py`), and reading pooling from sentence-transformers folders.

use ragtune_models::pooling::{Pooling, PoolingMode};
use ragtune_testkit::{asset, reference, scratch};
use serde_json::json;
use tch::{Device, Kind, Tensor};

#[test]
fn every_mode_matches_sentence_transformers_with_and_without_normalize() {
    tch::manual_seed(7);
    let tokens = Tensor::randn([4, 6, 8], (Kind::Float, Device::Cpu));
    let lengths = [6i64, 3, 1, 5];
    let mask = Tensor::stack(
        &lengths
            .iter()
            .map(|&n| {
                Tensor::arange(6, (Kind::Int64, Device::Cpu))
                    .lt(n)
                    .to_kind(Kind::Int64)
            })
            .collect::<Vec<_>>(),
        0,
    );
    let names = ["cls", "mean", "max", "mean_sqrt_len_tokens"];
    let modes = [
        PoolingMode::Cls,
        PoolingMode::Mean,
        PoolingMode::Max,
        PoolingMode::MeanSqrtLen,
    ];
    let tokens_json: Vec<Vec<Vec<f32>>> = (0..4)
        .map(|b| {
            (0..6)
                .map(|s| Vec::try_from(tokens.get(b).get(s)).unwrap())
                .collect()
        })
        .collect();
    let mask_json: Vec<Vec<i64>> = (0..4)
        .map(|b| Vec::try_from(mask.get(b)).unwrap())
        .collect();
    let expected = reference(
        "bert_ref.py",
        &json!({"task": "pooling", "token_embeddings": tokens_json, "attention_mask": mask_json, "modes": names}),
    );
    for (name, mode) in names.iter().zip(modes) {
        for (normalize, key) in [(false, "pooled"), (true, "normalized")] {
            let ours = Pooling::new(mode, normalize).pool(&tokens, &mask);
            let theirs: Vec<f32> = expected[key][name]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|row| {
                    row.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().unwrap() as f32)
                })
                .collect();
            let theirs = Tensor::from_slice(&theirs).view([4, 8]);
            let diff = (&ours - &theirs).abs().max().double_value(&[]);
            assert!(
                diff < 1e-6,
                "{name} (normalize {normalize}): max abs diff {diff}"
            );
        }
    }
}

#[test]
fn reads_pooling_from_sentence_transformers_folders() {
    let minilm = Pooling::from_sentence_transformers(&asset("all-MiniLM-L6-v2"))
        .unwrap()
        .unwrap();
    assert_eq!(minilm, Pooling::new(PoolingMode::Mean, true));
    assert!(Pooling::from_sentence_transformers(&asset("bert-tiny"))
        .unwrap()
        .is_none());

    let dir = scratch("encoder-pooling-config");
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    let modules = json!([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
    ]);
    std::fs::write(dir.join("modules.json"), modules.to_string()).unwrap();
    let legacy = json!({"word_embedding_dimension": 8, "pooling_mode_cls_token": true, "pooling_mode_max_tokens": true, "pooling_mode_mean_tokens": false});
    std::fs::write(dir.join("1_Pooling/config.json"), legacy.to_string()).unwrap();
    let pooling = Pooling::from_sentence_transformers(&dir).unwrap().unwrap();
    assert_eq!(pooling.modes, [PoolingMode::Cls, PoolingMode::Max]);
    assert!(!pooling.normalize);

    let modern = json!({"embedding_dimension": 8, "pooling_mode": "lasttoken"});
    std::fs::write(dir.join("1_Pooling/config.json"), modern.to_string()).unwrap();
    let err = Pooling::from_sentence_transformers(&dir)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("lasttoken"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
