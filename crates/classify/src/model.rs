//! The classifier: a BERT from the models crate (fully trainable, or frozen under a PEFT adapter),
//! pooled into one vector, then dropout and one linear layer (`classifier`) giving a logit per
//! label, or one number for regression.
//!
//! The trainer sees a single `VarStore` in which the encoder's variables are shared under `bert.`
//! and the adapter's under `peft.` (same storage), and the head lives as `classifier.*` — the
//! names of transformers' `BertForSequenceClassification`, which the trainer's default layer
//! pattern (`encoder.layer.N.`) and embedding pattern already read for layer-wise decay.
//!
//! A saved model folder holds `head.json` (task, labels, pooling, base), `head.safetensors`, and
//! either `encoder/` (full fine-tuning: a sentence-transformers folder) or `adapter/` (PEFT's
//! files, `base_model_name_or_path` set; bottleneck adapters in the models crate's own format).

use crate::config::{ClassifyConfig, PoolingChoice, Task};
use crate::{ClassifyError, Result};
use ragtune_models::encoder::SentenceEncoder;
use ragtune_models::peft::{EncoderPeft, PeftConfig};
use ragtune_models::pooling::{Pooling, PoolingMode};
use ragtune_models::tokenize::EncodedBatch;
use ragtune_trainer::params::share_variables;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// Prefixes of the variables in the trainer's store.
pub const ENCODER_PREFIX: &str = "bert";
pub const ADAPTER_PREFIX: &str = "peft";
pub const HEAD_PREFIX: &str = "classifier";

const HEAD_JSON: &str = "head.json";
const HEAD_WEIGHTS: &str = "head.safetensors";
const ENCODER_DIR: &str = "encoder";
const ADAPTER_DIR: &str = "adapter";

/// What a saved model folder says about its head, enough to rebuild it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadMeta {
    pub task: Task,
    /// The outputs of a classification head, in order; empty for regression.
    pub labels: Vec<String>,
    pub pooling: PoolingChoice,
    pub dropout: f64,
    /// The folder the encoder started from (where an adapter's frozen base lives).
    pub base: PathBuf,
    pub max_length: usize,
    /// full, or the PEFT method's short name.
    pub method: String,
}

#[derive(Debug)]
pub struct Classifier {
    encoder: SentenceEncoder,
    train_vs: nn::VarStore,
    head: nn::Linear,
    pooling: PoolingChoice,
    dropout: f64,
    task: Task,
}

impl Classifier {
    /// The base encoder of `config` with a fresh head of `outputs` outputs (and a fresh adapter
    /// when `[peft]` is set), seeded by `trainer.seed`.
    pub fn new(config: &ClassifyConfig, outputs: i64, device: Device) -> Result<Self> {
        let mut encoder = load_encoder(&config.model.base, config.model.max_length, device)?;
        tch::manual_seed(config.trainer.seed as i64);
        if let Some(peft) = &config.peft {
            let adapter = new_adapter(&peft.method, &encoder)?;
            encoder.var_store_mut().freeze();
            encoder.model_mut().set_adapter(Some(adapter));
        }
        Self::assemble(
            encoder,
            &config.model.base,
            config.model.pooling,
            config.head.dropout,
            config.task,
            outputs,
        )
    }

