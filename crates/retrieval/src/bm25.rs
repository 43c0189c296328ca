//! BM25 over a corpus, in Lucene's variant (Lucene ≥ 8, as Anserini and `bm25s`' `method="lucene"`
//! compute it; Kamphuis et al., ECIR 2020):
//!
//! ```text
//! score(q, d) = Σ_{t ∈ q} idf(t) · tf(t,d) / (tf(t,d) + k1 · (1 − b + b · |d| / avgdl))
//! idf(t)      = ln(1 + (N − df(t) + 0.5) / (df(t) + 0.5))
//! ```
//!
//! A query term counts as often as it occurs in the query (Anserini's bag-of-words query weights
//! repeats the same way). k1 and b default to Anserini's 0.9 and 0.4. The passage text is the one
//! the dense retriever encodes ([`passage_text`]: title, then text), run through the [`Analyzer`].
//!
//! The index is an inverted file in compressed-row form (a term's postings are one slice of doc ids
//! and term frequencies), built in parallel, and saved as one binary file: a magic and version, a
//! JSON header (parameters, analyzer, corpus hash, sizes), the arrays in little-endian order, and a
//! sha256 of everything before it. Loading checks the checksum and every size against the file's
//! length before allocating, so a truncated or foreign file is an error, never a huge allocation.

use crate::analyzer::Analyzer;
use crate::corpus::{hex, passage_text, Corpus};
use crate::dense::CacheStatus;
use crate::index::Hit;
use crate::{Result, RetrievalError, Retriever};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"RTBM25\0\0";
const FORMAT_VERSION: u32 = 1;

/// BM25's settings, as a config's `[retrieval]` table (`backend = "bm25"`) spells them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Bm25Config {
    /// Term-frequency saturation.
    pub k1: f64,
    /// Length normalisation: 0 none, 1 full.
    pub b: f64,
    pub analyzer: Analyzer,
    /// Where the index is saved and found again (keyed by corpus, k1, b and analyzer); none keeps
    /// it in memory only. The pipeline puts it beside its dataset.
    pub cache_dir: Option<PathBuf>,
}

impl Default for Bm25Config {
    fn default() -> Self {
        Self {
            k1: 0.9,
            b: 0.4,
            analyzer: Analyzer::default(),
            cache_dir: None,
        }
    }
}

impl Bm25Config {
    pub fn validate(&self) -> Result<()> {
        if !(self.k1.is_finite() && self.k1 >= 0.0) {
            return Err(RetrievalError::Invalid(format!(
                "retrieval.k1 must be a finite number >= 0, got {}",
                self.k1
            )));
        }
        if !(0.0..=1.0).contains(&self.b) {
            return Err(RetrievalError::Invalid(format!(
                "retrieval.b must lie in [0, 1], got {}",
                self.b
            )));
        }
        Ok(())
    }
}

/// What an index was built with: saved in its header and checked on load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Header {
    k1: f64,
    b: f64,
    analyzer: Analyzer,
    corpus_hash: String,
    docs: u64,
    terms: u64,
    postings: u64,
    vocab_bytes: u64,
}

/// An inverted index with BM25 impacts precomputed per posting.
pub struct Bm25Index {
    k1: f64,
    b: f64,
    analyzer: Analyzer,
    corpus_hash: String,
    term_ids: HashMap<String, u32>,
    vocab: Vec<String>,
    doc_lengths: Vec<u32>,
    /// `offsets[t]..offsets[t + 1]` are term t's postings.
    offsets: Vec<u64>,
    doc_ids: Vec<u32>,
    term_freqs: Vec<u32>,
    /// idf(t) · tf / (tf + k1 · (1 − b + b · |d| / avgdl)) per posting, in f32 (as bm25s stores them).
    impacts: Vec<f32>,
}

