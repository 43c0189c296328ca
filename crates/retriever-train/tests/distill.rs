//! Distillation end to end on a slice of the FAQ: bert-tiny mines triplets, a teacher retriever
//! (all-MiniLM-L6-v2) rescores them into the triplets Parquet, and bert-tiny trains on the
//! teacher's scores (Margin-MSE; the KL batch loss is checked against the formula).

mod common;

use ragtune_data::Triplet;
use ragtune_retriever_train::index::SearchKind;
use ragtune_retriever_train::losses;
use ragtune_retriever_train::mining::{self, MiningConfig};
use ragtune_retriever_train::model::{BiEncoder, Embedder, ModelConfig};
use ragtune_retriever_train::train::{self, LossConfig, LossKind, RetrieverConfig, TripletBatch};
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn faq_slice(dir: &Path, rows: usize) -> std::path::PathBuf {
    common::write_slice(common::faq(), rows, dir)
}

fn tiny_config() -> ModelConfig {
    ModelConfig {
        base: ragtune_testkit::asset("bert-tiny"),
        max_length: 64,
        ..Default::default()
    }
}

fn train_losses(run_dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "train")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect()
}

#[test]
fn teacher_scores_go_into_the_triplets_and_the_student_learns_them() {
    let dir = ragtune_testkit::scratch("retriever-distill");
    let data_dir = faq_slice(&dir, 60);
    let mut config: RetrieverConfig = toml::from_str(
        r#"
        [data]
        split_seed = 1
        fractions = [0.6, 0.2, 0.2]
        [report]
        hnsw = false
        bootstrap_resamples = 100
        [trainer]
        batch_size = 8
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
    config.model = tiny_config();
    config.trainer.runs_dir = dir.join("runs");
    let [train_split, _, _] = train::load_splits(&config.data).unwrap();

    // 1. The student mines; the miner's own scores come with the triplets.
    let student = BiEncoder::load(&config.model, Device::Cpu, Kind::Float).unwrap();
    let mining_config = MiningConfig {
        num_negatives: 3,
        rank_max: 20,
        search: SearchKind::Exact,
        ..Default::default()
    };
    let (mut triplets, _) = tch::no_grad(|| {
        mining::mine(
            &student,
            &train_split.corpus,
            &train_split.queries,
            &train_split.qrels,
            &mining_config,
            "bert-tiny",
        )
    })
    .unwrap();
    assert!(triplets
        .iter()
        .all(|t| t.scored_by.as_deref() == Some("bert-tiny")));
    let miner_scores = tch::no_grad(|| {
        let q: Vec<&str> = triplets.iter().map(|t| t.query.as_str()).collect();
        let p: Vec<&str> = triplets.iter().map(|t| t.positive_text.as_str()).collect();
        mining::embedder_pair_scores(&student, &q, &p).unwrap()
    });
    for (t, s) in triplets.iter().zip(&miner_scores) {
        assert!((t.positive_score.unwrap() - s).abs() < 1e-4);
    }

    // 2. The teacher rescores every pair; its scores are its own cosine similarities.
    let teacher_config = ModelConfig {
        base: ragtune_testkit::asset("all-MiniLM-L6-v2"),
        ..Default::default()
    };
    let teacher = BiEncoder::load(&teacher_config, Device::Cpu, Kind::Float).unwrap();
    let before = triplets.clone();
    let report =
        tch::no_grad(|| mining::score_triplets(&teacher, &mut triplets, "minilm", 7)).unwrap();
    let pairs: usize = triplets.iter().map(|t| 1 + t.negatives.len()).sum();
    assert_eq!(report.pairs, pairs);
    eprintln!(
        "teacher ranks the positive above a mined negative in {:.3} of pairs",
        report.positive_above_negative
    );
    tch::no_grad(|| {
        let t = &triplets[3];
        let q = teacher.encode_queries(&[t.query.as_str()]).unwrap();
        let mut texts = vec![t.positive_text.as_str()];
        texts.extend(t.negatives.iter().map(|n| n.text.as_str()));
        let p = teacher.encode_passages(&texts).unwrap();
        let cos = Tensor::cosine_similarity(&q, &p, 1, 1e-8);
        let expected: Vec<f32> = Vec::try_from(cos).unwrap();
        assert!((t.positive_score.unwrap() - expected[0]).abs() < 1e-5);
        for (n, e) in t.negatives.iter().zip(&expected[1..]) {
            assert!((n.score - e).abs() < 1e-5, "{} vs {e}", n.score);
        }
    });
    for (old, new) in before.iter().zip(&triplets) {
        assert_eq!(old.query_id, new.query_id);
        assert_eq!(old.negatives.len(), new.negatives.len());
        assert_eq!(new.scored_by.as_deref(), Some("minilm"));
        assert_eq!(old.provenance, new.provenance);
    }
    let path = dir.join("scored.parquet");
    ragtune_data::write_table(&path, &triplets).unwrap();
    let read: Vec<Triplet> = ragtune_data::read_table(&path).unwrap();
    assert_eq!(read, triplets);

    // 3. The distillation loss of a batch is Margin-MSE / KL of the student's own scores.
    let batch: Vec<&Triplet> = triplets.iter().take(4).collect();
    for kind in [LossKind::MarginMse, LossKind::Kl] {
        let loss_config = LossConfig {
            kind,
            temperature: 0.5,
            teacher_scale: 2.0,
            ..Default::default()
        };
        let layout = TripletBatch::new(&batch, true, Device::Cpu).unwrap();
        let got = tch::no_grad(|| {
            train::batch_loss(&student, &batch, &loss_config, 0, false)
                .unwrap()
                .double_value(&[])
        });
        assert_eq!(layout.queries.len(), 4);
        let expected = tch::no_grad(|| {
            let mut per_row = Vec::new();
            for t in &batch {
                let mut texts = vec![t.positive_text.as_str()];
                texts.extend(t.negatives.iter().map(|n| n.text.as_str()));
                let queries = vec![t.query.as_str(); texts.len()];
                let s = Tensor::from_slice(
                    &mining::embedder_pair_scores(&student, &queries, &texts).unwrap(),
                );
                let mut teacher: Vec<f32> = vec![t.positive_score.unwrap() * 2.0];
                teacher.extend(t.negatives.iter().map(|n| n.score * 2.0));
                let teacher = Tensor::from_slice(&teacher);
                per_row.push((s, teacher));
            }
            match kind {
                LossKind::MarginMse => {
                    let cat = |f: &dyn Fn(&Tensor) -> Tensor, use_teacher: bool| {
                        Tensor::cat(
                            &per_row
                                .iter()
                                .map(|(s, t)| f(if use_teacher { t } else { s }))
                                .collect::<Vec<_>>(),
                            0,
                        )
                    };
                    let pos = |x: &Tensor| x.narrow(0, 0, 1).expand([x.size()[0] - 1], false);
                    let neg = |x: &Tensor| x.narrow(0, 1, x.size()[0] - 1);
                    losses::margin_mse(
                        &cat(&pos, false),
                        &cat(&neg, false),
                        &cat(&pos, true),
                        &cat(&neg, true),
                    )
                    .unwrap()
                    .double_value(&[])
                }
                _ => {
                    per_row
                        .iter()
                        .map(|(s, t)| {
                            losses::kl_distillation(&s.unsqueeze(0), &t.unsqueeze(0), 0.5)
                                .unwrap()
                                .double_value(&[])
                        })
                        .sum::<f64>()
                        / per_row.len() as f64
                }
            }
        });
        assert!(
            (got - expected).abs() < 1e-5 * expected.abs().max(1.0),
            "{kind:?}: {got} vs {expected}"
        );
    }

    // 4. Training on the scored file: the distillation loss falls. (KL trains through the same
    // path; step 3 checked its batch loss.)
    let (kind, name) = (LossKind::MarginMse, "margin-mse");
    let mut run = config.clone();
    run.trainer.run_name = name.into();
    run.loss.kind = kind;
    run.loss.temperature = 0.05;
    run.negatives.triplets = Some(path.clone());
    let report = train::run(&run, Device::Cpu).unwrap();
    let losses = train_losses(&report.run_dir);
    assert_eq!(losses.len() as u64, report.steps);
    let k = 3;
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    let (first, last) = (mean(&losses[..k]), mean(&losses[losses.len() - k..]));
    eprintln!("{name}: training loss, first/last {k} steps: {first:.4} -> {last:.4}");
    assert!(last < 0.7 * first, "{name}: {first} -> {last}");

    // 5. Unscored triplets are refused for distillation, naming the file and row.
    let unscored = dir.join("unscored.parquet");
    let mut rows = triplets.clone();
    let row = rows.iter().position(|t| !t.negatives.is_empty()).unwrap();
    rows[row].positive_score = None;
    ragtune_data::write_table(&unscored, &rows).unwrap();
    let mut run = config.clone();
    run.trainer.run_name = "refused".into();
    run.loss.kind = LossKind::MarginMse;
    run.negatives.triplets = Some(unscored);
    let err = train::run(&run, Device::Cpu).unwrap_err().to_string();
    assert!(
        err.contains("unscored.parquet") && err.contains(&format!("row {row}:")),
        "{err}"
    );
}
