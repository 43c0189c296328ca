//! Parity of the BERT encoder with the real libraries, asked at test time through
//! `tests/reference/bert_ref.py`: all-MiniLM-L6-v2 against sentence-transformers, BERT-tiny
//! against transformers (hidden states and MLM logits), plus save round trips and load errors.

use ragtune_models::bert::{BertForMaskedLM, BertInput, BertModel};
use ragtune_models::checkpoint::save_safetensors;
use ragtune_models::encoder::{tensor_rows, SentenceEncoder};
use ragtune_models::tokenize::BertTokenizer;
use ragtune_testkit::{asset, reference, scratch};
use serde_json::{json, Value};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// At least 50 texts: FAQ questions and answers, texts far past 256 tokens, and edge cases.
fn varied_texts() -> Vec<String> {
    let faq = std::fs::read_to_string(asset("zaragoza-faq").join("faq-en.jsonl")).unwrap();
    let rows: Vec<Value> = faq
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut texts: Vec<String> = Vec::new();
    for row in rows.iter().step_by(25).take(20) {
        texts.push(row["q"].as_str().unwrap().to_string());
        texts.push(row["a"].as_str().unwrap().to_string());
    }
    let long: Vec<&str> = rows
        .iter()
        .take(12)
        .map(|r| r["a"].as_str().unwrap())
        .collect();
    texts.push(long.join(" "));
    texts.push(long[..6].join("\n\n"));
    texts.push("word ".repeat(600));
    texts.extend(
        [
            "",
            " ",
            "a",
            "?!...;:,",
            "---",
            "😀🎉 emoji party 🚀🔥 with text",
            "北京是中国的首都。",
            "日本語のテキストを埋め込みます",
            "한국어 문장입니다",
            "Ünïcödé àccents: façade, naïve, Crème brûlée",
            "Привет, мир! Как дела?",
            "مرحبا بالعالم",
            "Tabs\tand\nnewlines\r\n  mixed   spacing  ",
            "   leading and trailing whitespace   ",
            "[CLS] [SEP] [MASK] special tokens in text",
            "https://example.com/path?query=1&x=%20 e-mail: someone@example.org",
            "fn main() { println!(\"hello\"); } // code",
            "3.14159 2026-11-28 1,000,000 kr 45%",
            "Supercalifragilisticexpialidocious antidisestablishmentarianism",
            "THE SAME SENTENCE IN CAPITALS",
            "the same sentence in capitals",
        ]
        .map(String::from),
    );
    assert!(texts.len() >= 50, "{} texts", texts.len());
    texts
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * y).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y.powi(2)).sum::<f64>().sqrt();
    if na == 0.0 && nb == 0.0 {
        return 1.0;
    }
    dot / (na * nb)
}

fn matrix(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn minilm_matches_sentence_transformers_and_saves_loadably() {
    let dir = asset("all-MiniLM-L6-v2");
    let texts = varied_texts();
    let mut encoder = SentenceEncoder::load(&dir, Device::Cpu, Kind::Float).unwrap();
    assert_eq!(encoder.max_length(), 256, "from sentence_bert_config.json");
    assert!(
        encoder.pooling().normalize,
        "modules.json has a Normalize module"
    );
    encoder.set_batch_size(16).unwrap();
    let ours = encoder.encode_vecs(&texts).unwrap();
    assert_eq!(ours.len(), texts.len());
    assert_eq!(ours[0].len(), 384);

    let saved = scratch("minilm-save");
    encoder.save_pretrained(&saved).unwrap();
    let expected = reference(
        "bert_ref.py",
        &json!({"task": "sentence_transformers", "model": dir, "texts": texts, "saved": saved}),
    );
    for (which, key) in [
        ("original", "embeddings"),
        ("saved by ragtune", "saved_embeddings"),
    ] {
        let theirs = matrix(&expected[key]);
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            let cos = cosine(a, b);
            assert!(
                cos >= 0.99999,
                "text {i} ({:?}): cosine {cos} vs sentence-transformers ({which})",
                texts[i].chars().take(60).collect::<String>()
            );
        }
    }

    let bf16 = SentenceEncoder::load(&dir, Device::Cpu, Kind::BFloat16).unwrap();
    let ours_bf16 = bf16.encode_vecs(&texts).unwrap();
    let worst = ours_bf16
        .iter()
        .zip(&ours)
        .map(|(a, b)| cosine(a, &b.iter().map(|&x| x as f64).collect::<Vec<_>>()))
        .fold(1.0_f64, f64::min);
    eprintln!(
        "bf16 vs fp32: worst cosine over {} texts = {worst:.6}",
        texts.len()
    );
    assert!(worst >= 0.99, "bf16 drifted: worst cosine {worst}");
    std::fs::remove_dir_all(saved).unwrap();
}

