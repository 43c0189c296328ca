//! The generator's judgement of a passage: the mean log-probability of the gold answer's tokens
//! given the SFT prompt with that one passage (Atlas's perplexity distillation, REPLUG's and
//! RA-DIT's LM score, length-normalised).
//!
//! Scores are cached in Parquet (`lm_scores`: question_id, doc_id, key, mean_logp,
//! answer_tokens). A row is reused only when its key matches: a SHA-256 of the generator's
//! fingerprint (model weights and adapter files) and the example's token ids (prompt template,
//! question, passage and answer), so a changed adapter, prompt or passage is scored again.

use crate::{JointError, Result};
use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use ragtune_data::table::{Columns, Record};
use ragtune_generator_train::loss::sequence_logps;
use ragtune_generator_train::prompt::PromptBuilder;
use ragtune_generator_train::ref_cache::weights_fingerprint;
use ragtune_generator_train::sft::{collate, SftExample, LOSS_CHUNK};
use ragtune_models::llama_load::CausalLm;
use ragtune_models::peft::{self, Peft};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use tch::{Device, Tensor};

/// One cached score.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedScore {
    pub question_id: String,
    pub doc_id: String,
    pub key: String,
    pub mean_logp: f64,
    pub answer_tokens: i64,
}

impl Record for CachedScore {
    const TABLE: &'static str = "lm_scores";
    const VERSION: u32 = 1;
    fn schema() -> SchemaRef {
        static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
        SCHEMA
            .get_or_init(|| {
                Arc::new(Schema::new(vec![
                    Field::new("question_id", DataType::Utf8, false),
                    Field::new("doc_id", DataType::Utf8, false),
                    Field::new("key", DataType::Utf8, false),
                    Field::new("mean_logp", DataType::Float64, false),
                    Field::new("answer_tokens", DataType::Int64, false),
                ]))
            })
            .clone()
    }
    fn to_batch(rows: &[Self]) -> ragtune_data::Result<RecordBatch> {
        let strings = |f: &dyn Fn(&Self) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
        };
        RecordBatch::try_new(
            Self::schema(),
            vec![
                strings(&|r| &r.question_id),
                strings(&|r| &r.doc_id),
                strings(&|r| &r.key),
                Arc::new(Float64Array::from_iter_values(
                    rows.iter().map(|r| r.mean_logp),
                )),
                Arc::new(Int64Array::from_iter_values(
                    rows.iter().map(|r| r.answer_tokens),
                )),
            ],
        )
        .map_err(|e| ragtune_data::DataError::Invalid(format!("building a record batch: {e}")))
    }
    fn from_batch(cols: &Columns<'_>) -> ragtune_data::Result<Vec<Self>> {
        let (question, doc, key) = (
            cols.strings("question_id")?,
            cols.strings("doc_id")?,
            cols.strings("key")?,
        );
        let mean = cols
            .array("mean_logp", &DataType::Float64, true)?
            .expect("required")
            .as_primitive::<Float64Type>()
            .clone();
        let tokens = cols
            .array("answer_tokens", &DataType::Int64, true)?
            .expect("required")
            .as_primitive::<Int64Type>()
            .clone();
        (0..cols.batch.num_rows())
            .map(|i| {
                if mean.is_null(i) {
                    return Err(cols.null_error(i, "mean_logp"));
                }
                if tokens.is_null(i) {
                    return Err(cols.null_error(i, "answer_tokens"));
                }
                Ok(CachedScore {
                    question_id: question.get(i)?,
                    doc_id: doc.get(i)?,
                    key: key.get(i)?,
                    mean_logp: mean.value(i),
                    answer_tokens: tokens.value(i),
                })
            })
            .collect()
    }
}

/// The cache file's rows by key; written back atomically, sorted, when new rows were added.
pub struct ScoreCache {
    path: PathBuf,
    rows: HashMap<String, CachedScore>,
    added: usize,
}

impl ScoreCache {
    /// Reads `path`; an absent file is an empty cache.
    pub fn open(path: &Path) -> Result<Self> {
        let rows = if path.is_file() {
            ragtune_data::read_table::<CachedScore>(path)?
                .into_iter()
                .map(|r| (r.key.clone(), r))
                .collect()
        } else {
            HashMap::new()
        };
        Ok(Self {
            path: path.to_path_buf(),
            rows,
            added: 0,
        })
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&CachedScore> {
        self.rows.get(key)
    }

    fn insert(&mut self, row: CachedScore) {
        self.added += 1;
        self.rows.insert(row.key.clone(), row);
    }

    /// Writes the file when rows were added since it was opened or last saved.
    pub fn save(&mut self) -> Result<()> {
        if self.added == 0 {
            return Ok(());
        }
        let mut rows: Vec<CachedScore> = self.rows.values().cloned().collect();
        rows.sort_by(|a, b| {
            (&a.question_id, &a.doc_id, &a.key).cmp(&(&b.question_id, &b.doc_id, &b.key))
        });
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| JointError::io(dir, e))?;
        }
        ragtune_data::write_table(&self.path, &rows)?;
        self.added = 0;
        Ok(())
    }
}

/// One (question, passage, answer) triple to score.
#[derive(Debug, Clone)]
pub struct Triple {
    pub question_id: String,
    pub doc_id: String,
    pub example: SftExample,
}

