use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model. Each variant names the file
/// (and tensor, where there is one) and, where a user can act, says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "{path} is a pickle checkpoint, and ragtune never loads pickles (they can run arbitrary code). \
         Convert it once in Python: `import torch; from safetensors.torch import save_file; \
         save_file(torch.load('{name}', weights_only=True), 'model.safetensors')`, then point ragtune at the new file"
    )]
    Pickle { path: PathBuf, name: String },

    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },

    #[error("{path}: tensor `{name}` is missing")]
    MissingTensor { path: PathBuf, name: String },

    #[error("{path}: tensor `{name}` has shape {actual:?}, expected {expected:?}")]
    Shape {
        path: PathBuf,
        name: String,
        expected: Vec<i64>,
        actual: Vec<i64>,
    },

    #[error("unsupported: {0}")]
    Unsupported(String),

    #[error("invalid argument: {0}")]
    Invalid(String),

    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

impl ModelError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        ModelError::Format {
            path: path.into(),
            message: message.into(),
        }
    }
}
