//! The cross-encoder reranker: its losses against PyTorch, a short training run on a slice of the
//! FAQ (loss falls, a killed run resumes exactly), the reranking retriever, the cross-encoder as a
//! teacher, and clear errors on bad configs and triplets. bert-tiny throughout.

mod common;

use ragtune_data::{Dataset, MiningProvenance, Negative, Triplet};
use ragtune_models::cross_encoder::{CrossEncoder, HeadInit};
use ragtune_retrieval::{Corpus, RerankConfig, RerankingRetriever, Retriever, TfIdfRetriever};
use ragtune_retriever_train::mining::score_triplets;
use ragtune_retriever_train::reranker::{self, losses, RerankerConfig};
use ragtune_retriever_train::train::load_splits;
use serde_json::json;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Torch's random generator is global to the process, and the tests of this file run on
/// parallel threads: training reseeds it at every step (dropout) and a fresh head is drawn from
/// it, so a test that compares two runs bit for bit must not share it. Every test that touches
/// a model holds this lock.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn torch_rng() -> std::sync::MutexGuard<'static, ()> {
    // A test that failed while holding the lock leaves it poisoned; the generator is still usable.
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn matrix(rows: &[Vec<f64>]) -> Tensor {
    let width = rows[0].len() as i64;
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, width])
}

#[test]
fn losses_match_pytorch_in_value_and_gradient() {
    let logits = vec![
        vec![1.5, 0.25, -0.75, 0.1],
        vec![-0.3, 2.0, 0.0, 0.0],
        vec![0.8, 0.9, 1.7, -2.2],
    ];
    let valid = vec![
        vec![true, true, true, true],
        vec![true, true, false, false],
        vec![true, true, true, false],
    ];
    let teacher = vec![
        vec![0.9, 0.2, 0.1, -0.4],
        vec![0.5, 0.6, 0.0, 0.0],
        vec![0.7, 0.3, 0.65, 0.0],
    ];
    let (temperature, teacher_scale) = (0.5, 3.0);
    let reference = ragtune_testkit::reference(
        "reranker_losses.py",
        &json!({"logits": logits, "valid": valid, "teacher": teacher,
                "temperature": temperature, "teacher_scale": teacher_scale}),
    );
    let valid_tensor = Tensor::from_slice(&valid.concat()).view([3, 4]);
    type Loss<'a> = dyn Fn(&Tensor) -> Tensor + 'a;
    let cases: Vec<(&str, Box<Loss<'_>>)> = vec![
        (
            "bce",
            Box::new(|s: &Tensor| losses::binary_cross_entropy(s, &valid_tensor).unwrap()),
        ),
        (
            "listwise",
            Box::new(|s: &Tensor| losses::listwise_softmax(s, &valid_tensor, temperature).unwrap()),
        ),
        (
            "margin_mse",
            Box::new(|s: &Tensor| {
                losses::margin_mse(s, &matrix(&teacher), &valid_tensor, teacher_scale).unwrap()
            }),
        ),
    ];
    for (name, loss_fn) in cases {
        // The losses compute in float32, as training does; the reference is float64.
        let scores = matrix(&logits).to_kind(Kind::Float).set_requires_grad(true);
        let loss = loss_fn(&scores);
        loss.backward();
        let expected = reference[name]["loss"].as_f64().unwrap();
        let value = loss.double_value(&[]);
        assert!(
            (value - expected).abs() < 1e-6,
            "{name}: {value} vs {expected}"
        );
        let grad = scores.grad().to_kind(Kind::Double);
        let expected: Vec<Vec<f64>> =
            serde_json::from_value(reference[name]["grad"].clone()).unwrap();
        let diff = (&grad - matrix(&expected)).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "{name}: gradient differs by {diff}");
    }
}

/// A dataset folder of the first 40 FAQ passages, and triplets for its training split: each
/// judged pair with two negatives (the next passages of the corpus), teacher-scored.
fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
    let data = common::write_slice(common::faq(), 40, dir);
    let config: RerankerConfig = toml::from_str(&format!(
        "[data]\nsource = {:?}\nsplit_seed = 1\nfractions = [0.6, 0.2, 0.2]\n",
        data
    ))
    .unwrap();
    let [train, _, _] = load_splits(&config.data).unwrap();
    let triplets = triplets_of(&train);
    let path = dir.join("triplets.parquet");
    ragtune_data::write_table(&path, &triplets).unwrap();
    (data, path)
}

