//! End-to-end RAG loops in which the generator supervises the retriever and both are tuned; the
//! only crate (besides the pipeline) that combines the two trainers.
//!
//! - [`config`]: the run config (`ragtune joint <method> --config`, the pipeline's `[joint]`).
//! - [`losses`]: LM-supervised retrieval (KL between the LM's and the retriever's distributions
//!   over the top-k) and the RAG-sequence marginal likelihood, on score tensors.
//! - [`scoring`]: the generator's length-normalised answer log-likelihood per passage, cached in Parquet.
//! - [`rag_sequence`]: the marginal likelihood's backward, accumulated over passages.
//! - [`evaluate`]: the trajectory points, the retrieval-collapse watch, start against end on test.
//! - [`recipe`]: `run(&JointConfig, Device) -> JointReport`, top to bottom, one file per step; [`report`]: the page.

pub mod config;
mod error;
pub mod evaluate;
pub mod losses;
pub mod rag_sequence;
pub mod recipe;
pub mod report;
pub mod scoring;

pub use config::{JointConfig, KlDirection, Method, Scoring, Towers};
pub use error::{JointError, Result};
pub use recipe::{run, JointReport};
