//! Datasets in Arrow and Parquet: corpora, queries, qrels, triplets, QA pairs and preference pairs; import, clean, dedup, split.
