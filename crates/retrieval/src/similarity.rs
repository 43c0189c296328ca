//! How a query embedding and a passage embedding are compared.

use ragtune_models::pooling::l2_normalize;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Similarity {
    /// Cosine similarity: dot product of L2-normalized vectors.
    #[default]
    Cosine,
    /// Plain inner product (DPR).
    Dot,
}

impl Similarity {
    /// `[queries, passages]` scores of `queries [q, d]` against `passages [p, d]`, in float32.
    pub fn matrix(self, queries: &Tensor, passages: &Tensor) -> Tensor {
        let (q, p) = (queries.to_kind(Kind::Float), passages.to_kind(Kind::Float));
        match self {
            Similarity::Dot => q.matmul(&p.tr()),
            Similarity::Cosine => l2_normalize(&q).matmul(&l2_normalize(&p).tr()),
        }
    }
}
