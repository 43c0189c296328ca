//! FanOutQA dev (`fanout-final-dev.json`): a JSON array of questions, each with an `answer` (a string,
//! number, list, or an object of entity -> value) and a `decomposition` tree whose `evidence.title`
//! names the Wikipedia pages needed. The passages are not included, so this yields queries and QA
//! examples whose gold doc ids are the Wikipedia titles.

use super::{read_to_string, ImportReport};
use crate::dataset::Dataset;
use crate::records::{QaExample, Query};
use crate::text::normalize_text;
use crate::{DataError, Location, Result};
use serde_json::Value;
use std::path::Path;

fn answer_strings(v: &Value) -> Vec<String> {
    match v {
        Value::Null => Vec::new(),
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().flat_map(answer_strings).collect(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}: {}", answer_strings(v).join(", ")))
            .collect(),
        other => vec![other.to_string()],
    }
}

fn titles(v: &Value, out: &mut Vec<String>) {
    if let Some(t) = v.pointer("/evidence/title").and_then(Value::as_str) {
        if !out.iter().any(|x| x == t) {
            out.push(t.to_owned());
        }
    }
    if let Some(subs) = v.get("decomposition").and_then(Value::as_array) {
        subs.iter().for_each(|s| titles(s, out));
    }
}

/// Parses FanOutQA JSON text; `path` only names the source in errors. Rows are counted as the
/// 0-based index of the question in the array.
pub fn parse_fanoutqa(path: &Path, text: &str) -> Result<(Dataset, ImportReport)> {
    let mut report = ImportReport::new("fanoutqa", path);
    let value: Value = serde_json::from_str(text).map_err(|e| {
        DataError::bad(
            path,
            Location::Line(e.line()),
            None,
            format!("not valid JSON: {e}"),
        )
    })?;
    let items = value.as_array().ok_or_else(|| {
        DataError::bad(
            path,
            Location::File,
            None,
            "expected a JSON array of questions",
        )
    })?;
    let mut ds = Dataset::default();
    for (row, item) in items.iter().enumerate() {
        let bad =
            |field: &str, msg: &str| DataError::bad(path, Location::Row(row), Some(field), msg);
        let id = match item.get("id") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
            Some(Value::Number(n)) => n.to_string(),
            None | Some(Value::Null) => return Err(bad("id", "required field is missing")),
            Some(_) => return Err(bad("id", "expected a non-empty string")),
        };
        let question = match item.get("question") {
            Some(Value::String(s)) => normalize_text(s),
            None | Some(Value::Null) => return Err(bad("question", "required field is missing")),
            Some(_) => return Err(bad("question", "expected a string")),
        };
        report.rows_read += 1;
        if question.is_empty() {
            report.drop_empty("qa");
            continue;
        }
        let answers: Vec<String> = item
            .get("answer")
            .map(answer_strings)
            .unwrap_or_default()
            .iter()
            .map(|a| normalize_text(a))
            .filter(|a| !a.is_empty())
            .collect();
        let mut gold = Vec::new();
        titles(item, &mut gold);
        let label = item
            .pointer("/categories/0")
            .and_then(Value::as_str)
            .map(str::to_owned);
        ds.queries.push(Query {
            query_id: id.clone(),
            text: question.clone(),
        });
        ds.qa.push(QaExample {
            id,
            question,
            answers,
            gold_doc_ids: gold,
            context: None,
            label,
        });
    }
    report.written.insert("queries".into(), ds.queries.len());
    report.written.insert("qa".into(), ds.qa.len());
    report
        .notes
        .push("FanOutQA ships no passages: gold_doc_ids are Wikipedia page titles".into());
    Ok((ds, report))
}

pub fn import_fanoutqa(path: &Path) -> Result<(Dataset, ImportReport)> {
    parse_fanoutqa(path, &read_to_string(path)?)
}
