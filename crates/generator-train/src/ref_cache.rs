//! Reference log-probs cached in Parquet (`reference_logps` table: pair_id, key, chosen, rejected).
//! A row is reused only when its key matches: a SHA-256 over the
//! reference model's fingerprint (weights file, reference adapter, dtype, autocast) and the pair's
//! own token ids and prompt length — so any change of model, adapter, prompt template, context,
//! max length or tokenizer makes the row stale and it is computed again.

use crate::{GeneratorError, Result};
use arrow::array::{Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use ragtune_data::table::{Columns, Record};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// One cached row: summed completion log-probs of chosen and rejected under the reference.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedLogps {
    pub pair_id: String,
    pub key: String,
    pub chosen: f64,
    pub rejected: f64,
}

impl Record for CachedLogps {
    const TABLE: &'static str = "reference_logps";
    const VERSION: u32 = 1;
    fn schema() -> SchemaRef {
        static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
        SCHEMA
            .get_or_init(|| {
                Arc::new(Schema::new(vec![
                    Field::new("pair_id", DataType::Utf8, false),
                    Field::new("key", DataType::Utf8, false),
                    Field::new("chosen", DataType::Float64, false),
                    Field::new("rejected", DataType::Float64, false),
                ]))
            })
            .clone()
    }
    fn to_batch(rows: &[Self]) -> ragtune_data::Result<RecordBatch> {
        let strings = |f: &dyn Fn(&Self) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
        };
        let floats = |f: &dyn Fn(&Self) -> f64| -> ArrayRef {
            Arc::new(Float64Array::from_iter_values(rows.iter().map(f)))
        };
        RecordBatch::try_new(
            Self::schema(),
            vec![
                strings(&|r| &r.pair_id),
                strings(&|r| &r.key),
                floats(&|r| r.chosen),
                floats(&|r| r.rejected),
            ],
        )
        .map_err(|e| ragtune_data::DataError::Invalid(format!("building a record batch: {e}")))
    }
    fn from_batch(cols: &Columns<'_>) -> ragtune_data::Result<Vec<Self>> {
        let (id, key) = (cols.strings("pair_id")?, cols.strings("key")?);
        let float = |name: &str| -> ragtune_data::Result<Float64Array> {
            let arr = cols
                .array(name, &DataType::Float64, true)?
                .expect("required");
            Ok(arr.as_primitive::<Float64Type>().clone())
        };
        let (chosen, rejected) = (float("chosen")?, float("rejected")?);
        (0..cols.batch.num_rows())
            .map(|i| {
                for (name, col) in [("chosen", &chosen), ("rejected", &rejected)] {
                    if col.is_null(i) {
                        return Err(cols.null_error(i, name));
                    }
                }
                Ok(CachedLogps {
                    pair_id: id.get(i)?,
                    key: key.get(i)?,
                    chosen: chosen.value(i),
                    rejected: rejected.value(i),
                })
            })
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a file's bytes (streamed).
pub fn file_sha256(path: &Path) -> Result<String> {
    let io = |e: std::io::Error| GeneratorError::Config {
        path: path.into(),
        message: format!("hashing for the reference cache: {e}"),
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// The weights behind a model path: the GGUF file itself, or a Hugging Face folder's
/// `model.safetensors`; for an adapter folder, its config and weights.
pub fn weights_fingerprint(path: &Path) -> Result<String> {
    if path.is_file() {
        return file_sha256(path);
    }
    let mut parts = vec![];
    for name in [
        "model.safetensors",
        "config.json",
        ragtune_models::peft::ADAPTER_CONFIG_FILE,
        ragtune_models::peft::ADAPTER_WEIGHTS_FILE,
    ] {
        let p = path.join(name);
        if p.is_file() {
            parts.push(format!("{name}:{}", file_sha256(&p)?));
        }
    }
    if parts.is_empty() {
        return Err(GeneratorError::Config {
            path: path.into(),
            message: "no GGUF file, model.safetensors or adapter files to fingerprint".into(),
        });
    }
    Ok(parts.join(","))
}

/// The key of one pair under a reference fingerprint.
pub fn pair_key(
    reference: &str,
    chosen: &[i64],
    chosen_prompt_len: usize,
    rejected: &[i64],
    rejected_prompt_len: usize,
) -> String {
    let mut h = Sha256::new();
    h.update(reference.as_bytes());
    for (ids, prompt_len) in [(chosen, chosen_prompt_len), (rejected, rejected_prompt_len)] {
        h.update((prompt_len as u64).to_le_bytes());
        h.update((ids.len() as u64).to_le_bytes());
        for t in ids {
            h.update(t.to_le_bytes());
        }
    }
    hex(&h.finalize())
}

/// The rows of a cache file by (pair id, key); an absent file is an empty cache.
pub fn read(path: &Path) -> Result<HashMap<(String, String), (f64, f64)>> {
    if !path.exists() {
        return Ok(HashMap::new());
    }
    Ok(ragtune_data::read_table::<CachedLogps>(path)?
        .into_iter()
        .map(|r| ((r.pair_id, r.key), (r.chosen, r.rejected)))
        .collect())
}

/// Writes every row (atomically), sorted by pair id and key so the file is reproducible.
pub fn write(path: &Path, rows: &HashMap<(String, String), (f64, f64)>) -> Result<()> {
    let mut rows: Vec<CachedLogps> = rows
        .iter()
        .map(|((id, key), (c, r))| CachedLogps {
            pair_id: id.clone(),
            key: key.clone(),
            chosen: *c,
            rejected: *r,
        })
        .collect();
    rows.sort_by(|a, b| (&a.pair_id, &a.key).cmp(&(&b.pair_id, &b.key)));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| GeneratorError::Config {
            path: dir.into(),
            message: e.to_string(),
        })?;
    }
    ragtune_data::write_table(path, &rows)?;
    Ok(())
}
