//! Contriever's independent cropping: seeded determinism, crop bounds, both views from one document,
//! and a short unsupervised run on bert-tiny over a raw corpus table whose loss falls.

mod common;

use ragtune_models::tokenize::TokenizedText;
use ragtune_retriever_train::contriever::{self, independent_crops, random_crop, CropConfig};
use ragtune_retriever_train::model::{Architecture, BiEncoder, ModelConfig};
use ragtune_retriever_train::train::{self, LossConfig, ObjectiveKind, RetrieverConfig};
use rand::SeedableRng;
use tch::{Device, Kind};

fn doc(n: usize) -> TokenizedText {
    // [CLS] 1000 1001 ... [SEP], so that every body token is distinct and positions can be recovered.
    let mut ids = vec![101];
    ids.extend((0..n as i64).map(|i| 1000 + i));
    ids.push(102);
    TokenizedText {
        type_ids: vec![0; ids.len()],
        ids,
    }
}

/// Whether `part` is a subsequence of `whole` (order kept, gaps allowed).
fn is_subsequence(part: &[i64], whole: &[i64]) -> bool {
    let mut it = whole.iter();
    part.iter().all(|x| it.any(|y| y == x))
}

#[test]
fn crops_are_seeded_and_bounded_and_come_from_their_document() {
    let text = doc(200);
    let body = &text.ids[1..text.ids.len() - 1];
    let no_deletion = CropConfig {
        deletion: 0.0,
        ..Default::default()
    };
    let draw = |seed: u64, config: &CropConfig| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..50)
            .map(|_| independent_crops(&text, config, &mut rng))
            .collect::<Vec<_>>()
    };
    // Same seed, same crops; another seed, other crops.
    assert_eq!(draw(7, &no_deletion), draw(7, &no_deletion));
    assert_ne!(draw(7, &no_deletion), draw(8, &no_deletion));

    let mut distinct_pairs = 0;
    for (a, b) in draw(3, &no_deletion) {
        for view in [&a, &b] {
            assert_eq!(view.ids[0], 101);
            assert_eq!(*view.ids.last().unwrap(), 102);
            assert_eq!(view.type_ids.len(), view.ids.len());
            let span = &view.ids[1..view.ids.len() - 1];
            // floor(200 · ratio) tokens for a ratio in [0.1, 0.5].
            assert!((20..=100).contains(&span.len()), "{} tokens", span.len());
            // A contiguous span of the document.
            let start = (span[0] - 1000) as usize;
            assert_eq!(span, &body[start..start + span.len()]);
        }
        distinct_pairs += usize::from(a != b);
    }
    // The two views are drawn independently, so they differ (almost always).
    assert!(distinct_pairs >= 45, "{distinct_pairs} of 50 pairs differ");

    // With deletion, a view is a subsequence of a span of the right length, and about 10% shorter.
    let with_deletion = CropConfig::default();
    let (mut kept, mut spans) = (0usize, 0usize);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for _ in 0..200 {
        let crop = random_crop(body, &with_deletion, &mut rng);
        assert!(!crop.is_empty());
        assert!(is_subsequence(&crop, body));
        let covered = (crop.last().unwrap() - crop[0] + 1) as usize;
        assert!(covered <= 100, "spans {covered} tokens");
        kept += crop.len();
        spans += covered;
    }
    let ratio = kept as f64 / spans as f64;
    assert!(
        (0.85..0.95).contains(&ratio),
        "kept {ratio:.3} of the spans"
    );

    // Tiny documents still give non-empty views; an empty body gives bare special tokens.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let (a, _) = independent_crops(&doc(1), &with_deletion, &mut rng);
    assert_eq!(a.ids, vec![101, 1000, 102]);
    let (a, _) = independent_crops(&doc(0), &with_deletion, &mut rng);
    assert_eq!(a.ids, vec![101, 102]);

    assert!(CropConfig {
        ratio_min: 0.6,
        ratio_max: 0.5,
        ..Default::default()
    }
    .validate()
    .is_err());
}

#[test]
fn cropping_trains_bert_tiny_on_a_raw_corpus_and_the_loss_falls() {
    let dir = ragtune_testkit::scratch("retriever-contriever");
    let (ds, _) = ragtune_data::import::import_faq(
        &ragtune_testkit::asset("zaragoza-faq").join("faq-en.jsonl"),
    )
    .unwrap();
    // The raw corpus is a corpus table alone; evaluation uses a small FAQ dataset folder.
    let corpus_path = dir.join("raw-corpus.parquet");
    ragtune_data::write_table(&corpus_path, &ds.corpus[..160]).unwrap();
    let data_dir = common::write_slice(ds.clone(), 60, &dir);

    let mut config: RetrieverConfig = toml::from_str(
        r#"
        [data]
        split_seed = 1
        fractions = [0.6, 0.2, 0.2]
        [objective]
        kind = "contriever_crops"
        crop = { ratio_min = 0.1, ratio_max = 0.5, deletion = 0.1 }
        [loss]
        kind = "info_nce"
        temperature = 0.05
        [report]
        hnsw = false
        bootstrap_resamples = 100
        [trainer]
        run_name = "contriever-tiny"
        batch_size = 16
        epochs = 3.0
        precision = "fp32"
        progress = false
        [trainer.optimizer]
        lr = 3e-4
        [trainer.schedule]
        kind = "constant"
        "#,
    )
    .unwrap();
    config.data.source = data_dir;
    config.objective.corpus = Some(corpus_path.clone());
    config.model = ModelConfig {
        base: ragtune_testkit::asset("bert-tiny"),
        architecture: Architecture::Contriever,
        max_length: 128,
        ..Default::default()
    };
    config.trainer.runs_dir = dir.join("runs");
    assert_eq!(config.objective.kind, ObjectiveKind::ContrieverCrops);

    // A fixed batch of crops, scored before and after training (no dropout), measures the change.
    let fixed_loss = |model: &BiEncoder| -> f64 {
        let docs = contriever::read_corpus(&corpus_path).unwrap();
        let tokenized = contriever::tokenize_corpus(model, &docs, &config.objective.crop).unwrap();
        let batch: Vec<&TokenizedText> = tokenized.iter().take(32).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(99);
        tch::no_grad(|| {
            contriever::crop_batch_loss(
                model,
                &batch,
                &config.objective.crop,
                &LossConfig::default(),
                &mut rng,
                0,
                false,
            )
        })
        .unwrap()
        .double_value(&[])
    };
    let base = BiEncoder::load(&config.model, Device::Cpu, Kind::Float).unwrap();
    let before = fixed_loss(&base);

    let report = train::run(&config, Device::Cpu).unwrap();
    // 160 documents, all long enough, in batches of 16 for 3 epochs.
    assert_eq!(report.train_pairs, 160);
    assert_eq!(report.steps, 30);
    let metrics = std::fs::read_to_string(report.run_dir.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "train")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 30);
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    let (first, last) = (mean(&losses[..5]), mean(&losses[25..]));
    eprintln!("training loss, mean of the first/last 5 steps: {first:.3} -> {last:.3}");
    assert!(last < 0.8 * first, "training loss {first:.3} -> {last:.3}");

    let trained_config = ModelConfig {
        base: report.run_dir.join("model"),
        ..config.model.clone()
    };
    let trained = BiEncoder::load(&trained_config, Device::Cpu, Kind::Float).unwrap();
    let after = fixed_loss(&trained);
    eprintln!("fixed-crop loss: {before:.3} -> {after:.3}");
    assert!(
        after < 0.8 * before,
        "fixed-crop loss {before:.3} -> {after:.3}"
    );
}
