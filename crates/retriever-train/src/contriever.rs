//! Contriever's unsupervised objective (Izacard et al., 2021, "Unsupervised Dense Information
//! Retrieval with Contrastive Learning"): independent cropping.
//!
//! Each raw document gives two views, each a random span of its tokens whose length is a uniform
//! ratio of the document's (0.1–0.5 in the paper), cropped independently so that the two may
//! overlap or not, and then thinned by random token deletion (p = 0.1 in the paper's best run).
//! A batch of documents yields two batches of views; view i of the first batch must pick view i of
//! the second among all of them (in-batch negatives, InfoNCE at temperature 0.05), with mean
//! pooling over one shared tower. No query is ever used, so any corpus table can train it.

use crate::gradcache::{self, Side};
use crate::losses;
use crate::model::BiEncoder;
use crate::train::{LossConfig, LossKind};
use crate::{Result, RetrieverError};
use ragtune_data::Doc;
use ragtune_models::tokenize::TokenizedText;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::Tensor;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CropConfig {
    /// Each crop keeps a uniform ratio in `[ratio_min, ratio_max]` of the document's tokens.
    pub ratio_min: f64,
    pub ratio_max: f64,
    /// Probability of deleting each token of a crop afterwards (0 turns deletion off).
    pub deletion: f64,
    /// Documents with fewer tokens than this (without [CLS]/[SEP]) are not used: two crops of a
    /// three-word text are nearly the same text and teach little.
    pub min_tokens: usize,
}

impl Default for CropConfig {
    fn default() -> Self {
        Self {
            ratio_min: 0.1,
            ratio_max: 0.5,
            deletion: 0.1,
            min_tokens: 8,
        }
    }
}

impl CropConfig {
    pub fn validate(&self) -> Result<()> {
        let ok = 0.0 < self.ratio_min
            && self.ratio_min <= self.ratio_max
            && self.ratio_max <= 1.0
            && (0.0..1.0).contains(&self.deletion);
        if !ok {
            return Err(RetrieverError::Invalid(format!(
                "objective.crop: need 0 < ratio_min <= ratio_max <= 1 and 0 <= deletion < 1 \
                 (got ratio {}..{}, deletion {})",
                self.ratio_min, self.ratio_max, self.deletion
            )));
        }
        Ok(())
    }
}

/// One crop of `body` (token ids without special tokens): a span of `floor(n · ratio)` tokens
/// (at least one) at a uniform start, then each token deleted with probability `deletion`
/// (keeping at least one). Contriever's `randomcrop` followed by `deleteword`.
pub fn random_crop(body: &[i64], config: &CropConfig, rng: &mut impl Rng) -> Vec<i64> {
    let n = body.len();
    if n == 0 {
        return Vec::new();
    }
    let ratio = if config.ratio_max > config.ratio_min {
        rng.gen_range(config.ratio_min..=config.ratio_max)
    } else {
        config.ratio_min
    };
    let len = ((n as f64 * ratio).floor() as usize).clamp(1, n);
    let start = rng.gen_range(0..=n - len);
    let span = &body[start..start + len];
    if config.deletion <= 0.0 {
        return span.to_vec();
    }
    let kept: Vec<i64> = span
        .iter()
        .copied()
        .filter(|_| rng.gen::<f64>() >= config.deletion)
        .collect();
    if kept.is_empty() {
        // Deletion emptied the span: keep one of its tokens rather than encode a bare [CLS][SEP].
        vec![span[rng.gen_range(0..span.len())]]
    } else {
        kept
    }
}