    /// A model folder written by [`save`](Self::save).
    pub fn load(dir: &Path, device: Device) -> Result<(Self, HeadMeta)> {
        let meta_path = dir.join(HEAD_JSON);
        let text =
            std::fs::read_to_string(&meta_path).map_err(|e| ClassifyError::io(&meta_path, e))?;
        let meta: HeadMeta = serde_json::from_str(&text).map_err(|e| ClassifyError::Config {
            path: meta_path.clone(),
            message: e.to_string(),
        })?;
        let encoder_dir = dir.join(ENCODER_DIR);
        let adapter_dir = dir.join(ADAPTER_DIR);
        let mut encoder = if encoder_dir.is_dir() {
            load_encoder(&encoder_dir, Some(meta.max_length), device)?
        } else if adapter_dir.is_dir() {
            let mut encoder = load_encoder(&meta.base, Some(meta.max_length), device)?;
            let adapter = EncoderPeft::load(&adapter_dir, encoder.model(), device)?;
            encoder.var_store_mut().freeze();
            encoder.model_mut().set_adapter(Some(adapter));
            encoder
        } else {
            return Err(ClassifyError::Invalid(format!(
                "{}: holds neither `{ENCODER_DIR}/` nor `{ADAPTER_DIR}/`; not a saved classifier",
                dir.display()
            )));
        };
        encoder.set_batch_size(ragtune_models::encoder::DEFAULT_BATCH_SIZE)?;
        let outputs = match meta.task {
            Task::Classification => meta.labels.len() as i64,
            Task::Regression => 1,
        };
        let source = if encoder_dir.is_dir() {
            encoder_dir
        } else {
            meta.base.clone()
        };
        let model = Self::assemble(
            encoder,
            &source,
            meta.pooling,
            meta.dropout,
            meta.task,
            outputs,
        )?;
        let weights_path = dir.join(HEAD_WEIGHTS);
        let weights = ragtune_models::checkpoint::load_safetensors(&weights_path, device)?;
        for (name, variable) in model.head_variables() {
            let saved =
                weights
                    .get(&name)
                    .ok_or_else(|| ragtune_models::ModelError::MissingTensor {
                        path: weights_path.clone(),
                        name: name.clone(),
                    })?;
            if saved.size() != variable.size() {
                return Err(ragtune_models::ModelError::Shape {
                    path: weights_path.clone(),
                    name,
                    expected: variable.size(),
                    actual: saved.size(),
                }
                .into());
            }
            tch::no_grad(|| variable.shallow_clone().copy_(saved));
        }
        Ok((model, meta))
    }

    fn assemble(
        mut encoder: SentenceEncoder,
        source: &Path,
        pooling: PoolingChoice,
        dropout: f64,
        task: Task,
        outputs: i64,
    ) -> Result<Self> {
        let hidden = encoder.model().config.hidden_size;
        let width = match pooling {
            PoolingChoice::Model => encoder.dim(),
            PoolingChoice::Cls => {
                encoder.set_pooling(Pooling::new(PoolingMode::Cls, false));
                hidden
            }
            PoolingChoice::Mean => {
                encoder.set_pooling(Pooling::new(PoolingMode::Mean, false));
                hidden
            }
            PoolingChoice::Pooler => {
                if encoder.model().pooler.is_none() {
                    return Err(ClassifyError::Invalid(format!(
                        "`model.pooling` = \"pooler\", but {} has no pooler weights (`pooler.dense.*`); use \"cls\", \"mean\" or \"model\"",
                        source.display()
                    )));
                }
                hidden
            }
        };
        let train_vs = nn::VarStore::new(encoder.device());
        share_variables(&train_vs, ENCODER_PREFIX, encoder.var_store());
        if let Some(adapter) = encoder.model().adapter() {
            share_variables(&train_vs, ADAPTER_PREFIX, adapter.var_store());
        }
        // transformers' BertForSequenceClassification initialization: N(0, 0.02), zero bias.
        let head = nn::linear(
            train_vs.root() / HEAD_PREFIX,
            width,
            outputs,
            nn::LinearConfig {
                ws_init: nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
                bs_init: Some(nn::Init::Const(0.0)),
                bias: true,
            },
        );
        Ok(Self {
            encoder,
            train_vs,
            head,
            pooling,
            dropout,
            task,
        })
    }

    /// Logits `[batch, outputs]` in float32 (dropout on when `train`).
    pub fn forward(&self, batch: &EncodedBatch, train: bool) -> Tensor {
        let input = batch.as_input();
        let pooled = match self.pooling {
            PoolingChoice::Pooler => {
                let model = self.encoder.model();
                let hidden = model.forward_t(&input, train);
                model
                    .pooler_output_t(&hidden, train)
                    .expect("checked at construction: the model has a pooler")
            }
            _ => self.encoder.forward_input_t(&input, train),
        };
        self.head
            .forward(&pooled.to_kind(Kind::Float).dropout(self.dropout, train))
            .to_kind(Kind::Float)
    }

    /// Mean cross-entropy against label indices (classification) or mean squared error against
    /// float targets (regression), from logits of [`forward`](Self::forward).
    pub fn loss(&self, logits: &Tensor, targets: &Tensor) -> Tensor {
        match self.task {
            Task::Classification => logits.cross_entropy_for_logits(targets),
            Task::Regression => logits
                .squeeze_dim(-1)
                .mse_loss(targets, tch::Reduction::Mean),
        }
    }

