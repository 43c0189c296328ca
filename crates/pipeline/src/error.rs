//! Pipeline errors: each names the stage, file or key at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config: {0}")]
    Config(String),
    #[error("{0}")]
    Invalid(String),
    #[error("stage `{stage}`: {source}")]
    Stage {
        stage: &'static str,
        source: Box<PipelineError>,
    },
    #[error(transparent)]
    Data(#[from] ragtune_data::DataError),
    #[error(transparent)]
    Eval(#[from] ragtune_eval::EvalError),
    #[error(transparent)]
    Model(#[from] ragtune_models::ModelError),
    #[error(transparent)]
    Retrieval(#[from] ragtune_retrieval::RetrievalError),
    #[error(transparent)]
    Retriever(#[from] ragtune_retriever_train::RetrieverError),
    #[error(transparent)]
    Generator(#[from] ragtune_generator_train::GeneratorError),
    #[error(transparent)]
    Report(#[from] ragtune_report::ReportError),
    #[error(transparent)]
    Joint(#[from] ragtune_rag_joint::JointError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

impl PipelineError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PipelineError::Io {
            path: path.into(),
            source,
        }
    }
}
