//! ColBERT (Khattab & Zaharia, 2020; ColBERTv2, Santhanam et al., 2022): late interaction over
//! per-token embeddings.
//!
//! - Encoding: BERT's last hidden states, a linear projection to `dim` (128, no bias), L2 norm.
//! - Markers: `[Q]`/`[D]` are BERT's unused tokens `[unused0]`/`[unused1]`, put right after [CLS]
//!   (ColBERT writes them over the "." of a ". " prefix; the sequence is the same).
//! - Query augmentation: queries are padded with [MASK] to exactly `query_length` tokens and every
//!   one of those outputs takes part in scoring; the [MASK]s attend to the query, and are attended to
//!   only with `attend_to_mask_tokens` (ColBERTv2's default is off).
//! - Documents: truncated at the model's `max_length`; padding and (with `skip_punctuation`)
//!   punctuation embeddings are masked out of scoring.
//! - MaxSim: score(q, d) = Σ_i max_j q_i · d_j over the query tokens i and unmasked document tokens j.
//! - Retrieval: exact MaxSim over the corpus, or candidate generation from an HNSW graph over every
//!   document token (each query token's nearest tokens, mapped to their documents) followed by
//!   exact MaxSim reranking of the union.

use crate::evaluate::{evaluate_hits, Evaluation, RUN_DEPTH};
use crate::gradcache::{self, Side};
use crate::index::{DenseIndex, Hit, HnswConfig};
use crate::losses::Similarity;
use crate::mining::{passage_text, PairScorer};
use crate::model::ModelConfig;
use crate::train::{LossConfig, TripletBatch};
use crate::{Result, RetrieverError};
use ragtune_data::{Doc, Qrel, Query, Triplet};
use ragtune_models::encoder::SentenceEncoder;
use ragtune_models::pooling::l2_normalize;
use ragtune_models::tokenize::{EncodedBatch, TokenizedText};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use tch::{nn, nn::Module, Device, Kind, Tensor};

/// The projection's weights in a saved ColBERT folder (next to the BERT's `model.safetensors`).
pub const PROJECTION_FILE: &str = "colbert_linear.safetensors";
/// The [`ColbertConfig`] a saved folder was trained with, for the record.
pub const CONFIG_FILE: &str = "colbert_config.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ColbertConfig {
    /// Width of the token embeddings after the projection.
    pub dim: i64,
    /// Every query becomes exactly this many tokens ([MASK]-padded or truncated).
    pub query_length: usize,
    pub query_marker: String,
    pub doc_marker: String,
    /// Let the query's tokens attend to its [MASK] padding too (ColBERTv2's `attend_to_mask_tokens`).
    pub attend_to_mask_tokens: bool,
    /// Mask the embeddings of punctuation tokens out of documents (ColBERT's `mask_punctuation`).
    pub skip_punctuation: bool,
    /// Candidate generation: nearest document tokens per query token.
    pub candidate_tokens: usize,
    /// The HNSW graph over document tokens.
    pub hnsw: HnswConfig,
    /// Seed of the projection's initialization when the base folder has none.
    pub init_seed: i64,
}

impl Default for ColbertConfig {
    fn default() -> Self {
        Self {
            dim: 128,
            query_length: 32,
            query_marker: "[unused0]".into(),
            doc_marker: "[unused1]".into(),
            attend_to_mask_tokens: false,
            skip_punctuation: true,
            candidate_tokens: 32,
            hnsw: HnswConfig::default(),
            init_seed: 42,
        }
    }
}

/// Python's `string.punctuation`, ColBERT's skiplist source.
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

pub struct Colbert {
    encoder: SentenceEncoder,
    projection_store: nn::VarStore,
    projection: nn::Linear,
    /// `bert.*` and `linear.weight` (colbert-ai's names), sharing storage: the trainer's view.
    joint: nn::VarStore,
    config: ColbertConfig,
    model_config: ModelConfig,
    query_marker: i64,
    doc_marker: i64,
    mask_id: i64,
    pad_id: i64,
    skiplist: HashSet<i64>,
}

