//! SQuAD v1.1 and v2.0 JSON: `data[].title`, `data[].paragraphs[].context`, `.qas[]` with `id`,
//! `question`, `answers[].text` and (v2) `is_impossible`. Each paragraph becomes a passage
//! (`<title>#<n>`); each answerable question a query with a qrel to its paragraph. Unanswerable v2
//! questions keep their paragraph as context but get no gold passage and no qrel.

use super::{read_to_string, ImportReport};
use crate::dataset::Dataset;
use crate::records::{Doc, QaExample, Qrel, Query};
use crate::text::normalize_text;
use crate::{DataError, Location, Result};
use serde_json::Value;
use std::path::Path;

/// Parses SQuAD JSON text; errors name the JSON path of the bad value (`data[3].paragraphs[1]...`).
pub fn parse_squad(path: &Path, text: &str) -> Result<(Dataset, ImportReport)> {
    let mut report = ImportReport::new("squad", path);
    let root: Value = serde_json::from_str(text).map_err(|e| {
        DataError::bad(
            path,
            Location::Line(e.line()),
            None,
            format!("not valid JSON: {e}"),
        )
    })?;
    let bad = |field: String, msg: &str| DataError::bad(path, Location::File, Some(&field), msg);
    let articles = root
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("data".into(), "expected an array of articles"))?;
    let mut ds = Dataset::default();
    let mut unanswerable = 0;
    for (a, article) in articles.iter().enumerate() {
        let title = article.get("title").and_then(Value::as_str).unwrap_or("");
        let paragraphs = article
            .get("paragraphs")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(format!("data[{a}].paragraphs"), "expected an array"))?;
        for (p, para) in paragraphs.iter().enumerate() {
            let at = format!("data[{a}].paragraphs[{p}]");
            let context = para
                .get("context")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("{at}.context"), "expected a string"))?;
            let context = normalize_text(context);
            let doc_id = format!(
                "{}#{p}",
                if title.is_empty() {
                    format!("article{a}")
                } else {
                    title.to_owned()
                }
            );
            let qas = para
                .get("qas")
                .and_then(Value::as_array)
                .ok_or_else(|| bad(format!("{at}.qas"), "expected an array"))?;
            if context.is_empty() {
                report.drop_empty("corpus");
                continue;
            }
            ds.corpus.push(Doc {
                doc_id: doc_id.clone(),
                title: normalize_text(title),
                text: context.clone(),
                metadata: None,
            });
            for (q, qa) in qas.iter().enumerate() {
                let at = format!("{at}.qas[{q}]");
                report.rows_read += 1;
                let id = match qa.get("id") {
                    Some(Value::String(s)) if !s.is_empty() => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => return Err(bad(format!("{at}.id"), "expected a non-empty string")),
                };
                let question = qa
                    .get("question")
                    .and_then(Value::as_str)
                    .map(normalize_text)
                    .ok_or_else(|| bad(format!("{at}.question"), "expected a string"))?;
                if question.is_empty() {
                    report.drop_empty("qa");
                    continue;
                }
                let impossible = match qa.get("is_impossible") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => {
                        return Err(bad(format!("{at}.is_impossible"), "expected a boolean"))
                    }
                };
                let answers_json = match qa.get("answers") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(items)) => items.clone(),
                    Some(_) => return Err(bad(format!("{at}.answers"), "expected an array")),
                };
                let mut answers: Vec<String> = Vec::new();
                for (k, ans) in answers_json.iter().enumerate() {
                    let text = ans.get("text").and_then(Value::as_str).ok_or_else(|| {
                        bad(format!("{at}.answers[{k}].text"), "expected a string")
                    })?;
                    let text = normalize_text(text);
                    if !text.is_empty() && !answers.contains(&text) {
                        answers.push(text);
                    }
                }
                let answerable = !impossible && !answers.is_empty();
                if !answerable {
                    unanswerable += 1;
                }
                ds.queries.push(Query {
                    query_id: id.clone(),
                    text: question.clone(),
                });
                if answerable {
                    ds.qrels.push(Qrel {
                        query_id: id.clone(),
                        doc_id: doc_id.clone(),
                        relevance: 1,
                    });
                }
                ds.qa.push(QaExample {
                    id,
                    question,
                    answers,
                    gold_doc_ids: if answerable {
                        vec![doc_id.clone()]
                    } else {
                        Vec::new()
                    },
                    context: Some(context.clone()),
                    label: None,
                });
            }
        }
    }
    for (table, n) in [
        ("corpus", ds.corpus.len()),
        ("queries", ds.queries.len()),
        ("qrels", ds.qrels.len()),
        ("qa", ds.qa.len()),
    ] {
        report.written.insert(table.into(), n);
    }
    if unanswerable > 0 {
        report.notes.push(format!(
            "{unanswerable} unanswerable questions kept with empty answers and no gold passage"
        ));
    }
    Ok((ds, report))
}

pub fn import_squad(path: &Path) -> Result<(Dataset, ImportReport)> {
    parse_squad(path, &read_to_string(path)?)
}
