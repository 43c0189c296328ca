//! Cross-encoder parity with sentence-transformers' CrossEncoder (bert-tiny, float32): our export
//! loads there and gives our logits, a CrossEncoder it saved loads here and gives its logits, and
//! pair tokenization (with `longest_first` truncation) gives its ids.

use ragtune_models::cross_encoder::{CrossEncoder, HeadInit};
use serde_json::{json, Value};
use tch::{Device, Kind};

fn pairs() -> Vec<(String, String)> {
    let long =
        "the municipality decides on building permits within ten weeks of a complete application "
            .repeat(8);
    vec![
        (
            "What is a building permit?".into(),
            "A building permit is a decision by the municipality.".into(),
        ),
        (
            "How long does it take?".into(),
            "Usually ten weeks from a complete application.".into(),
        ),
        // Longer than max_length on both sides: longest_first trims the longer side first.
        (long.clone(), format!("short answer. {long}")),
        ("a very long question ".repeat(30), "tiny".into()),
        (
            "Can I build a shed without a permit?".into(),
            "Small sheds under 15 square metres need none.".into(),
        ),
    ]
}

fn as_json(pairs: &[(String, String)]) -> Value {
    json!(pairs
        .iter()
        .map(|(q, p)| vec![q.clone(), p.clone()])
        .collect::<Vec<_>>())
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn assert_close(ours: &[f32], theirs: &[f32], tol: f32, what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert!(
            (a - b).abs() <= tol,
            "{what}: pair {i}: ours {a}, sentence-transformers {b}"
        );
    }
}

fn check_tokens(model: &CrossEncoder, pairs: &[(String, String)], reference: &Value) {
    let queries: Vec<&str> = pairs.iter().map(|(q, _)| q.as_str()).collect();
    let passages: Vec<&str> = pairs.iter().map(|(_, p)| p.as_str()).collect();
    let tokenized = model.tokenize_pairs(&queries, &passages).unwrap();
    for (i, t) in tokenized.iter().enumerate() {
        let ids: Vec<i64> = serde_json::from_value(reference["input_ids"][i].clone()).unwrap();
        let types: Vec<i64> =
            serde_json::from_value(reference["token_type_ids"][i].clone()).unwrap();
        assert_eq!(t.ids, ids, "pair {i}: input ids");
        assert_eq!(t.type_ids, types, "pair {i}: token type ids");
    }
}

fn scores(model: &CrossEncoder, pairs: &[(String, String)]) -> Vec<f32> {
    let queries: Vec<&str> = pairs.iter().map(|(q, _)| q.as_str()).collect();
    let passages: Vec<&str> = pairs.iter().map(|(_, p)| p.as_str()).collect();
    model.score_pairs(&queries, &passages).unwrap()
}

#[test]
fn our_export_loads_in_sentence_transformers_with_our_scores() {
    let dir = ragtune_testkit::scratch("cross-encoder-export");
    let base = ragtune_testkit::asset("bert-tiny");
    let mut model = CrossEncoder::load(
        &base,
        Device::Cpu,
        Kind::Float,
        HeadInit {
            num_labels: 1,
            seed: 7,
        },
    )
    .unwrap();
    assert!(
        !model.head_loaded(),
        "bert-tiny has no classifier: it must start fresh"
    );
    model.set_max_length(48).unwrap();
    model.set_batch_size(2).unwrap();
    let out = dir.join("ce");
    model.save(&out).unwrap();
    // Saving again over a finished folder replaces it whole.
    model.save(&out).unwrap();
    let pairs = pairs();
    let ours = scores(&model, &pairs);

    let reference = ragtune_testkit::reference(
        "cross_encoder_ref.py",
        &json!({"mode": "score", "model": out, "pairs": as_json(&pairs)}),
    );
    assert_eq!(reference["max_length"], json!(48));
    assert_eq!(reference["num_labels"], json!(1));
    check_tokens(&model, &pairs, &reference);
    assert_close(&ours, &floats(&reference["logits"]), 1e-5, "logits");
    // predict() applies its configured activation, a sigmoid for one label.
    assert_eq!(reference["activation"], json!("Sigmoid"));
    let sigmoid: Vec<f32> = ours.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect();
    assert_close(
        &sigmoid,
        &floats(&reference["predict"]),
        1e-5,
        "sigmoid scores",
    );

    // The export loads back here with its head and the same scores.
    let mut back = CrossEncoder::load(&out, Device::Cpu, Kind::Float, HeadInit::default()).unwrap();
    assert!(back.head_loaded());
    assert_eq!(back.max_length(), 48);
    // Other batch sizes group other pairs, which moves the last float32 bit.
    back.set_batch_size(5).unwrap();
    assert_close(&scores(&back, &pairs), &ours, 1e-6, "reloaded");
}