impl std::fmt::Debug for Colbert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Colbert")
            .field("config", &self.config)
            .field("base", &self.model_config.base)
            .finish()
    }
}

/// Which side a batch holds; ColBERT embeds the two differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Texts {
    Queries,
    Documents,
}

/// Token embeddings of documents, `[docs, longest, dim]` float32 on the CPU, with the mask of the
/// tokens that score (`[docs, longest]` bool: not padding, not punctuation).
#[derive(Debug)]
pub struct DocEmbeddings {
    pub embeddings: Tensor,
    pub mask: Tensor,
}

impl Colbert {
    /// Loads the BERT of `model.base` and the projection saved next to it, or a fresh projection
    /// (seeded by `config.init_seed`) when the folder has none.
    pub fn load(model: &ModelConfig, config: &ColbertConfig, device: Device) -> Result<Self> {
        if config.query_length < 4 || config.dim < 1 {
            return Err(RetrieverError::Invalid(format!(
                "colbert: query_length must be at least 4 and dim at least 1 (got {}, {})",
                config.query_length, config.dim
            )));
        }
        if model.peft.is_some() {
            return Err(RetrieverError::Invalid(
                "colbert: [model.peft] is not supported for ColBERT yet; remove it to train every \
                 weight, or use a bi-encoder architecture for adapters"
                    .into(),
            ));
        }
        let mut encoder = SentenceEncoder::load(&model.base, device, Kind::Float)?;
        encoder.set_max_length(model.max_length.max(config.query_length))?;
        encoder.set_batch_size(model.encode_batch_size.max(1))?;
        let tokenizer = encoder.tokenizer();
        let token = |text: &str| -> Result<i64> {
            tokenizer
                .inner()
                .token_to_id(text)
                .map(i64::from)
                .ok_or_else(|| RetrieverError::Config {
                    path: model.base.join("tokenizer.json"),
                    message: format!("the vocabulary has no `{text}` token, which ColBERT needs"),
                })
        };
        let (query_marker, doc_marker, mask_id) = (
            token(&config.query_marker)?,
            token(&config.doc_marker)?,
            token("[MASK]")?,
        );
        let pad_id = tokenizer.pad_id();
        let mut skiplist = HashSet::new();
        if config.skip_punctuation {
            for symbol in PUNCTUATION.chars() {
                let encoding = tokenizer
                    .inner()
                    .encode(symbol.to_string(), false)
                    .map_err(|e| RetrieverError::Invalid(format!("tokenizing `{symbol}`: {e}")))?;
                if let Some(&id) = encoding.get_ids().first() {
                    skiplist.insert(i64::from(id));
                }
            }
        }

        let hidden = encoder.model().hidden_size();
        let mut projection_store = nn::VarStore::new(device);
        tch::manual_seed(config.init_seed);
        let projection = nn::linear(
            projection_store.root() / "linear",
            hidden,
            config.dim,
            nn::LinearConfig {
                bias: false,
                ..Default::default()
            },
        );
        let saved = model.base.join(PROJECTION_FILE);
        if saved.is_file() {
            projection_store
                .load(&saved)
                .map_err(|e| RetrieverError::Config {
                    path: saved.clone(),
                    message: format!("loading the ColBERT projection: {e}"),
                })?;
        }
        let joint = nn::VarStore::new(device);
        share_variables(&joint, "bert", encoder.var_store());
        share_variables(&joint, "", &projection_store);
        Ok(Self {
            encoder,
            projection_store,
            projection,
            joint,
            config: config.clone(),
            model_config: model.clone(),
            query_marker,
            doc_marker,
            mask_id,
            pad_id,
            skiplist,
        })
    }

