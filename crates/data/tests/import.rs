//! Importers on the bundled assets and small hand-made files, and the errors for bad input.

use ragtune_data::dataset::Dataset;
use ragtune_data::import::*;
use ragtune_data::records::{Doc, Query};
use ragtune_data::table::read_table;
use ragtune_data::{DataError, Location};
use ragtune_testkit::{asset, scratch};
use std::path::Path;

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
    let text = err.to_string();
    assert!(text.contains(&file.display().to_string()), "{text}");
}

#[test]
fn faq_makes_corpus_queries_qrels_and_labelled_qa() {
    let path = asset("zaragoza-faq").join("faq-en.jsonl");
    let (ds, report) = import_faq(&path).unwrap();
    let lines = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    assert_eq!(report.rows_read, lines);
    assert_eq!(
        ds.corpus.len() + report.dropped_empty.values().sum::<usize>(),
        lines
    );
    assert_eq!(ds.queries.len(), ds.corpus.len());
    assert_eq!(ds.qrels.len(), ds.corpus.len());
    assert!(ds.qa.iter().all(|q| q.label.is_some()
        && q.answers.len() == 1
        && q.gold_doc_ids == vec![q.id.clone()]));
    ds.validate(Path::new("faq")).unwrap();
    let dir = scratch("data-faq");
    ds.write(&dir).unwrap();
    assert_eq!(Dataset::read(&dir).unwrap(), ds);
}

#[test]
fn fanoutqa_questions_answers_and_wikipedia_titles() {
    let path = asset("fanoutqa").join("fanout-final-dev.json");
    let (ds, report) = import_fanoutqa(&path).unwrap();
    assert_eq!(
        report.rows_read,
        ds.qa.len() + report.dropped_empty.values().sum::<usize>()
    );
    assert!(ds.qa.len() > 300);
    let first = &ds.qa[0];
    assert!(
        first.answers.iter().any(|a| a.starts_with("Pat Burrell")),
        "{first:?}"
    );
    assert!(first
        .gold_doc_ids
        .contains(&"1998 Major League Baseball draft".to_string()));
    assert!(ds.qa.iter().all(|q| !q.gold_doc_ids.is_empty()));
}

#[test]
fn beir_folder_round_trips_through_export() {
    let src = scratch("data-beir-src");
    std::fs::create_dir_all(src.join("qrels")).unwrap();
    std::fs::write(
        src.join("corpus.jsonl"),
        "{\"_id\":\"d1\",\"title\":\"One\",\"text\":\"first  passage\"}\n{\"_id\":2,\"title\":\"\",\"text\":\"second\"}\n{\"_id\":\"d3\",\"text\":\"   \"}\n",
    )
    .unwrap();
    std::fs::write(
        src.join("queries.jsonl"),
        "{\"_id\":\"q1\",\"text\":\"which one?\"}\n",
    )
    .unwrap();
    std::fs::write(
        src.join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\t2\t0\n",
    )
    .unwrap();
    let out = scratch("data-beir-out");
    let report = import_beir(&src, None, &out).unwrap();
    assert_eq!(report.written["corpus"], 2);
    assert_eq!(report.dropped_empty["corpus"], 1);
    let ds = Dataset::read(&out).unwrap();
    assert_eq!(ds.corpus[0].text, "first passage");
    assert_eq!(ds.corpus[1].doc_id, "2");
    assert_eq!(ds.qrels.len(), 2);

    let exported = scratch("data-beir-export");
    ragtune_data::export::export_beir(&ds, &exported, "test").unwrap();
    let again = scratch("data-beir-again");
    import_beir(&exported, Some("test"), &again).unwrap();
    assert_eq!(Dataset::read(&again).unwrap(), ds);
    let jsonl = scratch("data-jsonl-export");
    let tables = ragtune_data::export::export_jsonl(&ds, &jsonl).unwrap();
    assert_eq!(tables, ["corpus", "queries", "qrels"]);
    let back = import_jsonl(
        &jsonl.join("corpus.jsonl"),
        TargetTable::Corpus,
        &FieldMap::default(),
        &scratch("data-jsonl-back"),
    )
    .unwrap();
    assert_eq!(back.written["corpus"], 2);
}