fn triplets_of(train: &Dataset) -> Vec<Triplet> {
    let docs = &train.corpus;
    train
        .qrels
        .iter()
        .map(|qrel| {
            let query = train
                .queries
                .iter()
                .find(|q| q.query_id == qrel.query_id)
                .unwrap();
            let at = docs.iter().position(|d| d.doc_id == qrel.doc_id).unwrap();
            let negatives = (1..=2)
                .map(|o| {
                    let d = &docs[(at + o * 7) % docs.len()];
                    Negative {
                        doc_id: d.doc_id.clone(),
                        text: ragtune_retrieval::passage_text(d),
                        score: 0.3 / o as f32,
                    }
                })
                .collect();
            Triplet {
                query_id: query.query_id.clone(),
                query: query.text.clone(),
                positive_id: qrel.doc_id.clone(),
                positive_text: ragtune_retrieval::passage_text(&docs[at]),
                negatives,
                provenance: MiningProvenance::default(),
                positive_score: Some(0.8),
                scored_by: Some("test teacher".into()),
            }
        })
        .collect()
}

fn config(data: &Path, triplets: &Path, runs: &Path, kind: &str) -> RerankerConfig {
    let config: RerankerConfig = toml::from_str(&format!(
        r#"
        triplets = {triplets:?}
        [data]
        source = {data:?}
        split_seed = 1
        fractions = [0.6, 0.2, 0.2]
        [model]
        base = {base:?}
        max_length = 64
        eval_batch_size = 16
        [loss]
        kind = "{kind}"
        [eval]
        k = 5
        bootstrap_resamples = 100
        [trainer]
        run_name = "tiny"
        runs_dir = {runs:?}
        batch_size = 4
        max_steps = 8
        precision = "fp32"
        progress = false
        [trainer.optimizer]
        lr = 5e-4
        [trainer.schedule]
        kind = "constant"
        [trainer.eval]
        every_steps = 4
        metric = "ndcg@10"
        [trainer.checkpoint]
        every_steps = 2
        keep_last = 10
        keep_best = false
        "#,
        base = ragtune_testkit::asset("bert-tiny"),
    ))
    .unwrap();
    config.validate().unwrap();
    config
}

