//! `ragtune embed`: sentence embeddings of a JSONL or Parquet file, written as Parquet
//! (`id` when the input has one, `embedding` as a fixed-size list of float32).

use anyhow::{bail, Context, Result};
use arrow::array::{Array, ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use indicatif::{ProgressBar, ProgressStyle};
use ragtune_data::table::{BatchFileWriter, BatchReader};
use ragtune_models::encoder::SentenceEncoder;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tch::{Device, Kind};

/// Texts encoded and written per step: bounds memory on large inputs while leaving the encoder
/// enough texts to bucket by length.
const CHUNK_TEXTS: usize = 8192;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Dtype {
    F32,
    Bf16,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model folder: a sentence-transformers folder (e.g. assets/all-MiniLM-L6-v2) or a BERT folder.
    #[arg(long)]
    model: PathBuf,
    /// Input: .jsonl (one JSON object per line) or .parquet.
    #[arg(long)]
    input: PathBuf,
    /// Field (JSONL) or column (Parquet) holding the text.
    #[arg(long, default_value = "text")]
    text_field: String,
    /// Field or column holding the row id, copied to the output when the input has it.
    #[arg(long, default_value = "id")]
    id_field: String,
    /// Output Parquet file (written atomically).
    #[arg(long)]
    output: PathBuf,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Truncation length in tokens (default: the model's, 256 for all-MiniLM-L6-v2).
    #[arg(long)]
    max_length: Option<usize>,
    /// Weight and activation precision; bf16 is faster on CPUs with AVX-512 BF16, at a small cost in accuracy.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: Dtype,
}

/// Rows read from the input: texts, and ids when the input has an id field.
struct Rows {
    ids: Option<Vec<String>>,
    texts: Vec<String>,
}

pub fn run(args: Args, device: Device) -> Result<()> {
    let kind = match args.dtype {
        Dtype::F32 => Kind::Float,
        Dtype::Bf16 => Kind::BFloat16,
    };
    let rows = read_rows(&args.input, &args.text_field, &args.id_field)?;
    let mut encoder = SentenceEncoder::load(&args.model, device, kind)
        .with_context(|| format!("loading the encoder from {}", args.model.display()))?;
    encoder.set_batch_size(args.batch_size)?;
    if let Some(max_length) = args.max_length {
        encoder.set_max_length(max_length)?;
    }
    let dim = encoder.dim() as i32;
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let mut fields = Vec::new();
    if rows.ids.is_some() {
        fields.push(Field::new("id", DataType::Utf8, false));
    }
    fields.push(Field::new(
        "embedding",
        DataType::FixedSizeList(item.clone(), dim),
        false,
    ));
    let schema = Arc::new(Schema::new(fields));
    let metadata = [
        (
            "ragtune.model".to_string(),
            args.model.display().to_string(),
        ),
        (
            "ragtune.dtype".to_string(),
            format!("{:?}", args.dtype).to_lowercase(),
        ),
        (
            "ragtune.max_length".to_string(),
            encoder.max_length().to_string(),
        ),
    ];
    let mut writer =
        BatchFileWriter::create(&args.output, schema.clone(), "embeddings", 1, &metadata)?;

    let progress = ProgressBar::new(rows.texts.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} texts  {per_sec}  eta {eta}")
            .expect("valid template"),
    );
    let start = Instant::now();
    for (chunk_index, texts) in rows.texts.chunks(CHUNK_TEXTS).enumerate() {
        let offset = chunk_index * CHUNK_TEXTS;
        let mut report = |done: usize, _total: usize| progress.set_position((offset + done) as u64);
        let embeddings = encoder.encode_with_progress(texts, Some(&mut report))?;
        let flat: Vec<f32> = Vec::try_from(
            embeddings
                .to_device(Device::Cpu)
                .to_kind(Kind::Float)
                .contiguous()
                .view(-1),
        )?;
        let values = Arc::new(Float32Array::from(flat));
        let list = FixedSizeListArray::try_new(item.clone(), dim, values, None)?;
        let mut columns: Vec<ArrayRef> = Vec::new();
        if let Some(ids) = &rows.ids {
            let chunk_ids = &ids[offset..offset + texts.len()];
            columns.push(Arc::new(StringArray::from_iter_values(chunk_ids)));
        }
        columns.push(Arc::new(list));
        writer.write(&RecordBatch::try_new(schema.clone(), columns)?)?;
    }
    let seconds = start.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let written = writer.finish()?;

    let per_second = written as f64 / seconds.max(1e-9);
    println!("{:<16}{}", "rows", written);
    println!("{:<16}{}", "dimension", dim);
    println!(
        "{:<16}{}",
        "dtype",
        format!("{:?}", args.dtype).to_lowercase()
    );
    println!("{:<16}{}", "max length", encoder.max_length());
    println!("{:<16}{:.3}", "encode seconds", seconds);
    println!("{:<16}{:.1}", "texts/s", per_second);
    println!("{:<16}{}", "output", args.output.display());
    Ok(())
}

fn read_rows(path: &Path, text_field: &str, id_field: &str) -> Result<Rows> {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "jsonl" | "ndjson" => read_jsonl(path, text_field, id_field),
        "parquet" => read_parquet(path, text_field, id_field),
        other => bail!(
            "{}: unsupported input extension `{other}`; give a .jsonl or .parquet file",
            path.display()
        ),
    }
}

