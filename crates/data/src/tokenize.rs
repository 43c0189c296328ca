//! Token caches: the token ids of a table's text column, written beside the dataset so training never
//! tokenizes the same text twice.
//!
//! A cache file is `<dataset>/cache/<table>.<column>.tok-<h>-len<L>.parquet` where `h` is the first 16
//! hex digits of the SHA-256 of the tokenizer.json bytes and `L` the max length. Columns: `id` utf8
//! (doc_id or query_id), `input_ids` list<int32> (special tokens included, truncated to `L`, never
//! padded), `length` int32. Its metadata records the tokenizer hash, max length and the SHA-256 of the
//! source table file, so a stale cache is rebuilt and a fresh one reused.

use crate::dataset::CACHE_DIR;
use crate::table::{BatchFileWriter, BatchReader};
use crate::text::percentiles;
use crate::{DataError, Location, Result};
use arrow::array::{Array, AsArray, Int32Array, ListArray, RecordBatch, StringArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokenizers::{Tokenizer, TruncationParams};

pub const TOKEN_CACHE_SCHEMA: &str = "token_cache";
pub const TOKEN_CACHE_VERSION: u32 = 1;

/// A tokenizer.json loaded with explicit truncation at `max_length` and padding off (the MiniLM
/// tokenizer.json has both baked in at 128; the cache must not inherit either).
pub struct CacheTokenizer {
    tokenizer: Tokenizer,
    path: PathBuf,
    /// First 16 hex digits of the SHA-256 of the tokenizer.json bytes.
    pub hash: String,
    pub max_length: usize,
    /// The pre-tokenizer splits on whitespace (BERT, Whitespace), so a long text may be cut after
    /// `max_length` words: once the cut text fills the budget, the tokens equal the full text's.
    whitespace_words: bool,
}

fn splits_on_whitespace(pre: &serde_json::Value) -> bool {
    match pre.get("type").and_then(|t| t.as_str()) {
        Some("BertPreTokenizer" | "Whitespace" | "WhitespaceSplit") => true,
        Some("Sequence") => pre
            .get("pretokenizers")
            .and_then(|p| p.as_array())
            .is_some_and(|ps| ps.iter().any(splits_on_whitespace)),
        _ => false,
    }
}

impl CacheTokenizer {
    pub fn load(path: &Path, max_length: usize) -> Result<Self> {
        let bad = |m: String| DataError::Tokenizer {
            path: path.to_path_buf(),
            message: m,
        };
        if max_length < 2 {
            return Err(bad(format!(
                "max length {max_length} leaves no room for special tokens"
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let digest = Sha256::digest(&bytes);
        let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let json: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let whitespace_words = json.get("pre_tokenizer").is_some_and(splits_on_whitespace)
            && json.pointer("/normalizer/type").and_then(|t| t.as_str()) == Some("BertNormalizer");
        let mut tokenizer = Tokenizer::from_bytes(&bytes).map_err(|e| bad(e.to_string()))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                ..Default::default()
            }))
            .map_err(|e| bad(e.to_string()))?;
        tokenizer.with_padding(None);
        Ok(CacheTokenizer {
            tokenizer,
            path: path.to_path_buf(),
            hash,
            max_length,
            whitespace_words,
        })
    }

    /// `tok-<hash>-len<max_length>`: the part of a cache file name that identifies the tokenization.
    pub fn cache_key(&self) -> String {
        format!("tok-{}-len{}", self.hash, self.max_length)
    }

    fn encode_full(&self, text: &str) -> Result<Vec<i32>> {
        let enc = self
            .tokenizer
            .encode_fast(text, true)
            .map_err(|e| DataError::Tokenizer {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        Ok(enc.get_ids().iter().map(|&i| i as i32).collect())
    }

    /// Token ids with special tokens, truncated to `max_length`, unpadded.
    pub fn encode(&self, text: &str) -> Result<Vec<i32>> {
        if self.whitespace_words {
            // Every word yields at least one token unless it is all control characters, so the first
            // max_length words nearly always fill the budget; when they do not, fall back to the full text.
            if let Some((cut, _)) = text.split_whitespace().nth(self.max_length).map(|w| {
                let offset = w.as_ptr() as usize - text.as_ptr() as usize;
                (offset, w)
            }) {
                let ids = self.encode_full(&text[..cut])?;
                if ids.len() >= self.max_length {
                    return Ok(ids);
                }
            }
        }
        self.encode_full(text)
    }
}

/// Which table and text column to tokenize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheSource {
    /// `corpus.parquet`: `doc_id`, `text`.
    Corpus,
    /// `queries.parquet`: `query_id`, `text`.
    Queries,
}

impl CacheSource {
    pub fn table(self) -> &'static str {
        match self {
            CacheSource::Corpus => "corpus",
            CacheSource::Queries => "queries",
        }
    }
    fn id_column(self) -> &'static str {
        match self {
            CacheSource::Corpus => "doc_id",
            CacheSource::Queries => "query_id",
        }
    }
}

/// The cache file for `source` of dataset folder `dir` under `tokenizer`.
pub fn cache_path(dir: &Path, source: CacheSource, tokenizer: &CacheTokenizer) -> PathBuf {
    dir.join(CACHE_DIR).join(format!(
        "{}.text.{}.parquet",
        source.table(),
        tokenizer.cache_key()
    ))
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenCacheReport {
    pub path: PathBuf,
    pub rows: usize,
    /// The cache was already there and matched the source; nothing was tokenized.
    pub reused: bool,
    pub truncated: usize,
    /// Token length percentiles p50, p90, p99, max.
    pub length_percentiles: Vec<usize>,
}

fn cache_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new(
            "input_ids",
            DataType::List(Arc::new(Field::new("item", DataType::Int32, false))),
            false,
        ),
        Field::new("length", DataType::Int32, false),
    ]))
}

