//! Qrels files in TREC and BEIR format, detected per file, and the errors on bad lines.

use ragtune_eval::trec::{detect_qrels_format, parse_qrels, QrelsFormat};
use ragtune_eval::EvalError;
use std::collections::BTreeMap;
use std::path::Path;

fn judged(pairs: &[(&str, &str, i64)]) -> ragtune_eval::retrieval::Qrels {
    let mut qrels: ragtune_eval::retrieval::Qrels = BTreeMap::new();
    for (q, d, r) in pairs {
        qrels
            .entry(q.to_string())
            .or_default()
            .insert(d.to_string(), *r);
    }
    qrels
}

fn expect_parse_error(err: EvalError, line: usize, field: Option<&str>, needle: &str) {
    let text = err.to_string();
    match &err {
        EvalError::Parse {
            path,
            line: l,
            field: f,
            message,
        } => {
            assert_eq!(path, Path::new("q.txt"), "{text}");
            assert_eq!(*l, line, "{text}");
            assert_eq!(f.as_deref(), field, "{text}");
            assert!(message.contains(needle), "{text}");
        }
        other => panic!("expected a parse error, got {other}"),
    }
    assert!(text.starts_with(&format!("q.txt, line {line}")), "{text}");
    if let Some(f) = field {
        assert!(text.contains(&format!("field `{f}`")), "{text}");
    }
}

#[test]
fn trec_qrels_whitespace_separated() {
    let text = "q1 0 d1 1\nq1\t0\td2\t0\n\n  q2 0 d3 2  \n";
    assert_eq!(detect_qrels_format(text), QrelsFormat::Trec);
    let qrels = parse_qrels(Path::new("q.txt"), text).unwrap();
    assert_eq!(
        qrels,
        judged(&[("q1", "d1", 1), ("q1", "d2", 0), ("q2", "d3", 2)])
    );
}

#[test]
fn beir_qrels_with_and_without_header() {
    let with = "query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq1\td 2\t0\r\n\nq2\td3\t2\r\n";
    assert_eq!(detect_qrels_format(with), QrelsFormat::Beir);
    let expected = judged(&[("q1", "d1", 1), ("q1", "d 2", 0), ("q2", "d3", 2)]);
    assert_eq!(parse_qrels(Path::new("q.txt"), with).unwrap(), expected);
    let without = "q1\td1\t1\nq1\td 2\t0\nq2\td3\t2\n";
    assert_eq!(detect_qrels_format(without), QrelsFormat::Beir);
    assert_eq!(parse_qrels(Path::new("q.txt"), without).unwrap(), expected);
    assert!(parse_qrels(Path::new("q.txt"), "").unwrap().is_empty());
}

#[test]
fn bad_lines_name_file_line_and_field() {
    let p = Path::new("q.txt");
    let err = parse_qrels(p, "q1 0 d1 1\nq1 0 d2 yes\n").unwrap_err();
    expect_parse_error(err, 2, Some("rel"), "expected an integer");
    let err = parse_qrels(p, "q1 0 d1 1\nq1 0 d2\n").unwrap_err();
    expect_parse_error(err, 2, None, "4 fields");
    let err = parse_qrels(p, "q1 0 d1 1\nq1 0 d1 2\n").unwrap_err();
    expect_parse_error(err, 2, Some("docid"), "judged twice");

    let err = parse_qrels(p, "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1.5\n").unwrap_err();
    expect_parse_error(err, 3, Some("score"), "expected an integer");
    let err = parse_qrels(p, "query-id\tcorpus-id\tscore\n\nq1 d1 1\n").unwrap_err();
    expect_parse_error(err, 3, None, "3 tab-separated columns");
    let err = parse_qrels(p, "q1\t\t1\n").unwrap_err();
    expect_parse_error(err, 1, Some("corpus-id"), "id is empty");
    // A header line anywhere but first is an ordinary (bad) line.
    let err = parse_qrels(p, "q1\td1\t1\nquery-id\tcorpus-id\tscore\n").unwrap_err();
    expect_parse_error(err, 2, Some("score"), "expected an integer");
}