fn read_jsonl(path: &Path, text_field: &str, id_field: &str) -> Result<Rows> {
    let content =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut texts = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    let mut has_ids = None;
    for (index, line) in content.lines().enumerate() {
        let line_no = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let where_ = || format!("{}:{line_no}", path.display());
        let value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}: not valid JSON", where_()))?;
        let object = value
            .as_object()
            .with_context(|| format!("{}: expected a JSON object", where_()))?;
        let text = match object.get(text_field) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => bail!(
                "{}: field `{text_field}` must be a string, found {}",
                where_(),
                json_kind(other)
            ),
            None => bail!(
                "{}: field `{text_field}` is missing (choose another with --text-field)",
                where_()
            ),
        };
        let id = match object.get(id_field) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            Some(other) => bail!(
                "{}: field `{id_field}` must be a string or a number, found {}",
                where_(),
                json_kind(other)
            ),
            None => None,
        };
        match (*has_ids.get_or_insert(id.is_some()), id) {
            (true, Some(id)) => ids.push(id),
            (false, None) => {}
            (true, None) => bail!(
                "{}: field `{id_field}` is missing, though earlier rows have it",
                where_()
            ),
            (false, Some(_)) => bail!(
                "{}: field `{id_field}` appears, though earlier rows lack it",
                where_()
            ),
        }
        texts.push(text);
    }
    Ok(Rows {
        ids: has_ids.unwrap_or(false).then_some(ids),
        texts,
    })
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn read_parquet(path: &Path, text_field: &str, id_field: &str) -> Result<Rows> {
    let reader = BatchReader::open(path)?;
    let columns: Vec<String> = reader.info.columns.iter().map(|(n, _)| n.clone()).collect();
    if !columns.iter().any(|c| c == text_field) {
        bail!(
            "{}: no column `{text_field}` (columns: {}); choose one with --text-field",
            path.display(),
            columns.join(", ")
        );
    }
    let has_ids = columns.iter().any(|c| c == id_field);
    let mut texts = Vec::with_capacity(reader.info.rows);
    let mut ids = Vec::new();
    for batch in reader {
        let (first_row, batch) = batch?;
        let text_column = string_column(path, &batch, text_field)?;
        for row in 0..text_column.len() {
            if text_column.is_null(row) {
                bail!(
                    "{}: row {}: column `{text_field}` is null",
                    path.display(),
                    first_row + row
                );
            }
            texts.push(text_column.value(row).to_string());
        }
        if has_ids {
            let id_column = string_column(path, &batch, id_field)?;
            for row in 0..id_column.len() {
                if id_column.is_null(row) {
                    bail!(
                        "{}: row {}: column `{id_field}` is null",
                        path.display(),
                        first_row + row
                    );
                }
                ids.push(id_column.value(row).to_string());
            }
        }
    }
    Ok(Rows {
        ids: has_ids.then_some(ids),
        texts,
    })
}

/// A column as UTF-8 strings; string-like and integer columns are cast, anything else is an error.
fn string_column(path: &Path, batch: &RecordBatch, name: &str) -> Result<StringArray> {
    let column = batch
        .column_by_name(name)
        .with_context(|| format!("{}: no column `{name}`", path.display()))?;
    let castable = matches!(
        column.data_type(),
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt32
            | DataType::UInt64
    );
    if !castable {
        bail!(
            "{}: column `{name}` has type {}, expected strings",
            path.display(),
            column.data_type()
        );
    }
    let cast = arrow::compute::cast(column, &DataType::Utf8)
        .with_context(|| format!("{}: column `{name}`", path.display()))?;
    Ok(cast
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("cast to Utf8 gives a StringArray")
        .clone())
}
