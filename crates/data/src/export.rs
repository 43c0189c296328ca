//! Exporters: back to a BEIR folder, or one plain JSONL file per table. Every file is written atomically.

use crate::atomic::write_atomic_with;
use crate::dataset::Dataset;
use crate::Result;
use serde::Serialize;
use serde_json::json;
use std::path::Path;

/// Writes `corpus.jsonl`, `queries.jsonl` and `qrels/<qrels_split>.tsv` in BEIR's layout.
pub fn export_beir(ds: &Dataset, out: &Path, qrels_split: &str) -> Result<()> {
    write_atomic_with(&out.join("corpus.jsonl"), |w| {
        for d in &ds.corpus {
            let mut obj = json!({"_id": d.doc_id, "title": d.title, "text": d.text});
            if let Some(meta) = &d.metadata {
                let value = serde_json::from_str(meta).unwrap_or_else(|_| json!(meta));
                obj["metadata"] = value;
            }
            serde_json::to_writer(&mut *w, &obj)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })?;
    write_atomic_with(&out.join("queries.jsonl"), |w| {
        for q in &ds.queries {
            serde_json::to_writer(&mut *w, &json!({"_id": q.query_id, "text": q.text}))?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })?;
    write_atomic_with(&out.join("qrels").join(format!("{qrels_split}.tsv")), |w| {
        writeln!(w, "query-id\tcorpus-id\tscore")?;
        for q in &ds.qrels {
            writeln!(w, "{}\t{}\t{}", q.query_id, q.doc_id, q.relevance)?;
        }
        Ok(())
    })
}

fn jsonl<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    write_atomic_with(path, |w| {
        for r in rows {
            serde_json::to_writer(&mut *w, r)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
}

/// Writes `<table>.jsonl` for every non-empty table, with the record field names as keys.
pub fn export_jsonl(ds: &Dataset, out: &Path) -> Result<Vec<String>> {
    let mut written = Vec::new();
    macro_rules! table {
        ($rows:expr, $name:literal) => {
            if !$rows.is_empty() {
                jsonl(&out.join(concat!($name, ".jsonl")), &$rows)?;
                written.push($name.to_owned());
            }
        };
    }
    table!(ds.corpus, "corpus");
    table!(ds.queries, "queries");
    table!(ds.qrels, "qrels");
    table!(ds.qa, "qa");
    table!(ds.triplets, "triplets");
    table!(ds.preferences, "preferences");
    Ok(written)
}