fn tensor_of(rows: &Value) -> Tensor {
    let m = matrix(rows);
    let flat: Vec<f32> = m.iter().flatten().map(|&x| x as f32).collect();
    Tensor::from_slice(&flat).view([m.len() as i64, -1])
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn bert_tiny_matches_transformers_hidden_states_mlm_and_splade() {
    let dir = asset("bert-tiny");
    let texts = [
        "The building permit was granted in March.",
        "A [MASK] is required for new construction.",
        "short",
    ];
    let (_vs, encoder) = BertModel::from_pretrained(&dir, Device::Cpu, Kind::Float).unwrap();
    let (mlm_vs, mlm) = BertForMaskedLM::from_pretrained(&dir, Device::Cpu, Kind::Float).unwrap();
    let tokenizer = BertTokenizer::from_file(&dir.join("tokenizer.json"), 512).unwrap();
    let batch = tokenizer.encode_batch(&texts, Device::Cpu).unwrap();

    let saved = scratch("bert-tiny-save");
    ragtune_models::bert::save_weights(&mlm_vs, &saved.join("model.safetensors")).unwrap();
    std::fs::copy(dir.join("config.json"), saved.join("config.json")).unwrap();
    std::fs::copy(dir.join("tokenizer.json"), saved.join("tokenizer.json")).unwrap();
    std::fs::copy(
        dir.join("tokenizer_config.json"),
        saved.join("tokenizer_config.json"),
    )
    .unwrap();

    let expected = reference(
        "bert_ref.py",
        &json!({"task": "bert", "model": dir, "texts": texts, "saved": saved}),
    );
    let (hidden, logits, splade) = tch::no_grad(|| {
        let input = batch.as_input();
        (
            encoder.hidden_states_t(&input, false),
            mlm.forward_t(&input, false),
            mlm.splade_t(&input, false),
        )
    });
    let expected_hidden = expected["hidden_states"].as_array().unwrap();
    assert_eq!(
        hidden.len(),
        expected_hidden.len(),
        "embedding output + one per layer"
    );
    for (i, text) in texts.iter().enumerate() {
        let ids = expected["input_ids"][i].as_array().unwrap();
        let n = ids.len() as i64;
        let row = batch.input_ids.get(i as i64).narrow(0, 0, n);
        let our_ids: Vec<i64> = Vec::try_from(&row).unwrap();
        let their_ids: Vec<i64> = ids.iter().map(|x| x.as_i64().unwrap()).collect();
        assert_eq!(our_ids, their_ids, "token ids of {text:?}");
        for (layer, (ours, theirs)) in hidden.iter().zip(expected_hidden).enumerate() {
            let diff = max_abs_diff(&ours.get(i as i64).narrow(0, 0, n), &tensor_of(&theirs[i]));
            assert!(
                diff <= 1e-4,
                "hidden state {layer} of {text:?}: max abs diff {diff}"
            );
        }
        let diff = max_abs_diff(
            &logits.get(i as i64).narrow(0, 0, n),
            &tensor_of(&expected["logits"][i]),
        );
        assert!(diff <= 1e-4, "MLM logits of {text:?}: max abs diff {diff}");
    }
    let diff = max_abs_diff(&splade, &tensor_of(&expected["splade"]));
    assert!(diff <= 1e-4, "SPLADE vectors: max abs diff {diff}");
    let saved_diff = expected["saved_max_abs_diff"].as_f64().unwrap();
    assert!(
        saved_diff <= 1e-6,
        "transformers on ragtune's save differs by {saved_diff}"
    );

    // Tiny models must honour dropout in training mode and be deterministic in eval mode.
    let input = BertInput {
        input_ids: &batch.input_ids,
        attention_mask: &batch.attention_mask,
        token_type_ids: None,
        output_mask: None,
    };
    let eval_a = encoder.forward_t(&input, false);
    let eval_b = encoder.forward_t(&input, false);
    assert!(eval_a.equal(&eval_b));
    let train = encoder.forward_t(&input, true);
    assert!(
        max_abs_diff(&train, &eval_a) > 1e-3,
        "dropout had no effect in training mode"
    );
    std::fs::remove_dir_all(saved).unwrap();
}

#[test]
fn encoder_gradients_flow_and_token_embeddings_match_pooled() {
    let dir = asset("bert-tiny");
    let encoder = SentenceEncoder::load(&dir, Device::Cpu, Kind::Float).unwrap();
    assert_eq!(encoder.max_length(), 512);
    let texts = ["first passage about permits", "second"];
    let batch = encoder.tokenize_batch(&texts).unwrap();
    let pooled = encoder.forward_t(&batch, true);
    assert_eq!(pooled.size(), [2, 128]);
    pooled.sum(Kind::Float).backward();
    let grads_present = encoder
        .var_store()
        .trainable_variables()
        .iter()
        .filter(|v| v.grad().defined())
        .count();
    assert!(
        grads_present > 30,
        "only {grads_present} variables got gradients"
    );

    // Mean pooling of the per-token embeddings equals the pooled sentence embedding.
    let tokens = encoder.token_embeddings(&texts).unwrap();
    let sentence = tensor_rows(&encoder.encode(&texts).unwrap()).unwrap();
    for (t, s) in tokens.iter().zip(&sentence) {
        assert_eq!(t.embeddings.size()[0] as usize, t.ids.len());
        let mean: Vec<f32> = Vec::try_from(t.embeddings.mean_dim(0, false, Kind::Float)).unwrap();
        let diff = mean
            .iter()
            .zip(s)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "token mean vs pooled: {diff}");
    }
}

