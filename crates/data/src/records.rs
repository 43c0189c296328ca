//! The typed rows of every table and their Arrow schemas (schema version 1 for all).
//!
//! | table         | columns (Arrow type; `?` = nullable)                                                  |
//! |---------------|----------------------------------------------------------------------------------------|
//! | `corpus`      | doc_id utf8, title utf8, text utf8, metadata utf8? (a JSON object)                    |
//! | `queries`     | query_id utf8, text utf8                                                               |
//! | `qrels`       | query_id utf8, doc_id utf8, relevance int32                                            |
//! | `triplets`    | query_id utf8, query utf8, positive_id utf8, positive_text utf8,                       |
//! |               | negatives list<struct<doc_id utf8, text utf8, score float32>>,                         |
//! |               | mining_model utf8?, mining_index utf8?, mining_parameters utf8? (a JSON object),      |
//! |               | positive_score float32?, scored_by utf8? (both optional columns, may be absent)        |
//! | `qa`          | id utf8, question utf8, answers list<utf8>, gold_doc_ids list<utf8>, context utf8?,   |
//! |               | label utf8? (a category for stratified splits)                                         |
//! | `preferences` | id utf8, prompt utf8, chosen utf8, rejected utf8, context utf8?                        |

use crate::table::{Columns, Record};
use crate::{DataError, Result};
use arrow::array::{
    Array, ArrayRef, AsArray, Float32Array, Int32Array, ListArray, RecordBatch, StringArray,
    StructArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, OnceLock};

/// A passage of the retrieval corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Doc {
    pub doc_id: String,
    /// Empty when the source has no title.
    pub title: String,
    pub text: String,
    /// Free-form JSON object text (source, category, url, ...); `None` when there is nothing to keep.
    pub metadata: Option<String>,
}

/// A search query (or question) by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Query {
    pub query_id: String,
    pub text: String,
}

/// A relevance judgement: `doc_id` is relevant to `query_id` with grade `relevance` (0 = not relevant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Qrel {
    pub query_id: String,
    pub doc_id: String,
    pub relevance: i32,
}

/// A mined hard negative with the miner's score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Negative {
    pub doc_id: String,
    pub text: String,
    pub score: f32,
}

/// How the negatives of a triplet were mined.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MiningProvenance {
    /// The model that scored the candidates (a path or a name).
    pub model: Option<String>,
    /// The index searched (e.g. `hnsw:<path>` or `exact`).
    pub index: Option<String>,
    /// The mining parameters as a JSON object (range, margin, count, seed, ...).
    pub parameters: Option<String>,
}

/// A training triplet: a query, its positive passage and zero or more negatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Triplet {
    pub query_id: String,
    pub query: String,
    pub positive_id: String,
    pub positive_text: String,
    pub negatives: Vec<Negative>,
    pub provenance: MiningProvenance,
    /// The positive's score by the same model as the negatives' `score` (for distillation, where
    /// a teacher's scores of the positive and of each negative are the targets); `None` when unknown.
    pub positive_score: Option<f32>,
    /// The model whose scores `positive_score` and the negatives' `score` are (the miner, or a
    /// teacher that rescored the triplet); `None` when unknown.
    pub scored_by: Option<String>,
}

/// A question with its reference answers and the ids of the passages that support them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QaExample {
    pub id: String,
    pub question: String,
    pub answers: Vec<String>,
    pub gold_doc_ids: Vec<String>,
    /// A fixed context passage where the source supplies one (SQuAD); `None` otherwise.
    pub context: Option<String>,
    /// A class label (the FAQ's category) used by stratified splits and balance reports.
    pub label: Option<String>,
}

/// A preference pair for DPO-style training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preference {
    pub id: String,
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
    pub context: Option<String>,
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn list_of_utf8() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, false)))
}

fn negative_fields() -> Fields {
    Fields::from(vec![
        utf8("doc_id", false),
        utf8("text", false),
        Field::new("score", DataType::Float32, false),
    ])
}

fn list_of_negatives() -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(negative_fields()),
        false,
    )))
}

fn strings<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    // Arrow needs an exact size up front; flattened iterators do not report one.
    let values: Vec<&str> = values.collect();
    Arc::new(StringArray::from_iter_values(values))
}

fn opt_strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(values.collect::<StringArray>())
}

