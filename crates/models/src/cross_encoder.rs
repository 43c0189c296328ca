//! Cross-encoders: a BERT that reads a (query, passage) pair as one sequence and scores it from
//! [CLS], laid out as transformers' `BertForSequenceClassification` and saved as
//! sentence-transformers' `CrossEncoder` saves it.
//!
//! Variables: `bert.*` (the encoder and its pooler, `tanh(dense(h[CLS]))`) and
//! `classifier.weight`/`classifier.bias` (`num_labels` outputs). A folder that has no head (a
//! bi-encoder such as all-MiniLM-L6-v2, or a plain BERT such as bert-tiny) starts one as
//! transformers does: weights drawn from a normal with std `initializer_range`, biases zero, from
//! a seed given here so that two runs start alike.
//!
//! Pairs are tokenized `[CLS] query [SEP] passage [SEP]` with segment ids 0 then 1 and truncated
//! with the `longest_first` strategy (the `tokenizers` crate's pair truncation, which is what the
//! fast tokenizer behind sentence-transformers runs). Scores are the raw logits; the sigmoid that
//! `CrossEncoder.predict` applies for one label is left to whoever needs probabilities.
//!
//! Inference sorts pairs by token length and pads each batch only to its own longest pair.

use crate::bert::{self, BertConfig, BertModel, Prefix};
use crate::checkpoint::{atomic_write, load_safetensors, save_var_store};
use crate::dropout::dropout;
use crate::tokenize::{BertTokenizer, EncodedBatch, TokenizedText};
use crate::{ModelError, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// Pairs per forward pass when the caller does not say.
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// The sentence-transformers module type of a cross-encoder's transformer (ST 6.x).
const ST_TRANSFORMER_MODULE: &str = "sentence_transformers.base.modules.transformer.Transformer";

/// Files of the source folder that describe its tokenizer, copied on save when present.
const TOKENIZER_FILES: &[&str] = &["vocab.txt", "special_tokens_map.json"];

/// How a head missing from the source folder is started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadInit {
    /// Outputs of the classifier when the folder has none (1: a relevance score).
    pub num_labels: i64,
    /// Seeds torch's generator before the missing pooler and classifier are drawn.
    pub seed: u64,
}

impl Default for HeadInit {
    fn default() -> Self {
        Self {
            num_labels: 1,
            seed: 42,
        }
    }
}

#[derive(Debug)]
pub struct CrossEncoder {
    vs: nn::VarStore,
    bert: BertModel,
    classifier: nn::Linear,
    tokenizer: BertTokenizer,
    /// The source folder's `config.json`, rewritten on save with the head's fields.
    hf_config: Value,
    /// The source folder's `tokenizer.json` and `tokenizer_config.json`.
    tokenizer_json: Value,
    tokenizer_config: Value,
    dir: PathBuf,
    num_labels: i64,
    head_dropout: f64,
    /// Whether the head came from the folder (false: freshly initialised).
    head_loaded: bool,
    batch_size: usize,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| ModelError::format(path, format!("invalid JSON: {e}")))
}

/// The number of labels a `config.json` declares (`id2label`, else `num_labels`), if any.
fn declared_labels(config: &Value) -> Option<i64> {
    config
        .get("id2label")
        .and_then(Value::as_object)
        .map(|m| m.len() as i64)
        .or_else(|| config.get("num_labels").and_then(Value::as_i64))
}

impl CrossEncoder {
    /// Loads a cross-encoder folder (as sentence-transformers' `CrossEncoder.save` writes it), or
    /// starts one from an encoder folder whose pooler or classifier is missing (see [`HeadInit`]).
    /// Weights are cast to `kind`.
    pub fn load(dir: &Path, device: Device, kind: Kind, init: HeadInit) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config = BertConfig::from_file(&config_path)?;
        let hf_config = read_json(&config_path)?;
        let weights_path = bert::weights_file(dir)?;
        let mut tensors = load_safetensors(&weights_path, Device::Cpu)?;
        let canonical = |k: &str| bert::canonical_name(k, Prefix::Bert);
        let has = |tensors: &std::collections::HashMap<String, Tensor>, name: &str| {
            tensors.keys().any(|k| canonical(k) == name)
        };
        let head_loaded = has(&tensors, "classifier.weight");
        let num_labels = if head_loaded {
            let weight = tensors
                .iter()
                .find(|(k, _)| canonical(k) == "classifier.weight")
                .map(|(_, t)| t.size())
                .unwrap_or_default();
            if weight.len() != 2 {
                return Err(ModelError::format(
                    &weights_path,
                    format!("classifier.weight has shape {weight:?}, expected [labels, hidden]"),
                ));
            }
            if let Some(declared) = declared_labels(&hf_config) {
                if declared != weight[0] {
                    return Err(ModelError::format(
                        &config_path,
                        format!(
                            "declares {declared} labels but classifier.weight has {}",
                            weight[0]
                        ),
                    ));
                }
            }
            weight[0]
        } else {
            if init.num_labels < 1 {
                return Err(ModelError::Invalid(format!(
                    "num_labels {}: a cross-encoder needs at least one output",
                    init.num_labels
                )));
            }
            init.num_labels
        };
        let std = hf_config
            .get("initializer_range")
            .and_then(Value::as_f64)
            .unwrap_or(0.02);
        let head_dropout = hf_config
            .get("classifier_dropout")
            .and_then(Value::as_f64)
            .unwrap_or(config.hidden_dropout_prob);