fn train_records(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["type"] == "train")
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn training_lowers_the_loss_exports_and_resumes_exactly_after_a_kill() {
    let _rng = torch_rng();
    let dir = ragtune_testkit::scratch("reranker-train");
    let (data, triplets) = fixture(&dir);
    for kind in ["binary_cross_entropy", "listwise", "margin_mse"] {
        let runs = dir.join(format!("runs-{kind}"));
        let config = config(&data, &triplets, &runs, kind);
        let report = reranker::run(&config, Device::Cpu).unwrap();
        assert_eq!(report.steps, 8, "{kind}");
        let run_dir = runs.join("tiny");
        let losses: Vec<f64> = train_records(&run_dir)
            .iter()
            .map(|r| r["loss"].as_f64().unwrap())
            .collect();
        assert_eq!(losses.len(), 8, "{kind}");
        let (first, last) = (
            losses[..3].iter().sum::<f64>(),
            losses[5..].iter().sum::<f64>(),
        );
        assert!(losses.iter().all(|l| l.is_finite()), "{kind}: {losses:?}");
        // Eight steps of bert-tiny move the pointwise loss (its bias alone can), but not yet
        // the ranking losses, whose value depends only on differences within a row: the
        // listwise loss falls in the longer run of `first_stage_negatives_...` below, and to
        // near zero on a few rows in the crate's own `reranker::tests`.
        if kind == "binary_cross_entropy" {
            assert!(last < first, "{kind}: loss {losses:?} did not fall");
        }
        for file in [
            "report.json",
            "report.md",
            "model/model.safetensors",
            "model/config.json",
        ] {
            assert!(run_dir.join(file).is_file(), "{kind}: {file} is missing");
        }
        let rows = report.report["splits"]["test"].as_array().unwrap();
        assert!(rows.iter().any(|r| r["measure"] == "ndcg@10"));
        assert!(report.markdown.contains("| ndcg@10 |"));
        let exported = CrossEncoder::load(
            &report.model_dir,
            Device::Cpu,
            Kind::Float,
            HeadInit::default(),
        )
        .unwrap();
        assert!(exported.head_loaded());

        if kind != "binary_cross_entropy" {
            continue;
        }
        // A kill after step 4's checkpoint: the folder as it was then (later checkpoints gone,
        // metrics.jsonl running past them). Resuming must redo steps 5..8 bit for bit.
        let killed = dir.join("killed");
        copy_dir(&runs, &killed);
        let checkpoints = killed.join("tiny/checkpoints");
        for entry in std::fs::read_dir(&checkpoints).unwrap() {
            let path = entry.unwrap().path();
            let step: u64 = path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .unwrap();
            if step > 4 {
                std::fs::remove_dir_all(&path).unwrap();
            }
        }
        std::fs::remove_dir_all(killed.join("tiny/model")).unwrap();
        let mut resumed_config = config.clone();
        resumed_config.trainer.runs_dir = killed.clone();
        let resumed = reranker::run(&resumed_config, Device::Cpu).unwrap();
        assert_eq!(resumed.steps, 8);
        let resumed_losses: Vec<f64> = train_records(&killed.join("tiny"))
            .iter()
            .map(|r| r["loss"].as_f64().unwrap())
            .collect();
        assert_eq!(resumed_losses, losses, "the resumed run's losses");
        let weights =
            |root: &Path| std::fs::read(root.join("tiny/model/model.safetensors")).unwrap();
        assert!(
            weights(&runs) == weights(&killed),
            "the resumed run's final weights differ"
        );

        // A finished run resumes at its end and trains no further.
        let again = reranker::run(&config, Device::Cpu).unwrap();
        assert_eq!(again.steps, 8);
    }
}

#[test]
fn first_stage_negatives_are_its_own_top_k_without_the_gold() {
    let _rng = torch_rng();
    let dir = ragtune_testkit::scratch("reranker-first-stage");
    let (data, triplets) = fixture(&dir);
    let runs = dir.join("runs");
    let mut config = config(&data, &triplets, &runs, "listwise");
    config.negatives = toml::from_str("source = \"first_stage\"\nk = 6\nper_query = 3\n").unwrap();
    config.validate().unwrap();
    let [train, _, _] = load_splits(&config.data).unwrap();

    // The pairs: one per judged training question, negatives in TF-IDF's order, gold removed.
    let (corpus, pairs) =
        reranker::first_stage_pairs(&train, &config.first_stage, 6, Device::Cpu).unwrap();
    assert_eq!(pairs.len(), train.qrels.len());
    let tfidf = TfIdfRetriever::new(corpus.clone());
    for pair in &pairs {
        let gold = corpus
            .position(
                &train
                    .qrels
                    .iter()
                    .find(|q| q.query_id == pair.query_id)
                    .unwrap()
                    .doc_id,
            )
            .unwrap();
        assert_eq!(pair.positive, gold);
        let expected: Vec<usize> = tfidf.search(&[pair.query.as_str()], 6).unwrap()[0]
            .iter()
            .map(|h| h.index)
            .filter(|&i| i != gold)
            .collect();
        assert_eq!(pair.negatives, expected, "{}", pair.query_id);
        assert!(pair.negatives.len() >= 5);
    }

    // A run on them: the triplets file is not read (it is gone), and the loss falls.
    std::fs::remove_file(&triplets).unwrap();
    config.trainer.max_steps = Some(24);
    config.trainer.optimizer.lr = 2e-3;
    config.trainer.eval.every_steps = None;
    let report = reranker::run(&config, Device::Cpu).unwrap();
    assert_eq!(report.steps, 24);
    assert_eq!(report.train_triplets, pairs.len());
    assert!(
        report
            .markdown
            .contains("3 per question per step, drawn from the first stage's top 6"),
        "{}",
        report.markdown
    );
    let losses: Vec<f64> = train_records(&runs.join("tiny"))
        .iter()
        .map(|r| r["loss"].as_f64().unwrap())
        .collect();
    let mean = |l: &[f64]| l.iter().sum::<f64>() / l.len() as f64;
    assert!(
        mean(&losses[18..]) < 0.8 * mean(&losses[..6]),
        "listwise loss on first-stage negatives did not fall: {losses:?}"
    );

    // Margin-MSE has no teacher scores to learn from here.
    let mut bad = config.clone();
    bad.loss.kind = reranker::RerankerLossKind::MarginMse;
    let err = bad.validate().unwrap_err().to_string();
    assert!(
        err.contains("margin_mse") && err.contains("negatives.source"),
        "{err}"
    );
}

