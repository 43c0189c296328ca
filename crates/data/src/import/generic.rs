//! Generic JSONL and CSV import into any one table, with a field mapping from table column to source
//! field (`doc_id=_id,text=body`); unmapped columns are looked up under their own name.
//!
//! Types are checked, not guessed: text columns need strings (ids may also be integers), list
//! columns need arrays of strings (in CSV: a JSON array, or one plain value), `relevance` an integer.

use super::{for_each_line_chunk, open, parse_chunk, ImportReport};
use crate::records::{Doc, Preference, QaExample, Qrel, Query};
use crate::table::{Record, TableWriter};
use crate::text::normalize_text;
use crate::{DataError, Location, Result};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;

/// The table a generic import fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetTable {
    Corpus,
    Queries,
    Qrels,
    Qa,
    Preferences,
}

impl std::str::FromStr for TargetTable {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "corpus" => TargetTable::Corpus,
            "queries" => TargetTable::Queries,
            "qrels" => TargetTable::Qrels,
            "qa" => TargetTable::Qa,
            "preferences" => TargetTable::Preferences,
            other => {
                return Err(DataError::Invalid(format!(
                    "unknown table {other:?}; expected corpus, queries, qrels, qa or preferences"
                )))
            }
        })
    }
}

/// Table column -> source field.
#[derive(Debug, Clone, Default)]
pub struct FieldMap {
    map: HashMap<String, String>,
}

impl FieldMap {
    /// Parses `column=field,column=field`.
    pub fn parse(spec: &str) -> Result<Self> {
        let mut map = HashMap::new();
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (to, from) = pair.split_once('=').ok_or_else(|| {
                DataError::Invalid(format!("field mapping {pair:?} is not column=field"))
            })?;
            map.insert(to.trim().to_owned(), from.trim().to_owned());
        }
        Ok(FieldMap { map })
    }

    pub fn source<'a>(&'a self, column: &'a str) -> &'a str {
        self.map.get(column).map(String::as_str).unwrap_or(column)
    }
}

/// One source row, JSON object or CSV record, seen through the field mapping.
pub trait Row {
    fn value(&self, field: &str) -> Option<Value>;
}

impl Row for Map<String, Value> {
    fn value(&self, field: &str) -> Option<Value> {
        self.get(field).cloned().filter(|v| !v.is_null())
    }
}

struct CsvRow<'a> {
    headers: &'a HashMap<String, usize>,
    cells: Vec<String>,
}

impl Row for CsvRow<'_> {
    fn value(&self, field: &str) -> Option<Value> {
        let cell = self.cells.get(*self.headers.get(field)?)?;
        if cell.is_empty() {
            return None;
        }
        // A cell that holds a JSON array is a list; anything else is the plain string.
        if cell.starts_with('[') {
            if let Ok(v @ Value::Array(_)) = serde_json::from_str(cell) {
                return Some(v);
            }
        }
        Some(Value::String(cell.clone()))
    }
}

/// Where a row came from, to build errors.
pub struct At<'a> {
    pub path: &'a Path,
    pub line: usize,
    pub map: &'a FieldMap,
}

