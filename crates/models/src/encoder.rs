//! Sentence encoders: a BERT, its tokenizer and its pooling, loaded from one folder (a
//! sentence-transformers folder such as all-MiniLM-L6-v2, or a plain transformers BERT).
//!
//! Inference batches texts by token length: texts are sorted by length, each batch is padded only
//! to its own longest text, and results come back in input order. On a CPU, where the cost is
//! matmul work per token, the padding this saves is the main speed-up over padding to a fixed width.

use crate::bert::{BertConfig, BertInput, BertModel};
use crate::pooling::Pooling;
use crate::tokenize::{BertTokenizer, EncodedBatch, TokenizedText};
use crate::{ModelError, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

/// Texts per forward pass when the caller does not say.
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// Files a sentence-transformers folder needs besides the weights, copied on save.
const FOLDER_FILES: &[&str] = &[
    "config.json",
    "config_sentence_transformers.json",
    "modules.json",
    "sentence_bert_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "1_Pooling/config.json",
    "README.md",
];

/// Called after each batch with (texts done, texts in all).
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize);

/// One text's per-token output: ids (with [CLS]/[SEP]) and `[tokens, hidden]` float32 embeddings.
#[derive(Debug)]
pub struct TokenEmbeddings {
    pub ids: Vec<i64>,
    pub embeddings: Tensor,
}

#[derive(Debug)]
pub struct SentenceEncoder {
    vs: nn::VarStore,
    model: BertModel,
    tokenizer: BertTokenizer,
    pooling: Pooling,
    dir: PathBuf,
    kind: Kind,
    batch_size: usize,
}

impl SentenceEncoder {
    /// Loads `dir` on `device` with weights cast to `kind` (Float or BFloat16). The maximum
    /// length comes from `sentence_bert_config.json` (`max_seq_length`) when present, else from
    /// the tokenizer's `model_max_length` capped by `max_position_embeddings`.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        let (vs, model) = BertModel::from_pretrained(dir, device, kind)?;
        let max_length = default_max_length(dir, &model.config)?;
        let tokenizer = BertTokenizer::from_file(&dir.join("tokenizer.json"), max_length)?;
        let pooling = Pooling::from_sentence_transformers(dir)?.unwrap_or_default();
        Ok(Self {
            vs,
            model,
            tokenizer,
            pooling,
            dir: dir.to_path_buf(),
            kind,
            batch_size: DEFAULT_BATCH_SIZE,
        })
    }

    /// Truncation length in tokens, special tokens included; at most `max_position_embeddings`.
    pub fn set_max_length(&mut self, max_length: usize) -> Result<()> {
        let limit = self.model.config.max_position_embeddings as usize;
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

    pub fn set_pooling(&mut self, pooling: Pooling) {
        self.pooling = pooling;
    }

    pub fn max_length(&self) -> usize {
        self.tokenizer.max_length()
    }
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
    pub fn pooling(&self) -> &Pooling {
        &self.pooling
    }
    /// Width of a sentence embedding.
    pub fn dim(&self) -> i64 {
        self.model.config.hidden_size * self.pooling.modes.len() as i64
    }
    pub fn kind(&self) -> Kind {
        self.kind
    }
    pub fn device(&self) -> Device {
        self.vs.device()
    }
    pub fn model(&self) -> &BertModel {
        &self.model
    }
    /// For putting a PEFT adapter on the encoder ([`BertModel::set_adapter`]).
    pub fn model_mut(&mut self) -> &mut BertModel {
        &mut self.model
    }
    pub fn tokenizer(&self) -> &BertTokenizer {
        &self.tokenizer
    }
    /// The variables, under Hugging Face names, for an optimizer.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    /// Sentence embeddings, `[texts, dim]` float32 on the encoder's device, in input order.
    pub fn encode<S: AsRef<str>>(&self, texts: &[S]) -> Result<Tensor> {
        self.encode_with_progress(texts, None)
    }

    /// Sentence embeddings as plain vectors.
    pub fn encode_vecs<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>> {
        let embeddings = self.encode(texts)?;
        tensor_rows(&embeddings)
    }

    /// As [`Self::encode`], calling `progress` after each batch.
    pub fn encode_with_progress<S: AsRef<str>>(
        &self,
        texts: &[S],
        mut progress: Option<Progress>,
    ) -> Result<Tensor> {
        let tokenized = self.tokenizer.tokenize(texts)?;
        let order = length_order(&tokenized);
        let mut pooled_sorted = Vec::with_capacity(order.len().div_ceil(self.batch_size));
        let mut done = 0;
        tch::no_grad(|| -> Result<()> {
            for chunk in order.chunks(self.batch_size) {
                let rows: Vec<&TokenizedText> = chunk.iter().map(|&i| &tokenized[i]).collect();
                let batch = EncodedBatch::pad(&rows, self.tokenizer.pad_id(), self.device());
                pooled_sorted.push(self.forward_input_t(&batch.as_input(), false));
                done += chunk.len();
                if let Some(report) = progress.as_mut() {
                    report(done, texts.len());
                }
            }
            Ok(())
        })?;
        if pooled_sorted.is_empty() {
            return Ok(Tensor::zeros([0, self.dim()], (Kind::Float, self.device())));
        }
        let sorted = Tensor::cat(&pooled_sorted, 0);
        let mut restore = vec![0i64; order.len()];
        for (position, &original) in order.iter().enumerate() {
            restore[original] = position as i64;
        }
        let restore = Tensor::from_slice(&restore).to_device(self.device());
        Ok(sorted.index_select(0, &restore))
    }

    /// Per-token embeddings of the last layer (for late interaction and BERTScore), one entry
    /// per text, padding removed. Use [`Self::token_hidden_states`] for another layer.
    pub fn token_embeddings<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<TokenEmbeddings>> {
        self.token_hidden_states(texts, self.model.config.num_hidden_layers as usize)
    }

    /// Per-token hidden states of `layer` (0 = embedding output, `num_hidden_layers` = last).
    pub fn token_hidden_states<S: AsRef<str>>(
        &self,
        texts: &[S],
        layer: usize,
    ) -> Result<Vec<TokenEmbeddings>> {
        let layers = self.model.config.num_hidden_layers as usize;
        if layer > layers {
            return Err(ModelError::Invalid(format!(
                "layer {layer}: this model has layers 0..={layers}"
            )));
        }
        let tokenized = self.tokenizer.tokenize(texts)?;
        let order = length_order(&tokenized);
        let mut out: Vec<Option<TokenEmbeddings>> = (0..texts.len()).map(|_| None).collect();
        tch::no_grad(|| {
            for chunk in order.chunks(self.batch_size) {
                let rows: Vec<&TokenizedText> = chunk.iter().map(|&i| &tokenized[i]).collect();
                let batch = EncodedBatch::pad(&rows, self.tokenizer.pad_id(), self.device());
                let hidden = if layer == layers {
                    self.model.forward_t(&batch.as_input(), false)
                } else {
                    self.model
                        .hidden_states_t(&batch.as_input(), false)
                        .swap_remove(layer)
                };
                let hidden = hidden.to_kind(Kind::Float);
                // Prompt tuning's virtual tokens come first and belong to no input token.
                let first = self.model.virtual_tokens();
                for (row, &original) in chunk.iter().enumerate() {
                    let ids = tokenized[original].ids.clone();
                    let embeddings = hidden.get(row as i64).narrow(0, first, ids.len() as i64);
                    out[original] = Some(TokenEmbeddings { ids, embeddings });
                }
            }
        });
        Ok(out
            .into_iter()
            .map(|e| e.expect("every text encoded"))
            .collect())
    }

    /// Tokenizes and pads `texts` into one batch on the encoder's device, for training.
    pub fn tokenize_batch<S: AsRef<str>>(&self, texts: &[S]) -> Result<EncodedBatch> {
        self.tokenizer.encode_batch(texts, self.device())
    }

    /// Pooled embeddings of one batch with gradients kept (dropout on when `train`), `[batch, dim]` float32.
    pub fn forward_t(&self, batch: &EncodedBatch, train: bool) -> Tensor {
        self.forward_input_t(&batch.as_input(), train)
    }

    /// As [`Self::forward_t`] from raw tensors.
    ///
    /// Under prompt tuning, pooling runs over the virtual tokens too (the output mask has ones
    /// for them), as sentence-transformers pools `PeftModelForFeatureExtraction`'s output with
    /// its attention mask extended the same way: mean pooling averages them in, CLS pooling takes
    /// the first virtual token. An adapter exported for Python then embeds as it did here.
    pub fn forward_input_t(&self, input: &BertInput, train: bool) -> Tensor {
        let hidden = self.model.forward_t(input, train);
        self.pooling
            .pool(&hidden, &self.model.output_mask(input.attention_mask))
    }

    /// Saves the weights (float32, Hugging Face names) as `dir/model.safetensors` and copies the
    /// folder's configuration and tokenizer files, so that sentence-transformers and
    /// transformers load `dir` as they loaded the original.
    pub fn save_pretrained(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        crate::checkpoint::save_var_store(
            &self.vs,
            &dir.join("model.safetensors"),
            Some(Kind::Float),
        )?;
        if dir.canonicalize().ok() == self.dir.canonicalize().ok() {
            return Ok(());
        }
        for file in FOLDER_FILES {
            let source = self.dir.join(file);
            if source.is_file() {
                let bytes = std::fs::read(&source).map_err(|e| ModelError::io(&source, e))?;
                crate::checkpoint::atomic_write(&dir.join(file), &bytes)?;
            }
        }
        Ok(())
    }
}

