//! Cleaning a corpus: empty rows, exact duplicates (SHA-256 of the normalized text) and near
//! duplicates (MinHash over word shingles, bucketed by LSH bands, confirmed by signature agreement).
//! Every removal is reported with its reason and the document it duplicates.

use crate::records::{Doc, Qrel};
use crate::text::{normalize_text, splitmix64, stable_hash};
use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct DedupConfig {
    /// Estimated Jaccard similarity of word shingles at or above which two passages are near duplicates.
    /// `None` turns near-duplicate detection off (exact duplicates are always removed).
    pub near_threshold: Option<f64>,
    /// Words per shingle.
    pub shingle_words: usize,
    /// MinHash permutations (signature length).
    pub num_perm: usize,
    pub seed: u64,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            near_threshold: Some(0.8),
            shingle_words: 5,
            num_perm: 128,
            seed: 0x5eed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    Empty,
    ExactDuplicate { of: String },
    NearDuplicate { of: String, similarity: f64 },
}

#[derive(Debug, Clone, Serialize)]
pub struct Removal {
    pub doc_id: String,
    #[serde(flatten)]
    pub reason: Reason,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DedupReport {
    pub input_docs: usize,
    pub kept_docs: usize,
    pub empty: usize,
    pub exact_duplicates: usize,
    pub near_duplicates: usize,
    /// LSH banding actually used: bands × rows = num_perm.
    pub lsh_bands: usize,
    pub lsh_rows: usize,
    pub qrels_remapped: usize,
    pub qrels_dropped: usize,
    pub removed: Vec<Removal>,
}

/// The (bands, rows) split of `num_perm` whose S-curve midpoint (1/b)^(1/r) is nearest `threshold`.
pub fn lsh_bands(num_perm: usize, threshold: f64) -> (usize, usize) {
    (1..=num_perm)
        .filter(|b| num_perm.is_multiple_of(*b))
        .map(|b| (b, num_perm / b))
        .min_by(|x, y| {
            let t =
                |(b, r): (usize, usize)| ((1.0 / b as f64).powf(1.0 / r as f64) - threshold).abs();
            t(*x).total_cmp(&t(*y))
        })
        .unwrap_or((1, num_perm))
}

/// MinHash signature over lowercased word shingles; a text shorter than one shingle is one shingle.
pub fn minhash(text: &str, shingle_words: usize, num_perm: usize, seed: u64) -> Vec<u32> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split_whitespace().collect();
    let k = shingle_words.max(1);
    let shingles: Vec<u64> = if words.len() <= k {
        vec![stable_hash(words.join(" ").as_bytes())]
    } else {
        words
            .windows(k)
            .map(|w| stable_hash(w.join(" ").as_bytes()))
            .collect()
    };
    (0..num_perm)
        .map(|i| {
            let salt = splitmix64(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            shingles
                .iter()
                .map(|&s| (splitmix64(s ^ salt) >> 32) as u32)
                .min()
                .unwrap_or(u32::MAX)
        })
        .collect()
}

fn agreement(a: &[u32], b: &[u32]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len().max(1) as f64
}

fn find(parent: &mut [usize], mut x: usize) -> usize {
    while parent[x] != x {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    x
}

/// Normalizes, then removes empty, exact-duplicate and near-duplicate passages. The first occurrence
/// of each group is kept, so the result is deterministic in input order.
pub fn dedup_corpus(docs: Vec<Doc>, config: &DedupConfig) -> (Vec<Doc>, DedupReport) {
    let mut report = DedupReport {
        input_docs: docs.len(),
        ..Default::default()
    };
    let docs: Vec<Doc> = docs
        .into_par_iter()
        .map(|mut d| {
            d.text = normalize_text(&d.text);
            d.title = normalize_text(&d.title);
            d
        })
        .collect();
    let mut alive = vec![true; docs.len()];
    for (i, d) in docs.iter().enumerate() {
        if d.text.is_empty() {
            alive[i] = false;
            report.empty += 1;
            report.removed.push(Removal {
                doc_id: d.doc_id.clone(),
                reason: Reason::Empty,
            });
        }
    }
    let digests: Vec<[u8; 32]> = docs
        .par_iter()
        .map(|d| Sha256::digest(d.text.as_bytes()).into())
        .collect();
    let mut first_by_digest: HashMap<[u8; 32], usize> = HashMap::new();
    for i in 0..docs.len() {
        if !alive[i] {
            continue;
        }
        match first_by_digest.get(&digests[i]) {
            Some(&j) => {
                alive[i] = false;
                report.exact_duplicates += 1;
                report.removed.push(Removal {
                    doc_id: docs[i].doc_id.clone(),
                    reason: Reason::ExactDuplicate {
                        of: docs[j].doc_id.clone(),
                    },
                });
            }
            None => {
                first_by_digest.insert(digests[i], i);
            }
        }
    }
    if let Some(threshold) = config.near_threshold {
        let (bands, rows) = lsh_bands(config.num_perm, threshold);
        report.lsh_bands = bands;
        report.lsh_rows = rows;
        let live: Vec<usize> = (0..docs.len()).filter(|&i| alive[i]).collect();
        let sigs: Vec<Vec<u32>> = live
            .par_iter()
            .map(|&i| {
                minhash(
                    &docs[i].text,
                    config.shingle_words,
                    config.num_perm,
                    config.seed,
                )
            })
            .collect();
        let mut parent: Vec<usize> = (0..live.len()).collect();
        let mut best: HashMap<usize, f64> = HashMap::new();
        for band in 0..bands {
            let mut buckets: HashMap<u64, usize> = HashMap::new();
            for (k, sig) in sigs.iter().enumerate() {
                let slice = &sig[band * rows..(band + 1) * rows];
                let key = slice
                    .iter()
                    .fold(band as u64, |h, &v| splitmix64(h ^ v as u64));
                match buckets.get(&key) {
                    Some(&first) => {
                        let sim = agreement(&sigs[first], sig);
                        if sim >= threshold {
                            let (a, b) = (find(&mut parent, first), find(&mut parent, k));
                            if a != b {
                                // The earlier document stays the representative of the group.
                                let (keep, gone) = if a < b { (a, b) } else { (b, a) };
                                parent[gone] = keep;
                            }
                            let e = best.entry(k).or_insert(0.0);
                            *e = e.max(sim);
                        }
                    }
                    None => {
                        buckets.insert(key, k);
                    }
                }
            }
        }
        for k in 0..live.len() {
            let root = find(&mut parent, k);
            if root != k {
                let i = live[k];
                alive[i] = false;
                report.near_duplicates += 1;
                report.removed.push(Removal {
                    doc_id: docs[i].doc_id.clone(),
                    reason: Reason::NearDuplicate {
                        of: docs[live[root]].doc_id.clone(),
                        similarity: best
                            .get(&k)
                            .copied()
                            .unwrap_or_else(|| agreement(&sigs[root], &sigs[k])),
                    },
                });
            }
        }
    }
    let kept: Vec<Doc> = docs
        .into_iter()
        .zip(alive)
        .filter_map(|(d, a)| a.then_some(d))
        .collect();
    report.kept_docs = kept.len();
    (kept, report)
}

/// Points qrels of removed duplicates at the passage that was kept in their place, drops qrels of
/// empty passages, and merges judgements that now coincide (keeping the highest grade).
pub fn remap_qrels(qrels: Vec<Qrel>, report: &mut DedupReport) -> Vec<Qrel> {
    let mut target: HashMap<&str, Option<&str>> = HashMap::new();
    for r in &report.removed {
        let to = match &r.reason {
            Reason::Empty => None,
            Reason::ExactDuplicate { of } | Reason::NearDuplicate { of, .. } => Some(of.as_str()),
        };
        target.insert(r.doc_id.as_str(), to);
    }
    // A kept document is never itself removed, but chains are resolved anyway for safety.
    let resolve = |start: &str| -> Option<String> {
        let mut id = start.to_owned();
        for _ in 0..64 {
            match target.get(id.as_str()) {
                None => return Some(id),
                Some(None) => return None,
                Some(Some(to)) => id = (*to).to_owned(),
            }
        }
        None
    };
    let (mut remapped, mut dropped) = (0, 0);
    let mut merged: Vec<Qrel> = Vec::with_capacity(qrels.len());
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for q in qrels {
        let Some(doc) = resolve(&q.doc_id) else {
            dropped += 1;
            continue;
        };
        if doc != q.doc_id {
            remapped += 1;
        }
        match seen.get(&(q.query_id.clone(), doc.clone())) {
            Some(&k) => merged[k].relevance = merged[k].relevance.max(q.relevance),
            None => {
                seen.insert((q.query_id.clone(), doc.clone()), merged.len());
                merged.push(Qrel {
                    query_id: q.query_id,
                    doc_id: doc,
                    relevance: q.relevance,
                });
            }
        }
    }
    report.qrels_remapped = remapped;
    report.qrels_dropped = dropped;
    merged
}
