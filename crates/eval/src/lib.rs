//! Metrics that agree with the reference libraries: retrieval, generation, faithfulness, classification and significance tests.
//!
//! Every metric with a reference implementation is tested against it at test time (pytrec_eval, the
//! SQuAD script, sacrebleu, rouge-score, nltk, scikit-learn, scipy); see each module for the exact
//! definitions and for the places where the behaviour on odd input is a documented choice.
//!
//! This crate is deliberately light (no tch): BERTScore takes token embeddings from the caller
//! through [`bertscore::TokenEncoder`].

pub mod bertscore;
pub mod bleu;
pub mod classification;
pub mod error;
pub mod faithfulness;
pub mod meteor;
pub mod porter;
pub mod retrieval;
pub mod rouge;
pub mod significance;
pub mod squad;
pub mod text;
pub mod trec;

pub use error::{EvalError, Result};