fn string_lists<'a>(lists: impl Iterator<Item = &'a [String]> + Clone) -> ArrayRef {
    let values: Vec<&String> = lists.clone().flatten().collect();
    let values = StringArray::from_iter_values(values);
    let offsets = OffsetBuffer::from_lengths(lists.map(|l| l.len()));
    let field = Arc::new(Field::new("item", DataType::Utf8, false));
    Arc::new(ListArray::new(field, offsets, Arc::new(values), None))
}

fn batch(schema: SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    RecordBatch::try_new(schema, columns)
        .map_err(|e| DataError::Invalid(format!("building a record batch: {e}")))
}

/// Reads a list<utf8> column into vectors, naming the row of any null.
fn read_string_lists(cols: &Columns<'_>, name: &'static str) -> Result<Vec<Vec<String>>> {
    let arr = cols.array(name, &list_of_utf8(), true)?.expect("required");
    let list = arr.as_list::<i32>();
    let values = list.values().as_string::<i32>();
    let mut out = Vec::with_capacity(list.len());
    for row in 0..list.len() {
        if list.is_null(row) {
            return Err(cols.null_error(row, name));
        }
        let (start, end) = (
            list.value_offsets()[row] as usize,
            list.value_offsets()[row + 1] as usize,
        );
        let mut items = Vec::with_capacity(end - start);
        for j in start..end {
            if values.is_null(j) {
                return Err(cols.bad(row, name, format!("item {} is null", j - start)));
            }
            items.push(values.value(j).to_owned());
        }
        out.push(items);
    }
    Ok(out)
}

macro_rules! cached_schema {
    ($($field:expr),* $(,)?) => {{
        static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
        SCHEMA.get_or_init(|| Arc::new(Schema::new(vec![$($field),*]))).clone()
    }};
}

impl Record for Doc {
    const TABLE: &'static str = "corpus";
    const VERSION: u32 = 1;
    fn schema() -> SchemaRef {
        cached_schema![
            utf8("doc_id", false),
            utf8("title", false),
            utf8("text", false),
            utf8("metadata", true)
        ]
    }
    fn to_batch(rows: &[Self]) -> Result<RecordBatch> {
        batch(
            Self::schema(),
            vec![
                strings(rows.iter().map(|r| r.doc_id.as_str())),
                strings(rows.iter().map(|r| r.title.as_str())),
                strings(rows.iter().map(|r| r.text.as_str())),
                opt_strings(rows.iter().map(|r| r.metadata.as_deref())),
            ],
        )
    }
    fn from_batch(cols: &Columns<'_>) -> Result<Vec<Self>> {
        let (id, text) = (cols.strings("doc_id")?, cols.strings("text")?);
        // BEIR-style files without titles are common; a missing title column means empty titles.
        let title = cols.opt_strings("title")?;
        let metadata = cols.opt_strings("metadata")?;
        (0..cols.batch.num_rows())
            .map(|i| {
                Ok(Doc {
                    doc_id: id.get(i)?,
                    title: title.as_ref().and_then(|t| t.opt(i)).unwrap_or_default(),
                    text: text.get(i)?,
                    metadata: metadata.as_ref().and_then(|m| m.opt(i)),
                })
            })
            .collect()
    }
}

impl Record for Query {
    const TABLE: &'static str = "queries";
    const VERSION: u32 = 1;
    fn schema() -> SchemaRef {
        cached_schema![utf8("query_id", false), utf8("text", false)]
    }
    fn to_batch(rows: &[Self]) -> Result<RecordBatch> {
        batch(
            Self::schema(),
            vec![
                strings(rows.iter().map(|r| r.query_id.as_str())),
                strings(rows.iter().map(|r| r.text.as_str())),
            ],
        )
    }
    fn from_batch(cols: &Columns<'_>) -> Result<Vec<Self>> {
        let (id, text) = (cols.strings("query_id")?, cols.strings("text")?);
        (0..cols.batch.num_rows())
            .map(|i| {
                Ok(Query {
                    query_id: id.get(i)?,
                    text: text.get(i)?,
                })
            })
            .collect()
    }
}

