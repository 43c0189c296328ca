//! Datasets that bring their own train/val/test splits. Two layouts are recognized:
//!
//! ```text
//! folders:  <dir>/train/  <dir>/val/ (or dev/, valid/)  <dir>/test/   each a dataset folder of Parquet
//!           tables; a split without corpus.parquet uses <dir>/corpus.parquet when there is one
//! BEIR:     <dir>/corpus.jsonl  <dir>/queries.jsonl  <dir>/qrels/{train,dev,test}.tsv
//! ```
//!
//! A BEIR split holds the whole corpus, the qrels of its file and only the queries those qrels name.
//! Many BEIR sets ship no `dev.tsv`; then a seeded tenth of train's queries (grouped by normalized
//! question text, so duplicated questions stay together) becomes val, and a note says so.
//!
//! Anything else (a plain dataset folder, a file) has no given splits: callers split it themselves
//! with [`crate::split::split_dataset`].

use crate::dataset::{Dataset, CORPUS_FILE};
use crate::import::{
    read_corpus, read_qrels, read_queries, ImportReport, CORPUS_JSONL, QRELS_DIR, QUERIES_JSONL,
};
use crate::records::{Doc, Qrel, Query};
use crate::split::SPLIT_NAMES;
use crate::table::read_table;
use crate::text::{question_key, splitmix64, stable_hash};
use crate::{DataError, Location, Result};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Which layout a dataset's own splits came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitsLayout {
    /// `train/`, `val/` (`dev/`, `valid/`) and `test/` dataset folders.
    Folders,
    /// A BEIR folder with `qrels/train.tsv`, `qrels/test.tsv` and optionally `qrels/dev.tsv`.
    Beir,
}

/// A dataset's own splits, in the order of [`SPLIT_NAMES`] (train, val, test).
#[derive(Debug, Clone)]
pub struct GivenSplits {
    pub splits: [Dataset; 3],
    pub layout: SplitsLayout,
    /// What a user should know about how the splits were read (shared corpus, carved val, dropped
    /// rows, question texts shared between splits).
    pub notes: Vec<String>,
}

/// Folder names accepted for the validation split, in order of preference.
pub const VAL_FOLDERS: [&str; 3] = ["val", "dev", "valid"];
/// BEIR qrels files accepted for the validation split (`qrels/<name>.tsv`).
pub const BEIR_VAL_QRELS: [&str; 3] = ["dev", "val", "valid"];
/// Share of train's queries moved to val when a BEIR folder has no `qrels/dev.tsv`.
pub const CARVED_VAL_FRACTION: f64 = 0.1;

/// The dataset's own train/val/test splits, or None when `dir` has none (then callers split it themselves).
///
/// `seed` only matters for a BEIR folder without `qrels/dev.tsv`, where it picks the queries carved
/// from train into val.
pub fn read_given_splits(dir: &Path, seed: u64) -> Result<Option<GivenSplits>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let split_dirs: Vec<&str> = ["train", "test"]
        .into_iter()
        .chain(VAL_FOLDERS)
        .filter(|name| dir.join(name).is_dir())
        .collect();
    let has_qrels_dir = dir.join(QRELS_DIR).is_dir();
    match (split_dirs.is_empty(), has_qrels_dir) {
        (true, false) => Ok(None),
        (false, true) => Err(DataError::Invalid(format!(
            "{}: holds both split folders ({}) and a BEIR `{QRELS_DIR}/` folder; keep one layout",
            dir.display(),
            split_dirs.join(", ")
        ))),
        (false, false) => read_folders(dir).map(Some),
        (true, true) => read_beir(dir, seed).map(Some),
    }
}

fn not_found(path: &Path, message: String) -> DataError {
    DataError::io(
        path,
        std::io::Error::new(std::io::ErrorKind::NotFound, message),
    )
}

/// The one present name among `names` under `dir` (as `<name><suffix>`), erroring if two are.
fn pick_alias<'a>(dir: &Path, names: &[&'a str], suffix: &str) -> Result<Option<&'a str>> {
    let present: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| dir.join(format!("{n}{suffix}")).exists())
        .collect();
    match present.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        [a, b, ..] => Err(DataError::Invalid(format!(
            "{}: has both `{a}{suffix}` and `{b}{suffix}`; a dataset has one validation split, so keep one of them",
            dir.display()
        ))),
    }
}

fn check_val_not_empty(val: &Dataset, source: &Path) -> Result<()> {
    if val.queries.is_empty() && val.qa.is_empty() {
        return Err(DataError::Invalid(format!(
            "{}: the validation split has no queries and no qa rows, so nothing could be validated on",
            source.display()
        )));
    }
    Ok(())
}

