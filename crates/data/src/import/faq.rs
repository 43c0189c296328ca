//! The bundled FAQ (`assets/zaragoza-faq/faq-en.jsonl`): one JSON object per line with `id`,
//! `category`, `q` (question), `a` (answer passage), `sources`. Each row becomes a passage (the
//! answer), a query (the question), a qrel between them, and a QA example labelled by category.

use super::{for_each_line_chunk, open, parse_chunk, ImportReport};
use crate::dataset::Dataset;
use crate::records::{Doc, QaExample, Qrel, Query};
use crate::text::normalize_text;
use crate::{DataError, Location, Result};
use serde_json::Value;
use std::path::Path;

struct FaqRow {
    id: String,
    category: Option<String>,
    question: String,
    answer: String,
    sources: Vec<String>,
}

fn parse_row(path: &Path, line: usize, text: &str) -> Result<FaqRow> {
    let bad =
        |field: Option<&str>, msg: String| DataError::bad(path, Location::Line(line), field, msg);
    let value: Value =
        serde_json::from_str(text).map_err(|e| bad(None, format!("not valid JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| bad(None, "expected a JSON object".into()))?;
    let string = |field: &str, required: bool| -> Result<Option<String>> {
        match obj.get(field) {
            None | Some(Value::Null) if required => {
                Err(bad(Some(field), "required field is missing".into()))
            }
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(Some(field), "expected a string".into())),
        }
    };
    let sources = match obj.get("sources") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad(Some("sources"), "expected a list of strings".into()))
            })
            .collect::<Result<_>>()?,
        Some(_) => return Err(bad(Some("sources"), "expected a list of strings".into())),
    };
    let id = string("id", true)?.unwrap_or_default();
    if id.trim().is_empty() {
        return Err(bad(Some("id"), "id is empty".into()));
    }
    Ok(FaqRow {
        id: id.trim().to_owned(),
        category: string("category", false)?,
        question: normalize_text(&string("q", true)?.unwrap_or_default()),
        answer: normalize_text(&string("a", true)?.unwrap_or_default()),
        sources,
    })
}

/// Reads the FAQ into a dataset: corpus, queries, qrels and qa. Rows with an empty question or answer
/// are dropped and counted.
pub fn import_faq(path: &Path) -> Result<(Dataset, ImportReport)> {
    let mut report = ImportReport::new("faq", path);
    let mut rows = Vec::new();
    for_each_line_chunk(open(path)?, path, |chunk| {
        rows.extend(parse_chunk(path, &chunk, |line, text| {
            parse_row(path, line, text).map(|r| (line, r))
        })?);
        Ok(())
    })?;
    report.rows_read = rows.len();
    let mut ds = Dataset::default();
    let mut seen = std::collections::HashMap::new();
    for (line, row) in rows {
        if let Some(first) = seen.insert(row.id.clone(), line) {
            return Err(DataError::bad(
                path,
                Location::Line(line),
                Some("id"),
                format!("duplicate id {:?} (first on line {first})", row.id),
            ));
        }
        if row.question.is_empty() || row.answer.is_empty() {
            report.drop_empty("qa");
            continue;
        }
        let metadata =
            serde_json::json!({"category": row.category, "sources": row.sources}).to_string();
        ds.corpus.push(Doc {
            doc_id: row.id.clone(),
            title: String::new(),
            text: row.answer.clone(),
            metadata: Some(metadata),
        });
        ds.queries.push(Query {
            query_id: row.id.clone(),
            text: row.question.clone(),
        });
        ds.qrels.push(Qrel {
            query_id: row.id.clone(),
            doc_id: row.id.clone(),
            relevance: 1,
        });
        ds.qa.push(QaExample {
            id: row.id.clone(),
            question: row.question,
            answers: vec![row.answer],
            gold_doc_ids: vec![row.id],
            context: None,
            label: row.category,
        });
    }
    for (table, n) in [
        ("corpus", ds.corpus.len()),
        ("queries", ds.queries.len()),
        ("qrels", ds.qrels.len()),
        ("qa", ds.qa.len()),
    ] {
        report.written.insert(table.into(), n);
    }
    Ok((ds, report))
}
