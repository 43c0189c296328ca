//! The tuned retriever as folders the retrieval crate (and sentence-transformers) loads.

use crate::config::Towers;
use crate::{JointError, Result};
use ragtune_retrieval::DenseRetriever;
use std::path::Path;

/// Writes the tuned retriever. Query side only: `query/` is the tuned tower and `passage/` a
/// byte-for-byte copy of the starting passage tower, so its corpus embeddings (and their cache
/// key) are those of the start. Both towers: one folder when shared, else `query/` and `passage/`.
pub fn export_retriever(retriever: &DenseRetriever, towers: Towers, dir: &Path) -> Result<()> {
    use ragtune_retriever_train::export::save_sentence_transformers;
    let staging = dir.with_extension("partial");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| JointError::io(&staging, e))?;
    }
    match (towers, retriever.shared_towers()) {
        (Towers::QueryOnly, _) => {
            save_sentence_transformers(retriever.query_tower(), &staging.join("query"))?;
            copy_dir(retriever.passage_dir(), &staging.join("passage"))?;
        }
        (Towers::Both, true) => save_sentence_transformers(retriever.query_tower(), &staging)?,
        (Towers::Both, false) => {
            save_sentence_transformers(retriever.query_tower(), &staging.join("query"))?;
            save_sentence_transformers(retriever.passage_tower(), &staging.join("passage"))?;
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| JointError::io(dir, e))?;
    }
    std::fs::rename(&staging, dir).map_err(|e| JointError::io(dir, e))?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| JointError::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| JointError::io(from, e))? {
        let path = entry.map_err(|e| JointError::io(from, e))?.path();
        let target = to.join(path.file_name().expect("a directory entry has a name"));
        if path.is_dir() {
            copy_dir(&path, &target)?;
        } else {
            std::fs::copy(&path, &target).map_err(|e| JointError::io(&path, e))?;
        }
    }
    Ok(())
}
