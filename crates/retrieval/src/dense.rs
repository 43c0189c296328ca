//! Dense retrieval with a sentence-transformers folder: a base model, or a retriever run's export
//! (one folder, or `query/` and `passage/` subfolders for separate towers). The corpus is encoded
//! once per (model, corpus) and cached on disk, so a stage never re-encodes an unchanged corpus.

use crate::corpus::{hex, passage_text, Corpus};
use crate::index::{DenseIndex, Hit, HnswConfig, SearchKind};
use crate::{Result, RetrievalError, Retriever, Similarity};
use ragtune_models::encoder::SentenceEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Bump when the cached file's meaning changes, so old caches are never read.
const CACHE_VERSION: &str = "ragtune-dense-corpus-v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DenseConfig {
    /// A sentence-transformers folder (or one with `query/` and `passage/` tower subfolders).
    pub model: PathBuf,
    pub search: SearchKind,
    pub hnsw: HnswConfig,
    /// Cosine unless set: what the retriever recipe trains sentence-transformers models with.
    pub similarity: Similarity,
    /// Tokens per text; the folder's own `max_seq_length` when unset.
    pub max_length: Option<usize>,
    pub batch_size: usize,
    /// Where corpus embeddings are cached; none turns the cache off.
    pub cache_dir: Option<PathBuf>,
}

impl Default for DenseConfig {
    fn default() -> Self {
        Self {
            model: PathBuf::from("assets/all-MiniLM-L6-v2"),
            search: SearchKind::Exact,
            hnsw: HnswConfig::default(),
            similarity: Similarity::Cosine,
            max_length: None,
            batch_size: 64,
            cache_dir: None,
        }
    }
}

/// Whether the corpus embeddings came from the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheStatus {
    Off,
    Hit(PathBuf),
    /// Encoded now and written here.
    Miss(PathBuf),
}

pub struct DenseRetriever {
    query: SentenceEncoder,
    /// Separate passage tower, for exports of two-tower models.
    passage: Option<SentenceEncoder>,
    /// The folder the passage tower was loaded from (the model folder itself when shared).
    passage_dir: PathBuf,
    corpus: Corpus,
    index: DenseIndex,
    config: DenseConfig,
    cache: CacheStatus,
}

/// The tower folders of `model`: itself, or its `query/` and `passage/` subfolders.
fn tower_dirs(model: &Path) -> Result<(PathBuf, Option<PathBuf>)> {
    let (q, p) = (model.join("query"), model.join("passage"));
    if model.join("config.json").is_file() {
        Ok((model.to_path_buf(), None))
    } else if q.join("config.json").is_file() && p.join("config.json").is_file() {
        Ok((q, Some(p)))
    } else {
        Err(RetrievalError::Invalid(format!(
            "{}: not a sentence-transformers folder (no config.json), nor one with query/ and \
             passage/ towers; point retrieval.model at a base model or a retriever run's model/",
            model.display()
        )))
    }
}

fn load_tower(dir: &Path, config: &DenseConfig, device: Device) -> Result<SentenceEncoder> {
    let mut tower = SentenceEncoder::load(dir, device, Kind::Float)?;
    if let Some(max_length) = config.max_length {
        tower.set_max_length(max_length)?;
    }
    tower.set_batch_size(config.batch_size.max(1))?;
    Ok(tower)
}

/// sha256 of every file under `dir` (relative path and content), in sorted order.
pub fn folder_fingerprint(dir: &Path) -> Result<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for entry in std::fs::read_dir(dir).map_err(|e| RetrievalError::io(dir, e))? {
            let path = entry.map_err(|e| RetrievalError::io(dir, e))?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    if dir.is_file() {
        files.push(dir.to_path_buf());
    } else {
        walk(dir, &mut files)?;
    }
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        let relative = file.strip_prefix(dir).unwrap_or(&file);
        hasher.update(relative.to_string_lossy().as_bytes());
        hasher.update([0]);
        let mut reader = std::fs::File::open(&file).map_err(|e| RetrievalError::io(&file, e))?;
        std::io::copy(&mut reader, &mut hasher).map_err(|e| RetrievalError::io(&file, e))?;
    }
    Ok(hex(&hasher.finalize()))
}