/// Indices of `texts` from longest to shortest (ties keep input order), so each batch holds
/// texts of similar length and little padding.
fn length_order(texts: &[TokenizedText]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(texts[i].ids.len()));
    order
}

/// Rows of a 2-D tensor as vectors of f32.
pub fn tensor_rows(matrix: &Tensor) -> Result<Vec<Vec<f32>>> {
    let matrix = matrix
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous();
    let (rows, cols) = matrix.size2()?;
    let mut flat = vec![0f32; (rows * cols) as usize];
    matrix.f_copy_data(&mut flat, (rows * cols) as usize)?;
    Ok(flat
        .chunks(cols.max(1) as usize)
        .take(rows as usize)
        .map(<[f32]>::to_vec)
        .collect())
}

fn default_max_length(dir: &Path, config: &BertConfig) -> Result<usize> {
    let positions = config.max_position_embeddings as usize;
    let st_config = dir.join("sentence_bert_config.json");
    if st_config.is_file() {
        let text =
            std::fs::read_to_string(&st_config).map_err(|e| ModelError::io(&st_config, e))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::format(&st_config, format!("invalid JSON: {e}")))?;
        if let Some(n) = value.get("max_seq_length").and_then(Value::as_u64) {
            return Ok((n as usize).min(positions));
        }
    }
    let tokenizer_config = dir.join("tokenizer_config.json");
    if tokenizer_config.is_file() {
        let text = std::fs::read_to_string(&tokenizer_config)
            .map_err(|e| ModelError::io(&tokenizer_config, e))?;
        if let Ok(value) = serde_json::from_str::<Value>(&text) {
            if let Some(n) = value.get("model_max_length").and_then(Value::as_u64) {
                return Ok((n as usize).min(positions));
            }
        }
    }
    Ok(positions)
}
