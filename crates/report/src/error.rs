//! The crate's error type: file problems name the file, browser problems name the step that failed.

use std::path::{Path, PathBuf};

pub type Result<T> = std::result::Result<T, ReportError>;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("serializing the report to JSON: {0}")]
    Json(#[from] serde_json::Error),

    #[error("Chromium not found on PATH: install Debian's `chromium` package (`cargo xtask setup` does)")]
    ChromiumMissing,

    /// A Chromium run that failed, hung, or left output we could not read; `step` says which.
    #[error("browser check, {step}: {message}")]
    Browser { step: String, message: String },
}

impl ReportError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        ReportError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn browser(step: impl Into<String>, message: impl Into<String>) -> Self {
        ReportError::Browser {
            step: step.into(),
            message: message.into(),
        }
    }
}
