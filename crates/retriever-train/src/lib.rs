//! Dense retriever fine-tuning: DPR, Contriever and ColBERT with contrastive losses, HNSW hard-negative mining and distillation.
