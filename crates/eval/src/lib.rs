//! Metrics that agree with the reference libraries: retrieval, generation, faithfulness, classification and significance tests.
