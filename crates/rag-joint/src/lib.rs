//! End-to-end RAG loops in which the generator supervises the retriever and both are tuned; the only crate that combines the two trainers.
