//! Normalization, dedup (exact and MinHash near duplicates) and leak-free seeded splits.

use ragtune_data::dedup::{dedup_corpus, lsh_bands, remap_qrels, DedupConfig, Reason};
use ragtune_data::import::import_faq;
use ragtune_data::records::{Doc, Qrel};
use ragtune_data::split::{check_leakage, split_dataset, split_items, SplitConfig, SplitItem};
use ragtune_data::text::{normalize_text, question_key};
use ragtune_data::DataError;
use ragtune_testkit::asset;
use std::collections::{HashMap, HashSet};

fn doc(id: &str, text: &str) -> Doc {
    Doc {
        doc_id: id.into(),
        title: String::new(),
        text: text.into(),
        metadata: None,
    }
}

#[test]
fn normalization_is_nfc_and_single_spaced() {
    assert_eq!(
        normalize_text("  e\u{301}t\u{e9}\t\n  caf\u{e9}  "),
        "\u{e9}t\u{e9} caf\u{e9}"
    );
    assert_eq!(normalize_text(" \u{a0}\u{2003} "), "");
    assert_eq!(question_key("What  IS it?"), question_key("what is it?"));
}

#[test]
fn dedup_removes_empty_exact_and_near_duplicates_and_reports_why() {
    let base = "the municipality building committee grants permission to build new houses extensions and facade changes under the planning act";
    let near = "the municipality building committee grants permission to build new houses extensions and facade changes under the planning law";
    let other = "ground source heat pumps need a drilling permit from the environmental office before any work can start on site";
    let docs = vec![
        doc("a", base),
        doc("b", &format!("  {}  ", base.replace(' ', "  "))),
        doc("c", near),
        doc("d", other),
        doc("e", " \t "),
    ];
    let (kept, mut report) = dedup_corpus(
        docs.clone(),
        &DedupConfig {
            near_threshold: Some(0.7),
            ..Default::default()
        },
    );
    let ids: Vec<&str> = kept.iter().map(|d| d.doc_id.as_str()).collect();
    assert_eq!(ids, ["a", "d"]);
    assert_eq!(
        (
            report.empty,
            report.exact_duplicates,
            report.near_duplicates
        ),
        (1, 1, 1)
    );
    let why: HashMap<&str, &Reason> = report
        .removed
        .iter()
        .map(|r| (r.doc_id.as_str(), &r.reason))
        .collect();
    assert_eq!(why["e"], &Reason::Empty);
    assert_eq!(why["b"], &Reason::ExactDuplicate { of: "a".into() });
    assert!(
        matches!(why["c"], Reason::NearDuplicate { of, similarity } if of == "a" && *similarity >= 0.7)
    );

    let qrels = vec![
        Qrel {
            query_id: "q".into(),
            doc_id: "c".into(),
            relevance: 1,
        },
        Qrel {
            query_id: "q".into(),
            doc_id: "a".into(),
            relevance: 2,
        },
        Qrel {
            query_id: "q".into(),
            doc_id: "e".into(),
            relevance: 1,
        },
    ];
    let remapped = remap_qrels(qrels, &mut report);
    assert_eq!(
        remapped,
        vec![Qrel {
            query_id: "q".into(),
            doc_id: "a".into(),
            relevance: 2
        }]
    );
    assert_eq!((report.qrels_remapped, report.qrels_dropped), (1, 1));

    // A strict threshold keeps the near duplicate; exact duplicates always go.
    let (kept, report) = dedup_corpus(
        docs,
        &DedupConfig {
            near_threshold: Some(0.99),
            ..Default::default()
        },
    );
    assert_eq!(kept.len(), 3);
    assert_eq!(report.near_duplicates, 0);
    assert_eq!(lsh_bands(128, 0.8).0 * lsh_bands(128, 0.8).1, 128);
}

#[test]
fn faq_split_groups_duplicate_questions_and_never_leaks() {
    let (ds, _) = import_faq(&asset("zaragoza-faq").join("faq-en.jsonl")).unwrap();
    let mut by_key: HashMap<String, Vec<&str>> = HashMap::new();
    for q in &ds.queries {
        by_key
            .entry(question_key(&q.text))
            .or_default()
            .push(&q.query_id);
    }
    let duplicated = by_key.values().filter(|v| v.len() > 1).count();
    assert!(duplicated >= 1, "the FAQ has duplicated question texts");

    for stratify in [false, true] {
        let config = SplitConfig {
            seed: 7,
            stratify,
            ..Default::default()
        };
        let (parts, report) = split_dataset(&ds, &config).unwrap();
        assert_eq!(report.groups_with_duplicates, duplicated);
        assert_eq!(
            parts.iter().map(|p| p.queries.len()).sum::<usize>(),
            ds.queries.len()
        );
        let mut split_of_key: HashMap<String, usize> = HashMap::new();
        for (s, part) in parts.iter().enumerate() {
            assert_eq!(
                part.corpus.len(),
                ds.corpus.len(),
                "each split keeps the full corpus"
            );
            for q in &part.queries {
                let prev = split_of_key.insert(question_key(&q.text), s);
                assert!(
                    prev.is_none() || prev == Some(s),
                    "question {:?} leaked",
                    q.text
                );
            }
            let ids: HashSet<&str> = part.queries.iter().map(|q| q.query_id.as_str()).collect();
            assert!(part.qrels.iter().all(|r| ids.contains(r.query_id.as_str())));
            assert!(part.qa.iter().all(|r| ids.contains(r.id.as_str())));
        }
        let n = ds.queries.len() as f64;
        assert!(
            (report.sizes[0] as f64 / n - 0.8).abs() < 0.03,
            "{:?}",
            report.sizes
        );
        assert!(
            (report.sizes[2] as f64 / n - 0.1).abs() < 0.03,
            "{:?}",
            report.sizes
        );
        if stratify {
            // Every category with at least 10 questions puts at least one in test and most in train.
            for b in report
                .balance
                .iter()
                .filter(|b| b.counts.iter().sum::<usize>() >= 10)
            {
                assert!(b.counts[2] >= 1 && b.counts[0] > b.counts[2], "{b:?}");
            }
        }
        // Same seed, same split; another seed, another split.
        let (again, _) = split_dataset(&ds, &config).unwrap();
        assert_eq!(again, parts);
        let (other, _) = split_dataset(
            &ds,
            &SplitConfig {
                seed: 8,
                ..config.clone()
            },
        )
        .unwrap();
        assert_ne!(other[2].queries, parts[2].queries);
    }
}

#[test]
fn the_leakage_check_fails_loudly() {
    let items = vec![
        SplitItem {
            id: "1".into(),
            text: "Same question?".into(),
            label: None,
        },
        SplitItem {
            id: "2".into(),
            text: "same  question?".into(),
            label: None,
        },
    ];
    let split_of = HashMap::from([("1".to_string(), 0), ("2".to_string(), 2)]);
    let err = check_leakage(&items, &split_of).unwrap_err();
    assert!(matches!(err, DataError::Leakage { .. }), "{err}");
    // split_items itself keeps them together.
    let assignment = split_items(&items, &SplitConfig::default()).unwrap();
    assert_eq!(assignment.split_of["1"], assignment.split_of["2"]);
    assert!(split_items(
        &items,
        &SplitConfig {
            fractions: [0.5, 0.5, 0.5],
            ..Default::default()
        }
    )
    .is_err());
}
