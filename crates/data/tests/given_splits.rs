//! Datasets that bring their own splits: train/val/test folders and BEIR qrels files.

use ragtune_data::dataset::Dataset;
use ragtune_data::records::{Doc, QaExample, Qrel, Query};
use ragtune_data::{read_given_splits, write_table, DataError, Location, SplitsLayout};
use ragtune_testkit::scratch;
use std::collections::{BTreeSet, HashSet};
use std::path::Path;

fn doc(id: &str) -> Doc {
    Doc {
        doc_id: id.into(),
        title: String::new(),
        text: format!("passage {id}"),
        metadata: None,
    }
}

fn query(id: &str) -> Query {
    Query {
        query_id: id.into(),
        text: format!("question {id}"),
    }
}

fn qrel(q: &str, d: &str) -> Qrel {
    Qrel {
        query_id: q.into(),
        doc_id: d.into(),
        relevance: 1,
    }
}

/// A split folder with the given queries (each judged relevant to `d<n>` for query `q<n>`).
fn write_split(dir: &Path, ids: &[&str], corpus: Option<&[&str]>) {
    std::fs::create_dir_all(dir).unwrap();
    let queries: Vec<Query> = ids.iter().map(|q| query(q)).collect();
    let qrels: Vec<Qrel> = ids.iter().map(|q| qrel(q, &q.replace('q', "d"))).collect();
    write_table(&dir.join("queries.parquet"), &queries).unwrap();
    write_table(&dir.join("qrels.parquet"), &qrels).unwrap();
    if let Some(docs) = corpus {
        let docs: Vec<Doc> = docs.iter().map(|d| doc(d)).collect();
        write_table(&dir.join("corpus.parquet"), &docs).unwrap();
    }
}

fn ids(queries: &[Query]) -> Vec<&str> {
    queries.iter().map(|q| q.query_id.as_str()).collect()
}

fn doc_ids(ds: &Dataset) -> Vec<&str> {
    ds.corpus.iter().map(|d| d.doc_id.as_str()).collect()
}

fn expect_bad(err: DataError, file: &Path, location: Location, field: Option<&str>) {
    match &err {
        DataError::Bad {
            path,
            location: l,
            field: f,
            ..
        } => {
            assert_eq!(path, file, "{err}");
            assert_eq!(*l, location, "{err}");
            assert_eq!(f.as_deref(), field, "{err}");
        }
        other => panic!("expected a Bad error, got {other}"),
    }
    assert!(err.to_string().contains(&file.display().to_string()));
}

fn expect_not_found(err: DataError, missing: &Path, needle: &str) {
    match &err {
        DataError::Io { path, source } => {
            assert_eq!(path, missing, "{err}");
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound, "{err}");
        }
        other => panic!("expected a not-found error, got {other}"),
    }
    let text = err.to_string();
    assert!(text.contains(&missing.display().to_string()), "{text}");
    assert!(text.contains(needle), "{text}");
}

#[test]
fn folders_with_dev_alias_and_shared_corpus() {
    let dir = scratch("given-folders");
    write_table(&dir.join("corpus.parquet"), &["d1", "d2", "d3"].map(doc)).unwrap();
    write_split(&dir.join("train"), &["q1", "q2"], None);
    write_split(&dir.join("dev"), &["q3"], None);
    // test brings its own corpus, which wins over the shared one.
    write_split(&dir.join("test"), &["q9"], Some(&["d9"]));

    let given = read_given_splits(&dir, 7).unwrap().expect("given splits");
    assert_eq!(given.layout, SplitsLayout::Folders);
    let [train, val, test] = &given.splits;
    assert_eq!(ids(&train.queries), ["q1", "q2"]);
    assert_eq!(ids(&val.queries), ["q3"]);
    assert_eq!(ids(&test.queries), ["q9"]);
    assert_eq!(doc_ids(train), ["d1", "d2", "d3"]);
    assert_eq!(doc_ids(val), ["d1", "d2", "d3"]);
    assert_eq!(doc_ids(test), ["d9"]);
    assert_eq!(test.qrels, [qrel("q9", "d9")]);
    assert!(
        given.notes.iter().any(|n| n.contains("dev/")),
        "{:?}",
        given.notes
    );
    assert!(
        given
            .notes
            .iter()
            .any(|n| n.contains("train, dev") && n.contains("shared corpus")),
        "{:?}",
        given.notes
    );
}

