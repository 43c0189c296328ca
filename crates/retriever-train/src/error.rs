use std::path::PathBuf;

/// Everything that can go wrong while mining, training, evaluating or exporting a retriever.
/// Each variant names the file (and row or field, where there is one).
#[derive(Debug, thiserror::Error)]
pub enum RetrieverError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },

    #[error("invalid argument: {0}")]
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

    #[error(transparent)]
    Retrieval(#[from] ragtune_retrieval::RetrievalError),
}

pub type Result<T, E = RetrieverError> = std::result::Result<T, E>;

impl RetrieverError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RetrieverError::Io {
            path: path.into(),
            source,
        }
    }
}
