use std::fmt;
use std::path::PathBuf;

/// Where in a file a problem sits: a text line (1-based, as editors count) or a table row (0-based, as
/// pandas and pyarrow count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Line(usize),
    Row(usize),
    /// The problem concerns the whole file (its header, its footer, its schema).
    File,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(n) => write!(f, "line {n}"),
            Location::Row(n) => write!(f, "row {n}"),
            Location::File => write!(f, "whole file"),
        }
    }
}

/// Everything that can go wrong with a dataset. Every variant about input names the file, and where
/// there is one, the line or row and the field, so a user can open the file and fix it.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A row that does not parse, or a value that breaks a rule of its table.
    #[error("{path}, {location}{}: {message}", field.as_ref().map(|f| format!(", field `{f}`")).unwrap_or_default())]
    Bad {
        path: PathBuf,
        location: Location,
        field: Option<String>,
        message: String,
    },

    #[error("{path}: required column `{column}` is missing (the file has: {present})")]
    MissingColumn {
        path: PathBuf,
        column: String,
        present: String,
    },

    #[error("{path}: column `{column}` has type {actual}, expected {expected}")]
    WrongType {
        path: PathBuf,
        column: String,
        expected: String,
        actual: String,
    },

    /// A file that is not a readable Parquet file (truncated, corrupt, or something else entirely).
    #[error("{path}: not a readable Parquet file: {message}")]
    Parquet { path: PathBuf, message: String },

    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },

    /// The same question text ended up in two splits; this is never allowed to pass silently.
    #[error("split leakage: question {text:?} appears in both `{first}` and `{second}`")]
    Leakage {
        text: String,
        first: String,
        second: String,
    },

    #[error("invalid argument: {0}")]
    Invalid(String),
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl DataError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn bad(
        path: impl Into<PathBuf>,
        location: Location,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        DataError::Bad {
            path: path.into(),
            location,
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }

    pub fn parquet(path: impl Into<PathBuf>, message: impl fmt::Display) -> Self {
        DataError::Parquet {
            path: path.into(),
            message: message.to_string(),
        }
    }
}