#[test]
fn folders_val_may_hold_qa_only_and_valid_is_an_alias() {
    let dir = scratch("given-valid");
    write_split(&dir.join("train"), &["q1"], Some(&["d1"]));
    write_split(&dir.join("test"), &["q2"], Some(&["d2"]));
    std::fs::create_dir_all(dir.join("valid")).unwrap();
    let qa = QaExample {
        id: "a1".into(),
        question: "what?".into(),
        answers: vec!["that".into()],
        gold_doc_ids: vec![],
        context: None,
        label: None,
    };
    write_table(&dir.join("valid/qa.parquet"), std::slice::from_ref(&qa)).unwrap();
    let given = read_given_splits(&dir, 0).unwrap().unwrap();
    assert_eq!(given.splits[1].qa, [qa]);
    assert!(given.splits[1].queries.is_empty());
}

#[test]
fn folders_errors_name_the_folder_at_fault() {
    // A missing split folder.
    let dir = scratch("given-missing");
    write_split(&dir.join("train"), &["q1"], Some(&["d1"]));
    write_split(&dir.join("val"), &["q2"], Some(&["d2"]));
    let err = read_given_splits(&dir, 0).unwrap_err();
    expect_not_found(err, &dir.join("test"), "`test/`");

    // Two validation folders.
    write_split(&dir.join("test"), &["q3"], Some(&["d3"]));
    write_split(&dir.join("dev"), &["q4"], Some(&["d4"]));
    let err = read_given_splits(&dir, 0).unwrap_err().to_string();
    assert!(err.contains("`val`") && err.contains("`dev`"), "{err}");
    std::fs::remove_dir_all(dir.join("dev")).unwrap();
    assert!(read_given_splits(&dir, 0).unwrap().is_some());

    // A validation split with nothing to validate on.
    std::fs::remove_dir_all(dir.join("val")).unwrap();
    std::fs::create_dir_all(dir.join("val")).unwrap();
    let err = read_given_splits(&dir, 0).unwrap_err().to_string();
    assert!(err.contains("no queries and no qa"), "{err}");
    assert!(
        err.contains(&dir.join("val").display().to_string()),
        "{err}"
    );

    // A qrel of a split pointing past the shared corpus: the split's own qrels file is named.
    let dir = scratch("given-shared-bad");
    write_table(&dir.join("corpus.parquet"), &[doc("d1")]).unwrap();
    write_split(&dir.join("train"), &["q1"], None);
    write_split(&dir.join("val"), &["q1"], None);
    write_split(&dir.join("test"), &["q2"], None);
    let err = read_given_splits(&dir, 0).unwrap_err();
    expect_bad(
        err,
        &dir.join("test/qrels.parquet"),
        Location::Row(0),
        Some("doc_id"),
    );
}

#[test]
fn plain_folders_and_files_have_no_given_splits() {
    let dir = scratch("given-plain");
    write_split(&dir, &["q1"], Some(&["d1"]));
    std::fs::create_dir_all(dir.join("cache")).unwrap();
    assert!(read_given_splits(&dir, 0).unwrap().is_none());
    assert!(read_given_splits(&dir.join("corpus.parquet"), 0)
        .unwrap()
        .is_none());
    assert!(read_given_splits(&dir.join("absent"), 0).unwrap().is_none());
}