    /// Every trainable variable (BERT and projection), for the trainer.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.joint
    }

    pub fn config(&self) -> &ColbertConfig {
        &self.config
    }

    pub fn device(&self) -> Device {
        self.encoder.device()
    }

    /// `[CLS] marker body… [SEP]` of each text, at most `length` tokens.
    fn with_marker(&self, texts: &[&str], marker: i64, length: usize) -> Result<Vec<Vec<i64>>> {
        let tokenized = self.encoder.tokenizer().tokenize(texts)?;
        Ok(tokenized
            .into_iter()
            .map(|t| {
                let ids = t.ids;
                let body = if ids.len() >= 2 {
                    &ids[1..ids.len() - 1]
                } else {
                    &ids[..0]
                };
                let keep = body.len().min(length.saturating_sub(3));
                let mut out = Vec::with_capacity(keep + 3);
                out.push(ids.first().copied().unwrap_or(self.pad_id));
                out.push(marker);
                out.extend_from_slice(&body[..keep]);
                out.push(ids.last().copied().unwrap_or(self.pad_id));
                out
            })
            .collect())
    }

    /// Token ids of queries as the model sees them: marker, then [MASK] up to `query_length`.
    pub fn query_ids(&self, texts: &[&str]) -> Result<Vec<Vec<i64>>> {
        let length = self.config.query_length;
        let mut rows = self.with_marker(texts, self.query_marker, length)?;
        for row in &mut rows {
            row.resize(length, self.mask_id);
        }
        Ok(rows)
    }

    /// Token ids of documents: marker, truncated at the model's `max_length`.
    pub fn doc_ids(&self, texts: &[&str]) -> Result<Vec<Vec<i64>>> {
        self.with_marker(texts, self.doc_marker, self.model_config.max_length)
    }

    /// The query batch: every row `query_length` long; the [MASK] padding is attended to only with
    /// `attend_to_mask_tokens`.
    fn query_batch(&self, rows: &[Vec<i64>]) -> EncodedBatch {
        let refs: Vec<TokenizedText> = rows
            .iter()
            .map(|ids| TokenizedText {
                type_ids: vec![0; ids.len()],
                ids: ids.clone(),
            })
            .collect();
        let refs: Vec<&TokenizedText> = refs.iter().collect();
        let mut batch = EncodedBatch::pad(&refs, self.mask_id, self.device());
        if !self.config.attend_to_mask_tokens {
            // Every row ends in [SEP] before its padding, so the padding starts after the last non-[MASK].
            let lengths: Vec<i64> = rows
                .iter()
                .map(|ids| {
                    let real = ids.iter().rposition(|&id| id != self.mask_id);
                    real.map_or(0, |p| p as i64 + 1)
                })
                .collect();
            let positions = Tensor::arange(batch.input_ids.size()[1], (Kind::Int64, self.device()));
            let lengths = Tensor::from_slice(&lengths)
                .to_device(self.device())
                .unsqueeze(1);
            batch.attention_mask = positions
                .unsqueeze(0)
                .lt_tensor(&lengths)
                .to_kind(Kind::Int64);
        }
        batch
    }

    fn doc_batch(&self, rows: &[&Vec<i64>]) -> (EncodedBatch, Tensor) {
        let texts: Vec<TokenizedText> = rows
            .iter()
            .map(|ids| TokenizedText {
                type_ids: vec![0; ids.len()],
                ids: (*ids).clone(),
            })
            .collect();
        let refs: Vec<&TokenizedText> = texts.iter().collect();
        let batch = EncodedBatch::pad(&refs, self.pad_id, self.device());
        let longest = batch.input_ids.size()[1] as usize;
        let mut mask = vec![false; rows.len() * longest];
        for (r, ids) in rows.iter().enumerate() {
            for (j, id) in ids.iter().enumerate() {
                mask[r * longest + j] = !self.skiplist.contains(id);
            }
        }
        let mask = Tensor::from_slice(&mask)
            .view([rows.len() as i64, longest as i64])
            .to_device(self.device());
        (batch, mask)
    }

    /// Projected, L2-normalized token embeddings of a padded batch, `[rows, len, dim]` float32.
    /// Queries are embedded at every position: their [MASK] padding scores in MaxSim even where no
    /// token attends to it.
    fn embed(&self, batch: &EncodedBatch, texts: Texts, train: bool) -> Tensor {
        let every_position;
        let mut input = batch.as_input();
        if texts == Texts::Queries {
            every_position = batch.attention_mask.ones_like();
            input.output_mask = Some(&every_position);
        }
        let hidden = self.encoder.model().forward_t(&input, train);
        let projected = self.projection.forward(&hidden.to_kind(Kind::Float));
        l2_normalize(&projected)
    }

    /// Query token embeddings with gradients, `[queries, query_length, dim]`.
    pub fn forward_queries(&self, texts: &[&str], train: bool) -> Result<Tensor> {
        let rows = self.query_ids(texts)?;
        Ok(self.embed(&self.query_batch(&rows), Texts::Queries, train))
    }

    /// Document token embeddings with gradients and their scoring mask.
    pub fn forward_docs(&self, texts: &[&str], train: bool) -> Result<(Tensor, Tensor)> {
        let rows = self.doc_ids(texts)?;
        let refs: Vec<&Vec<i64>> = rows.iter().collect();
        let (batch, mask) = self.doc_batch(&refs);
        Ok((self.embed(&batch, Texts::Documents, train), mask))
    }

    /// No-grad query embeddings in batches, `[queries, query_length, dim]` on the CPU.
    pub fn encode_queries(&self, texts: &[&str]) -> Result<Tensor> {
        let batch_size = self.encoder.batch_size();
        tch::no_grad(|| {
            let mut parts = Vec::new();
            for chunk in texts.chunks(batch_size) {
                parts.push(self.forward_queries(chunk, false)?.to_device(Device::Cpu));
            }
            if parts.is_empty() {
                let shape = [0, self.config.query_length as i64, self.config.dim];
                return Ok(Tensor::zeros(shape, (Kind::Float, Device::Cpu)));
            }
            Ok(Tensor::cat(&parts, 0))
        })
    }

    /// No-grad document embeddings, length-bucketed (sorted by length, each batch padded to its
    /// own longest), returned in input order and padded to the longest document.
    pub fn encode_docs(&self, texts: &[&str]) -> Result<DocEmbeddings> {
        let rows = self.doc_ids(texts)?;
        let longest = rows.iter().map(Vec::len).max().unwrap_or(0) as i64;
        let n = rows.len() as i64;
        let embeddings = Tensor::zeros([n, longest, self.config.dim], (Kind::Float, Device::Cpu));
        let mask = Tensor::zeros([n, longest], (Kind::Bool, Device::Cpu));
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(rows[i].len()));
        tch::no_grad(|| {
            for chunk in order.chunks(self.encoder.batch_size()) {
                let refs: Vec<&Vec<i64>> = chunk.iter().map(|&i| &rows[i]).collect();
                let (batch, batch_mask) = self.doc_batch(&refs);
                let (batch_mask, attention) = (
                    batch_mask.to_device(Device::Cpu),
                    batch
                        .attention_mask
                        .to_device(Device::Cpu)
                        .to_kind(Kind::Bool),
                );
                let embedded = self
                    .embed(&batch, Texts::Documents, false)
                    .to_device(Device::Cpu);
                let width = embedded.size()[1];
                for (r, &i) in chunk.iter().enumerate() {
                    let r = r as i64;
                    embeddings
                        .get(i as i64)
                        .narrow(0, 0, width)
                        .copy_(&embedded.get(r));
                    mask.get(i as i64)
                        .narrow(0, 0, width)
                        .copy_(&batch_mask.get(r).logical_and(&attention.get(r)));
                }
            }
        });
        Ok(DocEmbeddings { embeddings, mask })
    }

    /// Writes a folder [`Colbert::load`] reads back: the BERT (`model.safetensors`, its config and
    /// tokenizer), the projection ([`PROJECTION_FILE`]) and the ColBERT config for the record.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.encoder.save_pretrained(dir)?;
        ragtune_models::checkpoint::save_var_store(
            &self.projection_store,
            &dir.join(PROJECTION_FILE),
            Some(Kind::Float),
        )?;
        let json = serde_json::to_string_pretty(&self.config).expect("config serializes");
        ragtune_models::checkpoint::atomic_write(&dir.join(CONFIG_FILE), json.as_bytes())?;
        Ok(())
    }

    /// Exact MaxSim of `queries [q, Lq, dim]` against every document, best `k` first per query,
    /// over blocks of documents so the token-score tensor stays small.
    pub fn search_exact(&self, queries: &Tensor, docs: &DocEmbeddings, k: usize) -> Vec<Vec<Hit>> {
        let scores = maxsim_blocked(queries, &docs.embeddings, &docs.mask, 64);
        top_hits(&scores, k)
    }

    /// HNSW candidate generation over every document token, then exact MaxSim reranking of the
    /// union of the candidates' documents.
    pub fn search_hnsw(
        &self,
        queries: &Tensor,
        docs: &DocEmbeddings,
        tokens: &TokenIndex,
        k: usize,
    ) -> Result<Vec<Vec<Hit>>> {
        let mut out = Vec::with_capacity(queries.size()[0] as usize);
        for q in 0..queries.size()[0] {
            let query = queries.get(q);
            let hits = tokens
                .index
                .search_hnsw(&query, self.config.candidate_tokens)?;
            let candidates: BTreeSet<i64> = hits
                .iter()
                .flatten()
                .map(|h| tokens.doc_of[h.index] as i64)
                .collect();
            out.push(rerank(
                &query,
                docs,
                &candidates.into_iter().collect::<Vec<_>>(),
                k,
            ));
        }
        Ok(out)
    }

    /// An HNSW graph over every scoring token of `docs`.
    pub fn token_index(&self, docs: &DocEmbeddings, config: HnswConfig) -> Result<TokenIndex> {
        let (flat, doc_of) = flatten_tokens(docs)?;
        // The vectors are unit-norm, so cosine is their inner product.
        let index = DenseIndex::hnsw(&flat, Similarity::Cosine, config)?;
        Ok(TokenIndex { index, doc_of })
    }

    /// The loss of one batch of triplets (InfoNCE over in-batch and hard negatives, or
    /// distillation) on MaxSim scores; with GradCache when `config.gradcache_chunk` is set.
    pub fn batch_loss(
        &self,
        batch: &[&Triplet],
        config: &LossConfig,
        step: u64,
        train: bool,
    ) -> Result<Tensor> {
        let layout = TripletBatch::new(batch, config.kind.is_distillation(), self.device())?;
        if config.gradcache_chunk == 0 || !train {
            let q = self.forward_queries(&layout.queries, train)?;
            let (d, mask) = self.forward_docs(&layout.passages, train)?;
            return layout.loss(&maxsim(&q, &d, &mask), config);
        }
        // GradCache needs every chunk of a side to have the same shape: pad all documents of the
        // batch to one length up front, then encode row ranges of that one padded batch.
        let query_batch = self.query_batch(&self.query_ids(&layout.queries)?);
        let doc_rows = self.doc_ids(&layout.passages)?;
        let doc_refs: Vec<&Vec<i64>> = doc_rows.iter().collect();
        let (doc_batch, doc_mask) = self.doc_batch(&doc_refs);
        let rows_of = |batch: &EncodedBatch, range: std::ops::Range<usize>| {
            let (start, len) = (range.start as i64, range.len() as i64);
            EncodedBatch {
                input_ids: batch.input_ids.narrow(0, start, len),
                attention_mask: batch.attention_mask.narrow(0, start, len),
                token_type_ids: batch.token_type_ids.narrow(0, start, len),
            }
        };
        let q_ranges = gradcache::chunk_ranges(layout.queries.len(), config.gradcache_chunk);
        let d_ranges = gradcache::chunk_ranges(layout.passages.len(), config.gradcache_chunk);
        let sides = [
            Side::new(q_ranges.len(), |c| {
                Ok(self.embed(
                    &rows_of(&query_batch, q_ranges[c].clone()),
                    Texts::Queries,
                    true,
                ))
            }),
            Side::new(d_ranges.len(), |c| {
                Ok(self.embed(
                    &rows_of(&doc_batch, d_ranges[c].clone()),
                    Texts::Documents,
                    true,
                ))
            }),
        ];
        let value = gradcache::backward(&sides, step as i64, |reps| {
            layout.loss(&maxsim(&reps[0], &reps[1], &doc_mask), config)
        })?;
        Ok(Tensor::from(value as f32).set_requires_grad(true))
    }
}