impl Bm25Index {
    /// Analyzes every passage (in parallel, each worker stemming a distinct word once) and builds
    /// the postings.
    pub fn build(corpus: &Corpus, config: &Bm25Config) -> Result<Self> {
        config.validate()?;
        if corpus.len() > u32::MAX as usize {
            return Err(RetrievalError::Invalid(format!(
                "BM25 indexes at most {} passages, the corpus has {}",
                u32::MAX,
                corpus.len()
            )));
        }
        let analyzer = config.analyzer;
        let analyzed: Vec<Vec<String>> = corpus
            .docs()
            .par_chunks(512)
            .flat_map_iter(|chunk| {
                let mut stems = HashMap::new();
                chunk
                    .iter()
                    .map(|d| analyzer.terms_memo(&passage_text(d), &mut stems))
                    .collect::<Vec<_>>()
            })
            .collect();

        // Term ids in order of first occurrence: one sequential pass, as ids must be global.
        let mut term_ids: HashMap<String, u32> = HashMap::new();
        let mut vocab: Vec<String> = Vec::new();
        let doc_terms: Vec<Vec<u32>> = analyzed
            .into_iter()
            .map(|terms| {
                terms
                    .into_iter()
                    .map(|term| match term_ids.get(&term) {
                        Some(&id) => id,
                        None => {
                            let id = vocab.len() as u32;
                            term_ids.insert(term.clone(), id);
                            vocab.push(term);
                            id
                        }
                    })
                    .collect()
            })
            .collect();
        let doc_lengths: Vec<u32> = doc_terms.iter().map(|t| t.len() as u32).collect();
        let counted: Vec<Vec<(u32, u32)>> = doc_terms
            .into_par_iter()
            .map(|mut ids| {
                ids.sort_unstable();
                let mut counts: Vec<(u32, u32)> = Vec::new();
                for id in ids {
                    match counts.last_mut() {
                        Some((last, n)) if *last == id => *n += 1,
                        _ => counts.push((id, 1)),
                    }
                }
                counts
            })
            .collect();

        let mut offsets = vec![0u64; vocab.len() + 1];
        for counts in &counted {
            for &(id, _) in counts {
                offsets[id as usize + 1] += 1;
            }
        }
        for t in 0..vocab.len() {
            offsets[t + 1] += offsets[t];
        }
        let postings = offsets[vocab.len()] as usize;
        let mut cursor: Vec<u64> = offsets[..vocab.len()].to_vec();
        let (mut doc_ids, mut term_freqs) = (vec![0u32; postings], vec![0u32; postings]);
        for (doc, counts) in counted.iter().enumerate() {
            for &(id, n) in counts {
                let at = cursor[id as usize] as usize;
                doc_ids[at] = doc as u32;
                term_freqs[at] = n;
                cursor[id as usize] += 1;
            }
        }
        Ok(Self::assemble(
            config,
            corpus.hash().to_string(),
            vocab,
            term_ids,
            doc_lengths,
            offsets,
            doc_ids,
            term_freqs,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        config: &Bm25Config,
        corpus_hash: String,
        vocab: Vec<String>,
        term_ids: HashMap<String, u32>,
        doc_lengths: Vec<u32>,
        offsets: Vec<u64>,
        doc_ids: Vec<u32>,
        term_freqs: Vec<u32>,
    ) -> Self {
        let mut index = Self {
            k1: config.k1,
            b: config.b,
            analyzer: config.analyzer,
            corpus_hash,
            term_ids,
            vocab,
            doc_lengths,
            offsets,
            doc_ids,
            term_freqs,
            impacts: Vec::new(),
        };
        index.impacts = index.compute_impacts();
        index
    }

    fn compute_impacts(&self) -> Vec<f32> {
        let n = self.doc_lengths.len() as f64;
        let total: u64 = self.doc_lengths.iter().map(|&l| l as u64).sum();
        // An all-empty corpus has no postings; any positive average keeps the formula finite.
        let avgdl = if total == 0 { 1.0 } else { total as f64 / n };
        let norms: Vec<f64> = self
            .doc_lengths
            .iter()
            .map(|&l| self.k1 * (1.0 - self.b + self.b * l as f64 / avgdl))
            .collect();
        (0..self.vocab.len())
            .into_par_iter()
            .flat_map_iter(|t| {
                let range = self.offsets[t] as usize..self.offsets[t + 1] as usize;
                let df = range.len() as f64;
                let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
                let norms = &norms;
                self.doc_ids[range.clone()]
                    .iter()
                    .zip(&self.term_freqs[range])
                    .map(move |(&d, &tf)| {
                        let tf = tf as f64;
                        (idf * tf / (tf + norms[d as usize])) as f32
                    })
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.doc_lengths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.doc_lengths.is_empty()
    }

    pub fn vocabulary_size(&self) -> usize {
        self.vocab.len()
    }

    pub fn postings(&self) -> usize {
        self.doc_ids.len()
    }

    pub fn analyzer(&self) -> &Analyzer {
        &self.analyzer
    }

    /// The sha256 of the corpus it was built from ([`Corpus::hash`]).
    pub fn corpus_hash(&self) -> &str {
        &self.corpus_hash
    }

    /// The `k` best passages for already-analyzed query terms, best first, ties by position.
    /// Fewer than `k` matching passages are followed by non-matching ones (score 0) in corpus
    /// order, so every query gets `min(k, N)` hits as from any other retriever.
    pub fn search_terms(&self, terms: &[String], k: usize) -> Vec<Hit> {
        let mut scores = vec![0f32; self.len()];
        let mut touched = Vec::new();
        self.search_with(terms, k, &mut scores, &mut touched)
    }

    fn search_with(
        &self,
        terms: &[String],
        k: usize,
        scores: &mut [f32],
        touched: &mut Vec<u32>,
    ) -> Vec<Hit> {
        touched.clear();
        for term in terms {
            let Some(&t) = self.term_ids.get(term) else {
                continue;
            };
            let range = self.offsets[t as usize] as usize..self.offsets[t as usize + 1] as usize;
            for (&d, &impact) in self.doc_ids[range.clone()].iter().zip(&self.impacts[range]) {
                let slot = &mut scores[d as usize];
                if *slot == 0.0 {
                    touched.push(d);
                }
                *slot += impact;
            }
        }
        let mut hits: Vec<Hit> = touched
            .iter()
            .map(|&d| Hit {
                index: d as usize,
                score: scores[d as usize],
            })
            .collect();
        for &d in touched.iter() {
            scores[d as usize] = 0.0;
        }
        let better = |a: &Hit, b: &Hit| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index));
        if hits.len() > k && k > 0 {
            hits.select_nth_unstable_by(k - 1, better);
        }
        hits.truncate(k);
        // The candidates were every passage a query term touches; keep only the k returned, or a
        // batch of queries holds every candidate list until the caller is done.
        hits.shrink_to_fit();
        hits.sort_unstable_by(better);
        if hits.len() < k.min(self.len()) {
            let matched: std::collections::HashSet<usize> = hits.iter().map(|h| h.index).collect();
            let fill = k.min(self.len()) - hits.len();
            hits.extend(
                (0..self.len())
                    .filter(|i| !matched.contains(i))
                    .take(fill)
                    .map(|index| Hit { index, score: 0.0 }),
            );
        }
        hits
    }

    /// [`Bm25Index::search_terms`] for many raw queries, analyzed and searched in parallel.
    pub fn search(&self, queries: &[&str], k: usize) -> Vec<Vec<Hit>> {
        queries
            .par_iter()
            .map_init(
                || (vec![0f32; self.len()], Vec::new(), HashMap::new()),
                |(scores, touched, stems), query| {
                    let terms = self.analyzer.terms_memo(query, stems);
                    self.search_with(&terms, k, scores, touched)
                },
            )
            .collect()
    }

    /// The file name this index is cached under in a folder: it changes with the corpus and with
    /// any setting that changes the index.
    pub fn cache_name(corpus: &Corpus, config: &Bm25Config) -> String {
        let mut hasher = Sha256::new();
        hasher.update(FORMAT_VERSION.to_le_bytes());
        hasher.update(corpus.hash().as_bytes());
        hasher.update(config.k1.to_le_bytes());
        hasher.update(config.b.to_le_bytes());
        hasher.update(serde_json::to_vec(&config.analyzer).unwrap_or_default());
        format!("bm25-{}.bin", &hex(&hasher.finalize())[..16])
    }

    /// Writes the index atomically (temp file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let vocab_bytes: usize = self.vocab.iter().map(|t| 4 + t.len()).sum();
        let header = Header {
            k1: self.k1,
            b: self.b,
            analyzer: self.analyzer,
            corpus_hash: self.corpus_hash.clone(),
            docs: self.len() as u64,
            terms: self.vocab.len() as u64,
            postings: self.postings() as u64,
            vocab_bytes: vocab_bytes as u64,
        };
        let header = serde_json::to_vec(&header).expect("the header serializes");
        let body = vocab_bytes
            + 4 * self.doc_lengths.len()
            + 8 * self.offsets.len()
            + 8 * self.doc_ids.len();
        let mut bytes = Vec::with_capacity(16 + header.len() + body + 32);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&header);
        for term in &self.vocab {
            bytes.extend_from_slice(&(term.len() as u32).to_le_bytes());
            bytes.extend_from_slice(term.as_bytes());
        }
        self.doc_lengths
            .iter()
            .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        self.offsets
            .iter()
            .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        self.doc_ids
            .iter()
            .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        self.term_freqs
            .iter()
            .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        let checksum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&checksum);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| RetrievalError::io(dir, e))?;
        }
        ragtune_data::atomic::write_atomic(path, &bytes)?;
        Ok(())
    }

    /// Reads an index saved by [`Bm25Index::save`], checking its checksum and sizes.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| RetrievalError::io(path, e))?;
        let bad = |what: &str| {
            RetrievalError::Invalid(format!(
                "{}: not a readable ragtune BM25 index ({what}); delete it to rebuild",
                path.display()
            ))
        };
        if bytes.len() < 16 + 32 || &bytes[..8] != MAGIC {
            return Err(bad("no BM25 magic at the start"));
        }
        let (content, checksum) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(content).as_slice() != checksum {
            return Err(bad("checksum mismatch: the file is truncated or corrupt"));
        }
        let mut reader = Reader {
            bytes: content,
            at: 8,
        };
        let version = reader.u32().ok_or_else(|| bad("no version"))?;
        if version != FORMAT_VERSION {
            return Err(bad(&format!(
                "format version {version}, this build reads {FORMAT_VERSION}"
            )));
        }
        let header_len = reader.u32().ok_or_else(|| bad("no header length"))? as usize;
        let header: Header = reader
            .take(header_len)
            .and_then(|h| serde_json::from_slice(h).ok())
            .ok_or_else(|| bad("unreadable header"))?;
        // Every size is checked against the bytes that remain before anything is allocated.
        let need = (|| {
            header
                .vocab_bytes
                .checked_add(header.docs.checked_mul(4)?)?
                .checked_add(header.terms.checked_add(1)?.checked_mul(8)?)?
                .checked_add(header.postings.checked_mul(8)?)
        })();
        if need != Some(reader.remaining() as u64) || header.docs > u32::MAX as u64 {
            return Err(bad("the header's sizes do not match the file's length"));
        }
        let mut vocab = Vec::with_capacity(header.terms as usize);
        let mut term_ids = HashMap::with_capacity(header.terms as usize);
        let mut vocab_reader = Reader {
            bytes: reader
                .take(header.vocab_bytes as usize)
                .ok_or_else(|| bad("vocabulary cut short"))?,
            at: 0,
        };
        for id in 0..header.terms as u32 {
            let len = vocab_reader
                .u32()
                .ok_or_else(|| bad("vocabulary cut short"))? as usize;
            let term = vocab_reader
                .take(len)
                .and_then(|t| std::str::from_utf8(t).ok())
                .ok_or_else(|| bad("a vocabulary term is cut short or not UTF-8"))?
                .to_string();
            term_ids.insert(term.clone(), id);
            vocab.push(term);
        }
        if vocab_reader.remaining() != 0 || term_ids.len() != vocab.len() {
            return Err(bad(
                "the vocabulary's size or terms do not match its header",
            ));
        }
        let doc_lengths = reader.u32s(header.docs as usize);
        let offsets = reader.u64s(header.terms as usize + 1);
        let doc_ids = reader.u32s(header.postings as usize);
        let term_freqs = reader.u32s(header.postings as usize);
        let consistent = offsets.first() == Some(&0)
            && offsets.windows(2).all(|w| w[0] <= w[1])
            && offsets.last() == Some(&header.postings)
            && doc_ids.iter().all(|&d| (d as u64) < header.docs);
        if !consistent {
            return Err(bad("postings out of range"));
        }
        let config = Bm25Config {
            k1: header.k1,
            b: header.b,
            analyzer: header.analyzer,
            cache_dir: None,
        };
        config.validate()?;
        Ok(Self::assemble(
            &config,
            header.corpus_hash,
            vocab,
            term_ids,
            doc_lengths,
            offsets,
            doc_ids,
            term_freqs,
        ))
    }

    fn matches(&self, corpus: &Corpus, config: &Bm25Config) -> bool {
        self.corpus_hash == corpus.hash()
            && self.k1 == config.k1
            && self.b == config.b
            && self.analyzer == config.analyzer
    }
}

