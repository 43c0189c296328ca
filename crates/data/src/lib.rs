//! Datasets in Arrow and Parquet: corpora, queries, qrels, triplets, QA pairs and preference pairs;
//! import, clean, dedup, split, export, and token caches.
//!
//! Every table is a Parquet file whose key-value metadata holds `ragtune.schema` (the table name) and
//! `ragtune.schema_version`; pandas, pyarrow and DuckDB read them as they are. See `README.md` for the
//! schemas and the dataset folder layout. This crate knows nothing of models or of the CLI.

pub mod atomic;
pub mod dataset;
pub mod dedup;
mod error;
pub mod export;
pub mod given_splits;
pub mod import;
pub mod records;
pub mod split;
pub mod table;
pub mod text;
pub mod tokenize;

pub use dataset::Dataset;
pub use error::{DataError, Location, Result};
pub use given_splits::{read_given_splits, GivenSplits, SplitsLayout};
pub use records::{Doc, MiningProvenance, Negative, Preference, QaExample, Qrel, Query, Triplet};
pub use table::{read_table, write_table, Record, TableReader, TableWriter};