    /// The store the trainer groups, checkpoints and restores.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.train_vs
    }

    pub fn encoder(&self) -> &SentenceEncoder {
        &self.encoder
    }

    pub fn task(&self) -> Task {
        self.task
    }

    /// Every value of the encoder, adapter and head.
    pub fn total_parameters(&self) -> i64 {
        self.train_vs
            .variables()
            .values()
            .filter(|t| t.is_floating_point())
            .map(|t| t.numel() as i64)
            .sum()
    }

    fn head_variables(&self) -> Vec<(String, Tensor)> {
        let mut head: Vec<(String, Tensor)> = self
            .train_vs
            .variables()
            .into_iter()
            .filter(|(name, _)| name.starts_with(&format!("{HEAD_PREFIX}.")))
            .collect();
        head.sort_by(|a, b| a.0.cmp(&b.0));
        head
    }

    /// Writes the model folder `dir` whole or not at all (a temp folder renamed into place).
    pub fn save(&self, dir: &Path, meta: &HeadMeta) -> Result<()> {
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| ClassifyError::io(parent, e))?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        let temp = parent.join(format!(".tmp-{name}-{}", std::process::id()));
        if temp.exists() {
            std::fs::remove_dir_all(&temp).map_err(|e| ClassifyError::io(&temp, e))?;
        }
        std::fs::create_dir_all(&temp).map_err(|e| ClassifyError::io(&temp, e))?;
        ragtune_models::checkpoint::save_safetensors(
            &temp.join(HEAD_WEIGHTS),
            &self.head_variables(),
        )?;
        match self.encoder.model().adapter() {
            Some(adapter) => adapter
                .save_with_base(&temp.join(ADAPTER_DIR), Some(&meta.base.to_string_lossy()))?,
            None => self.encoder.save_pretrained(&temp.join(ENCODER_DIR))?,
        }
        let json = serde_json::to_vec_pretty(meta).expect("head metadata serializes");
        ragtune_models::checkpoint::atomic_write(&temp.join(HEAD_JSON), &json)?;
        if dir.exists() {
            let old = parent.join(format!(".old-{name}-{}", std::process::id()));
            std::fs::rename(dir, &old).map_err(|e| ClassifyError::io(dir, e))?;
            std::fs::remove_dir_all(&old).map_err(|e| ClassifyError::io(&old, e))?;
        }
        std::fs::rename(&temp, dir).map_err(|e| ClassifyError::io(dir, e))?;
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| ClassifyError::io(parent, e))
    }
}

fn load_encoder(dir: &Path, max_length: Option<usize>, device: Device) -> Result<SentenceEncoder> {
    let mut encoder = SentenceEncoder::load(dir, device, Kind::Float)?;
    if let Some(n) = max_length {
        encoder
            .set_max_length(n)
            .map_err(|e| ClassifyError::Invalid(format!("`model.max_length` = {n}: {e}")))?;
    }
    Ok(encoder)
}

/// A fresh adapter for `encoder`. Prompt tuning's virtual tokens take positions of their own, so
/// they must fit beside the longest input; an `init_text` starts the prompt from its token ids.
fn new_adapter(method: &PeftConfig, encoder: &SentenceEncoder) -> Result<EncoderPeft> {
    let positions = encoder.model().config.max_position_embeddings;
    let virtual_tokens = match method {
        PeftConfig::PromptTuning(p) => Some(p.num_virtual_tokens),
        PeftConfig::PrefixTuning(p) => Some(p.num_virtual_tokens),
        _ => None,
    };
    if let Some(n) = virtual_tokens {
        if n <= 0 || n + encoder.max_length() as i64 > positions {
            return Err(ClassifyError::Invalid(format!(
                "`peft.num_virtual_tokens` = {n}: with `model.max_length` = {} it must lie in 1..={} (the model has {positions} positions)",
                encoder.max_length(),
                positions - encoder.max_length() as i64
            )));
        }
    }
    let init_ids = match method {
        PeftConfig::PromptTuning(p) => match &p.init_text {
            Some(text) => Some(
                encoder
                    .tokenizer()
                    .tokenize(&[text.as_str()])?
                    .remove(0)
                    .ids,
            ),
            None => None,
        },
        _ => None,
    };
    Ok(EncoderPeft::new_with_init_text(
        method,
        encoder.model(),
        encoder.device(),
        init_ids.as_deref(),
    )?)
}