/// What a scoring pass did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScoringStats {
    pub triples: usize,
    pub reused: usize,
    pub computed: usize,
    /// Tokens (prompt and answer) of the computed triples.
    pub tokens: usize,
    pub seconds: f64,
}

/// The generator's fingerprint for cache keys: its weights and, when one is attached, the adapter
/// folder it was loaded from or saved to.
pub fn generator_fingerprint(model: &Path, adapter: Option<&Path>) -> Result<String> {
    let model = weights_fingerprint(model)?;
    let adapter = match adapter {
        Some(dir) => weights_fingerprint(dir)?,
        None => "none".into(),
    };
    Ok(format!("model:{model};adapter:{adapter};float32"))
}

/// The key of one example under a generator fingerprint.
pub fn score_key(generator: &str, example: &SftExample) -> String {
    let mut h = Sha256::new();
    h.update(generator.as_bytes());
    h.update((example.prompt_len as u64).to_le_bytes());
    h.update((example.input_ids.len() as u64).to_le_bytes());
    for t in &example.input_ids {
        h.update(t.to_le_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The SFT example of one question with one passage and the gold answer.
pub fn single_passage_example(
    builder: &PromptBuilder,
    id: &str,
    question: &str,
    passage: String,
    answer: &str,
) -> Result<SftExample> {
    let enc = builder.encode(question, &[passage], Some(answer))?;
    let prompt_len = enc.prompt.len();
    let mut input_ids = enc.prompt;
    input_ids.extend(enc.answer);
    Ok(SftExample {
        id: id.to_string(),
        input_ids,
        prompt_len,
    })
}

/// Summed answer log-probabilities `[n]` and answer lengths `[n]` of `examples` under the
/// generator as it stands (adapter attached), with gradients when the caller's mode has them.
pub fn answer_logps(
    lm: &CausalLm,
    adapter: Option<&Peft>,
    examples: &[&SftExample],
    device: Device,
) -> Result<(Tensor, Tensor)> {
    let (ids, attention, completion) = collate(examples, lm.tokenizer.pad_token_id(), device);
    let hidden = peft::forward_hidden(&lm.model, adapter, &ids, Some(&attention))?;
    Ok(sequence_logps(
        &lm.model,
        &hidden,
        &ids,
        &completion,
        LOSS_CHUNK,
    ))
}

/// Mean answer log-probability of every triple, from the cache where the key matches, computed
/// (in batches of similar length, without gradients) and added to the cache otherwise.
#[allow(clippy::too_many_arguments)]
pub fn score_triples(
    lm: &CausalLm,
    adapter: Option<&Peft>,
    fingerprint: &str,
    triples: &[Triple],
    cache: &mut ScoreCache,
    batch_size: usize,
    device: Device,
    mut on_batch: impl FnMut(usize),
) -> Result<(Vec<f64>, ScoringStats)> {
    let started = std::time::Instant::now();
    let keys: Vec<String> = triples
        .iter()
        .map(|t| score_key(fingerprint, &t.example))
        .collect();
    let mut scores: Vec<Option<f64>> = keys
        .iter()
        .map(|k| cache.get(k).map(|r| r.mean_logp))
        .collect();
    let mut todo: Vec<usize> = (0..triples.len())
        .filter(|&i| scores[i].is_none())
        .collect();
    let mut stats = ScoringStats {
        triples: triples.len(),
        reused: triples.len() - todo.len(),
        ..Default::default()
    };
    on_batch(stats.reused);
    // Longest first, so each batch pads to a similar length.
    todo.sort_by_key(|&i| std::cmp::Reverse(triples[i].example.input_ids.len()));
    tch::no_grad(|| -> Result<()> {
        for chunk in todo.chunks(batch_size.max(1)) {
            let examples: Vec<&SftExample> = chunk.iter().map(|&i| &triples[i].example).collect();
            let (sums, counts) = answer_logps(lm, adapter, &examples, device)?;
            let sums: Vec<f64> = Vec::try_from(sums.to_kind(tch::Kind::Double))?;
            let counts: Vec<f64> = Vec::try_from(counts.to_kind(tch::Kind::Double))?;
            for (j, &i) in chunk.iter().enumerate() {
                if counts[j] < 1.0 {
                    return Err(JointError::Invalid(format!(
                        "question `{}` with passage `{}`: the answer has no tokens left after \
                         truncation (raise prompt.max_length)",
                        triples[i].question_id, triples[i].doc_id
                    )));
                }
                let mean = sums[j] / counts[j];
                scores[i] = Some(mean);
                stats.tokens += triples[i].example.input_ids.len();
                cache.insert(CachedScore {
                    question_id: triples[i].question_id.clone(),
                    doc_id: triples[i].doc_id.clone(),
                    key: keys[i].clone(),
                    mean_logp: mean,
                    answer_tokens: counts[j] as i64,
                });
            }
            stats.computed += chunk.len();
            on_batch(chunk.len());
        }
        Ok(())
    })?;
    stats.seconds = started.elapsed().as_secs_f64();
    Ok((
        scores
            .into_iter()
            .map(|s| s.expect("every triple scored"))
            .collect(),
        stats,
    ))
}
