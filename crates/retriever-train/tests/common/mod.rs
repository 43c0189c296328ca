//! Support shared by retriever-train's integration tests: slices of the bundled FAQ.
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use ragtune_data::Dataset;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub fn faq() -> Dataset {
    ragtune_data::import::import_faq(&ragtune_testkit::asset("zaragoza-faq").join("faq-en.jsonl"))
        .unwrap()
        .0
}

/// The first `docs` passages of `ds`, with only the qrels and queries that still point at them.
pub fn slice(mut ds: Dataset, docs: usize) -> Dataset {
    ds.corpus.truncate(docs);
    let kept: HashSet<String> = ds.corpus.iter().map(|d| d.doc_id.clone()).collect();
    ds.qrels.retain(|q| kept.contains(&q.doc_id));
    let judged: HashSet<String> = ds.qrels.iter().map(|q| q.query_id.clone()).collect();
    ds.queries.retain(|q| judged.contains(&q.query_id));
    ds
}

/// Writes [`slice`] (without QA rows) as a dataset folder `dir/faq-slice` and returns its path.
pub fn write_slice(ds: Dataset, docs: usize, dir: &Path) -> PathBuf {
    let mut ds = slice(ds, docs);
    ds.qa.clear();
    let out = dir.join("faq-slice");
    ds.write(&out).unwrap();
    out
}