fn read_folders(dir: &Path) -> Result<GivenSplits> {
    let val_name = pick_alias(dir, &VAL_FOLDERS, "")?;
    let names = ["train", val_name.unwrap_or("val"), "test"];
    let folders: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
    for (name, folder) in names.iter().zip(&folders) {
        if !folder.is_dir() {
            let present: Vec<String> = names
                .iter()
                .zip(&folders)
                .filter(|(_, f)| f.is_dir())
                .map(|(n, _)| format!("{n}/"))
                .collect();
            let aliases = if *name == "val" {
                " (or dev/, valid/)"
            } else {
                ""
            };
            return Err(not_found(
                folder,
                format!(
                    "split folder `{name}/`{aliases} not found; {} has {} but needs train/, val/ and test/",
                    dir.display(),
                    present.join(" and ")
                ),
            ));
        }
    }

    let mut notes = Vec::new();
    if let Some(alias) = val_name.filter(|n| *n != "val") {
        notes.push(format!("val read from {alias}/"));
    }
    let shared_path = dir.join(CORPUS_FILE);
    let mut shared: Option<Vec<Doc>> = None;
    let mut shared_by = Vec::new();
    let mut splits: [Dataset; 3] = Default::default();
    for ((split, name), folder) in splits.iter_mut().zip(names).zip(&folders) {
        let mut ds = Dataset::read(folder)?;
        if !folder.join(CORPUS_FILE).exists() && shared_path.is_file() {
            if shared.is_none() {
                let corpus: Vec<Doc> = read_table(&shared_path)?;
                let check = Dataset {
                    corpus,
                    ..Default::default()
                };
                check.validate(dir)?;
                shared = Some(check.corpus);
            }
            ds.corpus = shared.clone().unwrap_or_default();
            shared_by.push(name);
        }
        ds.validate(folder)?;
        *split = ds;
    }
    if !shared_by.is_empty() {
        notes.push(format!(
            "{} use the shared corpus {}",
            shared_by.join(", "),
            shared_path.display()
        ));
    }
    check_val_not_empty(&splits[1], &folders[1])?;
    notes.extend(overlap_notes(&splits));
    Ok(GivenSplits {
        splits,
        layout: SplitsLayout::Folders,
        notes,
    })
}

/// One BEIR split before it becomes a dataset: its queries (in queries.jsonl order) and qrels.
#[derive(Default)]
struct BeirSplit {
    queries: Vec<Query>,
    qrels: Vec<Qrel>,
}

fn read_beir(dir: &Path, seed: u64) -> Result<GivenSplits> {
    let qrels_dir = dir.join(QRELS_DIR);
    let train_file = qrels_dir.join("train.tsv");
    let test_file = qrels_dir.join("test.tsv");
    let val_name = pick_alias(&qrels_dir, &BEIR_VAL_QRELS, ".tsv")?;
    if !train_file.is_file() {
        let message = if test_file.is_file() {
            "not found: this BEIR folder has test qrels only, so it cannot be trained on; \
             evaluate on it, or import it (`ragtune data import --format beir`) and split it \
             (`ragtune data split`)"
        } else {
            "not found: a BEIR folder with its own splits needs qrels/train.tsv and qrels/test.tsv"
        };
        return Err(not_found(&train_file, message.into()));
    }
    if !test_file.is_file() {
        return Err(not_found(
            &test_file,
            "not found: a BEIR folder with its own splits needs qrels/test.tsv next to qrels/train.tsv"
                .into(),
        ));
    }

    let mut report = ImportReport::new("beir", dir);
    let mut corpus = Vec::new();
    let doc_ids = read_corpus(&dir.join(CORPUS_JSONL), &mut report, |doc| {
        corpus.push(doc);
        Ok(())
    })?;
    let queries_path = dir.join(QUERIES_JSONL);
    let queries = read_queries(&queries_path, &mut report)?;
    let mut position: HashMap<&str, usize> = HashMap::with_capacity(queries.len());
    for (i, (line, q)) in queries.iter().enumerate() {
        if position.insert(q.query_id.as_str(), i).is_some() {
            return Err(DataError::bad(
                &queries_path,
                Location::Line(*line),
                Some("_id"),
                format!("duplicate query id {:?}", q.query_id),
            ));
        }
    }
    let dropped_queries = report.dropped_empty.get("queries").copied().unwrap_or(0);

    let read_split = |file: &Path| -> Result<BeirSplit> {
        let mut named = Vec::new();
        let mut seen = HashSet::new();
        let mut qrels = Vec::new();
        for (line, qrel) in read_qrels(file, &doc_ids)? {
            let Some(&at) = position.get(qrel.query_id.as_str()) else {
                let dropped = if dropped_queries > 0 {
                    " (or its text is empty there)"
                } else {
                    ""
                };
                return Err(DataError::bad(
                    file,
                    Location::Line(line),
                    Some("query-id"),
                    format!(
                        "qrel names query {:?}, which is not in {QUERIES_JSONL}{dropped}",
                        qrel.query_id
                    ),
                ));
            };
            if seen.insert(at) {
                named.push(at);
            }
            qrels.push(qrel);
        }
        named.sort_unstable();
        Ok(BeirSplit {
            queries: named.into_iter().map(|i| queries[i].1.clone()).collect(),
            qrels,
        })
    };

    let mut notes = Vec::new();
    let mut train = read_split(&train_file)?;
    let test = read_split(&test_file)?;
    let val = match val_name {
        Some(name) => {
            let file = qrels_dir.join(format!("{name}.tsv"));
            let val = read_split(&file)?;
            if val.queries.is_empty() {
                return Err(DataError::Invalid(format!(
                    "{}: the validation split has no qrels, so nothing could be validated on",
                    file.display()
                )));
            }
            if name != "dev" {
                notes.push(format!("val read from {QRELS_DIR}/{name}.tsv"));
            }
            val
        }
        None => {
            let val = carve_val(&mut train, seed, &train_file)?;
            notes.push(format!(
                "{QRELS_DIR}/dev.tsv is absent: val is {} of train's {} queries ({}%, seed {seed}) \
                 carved from {QRELS_DIR}/train.tsv with their {} qrels",
                val.queries.len(),
                val.queries.len() + train.queries.len(),
                CARVED_VAL_FRACTION * 100.0,
                val.qrels.len()
            ));
            val
        }
    };

    if let Some(n) = report.dropped_empty.get("corpus") {
        notes.push(format!(
            "{CORPUS_JSONL}: {n} passage(s) with empty text were dropped"
        ));
    }
    if dropped_queries > 0 {
        notes.push(format!(
            "{QUERIES_JSONL}: {dropped_queries} query(ies) with empty text were dropped"
        ));
    }
    let judged: usize = [&train, &val, &test].iter().map(|s| s.queries.len()).sum();
    if judged < queries.len() {
        notes.push(format!(
            "{} of the {} queries in {QUERIES_JSONL} are judged in no split's qrels and were left out",
            queries.len() - judged,
            queries.len()
        ));
    }
    let splits = [train, val, test].map(|s| Dataset {
        corpus: corpus.clone(),
        queries: s.queries,
        qrels: s.qrels,
        ..Default::default()
    });
    notes.extend(overlap_notes(&splits));
    Ok(GivenSplits {
        splits,
        layout: SplitsLayout::Beir,
        notes,
    })
}

