/// What can go wrong when computing a metric: the inputs do not fit together or hold a value the
/// metric cannot use. Each message names the query, row or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Two inputs that must be parallel (predictions and references, system A and system B) differ in length.
    #[error("{what}: {left} vs {right} items; they must be parallel")]
    LengthMismatch {
        what: String,
        left: usize,
        right: usize,
    },

    /// A metric needs at least one item and got none.
    #[error("{0}: no items to evaluate")]
    Empty(String),

    /// A value the metric cannot use (NaN score, duplicate document, k = 0, ...).
    #[error("invalid input: {0}")]
    Invalid(String),

    /// A line of an input file (qrels) that does not parse.
    #[error("{}, line {line}{}: {message}", path.display(), field.as_ref().map(|f| format!(", field `{f}`")).unwrap_or_default())]
    Parse {
        path: std::path::PathBuf,
        line: usize,
        field: Option<String>,
        message: String,
    },

    /// The caller's token encoder failed (BERTScore).
    #[error("token encoder failed: {0}")]
    Encoder(String),
}

pub type Result<T, E = EvalError> = std::result::Result<T, E>;

pub(crate) fn check_parallel(what: &str, left: usize, right: usize) -> Result<()> {
    if left != right {
        return Err(EvalError::LengthMismatch {
            what: what.to_string(),
            left,
            right,
        });
    }
    Ok(())
}
