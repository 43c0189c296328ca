//! WordPiece tokenization for the encoders, through the `tokenizers` crate.
//!
//! A `tokenizer.json` may carry padding and truncation settings baked in (all-MiniLM-L6-v2's pads
//! and truncates to 128, while sentence-transformers truncates at 256). Those are never inherited:
//! padding is switched off (batches are padded by whoever builds the tensors, to their own longest
//! row), and truncation is always the explicit maximum given here.

use crate::{ModelError, Result};
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// One tokenized text: ids with special tokens, and their segment ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedText {
    pub ids: Vec<i64>,
    pub type_ids: Vec<i64>,
}

/// A padded batch ready for [`crate::bert::BertModel`]: `[batch, longest]` int64 tensors.
#[derive(Debug)]
pub struct EncodedBatch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub token_type_ids: Tensor,
}

impl EncodedBatch {
    pub fn as_input(&self) -> crate::bert::BertInput<'_> {
        crate::bert::BertInput {
            input_ids: &self.input_ids,
            attention_mask: &self.attention_mask,
            token_type_ids: Some(&self.token_type_ids),
            output_mask: None,
        }
    }

    /// Pads `texts` to the longest of them (right padding with `pad_id`) and moves them to `device`.
    pub fn pad(texts: &[&TokenizedText], pad_id: i64, device: Device) -> Self {
        let longest = texts.iter().map(|t| t.ids.len()).max().unwrap_or(0);
        let rows = texts.len();
        let mut ids = vec![pad_id; rows * longest];
        let mut mask = vec![0i64; rows * longest];
        let mut types = vec![0i64; rows * longest];
        for (row, text) in texts.iter().enumerate() {
            let start = row * longest;
            let n = text.ids.len();
            ids[start..start + n].copy_from_slice(&text.ids);
            types[start..start + n].copy_from_slice(&text.type_ids);
            mask[start..start + n].fill(1);
        }
        let shape = [rows as i64, longest as i64];
        let tensor = |v: &[i64]| Tensor::from_slice(v).view(shape).to_device(device);
        Self {
            input_ids: tensor(&ids),
            attention_mask: tensor(&mask),
            token_type_ids: tensor(&types),
        }
    }
}

/// A `tokenizers` tokenizer with explicit truncation at `max_length` tokens (special tokens
/// included) and no padding.
#[derive(Clone)]
pub struct BertTokenizer {
    inner: Tokenizer,
    path: PathBuf,
    max_length: usize,
    pad_id: i64,
}

impl std::fmt::Debug for BertTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertTokenizer")
            .field("path", &self.path)
            .field("max_length", &self.max_length)
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

impl BertTokenizer {
    /// Loads `tokenizer.json`, overriding whatever padding and truncation it carries.
    pub fn from_file(path: &Path, max_length: usize) -> Result<Self> {
        let mut inner = Tokenizer::from_file(path)
            .map_err(|e| ModelError::format(path, format!("not a tokenizer.json: {e}")))?;
        let pad_id = inner
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| inner.token_to_id("[PAD]"))
            .unwrap_or(0) as i64;
        inner.with_padding(None);
        let mut tokenizer = Self {
            inner,
            path: path.to_path_buf(),
            max_length: 0,
            pad_id,
        };
        tokenizer.set_max_length(max_length)?;
        Ok(tokenizer)
    }

    /// Sets the truncation length (in tokens, special tokens included).
    pub fn set_max_length(&mut self, max_length: usize) -> Result<()> {
        if max_length < 2 {
            return Err(ModelError::Invalid(format!(
                "max length {max_length}: it must leave room for [CLS] and [SEP]"
            )));
        }
        self.inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| ModelError::format(&self.path, format!("truncation: {e}")))?;
        self.inner.with_padding(None);
        self.max_length = max_length;
        Ok(())
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    pub fn pad_id(&self) -> i64 {
        self.pad_id
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Tokenizes each text on its own (no padding), with [CLS]/[SEP] added and truncation applied.
    pub fn tokenize<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<TokenizedText>> {
        let inputs: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        let encodings = self
            .inner
            .encode_batch_fast(inputs, true)
            .map_err(|e| ModelError::format(&self.path, format!("tokenizing: {e}")))?;
        Ok(encodings
            .into_iter()
            .map(|e| TokenizedText {
                ids: e.get_ids().iter().map(|&i| i as i64).collect(),
                type_ids: e.get_type_ids().iter().map(|&i| i as i64).collect(),
            })
            .collect())
    }

    /// Tokenizes and pads `texts` into one batch on `device`.
    pub fn encode_batch<S: AsRef<str>>(&self, texts: &[S], device: Device) -> Result<EncodedBatch> {
        let tokenized = self.tokenize(texts)?;
        let refs: Vec<&TokenizedText> = tokenized.iter().collect();
        Ok(EncodedBatch::pad(&refs, self.pad_id, device))
    }

    /// Token strings of ids (for inspecting per-token embeddings).
    pub fn id_to_token(&self, id: i64) -> Option<String> {
        u32::try_from(id)
            .ok()
            .and_then(|id| self.inner.id_to_token(id))
    }
}
