//! BEIR folders: `corpus.jsonl` (`_id`, `title`, `text`, optional `metadata`), `queries.jsonl`
//! (`_id`, `text`) and `qrels/<split>.tsv` (header `query-id corpus-id score`). The corpus is
//! streamed; qrels are checked against the corpus ids.
//!
//! The parsers here are shared by [`import_beir`] (which writes Parquet) and
//! [`crate::given_splits::read_given_splits`] (which keeps a BEIR folder's own splits in memory).

use super::generic::{parse_jsonl_line, FieldMap};
use super::{for_each_line_chunk, open, parse_chunk, ImportReport};
use crate::dataset::{table_path, PendingDataset};
use crate::records::{Doc, Qrel, Query};
use crate::table::TableWriter;
use crate::{DataError, Location, Result};
use std::collections::HashSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};

pub(crate) const CORPUS_JSONL: &str = "corpus.jsonl";
pub(crate) const QUERIES_JSONL: &str = "queries.jsonl";
pub(crate) const QRELS_DIR: &str = "qrels";

fn qrel_files(dir: &Path, split: Option<&str>) -> Result<Vec<PathBuf>> {
    let qrels_dir = dir.join(QRELS_DIR);
    if let Some(split) = split {
        let p = qrels_dir.join(format!("{split}.tsv"));
        if !p.exists() {
            return Err(DataError::io(
                &p,
                std::io::Error::new(std::io::ErrorKind::NotFound, "qrels split not found"),
            ));
        }
        return Ok(vec![p]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&qrels_dir)
        .map_err(|e| DataError::io(&qrels_dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tsv"))
        .collect();
    files.sort();
    Ok(files)
}

/// Parses one qrels TSV line (`query-id \t corpus-id \t score`).
pub fn parse_qrel_line(path: &Path, line: usize, text: &str) -> Result<Qrel> {
    let cols: Vec<&str> = text.split('\t').collect();
    let bad =
        |field: &str, msg: String| DataError::bad(path, Location::Line(line), Some(field), msg);
    if cols.len() < 3 {
        return Err(bad(
            "score",
            format!("expected 3 tab-separated columns, found {}", cols.len()),
        ));
    }
    let (q, d) = (cols[0].trim(), cols[1].trim());
    if q.is_empty() {
        return Err(bad("query-id", "id is empty".into()));
    }
    if d.is_empty() {
        return Err(bad("corpus-id", "id is empty".into()));
    }
    let relevance = cols[2]
        .trim()
        .parse::<i32>()
        .map_err(|_| bad("score", format!("expected an integer, found {:?}", cols[2])))?;
    Ok(Qrel {
        query_id: q.to_owned(),
        doc_id: d.to_owned(),
        relevance,
    })
}

/// Streams `corpus.jsonl` at `path` into `sink`, in file order, and returns the ids of the docs kept.
/// Rows whose text is empty after normalization are dropped and counted in `report`; a duplicate id
/// is an error naming its line.
pub(crate) fn read_corpus(
    path: &Path,
    report: &mut ImportReport,
    mut sink: impl FnMut(Doc) -> Result<()>,
) -> Result<HashSet<String>> {
    let map = FieldMap::parse("doc_id=_id")?;
    let mut doc_ids: HashSet<String> = HashSet::new();
    let mut kept = 0;
    for_each_line_chunk(open(path)?, path, |chunk| {
        let docs = parse_chunk(path, &chunk, |line, text| {
            parse_jsonl_line::<Doc>(path, line, text, &map).map(|d| (line, d))
        })?;
        report.rows_read += docs.len();
        for (line, doc) in docs {
            let Some(doc) = doc else {
                report.drop_empty("corpus");
                continue;
            };
            if !doc_ids.insert(doc.doc_id.clone()) {
                return Err(DataError::bad(
                    path,
                    Location::Line(line),
                    Some("_id"),
                    format!("duplicate doc id {:?}", doc.doc_id),
                ));
            }
            sink(doc)?;
            kept += 1;
        }
        Ok(())
    })?;
    report.written.insert("corpus".into(), kept);
    Ok(doc_ids)
}

/// Reads `queries.jsonl` at `path` with the 1-based line of each query; queries whose text is empty
/// after normalization are dropped and counted in `report`.
pub(crate) fn read_queries(path: &Path, report: &mut ImportReport) -> Result<Vec<(usize, Query)>> {
    let map = FieldMap::parse("query_id=_id")?;
    let mut queries = Vec::new();
    for_each_line_chunk(open(path)?, path, |chunk| {
        let parsed = parse_chunk(path, &chunk, |line, text| {
            parse_jsonl_line::<Query>(path, line, text, &map).map(|q| (line, q))
        })?;
        report.rows_read += parsed.len();
        for (line, q) in parsed {
            match q {
                Some(q) => queries.push((line, q)),
                None => report.drop_empty("queries"),
            }
        }
        Ok(())
    })?;
    Ok(queries)
}

/// Reads one qrels TSV (optional `query-id` header line, blank lines skipped) with the 1-based line of
/// each qrel. A qrel whose doc id is not in `doc_ids` is an error naming the file, line and field.
pub(crate) fn read_qrels(file: &Path, doc_ids: &HashSet<String>) -> Result<Vec<(usize, Qrel)>> {
    let reader = open(file)?;
    let mut qrels = Vec::new();
    for (i, line) in reader.split(b'\n').enumerate() {
        let line_no = i + 1;
        let bytes = line.map_err(|e| DataError::io(file, e))?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            DataError::bad(
                file,
                Location::Line(line_no),
                None,
                format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            )
        })?;
        let text = text.trim_end_matches('\r');
        if text.trim().is_empty() || (line_no == 1 && text.starts_with("query-id")) {
            continue;
        }
        let qrel = parse_qrel_line(file, line_no, text)?;
        if !doc_ids.contains(&qrel.doc_id) {
            return Err(DataError::bad(
                file,
                Location::Line(line_no),
                Some("corpus-id"),
                format!(
                    "qrel points at doc {:?}, which is not in {CORPUS_JSONL}",
                    qrel.doc_id
                ),
            ));
        }
        qrels.push((line_no, qrel));
    }
    Ok(qrels)
}

/// Imports the BEIR folder `dir` into dataset folder `out`. `qrels_split` picks `qrels/<split>.tsv`;
/// `None` takes every `.tsv` under `qrels/`.
pub fn import_beir(dir: &Path, qrels_split: Option<&str>, out: &Path) -> Result<ImportReport> {
    let mut report = ImportReport::new("beir", dir);
    std::fs::create_dir_all(out).map_err(|e| DataError::io(out, e))?;
    let mut pending = PendingDataset::default();

    let staging = out.join(format!(".corpus.staged-{}", std::process::id()));
    let mut writer = TableWriter::<Doc>::create(&staging)?;
    let doc_ids = read_corpus(&dir.join(CORPUS_JSONL), &mut report, |doc| {
        writer.write(doc)
    })?;
    writer.finish()?;
    pending.add_file(staging, table_path::<Doc>(out));

    let queries: Vec<Query> = read_queries(&dir.join(QUERIES_JSONL), &mut report)?
        .into_iter()
        .map(|(_, q)| q)
        .collect();

    let mut qrels = Vec::new();
    for file in qrel_files(dir, qrels_split)? {
        report.sources.push(file.clone());
        qrels.extend(read_qrels(&file, &doc_ids)?.into_iter().map(|(_, q)| q));
    }
    report.rows_read += qrels.len();
    report.written.insert("queries".into(), queries.len());
    report.written.insert("qrels".into(), qrels.len());
    pending.add(out, &queries)?;
    pending.add(out, &qrels)?;
    pending.commit()?;
    Ok(report)
}