fn write_config(dir: &Path) {
    std::fs::copy(
        asset("bert-tiny").join("config.json"),
        dir.join("config.json"),
    )
    .unwrap();
}

#[test]
fn refuses_pickles_and_names_missing_or_unexpected_tensors() {
    let dir = scratch("bert-bad-checkpoints");
    write_config(&dir);
    std::fs::write(dir.join("pytorch_model.bin"), b"not really a pickle").unwrap();
    let err = BertModel::from_pretrained(&dir, Device::Cpu, Kind::Float)
        .unwrap_err()
        .to_string();
    assert!(err.contains("pickle") && err.contains("save_file"), "{err}");
    std::fs::remove_file(dir.join("pytorch_model.bin")).unwrap();

    let good = ragtune_models::checkpoint::load_safetensors(
        &asset("bert-tiny").join("model.safetensors"),
        Device::Cpu,
    )
    .unwrap();
    let mut with_extra: Vec<(String, Tensor)> = good
        .iter()
        .map(|(k, v)| (k.clone(), v.shallow_clone()))
        .collect();
    with_extra.push((
        "bert.encoder.layer.7.surprise.weight".into(),
        Tensor::zeros([2], (Kind::Float, Device::Cpu)),
    ));
    save_safetensors(&dir.join("model.safetensors"), &with_extra).unwrap();
    let err = BertModel::from_pretrained(&dir, Device::Cpu, Kind::Float)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("bert.encoder.layer.7.surprise.weight"),
        "{err}"
    );

    let without_query: Vec<(String, Tensor)> = good
        .iter()
        .filter(|(k, _)| k.as_str() != "bert.encoder.layer.1.attention.self.query.weight")
        .map(|(k, v)| (k.clone(), v.shallow_clone()))
        .collect();
    save_safetensors(&dir.join("model.safetensors"), &without_query).unwrap();
    let err = BertModel::from_pretrained(&dir, Device::Cpu, Kind::Float)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.safetensors")
            && err.contains("encoder.layer.1.attention.self.query.weight")
            && err.contains("missing"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