#[test]
fn reranking_retriever_reorders_the_top_k_and_keeps_the_rest() {
    let _rng = torch_rng();
    let dir = ragtune_testkit::scratch("reranker-retriever");
    let mut ds = common::slice(common::faq(), 30);
    ds.qa.clear();
    let corpus = Corpus::new(ds.corpus.clone());
    let queries: Vec<&str> = ds.queries.iter().take(4).map(|q| q.text.as_str()).collect();
    let first = TfIdfRetriever::new(corpus.clone());
    let first_hits = first.search(&queries, 8).unwrap();

    let model = CrossEncoder::load(
        &ragtune_testkit::asset("bert-tiny"),
        Device::Cpu,
        Kind::Float,
        HeadInit {
            num_labels: 1,
            seed: 5,
        },
    )
    .unwrap();
    let model_dir = dir.join("ce");
    model.save(&model_dir).unwrap();
    let rerank = RerankConfig {
        model: model_dir.clone(),
        k: 5,
        batch_size: 3,
        max_length: Some(64),
    };
    let retriever = RerankingRetriever::new(
        Box::new(TfIdfRetriever::new(corpus.clone())),
        &rerank,
        Device::Cpu,
    )
    .unwrap();
    let description = retriever.describe();
    assert!(
        description.contains(&first.describe()) && description.contains("cross-encoder"),
        "{description}"
    );
    let hits = retriever.search(&queries, 8).unwrap();
    for (q, (ours, theirs)) in hits.iter().zip(&first_hits).enumerate() {
        assert_eq!(ours.len(), 8);
        let mut head: Vec<usize> = ours[..5].iter().map(|h| h.index).collect();
        let mut first_head: Vec<usize> = theirs[..5].iter().map(|h| h.index).collect();
        // The reranked scores are the cross-encoder's logits, best first.
        let texts: Vec<String> = head
            .iter()
            .map(|&i| ragtune_retrieval::passage_text(corpus.doc(i)))
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let logits = retriever
            .model()
            .score_pairs(&[queries[q]; 5], &refs)
            .unwrap();
        for (hit, logit) in ours[..5].iter().zip(&logits) {
            assert!((hit.score - logit).abs() < 1e-5);
        }
        assert!(ours[..5].windows(2).all(|w| w[0].score >= w[1].score));
        head.sort();
        first_head.sort();
        assert_eq!(
            head, first_head,
            "query {q}: the reranked set is the first stage's top 5"
        );
        let tail: Vec<usize> = ours[5..].iter().map(|h| h.index).collect();
        let first_tail: Vec<usize> = theirs[5..8].iter().map(|h| h.index).collect();
        assert_eq!(
            tail, first_tail,
            "query {q}: hits past k keep first-stage order"
        );
        assert!(ours[4].score > ours[5].score && ours[5].score > ours[6].score);
    }
    // Asking for fewer than k still reranks k and returns the best of them.
    let top2 = retriever.search(&queries, 2).unwrap();
    for (short, long) in top2.iter().zip(&hits) {
        assert_eq!(short.as_slice(), &long[..2]);
    }
    // A folder without a trained head is refused, naming it.
    let err = match RerankingRetriever::new(
        Box::new(TfIdfRetriever::new(corpus)),
        &RerankConfig {
            model: ragtune_testkit::asset("bert-tiny"),
            ..RerankConfig::default()
        },
        Device::Cpu,
    ) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a bare encoder must be refused"),
    };
    assert!(
        err.contains("bert-tiny") && err.contains("no classifier"),
        "{err}"
    );
}

