//! The one error type of the classification recipe. Each variant names the file, and the row or
//! config field where there is one, so a message says what to fix without a backtrace.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A config that does not parse or contradicts itself; the message names the field.
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },

    /// A data row that cannot be used: a JSONL line (from 1) or a table row (from 0, as pandas).
    #[error("{path}, {location}, field `{field}`: {message}")]
    Row {
        path: PathBuf,
        location: ragtune_data::Location,
        field: String,
        message: String,
    },

    #[error("invalid: {0}")]
    Invalid(String),

    #[error(transparent)]
    Model(#[from] ragtune_models::ModelError),

    #[error(transparent)]
    Torch(#[from] tch::TchError),

    #[error(transparent)]
    Data(#[from] ragtune_data::DataError),

    #[error(transparent)]
    Eval(#[from] ragtune_eval::EvalError),

    #[error(transparent)]
    Trainer(#[from] ragtune_trainer::TrainerError),
}

pub type Result<T, E = ClassifyError> = std::result::Result<T, E>;

impl ClassifyError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ClassifyError::Io {
            path: path.into(),
            source,
        }
    }
}
