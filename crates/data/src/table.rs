//! Parquet I/O shared by every table: a streaming atomic writer that stamps the schema name and
//! version into the file's key-value metadata, a streaming reader that checks columns and types
//! and names the file, row and field of any bad value.

use crate::atomic::AtomicFile;
use crate::{DataError, Location, Result};
use arrow::array::{Array, ArrayRef, AsArray, Float32Array, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Key-value metadata key holding the table's schema name (`corpus`, `queries`, ...).
pub const SCHEMA_NAME_KEY: &str = "ragtune.schema";
/// Key-value metadata key holding the schema version, a decimal integer.
pub const SCHEMA_VERSION_KEY: &str = "ragtune.schema_version";

/// Rows per record batch and per Parquet row group. Small enough that a writer or reader holds a
/// few megabytes at a time whatever the corpus size; large enough that rayon has work to share.
pub const BATCH_ROWS: usize = 8192;

/// One typed row of a table, convertible to and from Arrow record batches.
pub trait Record: Sized + Send + Sync + 'static {
    /// The schema name written into every file of this table.
    const TABLE: &'static str;
    /// Bumped on any incompatible change of the columns.
    const VERSION: u32;
    fn schema() -> SchemaRef;
    fn to_batch(rows: &[Self]) -> Result<RecordBatch>;
    fn from_batch(cols: &Columns<'_>) -> Result<Vec<Self>>;
}

fn writer_properties(
    schema_name: &str,
    version: u32,
    extra: &[(String, String)],
) -> WriterProperties {
    let mut kv = vec![
        KeyValue::new(SCHEMA_NAME_KEY.to_owned(), schema_name.to_owned()),
        KeyValue::new(SCHEMA_VERSION_KEY.to_owned(), version.to_string()),
    ];
    kv.extend(
        extra
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
    );
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_size(BATCH_ROWS)
        .set_key_value_metadata(Some(kv))
        .build()
}

/// A Parquet writer over raw record batches that commits atomically; the typed [`TableWriter`] and
/// the token cache both sit on it.
pub struct BatchFileWriter {
    file: Option<AtomicFile>,
    writer: Option<ArrowWriter<File>>,
    path: PathBuf,
    rows: usize,
}

impl BatchFileWriter {
    pub fn create(
        path: &Path,
        schema: SchemaRef,
        schema_name: &str,
        version: u32,
        extra_metadata: &[(String, String)],
    ) -> Result<Self> {
        let file = AtomicFile::create(path)?;
        let props = writer_properties(schema_name, version, extra_metadata);
        let writer = ArrowWriter::try_new(file.handle()?, schema, Some(props))
            .map_err(|e| DataError::parquet(path, e))?;
        Ok(BatchFileWriter {
            file: Some(file),
            writer: Some(writer),
            path: path.to_path_buf(),
            rows: 0,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows();
        let writer = self.writer.as_mut().expect("writer is open until finish");
        writer
            .write(batch)
            .map_err(|e| DataError::parquet(&self.path, e))?;
        // Flushing each batch as its own row group keeps the writer's buffer at one batch.
        writer
            .flush()
            .map_err(|e| DataError::parquet(&self.path, e))
    }

    /// Writes the footer, fsyncs and renames over the target. Returns the number of rows.
    pub fn finish(mut self) -> Result<usize> {
        let writer = self.writer.take().expect("writer is open until finish");
        writer
            .close()
            .map_err(|e| DataError::parquet(&self.path, e))?;
        self.file
            .take()
            .expect("file is open until finish")
            .commit()?;
        Ok(self.rows)
    }
}

/// Streams typed rows into a Parquet file, one record batch per [`BATCH_ROWS`] rows. The target
/// appears only on [`TableWriter::finish`]; dropping the writer earlier leaves any previous file intact.
pub struct TableWriter<R: Record> {
    inner: BatchFileWriter,
    buffer: Vec<R>,
}

impl<R: Record> TableWriter<R> {
    pub fn create(path: &Path) -> Result<Self> {
        Ok(TableWriter {
            inner: BatchFileWriter::create(path, R::schema(), R::TABLE, R::VERSION, &[])?,
            buffer: Vec::with_capacity(BATCH_ROWS),
        })
    }

    pub fn write(&mut self, row: R) -> Result<()> {
        self.buffer.push(row);
        if self.buffer.len() >= BATCH_ROWS {
            self.flush_buffer()?;
        }
        Ok(())
    }

    pub fn write_all(&mut self, rows: impl IntoIterator<Item = R>) -> Result<()> {
        rows.into_iter().try_for_each(|r| self.write(r))
    }

    /// Writes `rows` as one record batch (after any buffered rows).
    pub fn write_batch(&mut self, rows: &[R]) -> Result<()> {
        self.flush_buffer()?;
        if !rows.is_empty() {
            self.inner.write(&R::to_batch(rows)?)?;
        }
        Ok(())
    }

    fn flush_buffer(&mut self) -> Result<()> {
        if !self.buffer.is_empty() {
            let batch = R::to_batch(&self.buffer)?;
            self.inner.write(&batch)?;
            self.buffer.clear();
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<usize> {
        self.flush_buffer()?;
        self.inner.finish()
    }
}

/// Writes `rows` to `path` atomically.
pub fn write_table<R: Record>(path: &Path, rows: &[R]) -> Result<()> {
    let mut w = TableWriter::<R>::create(path)?;
    for chunk in rows.chunks(BATCH_ROWS) {
        w.write_batch(chunk)?;
    }
    w.finish().map(|_| ())
}

/// What a Parquet file says about itself, read from its footer only.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub path: PathBuf,
    /// `ragtune.schema` from the key-value metadata; `None` for files written by other tools.
    pub schema_name: Option<String>,
    pub schema_version: Option<u32>,
    pub rows: usize,
    pub columns: Vec<(String, DataType)>,
    /// Every key-value pair of the footer (other than Arrow's own schema blob).
    pub metadata: Vec<(String, String)>,
}

fn open_builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| DataError::parquet(path, e))
}

pub fn table_info(path: &Path) -> Result<TableInfo> {
    let builder = open_builder(path)?;
    let meta = builder.metadata().file_metadata();
    let metadata: Vec<(String, String)> = meta
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .filter(|k| k.key != "ARROW:schema")
                .map(|k| (k.key.clone(), k.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let lookup = |key: &str| {
        metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    Ok(TableInfo {
        path: path.to_path_buf(),
        schema_name: lookup(SCHEMA_NAME_KEY),
        schema_version: lookup(SCHEMA_VERSION_KEY).and_then(|v| v.parse().ok()),
        rows: meta.num_rows() as usize,
        columns: builder
            .schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect(),
        metadata,
    })
}

/// Streams a Parquet file as raw record batches, with the row index of each batch's first row.
pub struct BatchReader {
    path: PathBuf,
    inner: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    next_row: usize,
    pub info: TableInfo,
}

impl BatchReader {
    pub fn open(path: &Path) -> Result<Self> {
        let info = table_info(path)?;
        let inner = open_builder(path)?
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| DataError::parquet(path, e))?;
        Ok(BatchReader {
            path: path.to_path_buf(),
            inner,
            next_row: 0,
            info,
        })
    }
}

impl Iterator for BatchReader {
    type Item = Result<(usize, RecordBatch)>;
    fn next(&mut self) -> Option<Self::Item> {
        let batch = match self.inner.next()? {
            Ok(b) => b,
            Err(e) => {
                return Some(Err(DataError::parquet(
                    &self.path,
                    format!("near row {}: {e}", self.next_row),
                )))
            }
        };
        let first = self.next_row;
        self.next_row += batch.num_rows();
        Some(Ok((first, batch)))
    }
}

/// Streams the typed rows of a table, one batch (up to [`BATCH_ROWS`] rows) at a time.
pub struct TableReader<R: Record> {
    batches: BatchReader,
    _row: std::marker::PhantomData<R>,
}

impl<R: Record> TableReader<R> {
    /// Opens `path`, refusing a file whose metadata says it holds another table.
    pub fn open(path: &Path) -> Result<Self> {
        let batches = BatchReader::open(path)?;
        if let Some(name) = &batches.info.schema_name {
            if name != R::TABLE {
                return Err(DataError::bad(
                    path,
                    Location::File,
                    Some(SCHEMA_NAME_KEY),
                    format!(
                        "this file holds the `{name}` table, expected `{}`",
                        R::TABLE
                    ),
                ));
            }
        }
        if let Some(v) = batches.info.schema_version {
            if v > R::VERSION {
                return Err(DataError::bad(
                    path,
                    Location::File,
                    Some(SCHEMA_VERSION_KEY),
                    format!(
                        "schema version {v} is newer than this ragtune reads ({}); upgrade ragtune",
                        R::VERSION
                    ),
                ));
            }
        }
        Ok(TableReader {
            batches,
            _row: std::marker::PhantomData,
        })
    }

    pub fn rows(&self) -> usize {
        self.batches.info.rows
    }
}

impl<R: Record> Iterator for TableReader<R> {
    type Item = Result<Vec<R>>;
    fn next(&mut self) -> Option<Self::Item> {
        let (first_row, batch) = match self.batches.next()? {
            Ok(x) => x,
            Err(e) => return Some(Err(e)),
        };
        let cols = Columns {
            batch: &batch,
            path: &self.batches.path,
            first_row,
        };
        Some(R::from_batch(&cols))
    }
}

/// Reads a whole table into memory.
pub fn read_table<R: Record>(path: &Path) -> Result<Vec<R>> {
    let reader = TableReader::<R>::open(path)?;
    let mut out = Vec::with_capacity(reader.rows());
    for batch in reader {
        out.extend(batch?);
    }
    Ok(out)
}

/// Typed access to the columns of one record batch, for [`Record::from_batch`]. Each accessor checks
/// the column exists and has the right type family (Utf8/LargeUtf8/Utf8View all count as strings,
/// any integer width as an integer), casting to the canonical type.
pub struct Columns<'a> {
    pub batch: &'a RecordBatch,
    pub path: &'a Path,
    /// Index in the file of the batch's first row, so errors name the file's row.
    pub first_row: usize,
}

fn family(dt: &DataType) -> String {
    match dt {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => "integer".into(),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => "float".into(),
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::FixedSizeList(f, _) => {
            format!("list<{}>", family(f.data_type()))
        }
        DataType::Struct(fields) => format!(
            "struct<{}>",
            fields
                .iter()
                .map(|f| format!("{}: {}", f.name(), family(f.data_type())))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

impl<'a> Columns<'a> {
    fn present(&self) -> String {
        self.batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The column `name` cast to `expected`; `None` when absent and not `required`.
    pub fn array(
        &self,
        name: &str,
        expected: &DataType,
        required: bool,
    ) -> Result<Option<ArrayRef>> {
        let Some(col) = self.batch.column_by_name(name) else {
            if required {
                return Err(DataError::MissingColumn {
                    path: self.path.to_path_buf(),
                    column: name.to_owned(),
                    present: self.present(),
                });
            }
            return Ok(None);
        };
        if col.data_type() == expected {
            return Ok(Some(col.clone()));
        }
        let wrong = || DataError::WrongType {
            path: self.path.to_path_buf(),
            column: name.to_owned(),
            expected: expected.to_string(),
            actual: col.data_type().to_string(),
        };
        if family(col.data_type()) != family(expected) {
            return Err(wrong());
        }
        arrow::compute::cast(col, expected)
            .map(Some)
            .map_err(|_| wrong())
    }

    pub fn strings(&self, name: &'static str) -> Result<StrCol<'a>> {
        let arr = self.array(name, &DataType::Utf8, true)?.expect("required");
        Ok(self.str_col(name, arr))
    }

    pub fn opt_strings(&self, name: &'static str) -> Result<Option<StrCol<'a>>> {
        Ok(self
            .array(name, &DataType::Utf8, false)?
            .map(|arr| self.str_col(name, arr)))
    }

    fn str_col(&self, name: &'static str, arr: ArrayRef) -> StrCol<'a> {
        StrCol {
            arr: arr.as_string::<i32>().clone(),
            name,
            path: self.path,
            first_row: self.first_row,
        }
    }

    pub fn ints(&self, name: &'static str) -> Result<Int32Array> {
        let arr = self.array(name, &DataType::Int32, true)?.expect("required");
        Ok(arr.as_primitive::<arrow::datatypes::Int32Type>().clone())
    }

    pub fn floats(arr: &ArrayRef) -> Float32Array {
        arr.as_primitive::<arrow::datatypes::Float32Type>().clone()
    }

    pub fn null_error(&self, row: usize, field: &str) -> DataError {
        DataError::bad(
            self.path,
            Location::Row(self.first_row + row),
            Some(field),
            "value is null but the column is required",
        )
    }

    pub fn bad(&self, row: usize, field: &str, message: impl Into<String>) -> DataError {
        DataError::bad(
            self.path,
            Location::Row(self.first_row + row),
            Some(field),
            message,
        )
    }
}

/// A string column with row-aware errors.
pub struct StrCol<'a> {
    arr: StringArray,
    name: &'static str,
    path: &'a Path,
    first_row: usize,
}

impl StrCol<'_> {
    pub fn get(&self, i: usize) -> Result<String> {
        if self.arr.is_null(i) {
            return Err(DataError::bad(
                self.path,
                Location::Row(self.first_row + i),
                Some(self.name),
                "value is null but the column is required",
            ));
        }
        Ok(self.arr.value(i).to_owned())
    }

    pub fn opt(&self, i: usize) -> Option<String> {
        (!self.arr.is_null(i)).then(|| self.arr.value(i).to_owned())
    }
}