/// Little-endian reads over a byte slice that has been size-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len())?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Some(out)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    }

    /// Only called after the header's sizes were checked against the file.
    fn u32s(&mut self, n: usize) -> Vec<u32> {
        let raw = self.take(4 * n).expect("size checked against the file");
        raw.chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    fn u64s(&mut self, n: usize) -> Vec<u64> {
        let raw = self.take(8 * n).expect("size checked against the file");
        raw.chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }
}

/// BM25 as a [`Retriever`]: the index is loaded from `cache_dir` when one for this corpus and these
/// settings is there, else built (and saved there).
pub struct Bm25Retriever {
    corpus: Corpus,
    index: Bm25Index,
    cache: CacheStatus,
}

impl Bm25Retriever {
    pub fn load(config: &Bm25Config, corpus: Corpus) -> Result<Self> {
        config.validate()?;
        let file = config
            .cache_dir
            .as_ref()
            .map(|dir| dir.join(Bm25Index::cache_name(&corpus, config)));
        if let Some(file) = file.as_ref().filter(|f| f.is_file()) {
            let index = Bm25Index::load(file)?;
            if !index.matches(&corpus, config) {
                return Err(RetrievalError::Invalid(format!(
                    "{}: built from another corpus or other settings than its name says; delete it to rebuild",
                    file.display()
                )));
            }
            return Ok(Self {
                corpus,
                index,
                cache: CacheStatus::Hit(file.clone()),
            });
        }
        let index = Bm25Index::build(&corpus, config)?;
        let cache = match file {
            Some(file) => {
                index.save(&file)?;
                CacheStatus::Miss(file)
            }
            None => CacheStatus::Off,
        };
        Ok(Self {
            corpus,
            index,
            cache,
        })
    }

    pub fn index(&self) -> &Bm25Index {
        &self.index
    }

    pub fn cache_status(&self) -> &CacheStatus {
        &self.cache
    }
}

impl Retriever for Bm25Retriever {
    fn describe(&self) -> String {
        format!(
            "bm25 (k1 {}, b {}; {} terms)",
            self.index.k1,
            self.index.b,
            self.index.vocabulary_size()
        )
    }

    fn corpus(&self) -> &Corpus {
        &self.corpus
    }

    fn search(&self, queries: &[&str], k: usize) -> Result<Vec<Vec<Hit>>> {
        Ok(self.index.search(queries, k))
    }
}
