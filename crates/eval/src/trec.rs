//! Qrels files, in either of the two formats retrieval benchmarks ship them in, detected per file:
//!
//! - TREC qrels: `qid iter docid rel`, four whitespace-separated fields per line (`iter` is ignored);
//! - BEIR qrels: `query-id \t corpus-id \t score`, three tab-separated columns, with an optional
//!   `query-id corpus-id score` header line.
//!
//! A file is read as BEIR when its first non-blank line is that header or splits into exactly three
//! tab-separated columns, and as TREC otherwise. Blank lines are skipped. Relevance is an integer; a
//! document judged twice for one query is an error. Errors name the file, the line (1-based) and,
//! where one is at fault, the field.

use crate::error::{EvalError, Result};
use crate::retrieval::Qrels;
use std::path::Path;

/// The qrels formats [`parse_qrels`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QrelsFormat {
    /// `qid iter docid rel`, whitespace separated.
    Trec,
    /// `query-id \t corpus-id \t score`, optional header.
    Beir,
}

/// The first column of BEIR's header line.
const BEIR_HEADER: &str = "query-id";

/// Which format `text` is in, from its first non-blank line.
pub fn detect_qrels_format(text: &str) -> QrelsFormat {
    match text.lines().find(|l| !l.trim().is_empty()) {
        Some(first) if first.trim_start().starts_with(BEIR_HEADER) => QrelsFormat::Beir,
        Some(first) if first.split('\t').count() == 3 => QrelsFormat::Beir,
        _ => QrelsFormat::Trec,
    }
}

/// Parses the qrels file `text` (TREC or BEIR, detected); `path` names the file in errors.
pub fn parse_qrels(path: &Path, text: &str) -> Result<Qrels> {
    let format = detect_qrels_format(text);
    let mut qrels = Qrels::new();
    let mut seen_content = false;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let first = !std::mem::replace(&mut seen_content, true);
        let err = |field: Option<&str>, message: String| EvalError::Parse {
            path: path.to_path_buf(),
            line: line_no,
            field: field.map(str::to_owned),
            message,
        };
        let (query, doc, rel, fields) = match format {
            QrelsFormat::Beir => {
                if first && line.trim_start().starts_with(BEIR_HEADER) {
                    continue;
                }
                let cols: Vec<&str> = line.split('\t').map(str::trim).collect();
                if cols.len() != 3 {
                    return Err(err(
                        None,
                        format!(
                            "a BEIR qrels line has 3 tab-separated columns (query-id corpus-id score), found {}",
                            cols.len()
                        ),
                    ));
                }
                (
                    cols[0],
                    cols[1],
                    cols[2],
                    ["query-id", "corpus-id", "score"],
                )
            }
            QrelsFormat::Trec => {
                let cols: Vec<&str> = line.split_whitespace().collect();
                if cols.len() != 4 {
                    let hint = if cols.len() == 3 {
                        " (a BEIR qrels file has 3 columns separated by tabs)"
                    } else {
                        ""
                    };
                    return Err(err(
                        None,
                        format!(
                            "a TREC qrels line has 4 fields (qid iter docid rel), found {}{hint}",
                            cols.len()
                        ),
                    ));
                }
                (cols[0], cols[2], cols[3], ["qid", "docid", "rel"])
            }
        };
        if query.is_empty() {
            return Err(err(Some(fields[0]), "id is empty".into()));
        }
        if doc.is_empty() {
            return Err(err(Some(fields[1]), "id is empty".into()));
        }
        let rel: i64 = rel.parse().map_err(|_| {
            err(
                Some(fields[2]),
                format!("expected an integer, found {rel:?}"),
            )
        })?;
        if qrels
            .entry(query.to_owned())
            .or_default()
            .insert(doc.to_owned(), rel)
            .is_some()
        {
            return Err(err(
                Some(fields[1]),
                format!("doc {doc} is judged twice for query {query}"),
            ));
        }
    }
    Ok(qrels)
}