fn file_sha256(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| DataError::io(path, e))?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn lengths_of(path: &Path) -> Result<Vec<usize>> {
    let mut lengths = Vec::new();
    for batch in BatchReader::open(path)? {
        let (_, batch) = batch?;
        let col = batch
            .column_by_name("length")
            .ok_or_else(|| DataError::MissingColumn {
                path: path.into(),
                column: "length".into(),
                present: String::new(),
            })?;
        lengths.extend(
            col.as_primitive::<arrow::datatypes::Int32Type>()
                .values()
                .iter()
                .map(|&l| l as usize),
        );
    }
    Ok(lengths)
}

/// Tokenizes `source` of dataset `dir` into its cache, streaming batch by batch, unless a cache for
/// the same tokenizer, max length and source file content already exists.
pub fn build_token_cache(
    dir: &Path,
    source: CacheSource,
    tokenizer: &CacheTokenizer,
) -> Result<TokenCacheReport> {
    let source_path = dir.join(format!("{}.parquet", source.table()));
    let target = cache_path(dir, source, tokenizer);
    let source_hash = file_sha256(&source_path)?;
    if target.exists() {
        if let Ok(info) = crate::table::table_info(&target) {
            let recorded = info
                .metadata
                .iter()
                .find(|(k, _)| k == "ragtune.source_sha256")
                .map(|(_, v)| v.as_str());
            if recorded == Some(source_hash.as_str()) {
                let mut lengths = lengths_of(&target)?;
                let truncated = lengths
                    .iter()
                    .filter(|&&l| l >= tokenizer.max_length)
                    .count();
                return Ok(TokenCacheReport {
                    path: target,
                    rows: info.rows,
                    reused: true,
                    truncated,
                    length_percentiles: percentiles(&mut lengths, &[50.0, 90.0, 99.0, 100.0]),
                });
            }
        }
    }
    let metadata = vec![
        (
            "ragtune.tokenizer_sha256_16".to_owned(),
            tokenizer.hash.clone(),
        ),
        (
            "ragtune.max_length".to_owned(),
            tokenizer.max_length.to_string(),
        ),
        ("ragtune.source_table".to_owned(), source.table().to_owned()),
        ("ragtune.source_column".to_owned(), "text".to_owned()),
        ("ragtune.source_sha256".to_owned(), source_hash),
        ("ragtune.padding".to_owned(), "none".to_owned()),
    ];
    let mut writer = BatchFileWriter::create(
        &target,
        cache_schema(),
        TOKEN_CACHE_SCHEMA,
        TOKEN_CACHE_VERSION,
        &metadata,
    )?;
    let mut lengths = Vec::new();
    let mut reader = BatchReader::open(&source_path)?;
    for batch in &mut reader {
        let (first_row, batch) = batch?;
        let column = |name: &str| -> Result<StringArray> {
            let col = batch
                .column_by_name(name)
                .ok_or_else(|| DataError::MissingColumn {
                    path: source_path.clone(),
                    column: name.into(),
                    present: String::new(),
                })?;
            let cast =
                arrow::compute::cast(col, &DataType::Utf8).map_err(|_| DataError::WrongType {
                    path: source_path.clone(),
                    column: name.into(),
                    expected: "utf8".into(),
                    actual: col.data_type().to_string(),
                })?;
            Ok(cast.as_string::<i32>().clone())
        };
        let (ids, texts) = (column(source.id_column())?, column("text")?);
        if let Some(row) = (0..texts.len()).find(|&i| texts.is_null(i) || ids.is_null(i)) {
            return Err(DataError::bad(
                &source_path,
                Location::Row(first_row + row),
                Some("text"),
                "value is null",
            ));
        }
        let encoded: Vec<Vec<i32>> = (0..texts.len())
            .into_par_iter()
            .map(|i| tokenizer.encode(texts.value(i)))
            .collect::<Result<_>>()?;
        lengths.extend(encoded.iter().map(Vec::len));
        let length = Int32Array::from_iter_values(encoded.iter().map(|e| e.len() as i32));
        let offsets = OffsetBuffer::from_lengths(encoded.iter().map(Vec::len));
        let values = Int32Array::from_iter_values(encoded.into_iter().flatten());
        let list = ListArray::new(
            Arc::new(Field::new("item", DataType::Int32, false)),
            offsets,
            Arc::new(values),
            None,
        );
        let out = RecordBatch::try_new(
            cache_schema(),
            vec![Arc::new(ids), Arc::new(list), Arc::new(length)],
        )
        .map_err(|e| DataError::Invalid(format!("building a token batch: {e}")))?;
        writer.write(&out)?;
    }
    let rows = writer.finish()?;
    let truncated = lengths
        .iter()
        .filter(|&&l| l >= tokenizer.max_length)
        .count();
    Ok(TokenCacheReport {
        path: target,
        rows,
        reused: false,
        truncated,
        length_percentiles: percentiles(&mut lengths, &[50.0, 90.0, 99.0, 100.0]),
    })
}