impl PairScorer for Colbert {
    fn score_pairs(&self, queries: &[&str], passages: &[&str]) -> Result<Vec<f32>> {
        if queries.len() != passages.len() {
            return Err(RetrieverError::Invalid(format!(
                "scoring pairs: {} queries but {} passages",
                queries.len(),
                passages.len()
            )));
        }
        let q = self.encode_queries(queries)?;
        let d = self.encode_docs(passages)?;
        let scores = maxsim_pairs(&q, &d.embeddings, &d.mask);
        Ok(Vec::<f32>::try_from(scores)?)
    }
}

/// An HNSW graph over document tokens and the document of each token.
pub struct TokenIndex {
    pub index: DenseIndex,
    pub doc_of: Vec<usize>,
}

/// The scoring tokens of every document as one `[tokens, dim]` matrix, and each token's document.
pub fn flatten_tokens(docs: &DocEmbeddings) -> Result<(Tensor, Vec<usize>)> {
    let mask = docs.mask.to_device(Device::Cpu);
    let per_doc: Vec<i64> =
        Vec::try_from(mask.sum_dim_intlist([1i64].as_slice(), false, Kind::Int64))?;
    let doc_of = per_doc
        .iter()
        .enumerate()
        .flat_map(|(d, &n)| std::iter::repeat_n(d, n as usize))
        .collect();
    let flat = docs.embeddings.to_device(Device::Cpu).index(&[Some(mask)]);
    Ok((flat, doc_of))
}