/// Moves a seeded [`CARVED_VAL_FRACTION`] of `train`'s queries (at least one) and their qrels into a
/// new val split. Queries are taken in groups of equal normalized text, so no question text ends up
/// in both.
fn carve_val(train: &mut BeirSplit, seed: u64, train_file: &Path) -> Result<BeirSplit> {
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, q) in train.queries.iter().enumerate() {
        groups.entry(question_key(&q.text)).or_default().push(i);
    }
    if groups.len() < 2 {
        return Err(DataError::Invalid(format!(
            "{}: has no dev.tsv beside it, and train's qrels name {} distinct question(s), too few \
             to carve a validation split from",
            train_file.display(),
            groups.len()
        )));
    }
    let mut order: Vec<(u64, &String, &Vec<usize>)> = groups
        .iter()
        .map(|(key, members)| {
            (
                splitmix64(stable_hash(key.as_bytes()) ^ splitmix64(seed)),
                key,
                members,
            )
        })
        .collect();
    order.sort();
    let target = ((train.queries.len() as f64 * CARVED_VAL_FRACTION).round() as usize).max(1);
    let mut to_val = HashSet::new();
    for (_, _, members) in order.iter().take(groups.len() - 1) {
        if to_val.len() >= target {
            break;
        }
        to_val.extend(members.iter().map(|&i| train.queries[i].query_id.clone()));
    }
    let (val_queries, train_queries) = std::mem::take(&mut train.queries)
        .into_iter()
        .partition(|q| to_val.contains(&q.query_id));
    let (val_qrels, train_qrels) = std::mem::take(&mut train.qrels)
        .into_iter()
        .partition(|q| to_val.contains(&q.query_id));
    train.queries = train_queries;
    train.qrels = train_qrels;
    Ok(BeirSplit {
        queries: val_queries,
        qrels: val_qrels,
    })
}

/// Notes on question texts (queries and QA questions, normalized and lowercased) that two of the
/// given splits share: the dataset's own choice, but worth knowing.
fn overlap_notes(splits: &[Dataset; 3]) -> Vec<String> {
    let keys: Vec<HashSet<String>> = splits
        .iter()
        .map(|ds| {
            ds.queries
                .iter()
                .map(|q| question_key(&q.text))
                .chain(ds.qa.iter().map(|q| question_key(&q.question)))
                .collect()
        })
        .collect();
    let mut notes = Vec::new();
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        let shared = keys[a].intersection(&keys[b]).count();
        if shared > 0 {
            notes.push(format!(
                "{shared} question text(s) appear in both {} and {} (the dataset's own splits)",
                SPLIT_NAMES[a], SPLIT_NAMES[b]
            ));
        }
    }
    notes
}