        let mut vs = nn::VarStore::new(device);
        let root = vs.root();
        let bert_model = BertModel::new(&root / "bert", &config, true);
        let classifier = nn::linear(
            &root / "classifier",
            config.hidden_size,
            num_labels,
            Default::default(),
        );
        // The missing head is drawn here, on the CPU from a seeded generator, and handed to the
        // loader as if the file held it: one loading path, and the same start on every device.
        let hidden = config.hidden_size;
        let mut fresh: Vec<(&str, Vec<i64>, bool)> = Vec::new();
        if !has(&tensors, "bert.pooler.dense.weight") {
            fresh.push(("bert.pooler.dense.weight", vec![hidden, hidden], true));
            fresh.push(("bert.pooler.dense.bias", vec![hidden], false));
        }
        if !head_loaded {
            fresh.push(("classifier.weight", vec![num_labels, hidden], true));
            fresh.push(("classifier.bias", vec![num_labels], false));
        }
        if !fresh.is_empty() {
            tch::manual_seed(init.seed as i64);
            for (name, shape, is_weight) in fresh {
                let tensor = if is_weight {
                    Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu)) * std
                } else {
                    Tensor::zeros(shape.as_slice(), (Kind::Float, Device::Cpu))
                };
                tensors.insert(name.to_string(), tensor);
            }
        }
        // An MLM or NSP head of a pretrained BERT is not part of a cross-encoder.
        bert::load_into(&mut vs, &weights_path, tensors, Prefix::Bert, &["cls."])?;
        bert::cast(&mut vs, kind)?;

        let max_length = default_max_length(dir, &config)?;
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer = BertTokenizer::from_file(&tokenizer_path, max_length)?;
        let tokenizer_json = read_json(&tokenizer_path)?;
        let tokenizer_config_path = dir.join("tokenizer_config.json");
        let tokenizer_config = if tokenizer_config_path.is_file() {
            read_json(&tokenizer_config_path)?
        } else {
            json!({"tokenizer_class": "BertTokenizer", "do_lower_case": true})
        };
        Ok(Self {
            vs,
            bert: bert_model,
            classifier,
            tokenizer,
            hf_config,
            tokenizer_json,
            tokenizer_config,
            dir: dir.to_path_buf(),
            num_labels,
            head_dropout,
            head_loaded,
            batch_size: DEFAULT_BATCH_SIZE,
        })
    }

    /// Truncation length of a pair in tokens, special tokens included; at most `max_position_embeddings`.
    pub fn set_max_length(&mut self, max_length: usize) -> Result<()> {
        let limit = self.bert.config.max_position_embeddings as usize;
        if max_length > limit {
            return Err(ModelError::Invalid(format!(
                "max length {max_length} exceeds the model's {limit} positions"
            )));
        }
        self.tokenizer.set_max_length(max_length)
    }

    pub fn set_batch_size(&mut self, batch_size: usize) -> Result<()> {
        if batch_size == 0 {
            return Err(ModelError::Invalid("batch size must be at least 1".into()));
        }
        self.batch_size = batch_size;
        Ok(())
    }

    pub fn max_length(&self) -> usize {
        self.tokenizer.max_length()
    }
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
    pub fn num_labels(&self) -> i64 {
        self.num_labels
    }
    /// Whether the classifier came from the folder rather than a fresh initialisation.
    pub fn head_loaded(&self) -> bool {
        self.head_loaded
    }
    pub fn device(&self) -> Device {
        self.vs.device()
    }
    /// The folder this model was loaded from.
    pub fn source_dir(&self) -> &Path {
        &self.dir
    }
    pub fn bert(&self) -> &BertModel {
        &self.bert
    }
    pub fn tokenizer(&self) -> &BertTokenizer {
        &self.tokenizer
    }
    /// The variables, under transformers' names (`bert.*`, `classifier.*`), for an optimizer.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    /// Tokenizes `(query, passage)` pairs: `[CLS] q [SEP] p [SEP]`, segment ids 0 then 1,
    /// `longest_first` truncation to [`max_length`](Self::max_length).
    pub fn tokenize_pairs(
        &self,
        queries: &[&str],
        passages: &[&str],
    ) -> Result<Vec<TokenizedText>> {
        if queries.len() != passages.len() {
            return Err(ModelError::Invalid(format!(
                "{} queries but {} passages: pairs need one of each",
                queries.len(),
                passages.len()
            )));
        }
        let inputs: Vec<(&str, &str)> = queries
            .iter()
            .copied()
            .zip(passages.iter().copied())
            .collect();
        let encodings = self
            .tokenizer
            .inner()
            .encode_batch_fast(inputs, true)
            .map_err(|e| {
                ModelError::format(
                    self.dir.join("tokenizer.json"),
                    format!("tokenizing pairs: {e}"),
                )
            })?;
        Ok(encodings
            .into_iter()
            .map(|e| TokenizedText {
                ids: e.get_ids().iter().map(|&i| i as i64).collect(),
                type_ids: e.get_type_ids().iter().map(|&i| i as i64).collect(),
            })
            .collect())
    }

    /// Pads tokenized pairs into one batch on the model's device.
    pub fn pad(&self, pairs: &[&TokenizedText]) -> EncodedBatch {
        EncodedBatch::pad(pairs, self.tokenizer.pad_id(), self.device())
    }

    /// Logits `[batch, num_labels]` (float32) of one padded batch, with gradients kept; dropout
    /// (encoder and head) when `train`.
    pub fn forward_t(&self, batch: &EncodedBatch, train: bool) -> Tensor {
        let hidden = self.bert.forward_t(&batch.as_input(), train);
        let pooled = self
            .bert
            .pooler_output_t(&hidden, train)
            .expect("a cross-encoder's BERT is built with its pooler");
        self.classifier
            .forward(&dropout(&pooled, self.head_dropout, train))
            .to_kind(Kind::Float)
    }

    /// Logits `[pairs, num_labels]` (float32, on the model's device) of every pair, in input
    /// order, without gradients: pairs sorted by length, each batch padded to its own longest.
    pub fn predict(&self, queries: &[&str], passages: &[&str]) -> Result<Tensor> {
        let tokenized = self.tokenize_pairs(queries, passages)?;
        let mut order: Vec<usize> = (0..tokenized.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(tokenized[i].ids.len()));
        let mut sorted = Vec::with_capacity(order.len().div_ceil(self.batch_size));
        tch::no_grad(|| {
            for chunk in order.chunks(self.batch_size) {
                let rows: Vec<&TokenizedText> = chunk.iter().map(|&i| &tokenized[i]).collect();
                sorted.push(self.forward_t(&self.pad(&rows), false));
            }
        });
        if sorted.is_empty() {
            return Ok(Tensor::zeros(
                [0, self.num_labels],
                (Kind::Float, self.device()),
            ));
        }
        let sorted = Tensor::cat(&sorted, 0);
        let mut restore = vec![0i64; order.len()];
        for (position, &original) in order.iter().enumerate() {
            restore[original] = position as i64;
        }
        Ok(sorted.index_select(0, &Tensor::from_slice(&restore).to_device(self.device())))
    }

    /// One relevance score (the logit) per pair, for a one-label model.
    pub fn score_pairs(&self, queries: &[&str], passages: &[&str]) -> Result<Vec<f32>> {
        if self.num_labels != 1 {
            return Err(ModelError::Invalid(format!(
                "scoring pairs needs a one-label cross-encoder; this one has {} labels",
                self.num_labels
            )));
        }
        let logits = self
            .predict(queries, passages)?
            .reshape([-1])
            .to_device(Device::Cpu);
        let len = logits.numel();
        let mut out = vec![0f32; len];
        logits.f_copy_data(&mut out, len)?;
        Ok(out)
    }

    /// Writes a folder that `sentence_transformers.CrossEncoder(dir)` and transformers'
    /// `AutoModelForSequenceClassification` load: config.json, model.safetensors (float32),
    /// tokenizer files and sentence-transformers' module files. The folder is assembled next to
    /// `dir` and renamed into place, so `dir` holds either the old model or the whole new one.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let name = dir
            .file_name()
            .ok_or_else(|| ModelError::Invalid(format!("{}: not a folder name", dir.display())))?
            .to_string_lossy()
            .into_owned();
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| ModelError::io(parent, e))?;
        let staging = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(|e| ModelError::io(&staging, e))?;
        if let Err(e) = self.write_files(&staging) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        if dir.exists() {
            std::fs::rename(dir, &old).map_err(|e| ModelError::io(dir, e))?;
        }
        std::fs::rename(&staging, dir).map_err(|e| ModelError::io(dir, e))?;
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| ModelError::io(&old, e))?;
        }
        Ok(())
    }

    fn write_files(&self, dir: &Path) -> Result<()> {
        let write_json = |file: &str, value: &Value| {
            let text = serde_json::to_string_pretty(value).expect("JSON values serialize");
            atomic_write(&dir.join(file), text.as_bytes())
        };
        save_var_store(&self.vs, &dir.join("model.safetensors"), Some(Kind::Float))?;

        let mut config = self.hf_config.clone();
        let labels: serde_json::Map<String, Value> = (0..self.num_labels)
            .map(|i| (i.to_string(), json!(format!("LABEL_{i}"))))
            .collect();
        let keep_labels =
            declared_labels(&config) == Some(self.num_labels) && config.get("id2label").is_some();
        if let Some(map) = config.as_object_mut() {
            map.insert(
                "architectures".into(),
                json!(["BertForSequenceClassification"]),
            );
            map.insert("model_type".into(), json!("bert"));
            if !keep_labels {
                let label2id: serde_json::Map<String, Value> = labels
                    .iter()
                    .map(|(i, name)| {
                        (
                            name.as_str().unwrap_or_default().to_string(),
                            json!(i.parse::<i64>().unwrap_or(0)),
                        )
                    })
                    .collect();
                map.insert("id2label".into(), Value::Object(labels));
                map.insert("label2id".into(), Value::Object(label2id));
            }
            map.remove("num_labels");
            map.remove("_name_or_path");
        }
        write_json("config.json", &config)?;

        // The tokenizer as this model runs it: no baked-in padding, truncation at max_length.
        let mut tokenizer_json = self.tokenizer_json.clone();
        if let Some(map) = tokenizer_json.as_object_mut() {
            map.insert("padding".into(), Value::Null);
            map.insert(
                "truncation".into(),
                json!({"direction": "Right", "max_length": self.max_length(),
                       "strategy": "LongestFirst", "stride": 0}),
            );
        }
        write_json("tokenizer.json", &tokenizer_json)?;
        // sentence-transformers 6 keeps the maximum length as the tokenizer's model_max_length.
        let mut tokenizer_config = self.tokenizer_config.clone();
        if let Some(map) = tokenizer_config.as_object_mut() {
            map.insert("model_max_length".into(), json!(self.max_length()));
        }
        write_json("tokenizer_config.json", &tokenizer_config)?;
        for file in TOKENIZER_FILES {
            let source = self.dir.join(file);
            if source.is_file() {
                let bytes = std::fs::read(&source).map_err(|e| ModelError::io(&source, e))?;
                atomic_write(&dir.join(file), &bytes)?;
            }
        }

        // What sentence-transformers 6.2's CrossEncoder.save writes besides the model: a sigmoid
        // for one label (its default), the identity otherwise.
        let activation = if self.num_labels == 1 {
            "torch.nn.modules.activation.Sigmoid"
        } else {
            "torch.nn.modules.linear.Identity"
        };
        write_json(
            "config_sentence_transformers.json",
            &json!({"activation_fn": activation, "default_prompt_name": null,
                    "model_type": "CrossEncoder", "prompts": {}}),
        )?;
        write_json(
            "modules.json",
            &json!([{"idx": 0, "name": "0", "path": "", "type": ST_TRANSFORMER_MODULE}]),
        )?;
        write_json(
            "sentence_bert_config.json",
            &json!({
                "transformer_task": "sequence-classification",
                "modality_config": {"text": {"method": "forward", "method_output_name": "logits"}},
                "module_output_name": "scores",
            }),
        )?;
        Ok(())
    }
}

/// The folder's maximum pair length: sentence-transformers' `max_seq_length` when set, else the
/// tokenizer's `model_max_length`, capped by `max_position_embeddings`.
fn default_max_length(dir: &Path, config: &BertConfig) -> Result<usize> {
    let positions = config.max_position_embeddings as usize;
    for (file, key) in [
        ("sentence_bert_config.json", "max_seq_length"),
        ("tokenizer_config.json", "model_max_length"),
    ] {
        let path = dir.join(file);
        if path.is_file() {
            if let Some(n) = read_json(&path)?.get(key).and_then(Value::as_u64) {
                return Ok((n as usize).min(positions));
            }
        }
    }
    Ok(positions)
}