impl At<'_> {
    fn err(&self, column: &str, message: impl Into<String>) -> DataError {
        let source = self.map.source(column);
        let field = if source == column {
            column.to_owned()
        } else {
            format!("{source} (mapped to {column})")
        };
        DataError::bad(self.path, Location::Line(self.line), Some(&field), message)
    }

    fn opt_text(&self, row: &dyn Row, column: &str) -> Result<Option<String>> {
        match row.value(self.map.source(column)) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => {
                Err(self.err(column, format!("expected a string, found {}", kind(&other))))
            }
        }
    }

    fn text(&self, row: &dyn Row, column: &str) -> Result<String> {
        self.opt_text(row, column)?
            .ok_or_else(|| self.err(column, "required field is missing"))
    }

    fn id(&self, row: &dyn Row, column: &str) -> Result<String> {
        match row.value(self.map.source(column)) {
            None => Err(self.err(column, "required field is missing")),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
            Some(Value::String(_)) => Err(self.err(column, "id is empty")),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
            Some(other) => Err(self.err(
                column,
                format!("expected a string or integer id, found {}", kind(&other)),
            )),
        }
    }

    fn list(&self, row: &dyn Row, column: &str, required: bool) -> Result<Vec<String>> {
        match row.value(self.map.source(column)) {
            None if required => Err(self.err(column, "required field is missing")),
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s]),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s),
                    Value::Number(n) => Ok(n.to_string()),
                    other => Err(self.err(
                        column,
                        format!("item {i}: expected a string, found {}", kind(&other)),
                    )),
                })
                .collect(),
            Some(other) => Err(self.err(
                column,
                format!("expected a list of strings, found {}", kind(&other)),
            )),
        }
    }

    fn int(&self, row: &dyn Row, column: &str) -> Result<i32> {
        let bad = |v: &Value| self.err(column, format!("expected an integer, found {}", kind(v)));
        match row.value(self.map.source(column)) {
            None => Err(self.err(column, "required field is missing")),
            Some(Value::Number(n)) => n
                .as_i64()
                .and_then(|v| i32::try_from(v).ok())
                .ok_or_else(|| bad(&Value::Number(n.clone()))),
            Some(Value::String(s)) => s.trim().parse().map_err(|_| bad(&Value::String(s.clone()))),
            Some(other) => Err(bad(&other)),
        }
    }

    fn json_text(&self, row: &dyn Row, column: &str) -> Option<String> {
        match row.value(self.map.source(column))? {
            Value::String(s) => Some(s),
            other => Some(other.to_string()),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A record built from one generic row; `None` when its required text is empty after normalization.
pub trait FromRow: Record {
    fn from_row(row: &dyn Row, at: &At<'_>) -> Result<Option<Self>>;
}

fn nonempty(s: String) -> Option<String> {
    let n = normalize_text(&s);
    (!n.is_empty()).then_some(n)
}

impl FromRow for Doc {
    fn from_row(row: &dyn Row, at: &At<'_>) -> Result<Option<Self>> {
        let doc_id = at.id(row, "doc_id")?;
        let title = normalize_text(&at.opt_text(row, "title")?.unwrap_or_default());
        Ok(nonempty(at.text(row, "text")?).map(|text| Doc {
            doc_id,
            title,
            text,
            metadata: at.json_text(row, "metadata"),
        }))
    }
}

impl FromRow for Query {
    fn from_row(row: &dyn Row, at: &At<'_>) -> Result<Option<Self>> {
        let query_id = at.id(row, "query_id")?;
        Ok(nonempty(at.text(row, "text")?).map(|text| Query { query_id, text }))
    }
}

impl FromRow for Qrel {
    fn from_row(row: &dyn Row, at: &At<'_>) -> Result<Option<Self>> {
        Ok(Some(Qrel {
            query_id: at.id(row, "query_id")?,
            doc_id: at.id(row, "doc_id")?,
            relevance: at.int(row, "relevance")?,
        }))
    }
}

impl FromRow for QaExample {
    fn from_row(row: &dyn Row, at: &At<'_>) -> Result<Option<Self>> {
        let id = at.id(row, "id")?;
        let answers: Vec<String> = at
            .list(row, "answers", true)?
            .into_iter()
            .filter_map(nonempty)
            .collect();
        let gold_doc_ids = at.list(row, "gold_doc_ids", false)?;
        let context = at.opt_text(row, "context")?.and_then(nonempty);
        let label = at.opt_text(row, "label")?;
        Ok(
            nonempty(at.text(row, "question")?).map(|question| QaExample {
                id,
                question,
                answers,
                gold_doc_ids,
                context,
                label,
            }),
        )
    }
}

impl FromRow for Preference {
    fn from_row(row: &dyn Row, at: &At<'_>) -> Result<Option<Self>> {
        let id = at.id(row, "id")?;
        let prompt = nonempty(at.text(row, "prompt")?);
        let chosen = nonempty(at.text(row, "chosen")?);
        let rejected = nonempty(at.text(row, "rejected")?);
        let context = at.opt_text(row, "context")?.and_then(nonempty);
        Ok(match (prompt, chosen, rejected) {
            (Some(prompt), Some(chosen), Some(rejected)) => Some(Preference {
                id,
                prompt,
                chosen,
                rejected,
                context,
            }),
            _ => None,
        })
    }
}

/// Parses one JSONL line into a record of `R` (`None`: dropped as empty).
pub fn parse_jsonl_line<R: FromRow>(
    path: &Path,
    line: usize,
    text: &str,
    map: &FieldMap,
) -> Result<Option<R>> {
    let at = At { path, line, map };
    let value: Value = serde_json::from_str(text).map_err(|e| {
        DataError::bad(
            path,
            Location::Line(line),
            None,
            format!("not valid JSON: {e}"),
        )
    })?;
    let Value::Object(obj) = value else {
        return Err(DataError::bad(
            path,
            Location::Line(line),
            None,
            format!("expected a JSON object, found {}", kind(&value)),
        ));
    };
    R::from_row(&obj, &at)
}

fn stream_jsonl<R: FromRow>(
    path: &Path,
    map: &FieldMap,
    out: &Path,
    report: &mut ImportReport,
) -> Result<()> {
    let mut writer = TableWriter::<R>::create(&crate::dataset::table_path::<R>(out))?;
    let (mut read, mut written, mut dropped) = (0, 0, 0);
    for_each_line_chunk(open(path)?, path, |chunk| {
        let parsed = parse_chunk(path, &chunk, |line, text| {
            parse_jsonl_line::<R>(path, line, text, map)
        })?;
        read += parsed.len();
        for rec in parsed {
            match rec {
                Some(r) => {
                    writer.write(r)?;
                    written += 1;
                }
                None => dropped += 1,
            }
        }
        Ok(())
    })?;
    writer.finish()?;
    report.record_table(R::TABLE, read, written, dropped);
    Ok(())
}

/// Imports a JSONL file into table `table` of dataset folder `out`, streaming.
pub fn import_jsonl(
    path: &Path,
    table: TargetTable,
    map: &FieldMap,
    out: &Path,
) -> Result<ImportReport> {
    let mut report = ImportReport::new("jsonl", path);
    match table {
        TargetTable::Corpus => stream_jsonl::<Doc>(path, map, out, &mut report)?,
        TargetTable::Queries => stream_jsonl::<Query>(path, map, out, &mut report)?,
        TargetTable::Qrels => stream_jsonl::<Qrel>(path, map, out, &mut report)?,
        TargetTable::Qa => stream_jsonl::<QaExample>(path, map, out, &mut report)?,
        TargetTable::Preferences => stream_jsonl::<Preference>(path, map, out, &mut report)?,
    }
    Ok(report)
}

/// Parses CSV bytes (with a header row) into records of `R`. Used by [`import_csv`] and the fuzz tests.
pub fn parse_csv_rows<R: FromRow>(
    bytes: impl std::io::Read,
    path: &Path,
    map: &FieldMap,
    mut sink: impl FnMut(Option<R>) -> Result<()>,
) -> Result<()> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(bytes);
    let headers: HashMap<String, usize> = reader
        .byte_headers()
        .map_err(|e| csv_error(path, e))?
        .iter()
        .enumerate()
        .map(|(i, h)| (String::from_utf8_lossy(h).trim().to_owned(), i))
        .collect();
    let names: Vec<String> = {
        let mut v: Vec<(usize, String)> = headers.iter().map(|(k, i)| (*i, k.clone())).collect();
        v.sort();
        v.into_iter().map(|(_, k)| k).collect()
    };
    for record in reader.byte_records() {
        let record = record.map_err(|e| csv_error(path, e))?;
        let line = record.position().map(|p| p.line() as usize).unwrap_or(0);
        let cells = record
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                std::str::from_utf8(cell).map(str::to_owned).map_err(|e| {
                    DataError::bad(
                        path,
                        Location::Line(line),
                        names.get(i).map(String::as_str),
                        format!("invalid UTF-8 at byte {} of the cell", e.valid_up_to()),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let row = CsvRow {
            headers: &headers,
            cells,
        };
        sink(R::from_row(&row, &At { path, line, map })?)?;
    }
    Ok(())
}

fn csv_error(path: &Path, e: csv::Error) -> DataError {
    let line = e.position().map(|p| p.line() as usize);
    DataError::bad(
        path,
        line.map(Location::Line).unwrap_or(Location::File),
        None,
        format!("malformed CSV: {e}"),
    )
}

fn stream_csv<R: FromRow>(
    path: &Path,
    map: &FieldMap,
    out: &Path,
    report: &mut ImportReport,
) -> Result<()> {
    let mut writer = TableWriter::<R>::create(&crate::dataset::table_path::<R>(out))?;
    let (mut read, mut written, mut dropped) = (0, 0, 0);
    parse_csv_rows::<R>(open(path)?, path, map, |rec| {
        read += 1;
        match rec {
            Some(r) => {
                written += 1;
                writer.write(r)
            }
            None => {
                dropped += 1;
                Ok(())
            }
        }
    })?;
    writer.finish()?;
    report.record_table(R::TABLE, read, written, dropped);
    Ok(())
}

/// Imports a CSV file (header row required) into table `table` of dataset folder `out`, streaming.
pub fn import_csv(
    path: &Path,
    table: TargetTable,
    map: &FieldMap,
    out: &Path,
) -> Result<ImportReport> {
    let mut report = ImportReport::new("csv", path);
    match table {
        TargetTable::Corpus => stream_csv::<Doc>(path, map, out, &mut report)?,
        TargetTable::Queries => stream_csv::<Query>(path, map, out, &mut report)?,
        TargetTable::Qrels => stream_csv::<Qrel>(path, map, out, &mut report)?,
        TargetTable::Qa => stream_csv::<QaExample>(path, map, out, &mut report)?,
        TargetTable::Preferences => stream_csv::<Preference>(path, map, out, &mut report)?,
    }
    Ok(report)
}