/// A BEIR folder: docs d1..d<docs>, queries `ids` (text `question <id>`), and one qrels file per
/// (split, lines) pair.
fn write_beir(dir: &Path, docs: usize, queries: &[String], qrels: &[(&str, String)]) {
    std::fs::create_dir_all(dir.join("qrels")).unwrap();
    let corpus: String = (1..=docs)
        .map(|i| format!("{{\"_id\":\"d{i}\",\"title\":\"T{i}\",\"text\":\"passage {i}\"}}\n"))
        .collect();
    std::fs::write(dir.join("corpus.jsonl"), corpus).unwrap();
    let lines: String = queries
        .iter()
        .map(|q| format!("{{\"_id\":\"{q}\",\"text\":\"question {q}\"}}\n"))
        .collect();
    std::fs::write(dir.join("queries.jsonl"), lines).unwrap();
    for (split, body) in qrels {
        std::fs::write(
            dir.join(format!("qrels/{split}.tsv")),
            format!("query-id\tcorpus-id\tscore\n{body}"),
        )
        .unwrap();
    }
}

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("q{i}")).collect()
}

#[test]
fn beir_splits_keep_the_corpus_and_only_their_queries() {
    let dir = scratch("given-beir");
    write_beir(
        &dir,
        5,
        &names(6),
        &[
            ("train", "q1\td1\t1\nq2\td2\t1\nq1\td3\t0\n".into()),
            ("dev", "q3\td3\t1\n".into()),
            ("test", "q5\td5\t2\nq4\td4\t1\n".into()),
        ],
    );
    let given = read_given_splits(&dir, 1).unwrap().expect("given splits");
    assert_eq!(given.layout, SplitsLayout::Beir);
    let [train, val, test] = &given.splits;
    for split in [train, val, test] {
        assert_eq!(doc_ids(split), ["d1", "d2", "d3", "d4", "d5"]);
        assert_eq!(split.corpus[0].title, "T1");
    }
    assert_eq!(ids(&train.queries), ["q1", "q2"]);
    assert_eq!(train.queries[0].text, "question q1");
    assert_eq!(train.qrels.len(), 3);
    assert_eq!(ids(&val.queries), ["q3"]);
    assert_eq!(val.qrels, [qrel("q3", "d3")]);
    // Queries in queries.jsonl order, not qrels order.
    assert_eq!(ids(&test.queries), ["q4", "q5"]);
    assert_eq!(test.qrels[0].relevance, 2);
    assert!(
        given
            .notes
            .iter()
            .any(|n| n.starts_with("1 of the 6 queries")),
        "{:?}",
        given.notes
    );
    assert!(!given.notes.iter().any(|n| n.contains("dev.tsv is absent")));
}