#[test]
fn qrel_pointing_at_missing_doc_names_file_line_and_field() {
    let src = scratch("data-beir-bad");
    std::fs::create_dir_all(src.join("qrels")).unwrap();
    std::fs::write(
        src.join("corpus.jsonl"),
        "{\"_id\":\"d1\",\"text\":\"x\"}\n",
    )
    .unwrap();
    std::fs::write(
        src.join("queries.jsonl"),
        "{\"_id\":\"q1\",\"text\":\"y\"}\n",
    )
    .unwrap();
    let qrels = src.join("qrels/test.tsv");
    std::fs::write(
        &qrels,
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\tnope\t1\n",
    )
    .unwrap();
    let err = import_beir(&src, None, &scratch("data-beir-bad-out")).unwrap_err();
    expect_bad(err, &qrels, Location::Line(3), Some("corpus-id"));
}

#[test]
fn squad_v1_and_v2() {
    let dir = scratch("data-squad");
    let path = dir.join("squad.json");
    std::fs::write(
        &path,
        r#"{"version":"v2.0","data":[{"title":"Ada","paragraphs":[{"context":"Ada Lovelace wrote the first program in 1843.",
        "qas":[{"id":"a1","question":"Who wrote the first program?","answers":[{"text":"Ada Lovelace","answer_start":0},{"text":"Ada Lovelace","answer_start":0}]},
               {"id":"a2","question":"Who wrote the last program?","answers":[],"is_impossible":true}]}]}]}"#,
    )
    .unwrap();
    let (ds, report) = import_squad(&path).unwrap();
    assert_eq!(ds.corpus.len(), 1);
    assert_eq!(ds.qa.len(), 2);
    assert_eq!(ds.qa[0].answers, vec!["Ada Lovelace".to_string()]);
    assert_eq!(ds.qa[0].gold_doc_ids, vec!["Ada#0".to_string()]);
    assert!(ds.qa[1].answers.is_empty() && ds.qa[1].gold_doc_ids.is_empty());
    assert_eq!(ds.qrels.len(), 1);
    assert_eq!(report.notes.len(), 1);
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"data":[{"title":"T","paragraphs":[{"context":"c","qas":[{"id":"x","question":7}]}]}]}"#).unwrap();
    let err = import_squad(&bad).unwrap_err();
    expect_bad(
        err,
        &bad,
        Location::File,
        Some("data[0].paragraphs[0].qas[0].question"),
    );
}

#[test]
fn msmarco_triples() {
    let dir = scratch("data-msmarco");
    let path = dir.join("triples.tsv");
    std::fs::write(&path, "what is rust\tRust is a language.\tRust is corrosion.\nwhat is rust\tRust is a language.\tA crab.\nq\t \tn\n").unwrap();
    let (ds, report) = import_msmarco_triples(&path).unwrap();
    assert_eq!(ds.triplets.len(), 2);
    assert_eq!(ds.queries.len(), 1);
    assert_eq!(ds.corpus.len(), 3);
    assert_eq!(ds.qrels.len(), 1);
    assert_eq!(report.dropped_empty["triplets"], 1);
    ds.validate(&dir).unwrap();
    std::fs::write(&path, "q\tp\tn\nonly two\tcolumns\n").unwrap();
    expect_bad(
        import_msmarco_triples(&path).unwrap_err(),
        &path,
        Location::Line(2),
        Some("negative"),
    );
}

#[test]
fn generic_jsonl_and_csv_with_a_field_mapping() {
    let dir = scratch("data-generic");
    let jsonl = dir.join("docs.jsonl");
    std::fs::write(&jsonl, "{\"pid\":\"a\",\"body\":\"Caf\\u0065\\u0301  au lait\",\"head\":\"H\"}\n\n{\"pid\":\"b\",\"body\":\"\"}\n").unwrap();
    let map = FieldMap::parse("doc_id=pid,text=body,title=head").unwrap();
    let out = dir.join("ds");
    let report = import_jsonl(&jsonl, TargetTable::Corpus, &map, &out).unwrap();
    assert_eq!(report.dropped_empty["corpus"], 1);
    let docs = read_table::<Doc>(&out.join("corpus.parquet")).unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(
        docs[0].text, "Caf\u{e9} au lait",
        "NFC and whitespace normalization"
    );

    let csv = dir.join("qa.csv");
    std::fs::write(
        &csv,
        "qid,q,ans,cat\n1,What?,\"[\"\"x\"\",\"\"y\"\"]\",c1\n2,Why?,because,c2\n",
    )
    .unwrap();
    let map = FieldMap::parse("id=qid,question=q,answers=ans,label=cat").unwrap();
    import_csv(&csv, TargetTable::Qa, &map, &out).unwrap();
    let qa = read_table::<ragtune_data::QaExample>(&out.join("qa.parquet")).unwrap();
    assert_eq!(qa[0].answers, vec!["x".to_string(), "y".to_string()]);
    assert_eq!(qa[1].answers, vec!["because".to_string()]);
    assert_eq!(qa[1].label.as_deref(), Some("c2"));
}