/// MaxSim scores `[queries, docs]` of `q [Q, Lq, dim]` against `d [D, Ld, dim]`, where `d_mask
/// [D, Ld]` marks the document tokens that may score: each query token takes its best unmasked
/// document token, and the query's score is the sum over its tokens.
pub fn maxsim(q: &Tensor, d: &Tensor, d_mask: &Tensor) -> Tensor {
    let (nq, lq, dim) = q.size3().expect("queries are [queries, tokens, dim]");
    let (nd, ld, _) = d.size3().expect("documents are [docs, tokens, dim]");
    let q = q.to_kind(Kind::Float).reshape([nq * lq, dim]);
    let d = d.to_kind(Kind::Float).reshape([nd * ld, dim]);
    let token_scores = q.matmul(&d.tr()).view([nq, lq, nd, ld]);
    let blocked = d_mask
        .to_device(token_scores.device())
        .logical_not()
        .view([1, 1, nd, ld]);
    // A large finite floor rather than -inf: a document with no scoring token stays finite.
    token_scores
        .masked_fill(&blocked, -1e4)
        .amax([3i64].as_slice(), false)
        .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
}

/// MaxSim of `q[i]` against `d[i]` only, `[n]`.
pub fn maxsim_pairs(q: &Tensor, d: &Tensor, d_mask: &Tensor) -> Tensor {
    let token_scores = q
        .to_kind(Kind::Float)
        .bmm(&d.to_kind(Kind::Float).transpose(1, 2));
    let blocked = d_mask
        .to_device(token_scores.device())
        .logical_not()
        .unsqueeze(1);
    token_scores
        .masked_fill(&blocked, -1e4)
        .amax([2i64].as_slice(), false)
        .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
}

