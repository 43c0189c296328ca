use std::path::PathBuf;

/// Everything that can stop a training run. Each variant names the file, step or setting involved.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },

    #[error("config: {0}")]
    Config(String),

    #[error(
        "non-finite {what} ({value}) at step {step}; the run stopped without updating the weights, \
         and the last good checkpoint{} is kept",
        match .last_checkpoint { Some(p) => format!(" ({})", p.display()), None => String::new() }
    )]
    NonFinite {
        what: &'static str,
        value: f64,
        step: u64,
        last_checkpoint: Option<PathBuf>,
    },

    #[error("evaluation at step {step} returned no metric `{metric}` (it returned: {available})")]
    MissingMetric {
        step: u64,
        metric: String,
        available: String,
    },

    #[error(transparent)]
    Model(#[from] ragtune_models::ModelError),

    #[error(transparent)]
    Torch(#[from] tch::TchError),

    /// An error raised by the caller's loss or evaluation closure, passed through unchanged.
    #[error("{0}")]
    Caller(Box<dyn std::error::Error + Send + Sync>),
}

pub type Result<T, E = TrainerError> = std::result::Result<T, E>;

impl TrainerError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainerError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        TrainerError::Format {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Wraps any error of the caller's closures (anyhow errors convert through `.into()`).
    pub fn caller(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        TrainerError::Caller(error.into())
    }
}