#[test]
fn malformed_row_missing_field_wrong_type_and_non_utf8_name_line_and_field() {
    let dir = scratch("data-badrows");
    let path = dir.join("q.jsonl");
    let out = dir.join("ds");
    let map = FieldMap::default();
    let cases: [(&[u8], usize, Option<&str>); 4] = [
        (
            b"{\"query_id\":\"1\",\"text\":\"ok\"}\n{\"query_id\":\"2\",\"text\":\n",
            2,
            None,
        ),
        (
            b"{\"query_id\":\"1\",\"text\":\"ok\"}\n\n{\"text\":\"no id\"}\n",
            3,
            Some("query_id"),
        ),
        (b"{\"query_id\":\"1\",\"text\":[\"a\"]}\n", 1, Some("text")),
        (
            b"{\"query_id\":\"1\",\"text\":\"ok\"}\n{\"query_id\":\"2\",\"text\":\"caf\xe9\"}\n",
            2,
            None,
        ),
    ];
    for (bytes, line, field) in cases {
        std::fs::write(&path, bytes).unwrap();
        let err = import_jsonl(&path, TargetTable::Queries, &map, &out).unwrap_err();
        expect_bad(err, &path, Location::Line(line), field);
    }
    let mapped = FieldMap::parse("text=body").unwrap();
    std::fs::write(&path, b"{\"query_id\":\"1\",\"body\":5}\n").unwrap();
    let err = import_jsonl(&path, TargetTable::Queries, &mapped, &out).unwrap_err();
    assert!(
        err.to_string().contains("field `body (mapped to text)`"),
        "{err}"
    );

    let csv = dir.join("q.csv");
    std::fs::write(&csv, b"query_id,text\n1,fine\n2,caf\xe9\n").unwrap();
    expect_bad(
        import_csv(&csv, TargetTable::Queries, &map, &out).unwrap_err(),
        &csv,
        Location::Line(3),
        Some("text"),
    );
    std::fs::write(&csv, b"query_id,text\n1,fine\n2\n").unwrap();
    expect_bad(
        import_csv(&csv, TargetTable::Queries, &map, &out).unwrap_err(),
        &csv,
        Location::Line(3),
        None,
    );
    let qrels = dir.join("r.csv");
    std::fs::write(&qrels, b"query_id,doc_id,relevance\n1,d,high\n").unwrap();
    expect_bad(
        import_csv(&qrels, TargetTable::Qrels, &map, &out).unwrap_err(),
        &qrels,
        Location::Line(2),
        Some("relevance"),
    );

    let faq = dir.join("faq.jsonl");
    std::fs::write(
        &faq,
        "{\"id\":\"a\",\"q\":\"Q\",\"a\":\"A\"}\n{\"id\":\"b\",\"q\":\"Q\"}\n",
    )
    .unwrap();
    expect_bad(
        import_faq(&faq).unwrap_err(),
        &faq,
        Location::Line(2),
        Some("a"),
    );
}

#[test]
fn an_interrupted_import_leaves_the_previous_output_intact() {
    let dir = scratch("data-atomic");
    let out = dir.join("ds");
    let good = dir.join("good.jsonl");
    std::fs::write(&good, "{\"query_id\":\"1\",\"text\":\"first version\"}\n").unwrap();
    import_jsonl(&good, TargetTable::Queries, &FieldMap::default(), &out).unwrap();
    let before = std::fs::read(out.join("queries.parquet")).unwrap();

    // Enough good rows that several batches reach the temp file before the bad row stops the import.
    let bad = dir.join("bad.jsonl");
    let mut text = String::new();
    for i in 0..20_000 {
        text.push_str(&format!(
            "{{\"query_id\":\"{i}\",\"text\":\"second version {i}\"}}\n"
        ));
    }
    text.push_str("{\"query_id\":\"x\",\"text\":\n");
    std::fs::write(&bad, text).unwrap();
    assert!(import_jsonl(&bad, TargetTable::Queries, &FieldMap::default(), &out).is_err());
    assert_eq!(std::fs::read(out.join("queries.parquet")).unwrap(), before);
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "no temp files left behind: {leftovers:?}"
    );
    assert_eq!(
        read_table::<Query>(&out.join("queries.parquet")).unwrap()[0].text,
        "first version"
    );
}