#[test]
fn a_cross_encoder_scores_triplets_as_a_teacher() {
    let _rng = torch_rng();
    let dir = ragtune_testkit::scratch("reranker-teacher");
    let (data, _) = fixture(&dir);
    let config: RerankerConfig = toml::from_str(&format!(
        "[data]\nsource = {data:?}\nsplit_seed = 1\nfractions = [0.6, 0.2, 0.2]\n"
    ))
    .unwrap();
    let [train, _, _] = load_splits(&config.data).unwrap();
    let mut triplets = triplets_of(&train);
    triplets.truncate(5);
    let model = CrossEncoder::load(
        &ragtune_testkit::asset("bert-tiny"),
        Device::Cpu,
        Kind::Float,
        HeadInit {
            num_labels: 1,
            seed: 9,
        },
    )
    .unwrap();
    let report = score_triplets(&model, &mut triplets, "ce", 4).unwrap();
    assert_eq!(report.pairs, 15);
    for t in &triplets {
        let expected = model
            .score_pairs(&[t.query.as_str()], &[t.positive_text.as_str()])
            .unwrap()[0];
        assert!((t.positive_score.unwrap() - expected).abs() < 1e-5);
        assert_eq!(t.scored_by.as_deref(), Some("ce"));
    }
}

#[test]
fn bad_configs_and_triplets_are_clear_errors() {
    let _rng = torch_rng();
    let dir = ragtune_testkit::scratch("reranker-errors");
    let (data, triplets) = fixture(&dir);

    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "triplets = \"t.parquet\"\n[loss]\nkindd = \"listwise\"\n",
    )
    .unwrap();
    let err = RerankerConfig::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("bad.toml") && err.contains("kindd"), "{err}");

    std::fs::write(&path, "[loss]\nkind = \"pairwise\"\n").unwrap();
    let err = RerankerConfig::from_file(&path).unwrap_err().to_string();
    assert!(
        err.contains("bad.toml") && err.contains("pairwise"),
        "{err}"
    );

    std::fs::write(&path, "[eval]\nk = 0\n").unwrap();
    let err = RerankerConfig::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("bad.toml") && err.contains("eval.k"), "{err}");

    let runs = dir.join("runs");
    // A triplets file that is not there.
    let missing = dir.join("nope.parquet");
    let err = reranker::run(&config(&data, &missing, &runs, "listwise"), Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.parquet"), "{err}");

    // A query from outside the training split: named by file, row and id.
    let [_, _, test] = load_splits(&config(&data, &triplets, &runs, "listwise").data).unwrap();
    let mut rows: Vec<Triplet> = ragtune_data::read_table(&triplets).unwrap();
    rows[1].query_id = test.queries[0].query_id.clone();
    let leaked = dir.join("leaked.parquet");
    ragtune_data::write_table(&leaked, &rows).unwrap();
    let err = reranker::run(&config(&data, &leaked, &runs, "listwise"), Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("leaked.parquet")
            && err.contains("row 1")
            && err.contains(&test.queries[0].query_id),
        "{err}"
    );

    // Margin-MSE on triplets without teacher scores.
    let mut rows: Vec<Triplet> = ragtune_data::read_table(&triplets).unwrap();
    rows[2].positive_score = None;
    let unscored = dir.join("unscored.parquet");
    ragtune_data::write_table(&unscored, &rows).unwrap();
    let err = reranker::run(&config(&data, &unscored, &runs, "margin_mse"), Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unscored.parquet")
            && err.contains("row 2")
            && err.contains("retriever score"),
        "{err}"
    );

    // Listwise on triplets without negatives.
    let mut rows: Vec<Triplet> = ragtune_data::read_table(&triplets).unwrap();
    for t in &mut rows {
        t.negatives.clear();
    }
    let bare = dir.join("bare.parquet");
    ragtune_data::write_table(&bare, &rows).unwrap();
    let err = reranker::run(&config(&data, &bare, &runs, "listwise"), Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bare.parquet") && err.contains("Listwise"),
        "{err}"
    );
}