/// A token cache in memory: `ids[i]` has tokens `input_ids[i]`.
#[derive(Debug, Clone, Default)]
pub struct TokenCache {
    pub ids: Vec<String>,
    pub input_ids: Vec<Vec<i32>>,
}

impl TokenCache {
    pub fn read(path: &Path) -> Result<Self> {
        let mut cache = TokenCache::default();
        let reader = BatchReader::open(path)?;
        if reader.info.schema_name.as_deref() != Some(TOKEN_CACHE_SCHEMA) {
            return Err(DataError::bad(
                path,
                Location::File,
                Some(crate::table::SCHEMA_NAME_KEY),
                "not a token cache",
            ));
        }
        for batch in reader {
            let (first_row, batch) = batch?;
            let cols = crate::table::Columns {
                batch: &batch,
                path,
                first_row,
            };
            let ids = cols.strings("id")?;
            let lists = cols
                .array(
                    "input_ids",
                    &DataType::List(Arc::new(Field::new("item", DataType::Int32, false))),
                    true,
                )?
                .expect("required");
            let lists = lists.as_list::<i32>();
            for i in 0..batch.num_rows() {
                cache.ids.push(ids.get(i)?);
                let values = lists.value(i);
                cache.input_ids.push(
                    values
                        .as_primitive::<arrow::datatypes::Int32Type>()
                        .values()
                        .to_vec(),
                );
            }
        }
        Ok(cache)
    }

    /// id -> row index, for looking up a passage's tokens.
    pub fn index(&self) -> std::collections::HashMap<&str, usize> {
        self.ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect()
    }
}
