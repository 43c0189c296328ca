//! Bi-encoder retrievers: DPR (Karpukhin et al., 2020) with shared or separate query/passage
//! towers and [CLS] pooling, Contriever (Izacard et al., 2021) with one tower and mean pooling plus
//! its unsupervised cropping objective, or the pooling a sentence-transformers folder declares.
//!
//! Each tower is a [`SentenceEncoder`] from the models crate (length-bucketed inference, gradient
//! forward for training). With separate towers, one training `VarStore` holds both towers'
//! variables (shared storage) under `query.` and `passage.`, so the trainer sees a single model.

use crate::losses::Similarity;
use crate::{Result, RetrieverError};
use ragtune_models::encoder::SentenceEncoder;
use ragtune_models::pooling::{Pooling, PoolingMode};
use ragtune_models::tokenize::{EncodedBatch, TokenizedText};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// The pooling (and normalization) the base folder's `modules.json` declares.
    #[default]
    SentenceTransformers,
    /// [CLS] pooling, dot-product similarity.
    Dpr,
    /// Mean pooling, one shared tower, dot-product similarity.
    Contriever,
    /// Late interaction over token embeddings: not a bi-encoder, see [`crate::colbert`].
    Colbert,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// A sentence-transformers or transformers BERT folder.
    pub base: PathBuf,
    pub architecture: Architecture,
    /// One tower for queries and passages (DPR may use two; Contriever always shares).
    pub shared_towers: bool,
    /// Tokens per text, special tokens included.
    pub max_length: usize,
    /// Overrides the architecture's similarity (cosine for sentence-transformers, dot otherwise).
    pub similarity: Option<Similarity>,
    /// Texts per no-grad encoding batch.
    pub encode_batch_size: usize,
    /// Train a LoRA or IA3 adapter on a frozen base instead of every weight (`[model.peft]`, see
    /// [`crate::adapters`]).
    pub peft: Option<ragtune_models::peft::PeftConfig>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            base: PathBuf::from("assets/all-MiniLM-L6-v2"),
            architecture: Architecture::SentenceTransformers,
            shared_towers: true,
            max_length: 256,
            similarity: None,
            encode_batch_size: 64,
            peft: None,
        }
    }
}

/// What mining and evaluation need from any retriever: no-grad embeddings in input order.
pub trait Embedder {
    fn encode_queries(&self, texts: &[&str]) -> Result<Tensor>;
    fn encode_passages(&self, texts: &[&str]) -> Result<Tensor>;
    fn similarity(&self) -> Similarity;
}

pub struct BiEncoder {
    query: SentenceEncoder,
    passage: Option<SentenceEncoder>,
    similarity: Similarity,
    /// Both towers' variables when they are separate (the trainer's view); unused when shared.
    joint: Option<nn::VarStore>,
    config: ModelConfig,
}

impl std::fmt::Debug for BiEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BiEncoder")
            .field("config", &self.config)
            .field("similarity", &self.similarity)
            .finish()
    }
}

impl BiEncoder {
    /// Loads the base model (twice for separate towers) with weights in `kind`.
    pub fn load(config: &ModelConfig, device: Device, kind: Kind) -> Result<Self> {
        if config.architecture == Architecture::Colbert {
            return Err(RetrieverError::Invalid(
                "architecture colbert is a multi-vector model: load it with colbert::Colbert"
                    .into(),
            ));
        }
        if config.architecture == Architecture::Contriever && !config.shared_towers {
            return Err(RetrieverError::Invalid(
                "Contriever uses one shared tower: set shared_towers = true".into(),
            ));
        }
        let load_tower = || -> Result<SentenceEncoder> {
            let mut tower = SentenceEncoder::load(&config.base, device, kind)?;
            tower.set_max_length(config.max_length)?;
            tower.set_batch_size(config.encode_batch_size.max(1))?;
            match config.architecture {
                Architecture::SentenceTransformers | Architecture::Colbert => {}
                Architecture::Dpr => tower.set_pooling(Pooling::new(PoolingMode::Cls, false)),
                Architecture::Contriever => {
                    tower.set_pooling(Pooling::new(PoolingMode::Mean, false))
                }
            }
            if let Some(peft) = &config.peft {
                crate::adapters::attach(&mut tower, peft)?;
            }
            Ok(tower)
        };
        let query = load_tower()?;
        let passage = if config.shared_towers {
            None
        } else {
            Some(load_tower()?)
        };
        let joint = passage.as_ref().map(|passage| {
            let joint = nn::VarStore::new(device);
            for (prefix, tower) in [("query", &query), ("passage", passage)] {
                ragtune_trainer::params::share_variables(&joint, prefix, tower.var_store());
            }
            joint
        });
        let similarity = config.similarity.unwrap_or(match config.architecture {
            Architecture::SentenceTransformers => Similarity::Cosine,
            Architecture::Dpr | Architecture::Contriever | Architecture::Colbert => Similarity::Dot,
        });
        Ok(Self {
            query,
            passage,
            similarity,
            joint,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The variables to train (both towers when separate).
    pub fn var_store(&self) -> &nn::VarStore {
        self.joint.as_ref().unwrap_or(self.query.var_store())
    }

    pub fn query_tower(&self) -> &SentenceEncoder {
        &self.query
    }

    pub fn passage_tower(&self) -> &SentenceEncoder {
        self.passage.as_ref().unwrap_or(&self.query)
    }

    pub fn device(&self) -> Device {
        self.query.device()
    }

    /// Pooled query embeddings with gradients (dropout when `train`), `[batch, dim]`.
    pub fn forward_queries(&self, texts: &[&str], train: bool) -> Result<Tensor> {
        let batch = self.query.tokenize_batch(texts)?;
        Ok(self.query.forward_t(&batch, train))
    }

    pub fn forward_passages(&self, texts: &[&str], train: bool) -> Result<Tensor> {
        let tower = self.passage_tower();
        let batch = tower.tokenize_batch(texts)?;
        Ok(tower.forward_t(&batch, train))
    }

    /// Pooled embeddings of pre-tokenized rows (Contriever's crops) through the passage tower.
    pub fn forward_tokenized(&self, rows: &[TokenizedText], train: bool) -> Tensor {
        let tower = self.passage_tower();
        let refs: Vec<&TokenizedText> = rows.iter().collect();
        let batch = EncodedBatch::pad(&refs, tower.tokenizer().pad_id(), self.device());
        tower.forward_t(&batch, train)
    }

    /// Writes sentence-transformers folders: `dir` itself for a shared tower, `dir/query` and
    /// `dir/passage` for separate ones. See [`crate::export`].
    pub fn save(&self, dir: &Path) -> Result<()> {
        match &self.passage {
            None => crate::export::save_sentence_transformers(&self.query, dir),
            Some(passage) => {
                crate::export::save_sentence_transformers(&self.query, &dir.join("query"))?;
                crate::export::save_sentence_transformers(passage, &dir.join("passage"))
            }
        }
    }
}

impl Embedder for BiEncoder {
    fn encode_queries(&self, texts: &[&str]) -> Result<Tensor> {
        Ok(self.query.encode(texts)?)
    }

    fn encode_passages(&self, texts: &[&str]) -> Result<Tensor> {
        Ok(self.passage_tower().encode(texts)?)
    }

    fn similarity(&self) -> Similarity {
        self.similarity
    }
}
