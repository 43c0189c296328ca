//! Typed tables round-trip, carry their schema name and version, read in pyarrow and pandas as they
//! are, and bad files get errors naming file, row and field.

use ragtune_data::records::*;
use ragtune_data::table::{read_table, write_table, SCHEMA_NAME_KEY, SCHEMA_VERSION_KEY};
use ragtune_data::{DataError, Location};
use ragtune_testkit::{reference, scratch};
use serde_json::json;
use std::path::Path;

fn sample_triplets() -> Vec<Triplet> {
    vec![
        Triplet {
            query_id: "q1".into(),
            query: "what is a bygglov?".into(),
            positive_id: "d1".into(),
            positive_text: "A building permit.".into(),
            negatives: vec![
                Negative {
                    doc_id: "d2".into(),
                    text: "A demolition permit.".into(),
                    score: 0.75,
                },
                Negative {
                    doc_id: "d3".into(),
                    text: "Ground works.".into(),
                    score: 0.5,
                },
            ],
            provenance: MiningProvenance {
                model: Some("all-MiniLM-L6-v2".into()),
                index: Some("exact".into()),
                parameters: Some(r#"{"range_max":100}"#.into()),
            },
            positive_score: Some(0.875),
            scored_by: Some("all-MiniLM-L6-v2".into()),
        },
        Triplet {
            query_id: "q2".into(),
            query: "no negatives here".into(),
            positive_id: "d4".into(),
            positive_text: "Still a valid row.".into(),
            negatives: vec![],
            provenance: MiningProvenance::default(),
            positive_score: None,
            scored_by: None,
        },
    ]
}

fn sample_qa() -> Vec<QaExample> {
    vec![
        QaExample {
            id: "a".into(),
            question: "Who?".into(),
            answers: vec!["Ada".into(), "Ada Lovelace".into()],
            gold_doc_ids: vec!["d1".into()],
            context: Some("Ada Lovelace wrote the first program.".into()),
            label: Some("history".into()),
        },
        QaExample {
            id: "b".into(),
            question: "Nothing?".into(),
            answers: vec![],
            gold_doc_ids: vec![],
            context: None,
            label: None,
        },
    ]
}

#[test]
fn every_table_round_trips_and_pyarrow_pandas_and_duckdb_read_it() {
    let dir = scratch("data-tables");
    let corpus = vec![
        Doc {
            doc_id: "d1".into(),
            title: "T".into(),
            text: "café ünïcode".into(),
            metadata: Some(r#"{"k":1}"#.into()),
        },
        Doc {
            doc_id: "d2".into(),
            title: String::new(),
            text: "plain".into(),
            metadata: None,
        },
    ];
    let queries = vec![Query {
        query_id: "q1".into(),
        text: "hello".into(),
    }];
    let qrels = vec![Qrel {
        query_id: "q1".into(),
        doc_id: "d1".into(),
        relevance: 2,
    }];
    let prefs = vec![Preference {
        id: "p".into(),
        prompt: "Say hi".into(),
        chosen: "Hi!".into(),
        rejected: "No.".into(),
        context: Some("ctx".into()),
    }];
    let paths = [
        dir.join("corpus.parquet"),
        dir.join("queries.parquet"),
        dir.join("qrels.parquet"),
        dir.join("triplets.parquet"),
        dir.join("qa.parquet"),
        dir.join("preferences.parquet"),
    ];
    write_table(&paths[0], &corpus).unwrap();
    write_table(&paths[1], &queries).unwrap();
    write_table(&paths[2], &qrels).unwrap();
    write_table(&paths[3], &sample_triplets()).unwrap();
    write_table(&paths[4], &sample_qa()).unwrap();
    write_table(&paths[5], &prefs).unwrap();
    assert_eq!(read_table::<Doc>(&paths[0]).unwrap(), corpus);
    assert_eq!(read_table::<Query>(&paths[1]).unwrap(), queries);
    assert_eq!(read_table::<Qrel>(&paths[2]).unwrap(), qrels);
    assert_eq!(read_table::<Triplet>(&paths[3]).unwrap(), sample_triplets());
    assert_eq!(read_table::<QaExample>(&paths[4]).unwrap(), sample_qa());
    assert_eq!(read_table::<Preference>(&paths[5]).unwrap(), prefs);

    let out = reference(
        "data_tables.py",
        &json!({"read": paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>()}),
    );
    let tables = out["tables"].as_array().unwrap();
    let names = [
        "corpus",
        "queries",
        "qrels",
        "triplets",
        "qa",
        "preferences",
    ];
    for (t, name) in tables.iter().zip(names) {
        assert_eq!(t["metadata"][SCHEMA_NAME_KEY], name, "{t}");
        assert_eq!(t["metadata"][SCHEMA_VERSION_KEY], "1", "{t}");
        assert_eq!(t["num_rows"], t["pandas_rows"]);
        // DuckDB reads the files as they are: same columns, same rows, same schema metadata.
        assert_eq!(t["duckdb_columns"], t["columns"], "{name}");
        assert_eq!(t["duckdb_rows"], t["rows"], "{name}");
        assert_eq!(t["duckdb_metadata"][SCHEMA_NAME_KEY], name, "{name}");
    }
    assert_eq!(tables[0]["rows"][0]["text"], "café ünïcode");
    assert_eq!(tables[0]["rows"][1]["metadata"], serde_json::Value::Null);
    assert_eq!(tables[2]["rows"][0]["relevance"], 2);
    let neg = &tables[3]["rows"][0]["negatives"][1];
    assert_eq!(neg["doc_id"], "d3");
    assert_eq!(neg["score"], 0.5);
    assert_eq!(tables[3]["rows"][0]["mining_model"], "all-MiniLM-L6-v2");
    assert_eq!(tables[3]["rows"][0]["positive_score"], 0.875);
    assert_eq!(tables[3]["rows"][1]["scored_by"], serde_json::Value::Null);
    assert_eq!(
        tables[4]["rows"][0]["answers"],
        json!(["Ada", "Ada Lovelace"])
    );
    assert_eq!(tables[4]["types"][2], "list<item: string not null>");
}

#[test]
fn reads_a_file_pandas_wrote() {
    let dir = scratch("data-pandas");
    let path = dir.join("qa.parquet");
    reference(
        "data_tables.py",
        &json!({"write": {"path": path.display().to_string(), "columns": {
            "id": ["x", "y"], "question": ["Q1", "Q2"],
            "answers": [["a"], []], "gold_doc_ids": [["d"], ["e", "f"]]
        }}}),
    );
    let qa = read_table::<QaExample>(&path).unwrap();
    assert_eq!(qa.len(), 2);
    assert_eq!(qa[1].gold_doc_ids, vec!["e".to_string(), "f".to_string()]);
    assert_eq!(qa[0].context, None);
}

#[test]
fn triplets_without_the_score_columns_read_as_unscored() {
    // A triplets file as written before `positive_score` and `scored_by` existed: today's file
    // with those two columns projected away.
    let dir = scratch("data-triplets-v1");
    let (full, old) = (dir.join("full.parquet"), dir.join("old.parquet"));
    write_table(&full, &sample_triplets()).unwrap();
    let file = std::fs::File::open(&full).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<_> = reader
        .map(|b| b.unwrap().project(&[0, 1, 2, 3, 4, 5, 6, 7]).unwrap())
        .collect();
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&old).unwrap(),
        batches[0].schema(),
        None,
    )
    .unwrap();
    for b in &batches {
        writer.write(b).unwrap();
    }
    writer.close().unwrap();
    let rows = read_table::<Triplet>(&old).unwrap();
    let mut expected = sample_triplets();
    for t in &mut expected {
        t.positive_score = None;
        t.scored_by = None;
    }
    assert_eq!(rows, expected);
}

