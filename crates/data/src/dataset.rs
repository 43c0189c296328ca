//! A dataset folder: one Parquet file per table, any subset present, plus token caches.
//!
//! ```text
//! <dir>/corpus.parquet  queries.parquet  qrels.parquet  qa.parquet  triplets.parquet  preferences.parquet
//! <dir>/cache/<table>.<column>.tok-<sha256 of tokenizer.json, 16 hex>-len<max_length>.parquet
//! <dir>/report.json     (written by import, dedup and split: what was read, dropped and why)
//! ```

use crate::records::{Doc, Preference, QaExample, Qrel, Query, Triplet};
use crate::table::{read_table, Record, TableWriter};
use crate::{DataError, Location, Result};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub const CORPUS_FILE: &str = "corpus.parquet";
pub const QUERIES_FILE: &str = "queries.parquet";
pub const QRELS_FILE: &str = "qrels.parquet";
pub const QA_FILE: &str = "qa.parquet";
pub const TRIPLETS_FILE: &str = "triplets.parquet";
pub const PREFERENCES_FILE: &str = "preferences.parquet";
pub const CACHE_DIR: &str = "cache";
pub const REPORT_FILE: &str = "report.json";

/// The file of table `R` in dataset folder `dir`.
pub fn table_path<R: Record>(dir: &Path) -> PathBuf {
    dir.join(format!("{}.parquet", R::TABLE))
}

/// Every table of a dataset, in memory. Absent files read as empty tables; empty tables are not written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dataset {
    pub corpus: Vec<Doc>,
    pub queries: Vec<Query>,
    pub qrels: Vec<Qrel>,
    pub qa: Vec<QaExample>,
    pub triplets: Vec<Triplet>,
    pub preferences: Vec<Preference>,
}

fn read_if_present<R: Record>(dir: &Path) -> Result<Vec<R>> {
    let path = table_path::<R>(dir);
    if path.exists() {
        read_table(&path)
    } else {
        Ok(Vec::new())
    }
}

impl Dataset {
    pub fn read(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(DataError::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "dataset folder not found"),
            ));
        }
        Ok(Dataset {
            corpus: read_if_present(dir)?,
            queries: read_if_present(dir)?,
            qrels: read_if_present(dir)?,
            qa: read_if_present(dir)?,
            triplets: read_if_present(dir)?,
            preferences: read_if_present(dir)?,
        })
    }

    /// Writes every non-empty table. All files are written to temp files first and renamed only once
    /// all of them are complete, so a failure part-way leaves the previous dataset as it was.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let mut pending = PendingDataset::default();
        pending.add(dir, &self.corpus)?;
        pending.add(dir, &self.queries)?;
        pending.add(dir, &self.qrels)?;
        pending.add(dir, &self.qa)?;
        pending.add(dir, &self.triplets)?;
        pending.add(dir, &self.preferences)?;
        pending.commit()
    }

    /// Checks the cross-table rules: unique ids, and every qrel and gold id pointing at a real
    /// passage and query. `dir` names the files in errors.
    pub fn validate(&self, dir: &Path) -> Result<()> {
        let mut doc_ids = HashSet::with_capacity(self.corpus.len());
        for (row, d) in self.corpus.iter().enumerate() {
            if !doc_ids.insert(d.doc_id.as_str()) {
                return Err(DataError::bad(
                    dir.join(CORPUS_FILE),
                    Location::Row(row),
                    Some("doc_id"),
                    format!("duplicate doc_id {:?}", d.doc_id),
                ));
            }
        }
        let mut query_ids = HashSet::with_capacity(self.queries.len());
        for (row, q) in self.queries.iter().enumerate() {
            if !query_ids.insert(q.query_id.as_str()) {
                return Err(DataError::bad(
                    dir.join(QUERIES_FILE),
                    Location::Row(row),
                    Some("query_id"),
                    format!("duplicate query_id {:?}", q.query_id),
                ));
            }
        }
        if !self.corpus.is_empty() {
            for (row, q) in self.qrels.iter().enumerate() {
                if !doc_ids.contains(q.doc_id.as_str()) {
                    return Err(DataError::bad(
                        dir.join(QRELS_FILE),
                        Location::Row(row),
                        Some("doc_id"),
                        format!(
                            "qrel points at doc {:?}, which is not in the corpus",
                            q.doc_id
                        ),
                    ));
                }
            }
        }
        if !self.queries.is_empty() {
            for (row, q) in self.qrels.iter().enumerate() {
                if !query_ids.contains(q.query_id.as_str()) {
                    return Err(DataError::bad(
                        dir.join(QRELS_FILE),
                        Location::Row(row),
                        Some("query_id"),
                        format!(
                            "qrel points at query {:?}, which is not in queries",
                            q.query_id
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Table files written but not yet renamed into place; see [`Dataset::write`].
#[derive(Default)]
pub struct PendingDataset {
    staged: Vec<(PathBuf, PathBuf)>,
}

impl PendingDataset {
    /// Writes `rows` to a staging file beside the target, unless empty.
    pub fn add<R: Record>(&mut self, dir: &Path, rows: &[R]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let target = table_path::<R>(dir);
        let staging = dir.join(format!(".{}.staged-{}", R::TABLE, std::process::id()));
        let mut w = TableWriter::<R>::create(&staging)?;
        for chunk in rows.chunks(crate::table::BATCH_ROWS) {
            w.write_batch(chunk)?;
        }
        w.finish()?;
        self.staged.push((staging, target));
        Ok(())
    }

    /// Adds a table already complete at `staging` (from a streaming writer).
    pub fn add_file(&mut self, staging: PathBuf, target: PathBuf) {
        self.staged.push((staging, target));
    }

    pub fn commit(mut self) -> Result<()> {
        for (staging, target) in std::mem::take(&mut self.staged) {
            std::fs::rename(&staging, &target).map_err(|e| DataError::io(&target, e))?;
        }
        Ok(())
    }
}

impl Drop for PendingDataset {
    fn drop(&mut self) {
        for (staging, _) in &self.staged {
            let _ = std::fs::remove_file(staging);
        }
    }
}