impl DenseRetriever {
    /// Loads the towers, then takes the corpus embeddings from the cache or encodes them.
    pub fn load(config: &DenseConfig, corpus: Corpus, device: Device) -> Result<Self> {
        let (query_dir, passage_dir) = tower_dirs(&config.model)?;
        let query = load_tower(&query_dir, config, device)?;
        let passage = match &passage_dir {
            Some(dir) => Some(load_tower(dir, config, device)?),
            None => None,
        };
        let passage_tower = passage.as_ref().unwrap_or(&query);
        let cache_file = match &config.cache_dir {
            Some(dir) => {
                let tower = passage_dir.as_deref().unwrap_or(&query_dir);
                let mut key = Sha256::new();
                for part in [
                    CACHE_VERSION,
                    &folder_fingerprint(tower)?,
                    corpus.hash(),
                    &passage_tower.max_length().to_string(),
                ] {
                    key.update(part.as_bytes());
                    key.update([0]);
                }
                let key = hex(&key.finalize());
                Some(dir.join(format!("corpus-{}.safetensors", &key[..24])))
            }
            None => None,
        };
        let (embeddings, cache) = match &cache_file {
            Some(file) if file.is_file() => {
                let mut tensors = ragtune_models::checkpoint::load_safetensors(file, Device::Cpu)?;
                let embeddings = tensors.remove("embeddings").ok_or_else(|| {
                    RetrievalError::Invalid(format!(
                        "{}: no `embeddings` tensor; delete the file to rebuild the cache",
                        file.display()
                    ))
                })?;
                if embeddings.size().first() != Some(&(corpus.len() as i64)) {
                    return Err(RetrievalError::Invalid(format!(
                        "{}: {:?} embeddings for {} passages; delete the file to rebuild the cache",
                        file.display(),
                        embeddings.size(),
                        corpus.len()
                    )));
                }
                (embeddings, CacheStatus::Hit(file.clone()))
            }
            _ => {
                let texts: Vec<String> = corpus.docs().iter().map(passage_text).collect();
                let embeddings = passage_tower.encode(&texts)?.to_device(Device::Cpu);
                let status = match &cache_file {
                    Some(file) => {
                        let dir = file.parent().unwrap_or(Path::new("."));
                        std::fs::create_dir_all(dir).map_err(|e| RetrievalError::io(dir, e))?;
                        ragtune_models::checkpoint::save_safetensors(
                            file,
                            &[("embeddings".to_string(), embeddings.shallow_clone())],
                        )?;
                        CacheStatus::Miss(file.clone())
                    }
                    None => CacheStatus::Off,
                };
                (embeddings, status)
            }
        };
        let index = build_index(&embeddings, config)?;
        Ok(Self {
            query,
            passage,
            passage_dir: passage_dir.unwrap_or(query_dir),
            corpus,
            index,
            config: config.clone(),
            cache,
        })
    }

    /// Encodes the corpus again with the passage tower as it is now and rebuilds the index: for
    /// training that changes the passage tower (the cache, keyed by the folder on disk, is left
    /// alone).
    pub fn refresh(&mut self) -> Result<()> {
        let texts: Vec<String> = self.corpus.docs().iter().map(passage_text).collect();
        let embeddings = tch::no_grad(|| self.passage_tower().encode(&texts))?;
        self.index = build_index(&embeddings.to_device(Device::Cpu), &self.config)?;
        self.cache = CacheStatus::Off;
        Ok(())
    }

    pub fn config(&self) -> &DenseConfig {
        &self.config
    }

    /// The folder of the passage tower: the model folder itself, or its `passage/` subfolder.
    pub fn passage_dir(&self) -> &Path {
        &self.passage_dir
    }

    /// Whether queries and passages go through one tower.
    pub fn shared_towers(&self) -> bool {
        self.passage.is_none()
    }

    /// The query tower; its variables are trainable, and [`Retriever::search`] encodes with them
    /// as they are, so a recipe may tune the tower in place (rag-joint does).
    pub fn query_tower(&self) -> &SentenceEncoder {
        &self.query
    }

    pub fn cache_status(&self) -> &CacheStatus {
        &self.cache
    }

    pub fn index(&self) -> &DenseIndex {
        &self.index
    }

    /// Query embeddings, `[queries, dim]`.
    pub fn encode_queries(&self, queries: &[&str]) -> Result<Tensor> {
        Ok(self.query.encode(queries)?)
    }

    /// The passage tower (the query tower when they are shared).
    pub fn passage_tower(&self) -> &SentenceEncoder {
        self.passage.as_ref().unwrap_or(&self.query)
    }
}

fn build_index(embeddings: &Tensor, config: &DenseConfig) -> Result<DenseIndex> {
    match config.search {
        SearchKind::Exact => DenseIndex::exact(embeddings, config.similarity),
        SearchKind::Hnsw => DenseIndex::hnsw(embeddings, config.similarity, config.hnsw),
    }
}

impl Retriever for DenseRetriever {
    fn describe(&self) -> String {
        let search = match self.config.search {
            SearchKind::Exact => "exact",
            SearchKind::Hnsw => "hnsw",
        };
        format!("dense {} ({search})", self.config.model.display())
    }

    fn corpus(&self) -> &Corpus {
        &self.corpus
    }

    fn search(&self, queries: &[&str], k: usize) -> Result<Vec<Vec<Hit>>> {
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        let embeddings = self.encode_queries(queries)?;
        self.index.search(&embeddings, k, self.config.search)
    }
}
