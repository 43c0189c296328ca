//! Property-based fuzzing of the line and JSON parsers: arbitrary input must give Ok or a
//! located error, never a panic. (cargo-fuzz targets for the same entry points: crates/data/fuzz.)

use proptest::prelude::*;
use ragtune_data::import::{
    parse_csv_rows, parse_fanoutqa, parse_jsonl_line, parse_qrel_line, parse_squad,
    parse_triple_line, FieldMap,
};
use ragtune_data::records::{Doc, Preference, QaExample, Qrel, Query};
use ragtune_data::{DataError, Location};
use std::path::Path;

fn located(err: &DataError) -> bool {
    matches!(err, DataError::Bad { path, .. } if path == Path::new("fuzz.in"))
}

/// JSON-ish strings: fragments of valid records mixed with noise, so the fuzzer reaches deep branches.
fn jsonish() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"",
        "\"_id\"",
        "\"doc_id\"",
        "\"text\"",
        "\"title\"",
        "\"id\"",
        "\"question\"",
        "\"answers\"",
        "\"query_id\"",
        "\"relevance\"",
        "\"prompt\"",
        "1",
        "-3",
        "1e999",
        "null",
        "true",
        "\"x\"",
        "\"é\\u0301\"",
        "\\",
        "\t",
        " ",
        "\"data\"",
        "\"paragraphs\"",
        "\"qas\"",
        "\"context\"",
        "\"decomposition\"",
        "\"evidence\"",
    ]);
    prop::collection::vec(
        prop_oneof![atoms.prop_map(str::to_owned), any::<String>()],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

/// 2,000 cases per importer in CI; `RAGTUNE_FUZZ_CASES=200000 cargo test -p ragtune-data --release
/// --test fuzz` runs a long campaign with the same targets.
fn fuzz_cases() -> u32 {
    std::env::var("RAGTUNE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_cases(), ..ProptestConfig::default() })]

    #[test]
    fn jsonl_lines_never_panic(line in jsonish()) {
        let path = Path::new("fuzz.in");
        let map = FieldMap::parse("doc_id=_id").unwrap();
        for result in [
            parse_jsonl_line::<Doc>(path, 1, &line, &map).map(|_| ()),
            parse_jsonl_line::<Query>(path, 1, &line, &FieldMap::default()).map(|_| ()),
            parse_jsonl_line::<Qrel>(path, 1, &line, &FieldMap::default()).map(|_| ()),
            parse_jsonl_line::<QaExample>(path, 1, &line, &FieldMap::default()).map(|_| ()),
            parse_jsonl_line::<Preference>(path, 1, &line, &FieldMap::default()).map(|_| ()),
        ] {
            if let Err(e) = result {
                prop_assert!(located(&e), "{e}");
            }
        }
    }

    #[test]
    fn tsv_lines_never_panic(cols in prop::collection::vec(any::<String>(), 0..5)) {
        let line = cols.join("\t");
        let path = Path::new("fuzz.in");
        if let Err(e) = parse_triple_line(path, 9, &line) {
            prop_assert!(matches!(e, DataError::Bad { location: Location::Line(9), .. }), "{e}");
        }
        if let Err(e) = parse_qrel_line(path, 9, &line) {
            prop_assert!(matches!(e, DataError::Bad { location: Location::Line(9), .. }), "{e}");
        }
    }

    #[test]
    fn json_documents_never_panic(text in jsonish()) {
        let path = Path::new("fuzz.in");
        if let Err(e) = parse_squad(path, &text) { prop_assert!(located(&e), "{e}"); }
        if let Err(e) = parse_fanoutqa(path, &text) { prop_assert!(located(&e), "{e}"); }
    }

    #[test]
    fn csv_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut input = b"id,question,answers,label\n".to_vec();
        input.extend(bytes);
        let result = parse_csv_rows::<QaExample>(&input[..], Path::new("fuzz.in"), &FieldMap::default(), |_| Ok(()));
        if let Err(e) = result { prop_assert!(located(&e), "{e}"); }
    }
}

#[test]
fn structured_squad_and_fanoutqa_shapes_with_wrong_types_are_located() {
    let path = Path::new("fuzz.in");
    for text in [
        r#"{"data":[{"paragraphs":[{"context":"c","qas":[{"id":"1","question":"q","answers":[{"text":5}]}]}]}]}"#,
        r#"{"data":[{"paragraphs":[{"context":"c","qas":[{"id":"1","question":"q","is_impossible":"no"}]}]}]}"#,
        r#"{"data":{}}"#,
        r#"[]"#,
    ] {
        let err = parse_squad(path, text).unwrap_err();
        assert!(located(&err), "{err}");
    }
    for text in [
        r#"[{"id":"1"}]"#,
        r#"[{"id":{},"question":"q"}]"#,
        r#"{}"#,
        r#"[{"id":"1","question":"q","answer":{"a":[1,{"b":null}]}}]"#,
    ] {
        if let Err(err) = parse_fanoutqa(path, text) {
            assert!(located(&err), "{err}");
        }
    }
}
