use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum JointError {
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error(transparent)]
    Model(#[from] ragtune_models::ModelError),
    #[error(transparent)]
    Trainer(#[from] ragtune_trainer::TrainerError),
    #[error(transparent)]
    Data(#[from] ragtune_data::DataError),
    #[error(transparent)]
    Eval(#[from] ragtune_eval::EvalError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Retrieval(#[from] ragtune_retrieval::RetrievalError),
    #[error(transparent)]
    Retriever(#[from] ragtune_retriever_train::RetrieverError),
    #[error(transparent)]
    Generator(#[from] ragtune_generator_train::GeneratorError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T, E = JointError> = std::result::Result<T, E>;

impl JointError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        JointError::Io {
            path: path.into(),
            source,
        }
    }
}