impl Record for Qrel {
    const TABLE: &'static str = "qrels";
    const VERSION: u32 = 1;
    fn schema() -> SchemaRef {
        cached_schema![
            utf8("query_id", false),
            utf8("doc_id", false),
            Field::new("relevance", DataType::Int32, false)
        ]
    }
    fn to_batch(rows: &[Self]) -> Result<RecordBatch> {
        batch(
            Self::schema(),
            vec![
                strings(rows.iter().map(|r| r.query_id.as_str())),
                strings(rows.iter().map(|r| r.doc_id.as_str())),
                Arc::new(Int32Array::from_iter_values(
                    rows.iter().map(|r| r.relevance),
                )),
            ],
        )
    }
    fn from_batch(cols: &Columns<'_>) -> Result<Vec<Self>> {
        let (q, d, rel) = (
            cols.strings("query_id")?,
            cols.strings("doc_id")?,
            cols.ints("relevance")?,
        );
        (0..cols.batch.num_rows())
            .map(|i| {
                if rel.is_null(i) {
                    return Err(cols.null_error(i, "relevance"));
                }
                Ok(Qrel {
                    query_id: q.get(i)?,
                    doc_id: d.get(i)?,
                    relevance: rel.value(i),
                })
            })
            .collect()
    }
}

impl Record for Triplet {
    const TABLE: &'static str = "triplets";
    const VERSION: u32 = 1;
    fn schema() -> SchemaRef {
        cached_schema![
            utf8("query_id", false),
            utf8("query", false),
            utf8("positive_id", false),
            utf8("positive_text", false),
            Field::new("negatives", list_of_negatives(), false),
            utf8("mining_model", true),
            utf8("mining_index", true),
            utf8("mining_parameters", true),
            Field::new("positive_score", DataType::Float32, true),
            utf8("scored_by", true),
        ]
    }
    fn to_batch(rows: &[Self]) -> Result<RecordBatch> {
        let negs = || rows.iter().flat_map(|r| r.negatives.iter());
        let structs = StructArray::try_new(
            negative_fields(),
            vec![
                strings(negs().map(|n| n.doc_id.as_str())),
                strings(negs().map(|n| n.text.as_str())),
                Arc::new(Float32Array::from(
                    negs().map(|n| n.score).collect::<Vec<_>>(),
                )),
            ],
            None,
        )
        .map_err(|e| DataError::Invalid(format!("building negatives: {e}")))?;
        let offsets = OffsetBuffer::from_lengths(rows.iter().map(|r| r.negatives.len()));
        let field = Arc::new(Field::new(
            "item",
            DataType::Struct(negative_fields()),
            false,
        ));
        let negatives = Arc::new(ListArray::new(field, offsets, Arc::new(structs), None));
        batch(
            Self::schema(),
            vec![
                strings(rows.iter().map(|r| r.query_id.as_str())),
                strings(rows.iter().map(|r| r.query.as_str())),
                strings(rows.iter().map(|r| r.positive_id.as_str())),
                strings(rows.iter().map(|r| r.positive_text.as_str())),
                negatives,
                opt_strings(rows.iter().map(|r| r.provenance.model.as_deref())),
                opt_strings(rows.iter().map(|r| r.provenance.index.as_deref())),
                opt_strings(rows.iter().map(|r| r.provenance.parameters.as_deref())),
                Arc::new(Float32Array::from(
                    rows.iter().map(|r| r.positive_score).collect::<Vec<_>>(),
                )),
                opt_strings(rows.iter().map(|r| r.scored_by.as_deref())),
            ],
        )
    }
    fn from_batch(cols: &Columns<'_>) -> Result<Vec<Self>> {
        let (qid, q, pid, ptext) = (
            cols.strings("query_id")?,
            cols.strings("query")?,
            cols.strings("positive_id")?,
            cols.strings("positive_text")?,
        );
        let (model, index, params) = (
            cols.opt_strings("mining_model")?,
            cols.opt_strings("mining_index")?,
            cols.opt_strings("mining_parameters")?,
        );
        // Files written before these two columns existed read as unscored.
        let positive_score = cols
            .array("positive_score", &DataType::Float32, false)?
            .map(|a| Columns::floats(&a));
        let scored_by = cols.opt_strings("scored_by")?;
        let negs = cols
            .array("negatives", &list_of_negatives(), true)?
            .expect("required");
        let list = negs.as_list::<i32>();
        let inner = list.values().as_struct();
        let n_id = inner.column(0).as_string::<i32>();
        let n_text = inner.column(1).as_string::<i32>();
        let n_score = Columns::floats(inner.column(2));
        let opt = |c: &Option<crate::table::StrCol<'_>>, i| c.as_ref().and_then(|c| c.opt(i));
        (0..cols.batch.num_rows())
            .map(|i| {
                if list.is_null(i) {
                    return Err(cols.null_error(i, "negatives"));
                }
                let (start, end) = (
                    list.value_offsets()[i] as usize,
                    list.value_offsets()[i + 1] as usize,
                );
                let mut negatives = Vec::with_capacity(end - start);
                for j in start..end {
                    if inner.is_null(j)
                        || n_id.is_null(j)
                        || n_text.is_null(j)
                        || n_score.is_null(j)
                    {
                        return Err(cols.bad(
                            i,
                            "negatives",
                            format!("negative {} has a null field", j - start),
                        ));
                    }
                    negatives.push(Negative {
                        doc_id: n_id.value(j).to_owned(),
                        text: n_text.value(j).to_owned(),
                        score: n_score.value(j),
                    });
                }
                Ok(Triplet {
                    query_id: qid.get(i)?,
                    query: q.get(i)?,
                    positive_id: pid.get(i)?,
                    positive_text: ptext.get(i)?,
                    negatives,
                    provenance: MiningProvenance {
                        model: opt(&model, i),
                        index: opt(&index, i),
                        parameters: opt(&params, i),
                    },
                    positive_score: positive_score
                        .as_ref()
                        .and_then(|a| (!a.is_null(i)).then(|| a.value(i))),
                    scored_by: opt(&scored_by, i),
                })
            })
            .collect()
    }
}