#[test]
fn a_cross_encoder_saved_by_sentence_transformers_gives_its_scores() {
    let dir = ragtune_testkit::scratch("cross-encoder-st");
    let out = dir.join("st-ce");
    let pairs = pairs();
    let reference = ragtune_testkit::reference(
        "cross_encoder_ref.py",
        &json!({"mode": "save", "base": ragtune_testkit::asset("bert-tiny"), "out": out,
                "seed": 3, "max_length": 40, "pairs": as_json(&pairs)}),
    );
    let mut model =
        CrossEncoder::load(&out, Device::Cpu, Kind::Float, HeadInit::default()).unwrap();
    assert!(model.head_loaded());
    assert_eq!(model.num_labels(), 1);
    assert_eq!(
        model.max_length(),
        40,
        "model_max_length from tokenizer_config.json"
    );
    model.set_batch_size(3).unwrap();
    check_tokens(&model, &pairs, &reference);
    assert_close(
        &scores(&model, &pairs),
        &floats(&reference["logits"]),
        1e-5,
        "logits",
    );
}

#[test]
fn a_fresh_head_is_seeded_and_drawn_with_the_initializer_range() {
    let base = ragtune_testkit::asset("bert-tiny");
    let load = |seed| {
        CrossEncoder::load(
            &base,
            Device::Cpu,
            Kind::Float,
            HeadInit {
                num_labels: 1,
                seed,
            },
        )
        .unwrap()
    };
    let var = |m: &CrossEncoder, name: &str| m.var_store().variables()[name].shallow_clone();
    let (a, b, c) = (load(1), load(1), load(2));
    for name in ["classifier.weight", "bert.pooler.dense.weight"] {
        assert!(
            var(&a, name).equal(&var(&b, name)),
            "{name}: same seed, same start"
        );
        assert!(
            !var(&a, name).equal(&var(&c, name)),
            "{name}: another seed, another start"
        );
    }
    let pooler = var(&a, "bert.pooler.dense.weight");
    let std = pooler.std(true).double_value(&[]);
    assert!(
        (std - 0.02).abs() < 0.002,
        "pooler std {std}, initializer_range 0.02"
    );
    assert_eq!(
        var(&a, "classifier.bias")
            .abs()
            .sum(Kind::Float)
            .double_value(&[]),
        0.0
    );
    // The encoder's own weights are bert-tiny's, whatever the seed.
    assert!(var(&a, "bert.encoder.layer.0.attention.self.query.weight")
        .equal(&var(&c, "bert.encoder.layer.0.attention.self.query.weight")));
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = ragtune_testkit::scratch("cross-encoder-errors");
    let err = CrossEncoder::load(&dir, Device::Cpu, Kind::Float, HeadInit::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("config.json"), "{err}");
    let model = CrossEncoder::load(
        &ragtune_testkit::asset("bert-tiny"),
        Device::Cpu,
        Kind::Float,
        HeadInit::default(),
    )
    .unwrap();
    let err = model.tokenize_pairs(&["q"], &[]).unwrap_err().to_string();
    assert!(err.contains("1 queries but 0 passages"), "{err}");
    let err = CrossEncoder::load(
        &ragtune_testkit::asset("bert-tiny"),
        Device::Cpu,
        Kind::Float,
        HeadInit {
            num_labels: 0,
            seed: 0,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("num_labels 0"), "{err}");
}
