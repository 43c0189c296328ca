//! What can go wrong while building an index or searching it; each variant names the file or setting.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RetrievalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("invalid argument: {0}")]
    Invalid(String),

    #[error(transparent)]
    Model(#[from] ragtune_models::ModelError),

    #[error(transparent)]
    Torch(#[from] tch::TchError),

    #[error(transparent)]
    Data(#[from] ragtune_data::DataError),
}

pub type Result<T, E = RetrievalError> = std::result::Result<T, E>;

impl RetrievalError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RetrievalError::Io {
            path: path.into(),
            source,
        }
    }
}