/// [`maxsim`] over blocks of `block` documents (the token-score tensor of all pairs at once can be
/// large), `[queries, docs]`.
pub fn maxsim_blocked(q: &Tensor, d: &Tensor, d_mask: &Tensor, block: i64) -> Tensor {
    let nd = d.size()[0];
    let mut parts = Vec::new();
    let mut start = 0;
    while start < nd {
        let len = block.min(nd - start);
        parts.push(tch::no_grad(|| {
            maxsim(q, &d.narrow(0, start, len), &d_mask.narrow(0, start, len))
        }));
        start += len;
    }
    if parts.is_empty() {
        return Tensor::zeros([q.size()[0], 0], (Kind::Float, q.device()));
    }
    Tensor::cat(&parts, 1)
}

/// Exact MaxSim of one query `[Lq, dim]` against the `candidates` (document rows), best `k` first.
pub fn rerank(query: &Tensor, docs: &DocEmbeddings, candidates: &[i64], k: usize) -> Vec<Hit> {
    if candidates.is_empty() {
        return Vec::new();
    }
    let rows = Tensor::from_slice(candidates);
    let scores = maxsim(
        &query.unsqueeze(0),
        &docs.embeddings.index_select(0, &rows),
        &docs.mask.index_select(0, &rows),
    );
    let scores: Vec<f32> = Vec::try_from(scores.get(0)).expect("float scores");
    let mut hits: Vec<Hit> = candidates
        .iter()
        .zip(scores)
        .map(|(&index, score)| Hit {
            index: index as usize,
            score,
        })
        .collect();
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
    hits.truncate(k);
    hits
}