/// The two independent views of one tokenized document (`[CLS] … [SEP]`), each wrapped in the
/// document's own first and last special tokens again.
pub fn independent_crops(
    text: &TokenizedText,
    config: &CropConfig,
    rng: &mut impl Rng,
) -> (TokenizedText, TokenizedText) {
    let ids = &text.ids;
    let (cls, sep, body) = match ids.len() {
        0 | 1 => (ids.first().copied(), None, &ids[..0]),
        n => (Some(ids[0]), Some(ids[n - 1]), &ids[1..n - 1]),
    };
    let mut view = || {
        let mut out = Vec::with_capacity(body.len() + 2);
        out.extend(cls);
        out.extend(random_crop(body, config, rng));
        out.extend(sep);
        TokenizedText {
            type_ids: vec![0; out.len()],
            ids: out,
        }
    };
    let first = view();
    let second = view();
    (first, second)
}

/// The raw corpus the objective trains on: a corpus Parquet table, or a dataset folder's
/// `corpus.parquet`.
pub fn read_corpus(path: &Path) -> Result<Vec<Doc>> {
    let file = if path.is_dir() {
        path.join("corpus.parquet")
    } else {
        path.to_path_buf()
    };
    Ok(ragtune_data::read_table::<Doc>(&file)?)
}

/// Tokenizes the documents with the passage tower (truncated at its maximum length) and keeps
/// those with at least `min_tokens` tokens besides [CLS]/[SEP].
pub fn tokenize_corpus(
    model: &BiEncoder,
    docs: &[Doc],
    config: &CropConfig,
) -> Result<Vec<TokenizedText>> {
    let texts: Vec<String> = docs.iter().map(crate::mining::passage_text).collect();
    let tokenized = model.passage_tower().tokenizer().tokenize(&texts)?;
    let kept: Vec<TokenizedText> = tokenized
        .into_iter()
        .filter(|t| t.ids.len() >= config.min_tokens + 2)
        .collect();
    if kept.len() < 2 {
        return Err(RetrieverError::Invalid(format!(
            "Contriever cropping needs at least two documents of {} tokens or more; the corpus \
             has {} of {} documents",
            config.min_tokens,
            kept.len(),
            docs.len()
        )));
    }
    Ok(kept)
}

/// InfoNCE (or its symmetric variant) of one batch of documents: two independent crops of each,
/// the first views as queries against all second views. `rng` draws the crops (pass the trainer's
/// checkpointed RNG, so that a resumed run crops as the uninterrupted one would).
pub fn crop_batch_loss(
    model: &BiEncoder,
    docs: &[&TokenizedText],
    crop: &CropConfig,
    loss: &LossConfig,
    rng: &mut impl Rng,
    step: u64,
    train: bool,
) -> Result<Tensor> {
    let (first, second): (Vec<TokenizedText>, Vec<TokenizedText>) =
        docs.iter().map(|d| independent_crops(d, crop, rng)).unzip();
    let similarity = crate::model::Embedder::similarity(model);
    let loss_of = |reps: &[Tensor]| -> Result<Tensor> {
        let scores = similarity.matrix(&reps[0], &reps[1]);
        match loss.kind {
            LossKind::InfoNce => losses::info_nce(&scores, loss.temperature),
            LossKind::SymmetricInfoNce => losses::symmetric_info_nce(&scores, loss.temperature),
            other => Err(RetrieverError::Invalid(format!(
                "loss.kind {other:?} needs teacher scores; Contriever cropping trains with \
                 info_nce or symmetric_info_nce"
            ))),
        }
    };
    if loss.gradcache_chunk == 0 || !train {
        return loss_of(&[
            model.forward_tokenized(&first, train),
            model.forward_tokenized(&second, train),
        ]);
    }
    let ranges = gradcache::chunk_ranges(docs.len(), loss.gradcache_chunk);
    let sides = [
        Side::new(ranges.len(), |c| {
            Ok(model.forward_tokenized(&first[ranges[c].clone()], true))
        }),
        Side::new(ranges.len(), |c| {
            Ok(model.forward_tokenized(&second[ranges[c].clone()], true))
        }),
    ];
    let value = gradcache::backward(&sides, step as i64, loss_of)?;
    Ok(Tensor::from(value as f32).set_requires_grad(true))
}