impl Record for QaExample {
    const TABLE: &'static str = "qa";
    const VERSION: u32 = 1;
    fn schema() -> SchemaRef {
        cached_schema![
            utf8("id", false),
            utf8("question", false),
            Field::new("answers", list_of_utf8(), false),
            Field::new("gold_doc_ids", list_of_utf8(), false),
            utf8("context", true),
            utf8("label", true),
        ]
    }
    fn to_batch(rows: &[Self]) -> Result<RecordBatch> {
        batch(
            Self::schema(),
            vec![
                strings(rows.iter().map(|r| r.id.as_str())),
                strings(rows.iter().map(|r| r.question.as_str())),
                string_lists(rows.iter().map(|r| r.answers.as_slice())),
                string_lists(rows.iter().map(|r| r.gold_doc_ids.as_slice())),
                opt_strings(rows.iter().map(|r| r.context.as_deref())),
                opt_strings(rows.iter().map(|r| r.label.as_deref())),
            ],
        )
    }
    fn from_batch(cols: &Columns<'_>) -> Result<Vec<Self>> {
        let (id, question) = (cols.strings("id")?, cols.strings("question")?);
        let answers = read_string_lists(cols, "answers")?;
        let gold = read_string_lists(cols, "gold_doc_ids")?;
        let (context, label) = (cols.opt_strings("context")?, cols.opt_strings("label")?);
        answers
            .into_iter()
            .zip(gold)
            .enumerate()
            .map(|(i, (answers, gold_doc_ids))| {
                Ok(QaExample {
                    id: id.get(i)?,
                    question: question.get(i)?,
                    answers,
                    gold_doc_ids,
                    context: context.as_ref().and_then(|c| c.opt(i)),
                    label: label.as_ref().and_then(|c| c.opt(i)),
                })
            })
            .collect()
    }
}

impl Record for Preference {
    const TABLE: &'static str = "preferences";
    const VERSION: u32 = 1;
    fn schema() -> SchemaRef {
        cached_schema![
            utf8("id", false),
            utf8("prompt", false),
            utf8("chosen", false),
            utf8("rejected", false),
            utf8("context", true),
        ]
    }
    fn to_batch(rows: &[Self]) -> Result<RecordBatch> {
        batch(
            Self::schema(),
            vec![
                strings(rows.iter().map(|r| r.id.as_str())),
                strings(rows.iter().map(|r| r.prompt.as_str())),
                strings(rows.iter().map(|r| r.chosen.as_str())),
                strings(rows.iter().map(|r| r.rejected.as_str())),
                opt_strings(rows.iter().map(|r| r.context.as_deref())),
            ],
        )
    }
    fn from_batch(cols: &Columns<'_>) -> Result<Vec<Self>> {
        let (id, prompt, chosen, rejected) = (
            cols.strings("id")?,
            cols.strings("prompt")?,
            cols.strings("chosen")?,
            cols.strings("rejected")?,
        );
        let context = cols.opt_strings("context")?;
        (0..cols.batch.num_rows())
            .map(|i| {
                Ok(Preference {
                    id: id.get(i)?,
                    prompt: prompt.get(i)?,
                    chosen: chosen.get(i)?,
                    rejected: rejected.get(i)?,
                    context: context.as_ref().and_then(|c| c.opt(i)),
                })
            })
            .collect()
    }
}