#[test]
fn beir_without_dev_carves_val_from_train() {
    let dir = scratch("given-beir-carve");
    let mut queries = names(40);
    // Two train queries share a question text; they must always land together.
    queries.push("dup".into());
    let train: String = (1..=30)
        .map(|i| format!("q{i}\td{}\t1\nq{i}\td{}\t0\n", i % 7 + 1, i % 5 + 1))
        .chain(["dup\td1\t1\n".to_string()])
        .collect();
    let test: String = (31..=40).map(|i| format!("q{i}\td1\t1\n")).collect();
    write_beir(&dir, 8, &queries, &[("train", train), ("test", test)]);
    let text = std::fs::read_to_string(dir.join("queries.jsonl")).unwrap();
    std::fs::write(
        dir.join("queries.jsonl"),
        text.replace("question dup", "Question  q7"),
    )
    .unwrap();

    let read = |seed| read_given_splits(&dir, seed).unwrap().unwrap();
    let given = read(3);
    let [train, val, test] = &given.splits;
    assert_eq!(test.queries.len(), 10);
    let train_ids: BTreeSet<&str> = ids(&train.queries).into_iter().collect();
    let val_ids: BTreeSet<&str> = ids(&val.queries).into_iter().collect();
    assert!(train_ids.is_disjoint(&val_ids));
    let union: BTreeSet<&str> = train_ids.union(&val_ids).copied().collect();
    let expected: BTreeSet<String> = names(30).into_iter().chain(["dup".into()]).collect();
    assert_eq!(
        union,
        expected.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
    // 10% of 31 queries rounds to 3 (one more when a duplicated question's group tips it over).
    assert!((3..=4).contains(&val_ids.len()), "{val_ids:?}");
    assert_eq!(
        val_ids.contains("q7"),
        val_ids.contains("dup"),
        "duplicated question split apart"
    );
    // Qrels follow their query.
    for (split, ids) in [(train, &train_ids), (val, &val_ids)] {
        assert!(split
            .qrels
            .iter()
            .all(|q| ids.contains(q.query_id.as_str())));
    }
    assert_eq!(train.qrels.len() + val.qrels.len(), 61);
    let note = given
        .notes
        .iter()
        .find(|n| n.contains("dev.tsv is absent"))
        .expect("carving note");
    assert!(
        note.contains(&format!("val is {} of train's 31 queries", val_ids.len())),
        "{note}"
    );
    assert!(note.contains("seed 3"), "{note}");

    // Deterministic under a seed; another seed picks other queries.
    let again = read(3);
    assert_eq!(again.splits[1], given.splits[1]);
    assert_eq!(again.splits[0], given.splits[0]);
    let picks: HashSet<Vec<String>> = (0..6)
        .map(|seed| {
            read(seed).splits[1]
                .queries
                .iter()
                .map(|q| q.query_id.clone())
                .collect()
        })
        .collect();
    assert!(picks.len() > 1, "every seed carved the same val");
}

#[test]
fn beir_carving_takes_at_least_one_query() {
    let dir = scratch("given-beir-small");
    write_beir(
        &dir,
        3,
        &names(3),
        &[
            ("train", "q1\td1\t1\nq2\td2\t1\n".into()),
            ("test", "q3\td3\t1\n".into()),
        ],
    );
    let given = read_given_splits(&dir, 9).unwrap().unwrap();
    assert_eq!(given.splits[0].queries.len(), 1);
    assert_eq!(given.splits[1].queries.len(), 1);

    // One train query cannot be split into train and val.
    std::fs::write(dir.join("qrels/train.tsv"), "q1\td1\t1\n").unwrap();
    let err = read_given_splits(&dir, 9).unwrap_err().to_string();
    assert!(
        err.contains("train.tsv") && err.contains("too few"),
        "{err}"
    );
}

#[test]
fn beir_errors_name_file_line_and_field() {
    let dir = scratch("given-beir-bad");
    write_beir(
        &dir,
        2,
        &names(3),
        &[
            ("train", "q1\td1\t1\nq2\td7\t1\n".into()),
            ("test", "q3\td2\t1\n".into()),
        ],
    );
    let err = read_given_splits(&dir, 0).unwrap_err();
    let train = dir.join("qrels/train.tsv");
    let text = err.to_string();
    assert!(
        text.contains("\"d7\"") && text.contains("corpus.jsonl"),
        "{text}"
    );
    expect_bad(err, &train, Location::Line(3), Some("corpus-id"));

    std::fs::write(&train, "query-id\tcorpus-id\tscore\nq1\td1\t1\nq8\td2\t1\n").unwrap();
    let err = read_given_splits(&dir, 0).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("\"q8\"") && text.contains("queries.jsonl"),
        "{text}"
    );
    expect_bad(err, &train, Location::Line(3), Some("query-id"));

    // Test qrels only: nothing to train on.
    std::fs::remove_file(&train).unwrap();
    let err = read_given_splits(&dir, 0).unwrap_err();
    expect_not_found(err, &train, "cannot be trained on");

    // Train qrels without test qrels.
    std::fs::write(&train, "q1\td1\t1\nq2\td2\t1\n").unwrap();
    std::fs::remove_file(dir.join("qrels/test.tsv")).unwrap();
    let err = read_given_splits(&dir, 0).unwrap_err();
    expect_not_found(err, &dir.join("qrels/test.tsv"), "test.tsv");

    // Split folders beside a BEIR qrels folder are ambiguous.
    std::fs::create_dir_all(dir.join("train")).unwrap();
    let err = read_given_splits(&dir, 0).unwrap_err().to_string();
    assert!(err.contains("keep one layout"), "{err}");
}