fn write_pandas(path: &Path, columns: serde_json::Value) {
    reference(
        "data_tables.py",
        &json!({"write": {"path": path.display().to_string(), "columns": columns}}),
    );
}

#[test]
fn missing_column_wrong_type_and_null_name_file_row_and_field() {
    let dir = scratch("data-badcols");
    let missing = dir.join("missing.parquet");
    write_pandas(&missing, json!({"query_id": ["q"], "doc_id": ["d"]}));
    match read_table::<Qrel>(&missing).unwrap_err() {
        DataError::MissingColumn { path, column, .. } => {
            assert_eq!(path, missing);
            assert_eq!(column, "relevance");
        }
        e => panic!("unexpected {e}"),
    }

    let wrong = dir.join("wrong.parquet");
    write_pandas(
        &wrong,
        json!({"query_id": ["q"], "doc_id": ["d"], "relevance": ["high"]}),
    );
    let err = read_table::<Qrel>(&wrong).unwrap_err();
    assert!(
        matches!(&err, DataError::WrongType { column, .. } if column == "relevance"),
        "{err}"
    );
    assert!(err.to_string().contains("wrong.parquet"));

    let nulls = dir.join("nulls.parquet");
    write_pandas(
        &nulls,
        json!({"query_id": ["q1", "q2", null], "text": ["a", "b", "c"]}),
    );
    let err = read_table::<Query>(&nulls).unwrap_err();
    match &err {
        DataError::Bad {
            path,
            location,
            field,
            ..
        } => {
            assert_eq!(path, &nulls);
            assert_eq!(*location, Location::Row(2));
            assert_eq!(field.as_deref(), Some("query_id"));
        }
        e => panic!("unexpected {e}"),
    }
}

#[test]
fn truncated_parquet_and_wrong_table_are_errors_not_panics() {
    let dir = scratch("data-trunc");
    let path = dir.join("corpus.parquet");
    let docs: Vec<Doc> = (0..500)
        .map(|i| Doc {
            doc_id: format!("d{i}"),
            title: String::new(),
            text: format!("text number {i}"),
            metadata: None,
        })
        .collect();
    write_table(&path, &docs).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    for cut in [bytes.len() - 3, bytes.len() / 2, 4, 0] {
        let truncated = dir.join(format!("cut{cut}.parquet"));
        std::fs::write(&truncated, &bytes[..cut]).unwrap();
        let err = read_table::<Doc>(&truncated).unwrap_err();
        assert!(matches!(err, DataError::Parquet { .. }), "{err}");
        assert!(
            err.to_string().contains(&format!("cut{cut}.parquet")),
            "{err}"
        );
    }
    // A corrupted data page (footer intact) must also fail cleanly.
    let mut corrupt = bytes.clone();
    for b in corrupt.iter_mut().skip(8).take(bytes.len() / 3) {
        *b ^= 0x5a;
    }
    let corrupt_path = dir.join("corrupt.parquet");
    std::fs::write(&corrupt_path, &corrupt).unwrap();
    assert!(read_table::<Doc>(&corrupt_path).is_err());

    let err = read_table::<Query>(&path).unwrap_err();
    assert!(
        err.to_string().contains("holds the `corpus` table"),
        "{err}"
    );
}