fn top_hits(scores: &Tensor, k: usize) -> Vec<Vec<Hit>> {
    let (rows, cols) = scores.size2().expect("a score matrix");
    let k = (k as i64).min(cols);
    if k == 0 {
        return vec![Vec::new(); rows as usize];
    }
    let (values, indices) = scores.topk(k, 1, true, true);
    let values: Vec<f32> = Vec::try_from(values.flatten(0, -1)).expect("float scores");
    let indices: Vec<i64> = Vec::try_from(indices.flatten(0, -1)).expect("int indices");
    (0..rows as usize)
        .map(|r| {
            (0..k as usize)
                .map(|j| Hit {
                    index: indices[r * k as usize + j] as usize,
                    score: values[r * k as usize + j],
                })
                .collect()
        })
        .collect()
}

/// Full-corpus evaluation of a ColBERT: exact MaxSim always; with `hnsw`, also HNSW candidate
/// generation and MaxSim reranking, with its recall against exact search.
pub fn evaluate(
    model: &Colbert,
    docs: &[Doc],
    queries: &[Query],
    qrels: &[Qrel],
    hnsw: Option<HnswConfig>,
) -> Result<Evaluation> {
    let judged: HashSet<&str> = qrels.iter().map(|q| q.query_id.as_str()).collect();
    let queries: Vec<Query> = queries
        .iter()
        .filter(|q| judged.contains(q.query_id.as_str()))
        .cloned()
        .collect();
    let texts: Vec<String> = docs.iter().map(passage_text).collect();
    let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let doc_embeddings = model.encode_docs(&text_refs)?;
    let query_texts: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();
    let q = model.encode_queries(&query_texts)?;
    let exact = model.search_exact(&q, &doc_embeddings, RUN_DEPTH);
    let approximate = match hnsw {
        Some(config) => {
            let tokens = model.token_index(&doc_embeddings, config)?;
            Some(model.search_hnsw(&q, &doc_embeddings, &tokens, RUN_DEPTH)?)
        }
        None => None,
    };
    evaluate_hits(&queries, docs, qrels, &exact, approximate.as_deref())
}

/// Registers every variable of `from` in `into` under `prefix.` (same storage).
fn share_variables(into: &nn::VarStore, prefix: &str, from: &nn::VarStore) {
    let mut named: Vec<(String, Tensor)> = from.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, tensor) in named {
        // tch refuses dots in a variable name, so the dotted name becomes a path of sub-paths.
        let mut parts: Vec<&str> = name.split('.').collect();
        let last = parts.pop().expect("a variable has a name");
        let root = if prefix.is_empty() {
            into.root()
        } else {
            into.root() / prefix
        };
        let path = parts.iter().fold(root, |path, part| path / *part);
        let trainable = tensor.requires_grad();
        let _registered = path.add(last, tensor.shallow_clone(), trainable);
    }
}
