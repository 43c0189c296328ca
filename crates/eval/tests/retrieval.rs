//! Retrieval metrics against pytrec_eval on generated runs (many score ties, graded relevance,
//! queries without relevant documents, short rankings) and on a real token-overlap run over the FAQ.

mod common;

use ragtune_eval::retrieval::{self, Measure, Qrels, Run};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

const CUTOFFS: [usize; 5] = [1, 3, 5, 10, 100];

fn generated(seed: u64) -> (Run, Qrels) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut run = Run::new();
    let mut qrels = Qrels::new();
    for q in 0..150 {
        let qid = format!("q{q}");
        let judged: BTreeMap<String, i64> = (0..rng.gen_range(1..12))
            .map(|_| (format!("d{}", rng.gen_range(0..40)), rng.gen_range(0..4)))
            .collect();
        // Every 10th query has judgments but nothing relevant; every 15th is missing from the run.
        let judged = if q % 10 == 3 {
            judged.into_keys().map(|d| (d, 0)).collect()
        } else {
            judged
        };
        if q % 15 != 7 {
            let length = if q % 4 == 0 {
                rng.gen_range(0..6)
            } else {
                rng.gen_range(5..60)
            };
            // Scores on a coarse grid, so ties are common and the doc id order decides.
            let docs = (0..length)
                .map(|_| {
                    (
                        format!("d{}", rng.gen_range(0..40)),
                        f64::from(rng.gen_range(0..8)) * 0.25 - 0.5,
                    )
                })
                .collect();
            run.insert(qid.clone(), docs);
        }
        qrels.insert(qid, judged);
    }
    // A query in the run that nobody judged is ignored by both.
    run.insert("unjudged".into(), BTreeMap::from([("d1".into(), 1.0)]));
    (run, qrels)
}

/// A real run: FAQ questions against FAQ answers scored by shared word count (ties galore); the
/// question's own answer has relevance 2, other answers in its category 1.
fn faq_run() -> (Run, Qrels) {
    let rows = common::faq();
    let words = |s: &str| -> BTreeSet<String> {
        s.to_lowercase()
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() > 3)
            .map(str::to_string)
            .collect()
    };
    let answers: Vec<BTreeSet<String>> = rows.iter().map(|r| words(&r.answer)).collect();
    let mut run = Run::new();
    let mut qrels = Qrels::new();
    for (i, row) in rows.iter().enumerate().step_by(4) {
        let q = words(&row.question);
        let mut scored: Vec<(String, f64)> = rows
            .iter()
            .zip(&answers)
            .map(|(r, a)| (r.id.clone(), a.intersection(&q).count() as f64))
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        scored.truncate(100);
        run.insert(format!("faq{i}"), scored.into_iter().collect());
        let judged = rows
            .iter()
            .filter(|r| r.category == row.category)
            .map(|r| (r.id.clone(), if r.id == row.id { 2 } else { 1 }))
            .collect();
        qrels.insert(format!("faq{i}"), judged);
    }
    (run, qrels)
}

fn check(run: &Run, qrels: &Qrels) {
    let measures = retrieval::standard_measures(&CUTOFFS)
        .into_iter()
        .chain(CUTOFFS.iter().map(|&k| Measure::MapAt(k)))
        .collect::<Vec<_>>();
    let ours = retrieval::evaluate(run, qrels, &measures).unwrap();
    let theirs = ragtune_testkit::reference(
        "eval_retrieval.py",
        &json!({"qrels": qrels, "run": run, "cutoffs": CUTOFFS}),
    );
    let theirs = theirs.as_object().unwrap();
    let our_queries: Vec<&String> = ours.per_query.keys().collect();
    let their_queries: Vec<&String> = theirs.keys().collect();
    assert_eq!(
        our_queries.len(),
        their_queries.len(),
        "scored query sets differ"
    );
    assert!(our_queries.len() >= 100);
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    for (query, values) in &ours.per_query {
        let reference = &theirs[query.as_str()];
        for (name, ours) in values {
            let t = reference[name]
                .as_f64()
                .unwrap_or_else(|| panic!("{query} {name} missing from the reference"));
            assert!(
                (ours - t).abs() <= 1e-6,
                "{query} {name}: ours {ours}, pytrec_eval {t}"
            );
            *sums.entry(name.clone()).or_default() += t;
        }
    }
    for (name, sum) in sums {
        let mean = sum / theirs.len() as f64;
        assert!(
            (ours.mean[&name] - mean).abs() <= 1e-6,
            "mean {name}: ours {}, pytrec_eval {mean}",
            ours.mean[&name]
        );
    }
}

#[test]
fn generated_runs_match_pytrec_eval() {
    let (run, qrels) = generated(11);
    check(&run, &qrels);
    let ours = retrieval::evaluate(&run, &qrels, &[Measure::Map]).unwrap();
    assert_eq!(ours.queries_missing_from_run.len(), 10);
    let without_relevant = qrels
        .iter()
        .filter(|(q, j)| run.contains_key(*q) && j.values().all(|&r| r < 1))
        .count();
    assert!(without_relevant >= 14);
    assert_eq!(ours.queries_without_relevant.len(), without_relevant);
}

#[test]
fn faq_overlap_run_matches_pytrec_eval() {
    let (run, qrels) = faq_run();
    check(&run, &qrels);
}

#[test]
fn ties_rank_by_doc_id_descending() {
    let docs: BTreeMap<String, f64> = [("a", 1.0), ("c", 1.0), ("b", 2.0), ("d", 0.5)]
        .into_iter()
        .map(|(d, s)| (d.to_string(), s))
        .collect();
    let order: Vec<&str> = retrieval::rank(&docs).into_iter().map(|(d, _)| d).collect();
    assert_eq!(order, ["b", "c", "a", "d"]);
}

#[test]
fn bad_input_is_an_error() {
    let run: Run = BTreeMap::from([("q".into(), BTreeMap::from([("d".into(), f64::NAN)]))]);
    let qrels: Qrels = BTreeMap::from([("q".into(), BTreeMap::from([("d".into(), 1)]))]);
    let err = retrieval::evaluate(&run, &qrels, &[Measure::Map]).unwrap_err();
    assert!(err.to_string().contains("query q, doc d"), "{err}");
    assert!(Measure::parse("ndcg@0").is_err());
    assert_eq!(Measure::parse("nDCG@10").unwrap(), Measure::Ndcg(10));
}
