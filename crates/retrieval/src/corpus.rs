//! The passages a retriever searches, with an id lookup and a content hash that keys caches.

use ragtune_data::Doc;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// The text a passage is encoded or indexed from: its title (when there is one) and its text.
pub fn passage_text(doc: &Doc) -> String {
    if doc.title.trim().is_empty() {
        doc.text.clone()
    } else {
        format!("{}. {}", doc.title.trim(), doc.text)
    }
}

/// A corpus in search order: hits name passages by their position here.
#[derive(Debug, Clone)]
pub struct Corpus {
    docs: Vec<Doc>,
    by_id: HashMap<String, usize>,
    hash: String,
}

impl Corpus {
    /// Later duplicates of a doc id are unreachable by id (the data crate's validation refuses them).
    pub fn new(docs: Vec<Doc>) -> Self {
        let mut by_id = HashMap::with_capacity(docs.len());
        let mut hasher = Sha256::new();
        for (i, d) in docs.iter().enumerate() {
            by_id.entry(d.doc_id.clone()).or_insert(i);
            // Length-prefixed fields, so no two corpora hash alike by shifting text between fields.
            for field in [&d.doc_id, &d.title, &d.text] {
                hasher.update((field.len() as u64).to_le_bytes());
                hasher.update(field.as_bytes());
            }
        }
        let hash = hex(&hasher.finalize());
        Self { docs, by_id, hash }
    }

    pub fn docs(&self) -> &[Doc] {
        &self.docs
    }

    pub fn doc(&self, index: usize) -> &Doc {
        &self.docs[index]
    }

    /// The position of the passage with id `doc_id`.
    pub fn position(&self, doc_id: &str) -> Option<usize> {
        self.by_id.get(doc_id).copied()
    }

    pub fn len(&self) -> usize {
        self.docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// sha256 of every id, title and text in order (hex).
    pub fn hash(&self) -> &str {
        &self.hash
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
