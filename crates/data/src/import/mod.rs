//! Importers from the formats datasets come in. Each normalizes text (NFC + whitespace), drops rows
//! whose required text is empty (counted in the report), and errors on anything malformed with the
//! file, line and field. Line-based inputs are streamed in chunks parsed in parallel.

mod beir;
mod fanoutqa;
mod faq;
mod generic;
mod msmarco;
mod squad;

pub use beir::{import_beir, parse_qrel_line};
pub(crate) use beir::{
    read_corpus, read_qrels, read_queries, CORPUS_JSONL, QRELS_DIR, QUERIES_JSONL,
};
pub use fanoutqa::{import_fanoutqa, parse_fanoutqa};
pub use faq::import_faq;
pub use generic::{
    import_csv, import_jsonl, parse_csv_rows, parse_jsonl_line, FieldMap, TargetTable,
};
pub use msmarco::{import_msmarco_triples, parse_triple_line};
pub use squad::{import_squad, parse_squad};

use crate::{DataError, Location, Result};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// Lines handed to rayon at once: enough to keep both cores busy, small enough to keep memory flat.
pub const CHUNK_LINES: usize = 4096;

/// What an import read, wrote and dropped.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    pub format: String,
    pub sources: Vec<PathBuf>,
    /// Rows (lines, records or questions) read from the sources.
    pub rows_read: usize,
    /// Rows written per table.
    pub written: BTreeMap<String, usize>,
    /// Rows dropped per table because a required text was empty after normalization.
    pub dropped_empty: BTreeMap<String, usize>,
    pub notes: Vec<String>,
}

impl ImportReport {
    pub fn new(format: &str, source: &Path) -> Self {
        ImportReport {
            format: format.into(),
            sources: vec![source.to_path_buf()],
            ..Default::default()
        }
    }

    pub fn drop_empty(&mut self, table: &str) {
        *self.dropped_empty.entry(table.into()).or_default() += 1;
    }

    /// Records what a streaming import of one table read, wrote and dropped.
    pub fn record_table(&mut self, table: &str, read: usize, written: usize, dropped: usize) {
        self.rows_read += read;
        self.written.insert(table.into(), written);
        if dropped > 0 {
            self.dropped_empty.insert(table.into(), dropped);
        }
    }
}

fn open(path: &Path) -> Result<std::io::BufReader<std::fs::File>> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    Ok(std::io::BufReader::with_capacity(1 << 20, file))
}

fn read_to_string(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        let upto = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = upto.iter().filter(|&&b| b == b'\n').count() + 1;
        DataError::bad(
            path,
            Location::Line(line),
            None,
            format!("invalid UTF-8 at byte {}", e.utf8_error().valid_up_to()),
        )
    })
}

/// Feeds `reader` to `sink` in chunks of (1-based line number, line without its newline).
pub fn for_each_line_chunk(
    mut reader: impl BufRead,
    path: &Path,
    mut sink: impl FnMut(Vec<(usize, Vec<u8>)>) -> Result<()>,
) -> Result<()> {
    let mut line_no = 0;
    let mut chunk = Vec::with_capacity(CHUNK_LINES);
    loop {
        let mut buf = Vec::new();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        chunk.push((line_no, buf));
        if chunk.len() == CHUNK_LINES {
            sink(std::mem::replace(
                &mut chunk,
                Vec::with_capacity(CHUNK_LINES),
            ))?;
        }
    }
    if !chunk.is_empty() {
        sink(chunk)?;
    }
    Ok(())
}

/// Parses a chunk of lines in parallel; blank lines are skipped. The first error in line order wins,
/// so the message is the same however rayon schedules the work.
pub fn parse_chunk<T: Send>(
    path: &Path,
    chunk: &[(usize, Vec<u8>)],
    parse: impl Fn(usize, &str) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    chunk
        .par_iter()
        .filter(|(_, bytes)| !bytes.iter().all(u8::is_ascii_whitespace))
        .map(|(line, bytes)| {
            let text = std::str::from_utf8(bytes).map_err(|e| {
                DataError::bad(
                    path,
                    Location::Line(*line),
                    None,
                    format!("invalid UTF-8 at byte {} of the line", e.valid_up_to()),
                )
            })?;
            parse(*line, text)
        })
        .collect()
}

/// A short stable id from text, for sources (MS MARCO triples) whose rows carry no ids.
pub fn text_id(prefix: &str, text: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}
