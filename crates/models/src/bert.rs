//! BERT encoders (Devlin et al., 2019) on a `tch::nn::VarStore`, with an optional masked-language-model head.
//!
//! Variables carry Hugging Face's names (`embeddings.word_embeddings.weight`,
//! `encoder.layer.0.attention.self.query.weight`, ...), so a fine-tuned model saves back as a
//! checkpoint that transformers and sentence-transformers load unchanged. Loading accepts the
//! `bert.` prefix or its absence, and the legacy `LayerNorm.gamma`/`.beta` names.
//!
//! A [`BertModel`] can carry one PEFT adapter ([`crate::peft::EncoderPeft`]: LoRA, IA3,
//! bottleneck adapters, prompt or prefix tuning). LoRA, IA3 and bottleneck adapters hook into its
//! linear layers and sublayer outputs through [`EncoderAdapter`]; prompt tuning prepends learned
//! input embeddings and prefix tuning learned attention keys and values. Without an adapter the
//! model computes exactly what it did before.

use crate::checkpoint::{load_safetensors, refuse_pickle};
use crate::dropout::dropout;
use crate::peft::{EncoderPeft, Sublayer};
use crate::{ModelError, Result};
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HiddenAct {
    Gelu,
    #[serde(alias = "gelu_pytorch_tanh")]
    GeluNew,
    Relu,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    pub hidden_act: HiddenAct,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    pub max_position_embeddings: i64,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: i64,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: i64,
    #[serde(default = "default_position_embedding_type")]
    pub position_embedding_type: String,
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
}

fn default_dropout() -> f64 {
    0.1
}
fn default_type_vocab_size() -> i64 {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_position_embedding_type() -> String {
    "absolute".into()
}
fn default_true() -> bool {
    true
}

impl BertConfig {
    /// Reads a transformers `config.json`, refusing settings this implementation does not cover.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let config: BertConfig = serde_json::from_str(&text)
            .map_err(|e| ModelError::format(path, format!("not a BERT config: {e}")))?;
        if config.position_embedding_type != "absolute" {
            return Err(ModelError::format(
                path,
                format!(
                    "position_embedding_type `{}` is not supported (only `absolute`)",
                    config.position_embedding_type
                ),
            ));
        }
        if config.hidden_size % config.num_attention_heads != 0 {
            return Err(ModelError::format(
                path,
                format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    config.hidden_size, config.num_attention_heads
                ),
            ));
        }
        Ok(config)
    }
}

impl HiddenAct {
    fn apply(self, xs: &Tensor) -> Tensor {
        match self {
            HiddenAct::Gelu => xs.gelu("none"),
            HiddenAct::GeluNew => xs.gelu("tanh"),
            HiddenAct::Relu => xs.relu(),
        }
    }
}

/// What a parameter-efficient method needs to change a BERT without touching its weights.
pub trait EncoderAdapter: std::fmt::Debug {
    /// The output of linear layer `module` (`attention.self.query`, ..., relative to
    /// `encoder.layer.{layer}`; `layer` is `None` for `pooler.dense`) for input `xs`, in place of
    /// `base.forward(xs)`; `None` keeps the base layer.
    fn project(
        &self,
        layer: Option<usize>,
        module: &str,
        xs: &Tensor,
        base: &nn::Linear,
        train: bool,
    ) -> Option<Tensor>;

    /// A replacement for a sublayer's output `xs` (after its projection and dropout, before the
    /// residual add and layer norm): where bottleneck adapters sit. `add_and_norm(h)` is what
    /// the layer computes next from it, `LayerNorm(h + residual)`.
    fn after_sublayer(
        &self,
        _layer: usize,
        _sublayer: Sublayer,
        _xs: &Tensor,
        _add_and_norm: &dyn Fn(&Tensor) -> Tensor,
        _train: bool,
    ) -> Option<Tensor> {
        None
    }
}

/// The adapter and the index of the layer being run.
type Hook<'a> = Option<(&'a dyn EncoderAdapter, usize)>;

fn project(base: &nn::Linear, xs: &Tensor, hook: Hook, module: &str, train: bool) -> Tensor {
    hook.and_then(|(adapter, layer)| adapter.project(Some(layer), module, xs, base, train))
        .unwrap_or_else(|| base.forward(xs))
}

/// `LayerNorm(xs + residual)`, with the adapter's sublayer hook on `xs` first.
fn add_and_norm(
    xs: Tensor,
    residual: &Tensor,
    layer_norm: &nn::LayerNorm,
    hook: Hook,
    sublayer: Sublayer,
    train: bool,
) -> Tensor {
    let add_norm = |h: &Tensor| layer_norm.forward(&(h + residual));
    let xs = hook
        .and_then(|(adapter, layer)| adapter.after_sublayer(layer, sublayer, &xs, &add_norm, train))
        .unwrap_or(xs);
    add_norm(&xs)
}

fn layer_norm(p: nn::Path, config: &BertConfig) -> nn::LayerNorm {
    let ln_config = nn::LayerNormConfig {
        eps: config.layer_norm_eps,
        ..Default::default()
    };
    nn::layer_norm(p, vec![config.hidden_size], ln_config)
}

#[derive(Debug)]
pub struct BertEmbeddings {
    pub word_embeddings: nn::Embedding,
    position_embeddings: nn::Embedding,
    token_type_embeddings: nn::Embedding,
    layer_norm: nn::LayerNorm,
    dropout: f64,
}

impl BertEmbeddings {
    pub fn new(p: nn::Path, config: &BertConfig) -> Self {
        let emb = |name: &str, n: i64| {
            nn::embedding(&p / name, n, config.hidden_size, Default::default())
        };
        Self {
            word_embeddings: emb("word_embeddings", config.vocab_size),
            position_embeddings: emb("position_embeddings", config.max_position_embeddings),
            token_type_embeddings: emb("token_type_embeddings", config.type_vocab_size),
            layer_norm: layer_norm(&p / "LayerNorm", config),
            dropout: config.hidden_dropout_prob,
        }
    }

    pub fn forward_t(&self, input_ids: &Tensor, token_type_ids: &Tensor, train: bool) -> Tensor {
        self.forward_embeds_t(
            &self.word_embeddings.forward(input_ids),
            token_type_ids,
            0,
            train,
        )
    }

    /// As [`forward_t`](Self::forward_t) from word embeddings `[batch, seq, hidden]` already
    /// looked up (or learned, as prompt tuning's), at positions `first_position..`.
    pub fn forward_embeds_t(
        &self,
        inputs_embeds: &Tensor,
        token_type_ids: &Tensor,
        first_position: i64,
        train: bool,
    ) -> Tensor {
        let seq_len = inputs_embeds.size()[1];
        let position_ids = Tensor::arange_start(
            first_position,
            first_position + seq_len,
            (Kind::Int64, inputs_embeds.device()),
        )
        .unsqueeze(0);
        let embeddings = inputs_embeds
            + self.token_type_embeddings.forward(token_type_ids)
            + self.position_embeddings.forward(&position_ids);
        dropout(&self.layer_norm.forward(&embeddings), self.dropout, train)
    }
}

#[derive(Debug)]
pub struct BertSelfAttention {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    num_heads: i64,
    head_dim: i64,
    dropout: f64,
}

impl BertSelfAttention {
    pub fn new(p: nn::Path, config: &BertConfig) -> Self {
        let h = config.hidden_size;
        Self {
            query: nn::linear(&p / "query", h, h, Default::default()),
            key: nn::linear(&p / "key", h, h, Default::default()),
            value: nn::linear(&p / "value", h, h, Default::default()),
            num_heads: config.num_attention_heads,
            head_dim: h / config.num_attention_heads,
            dropout: config.attention_probs_dropout_prob,
        }
    }

    /// `hidden` holds the real tokens' rows `[tokens, hidden]`; attention alone runs on padded
    /// sequences, grouped by length into `blocks`. `prefix` (prefix tuning) holds learned keys
    /// and values `[batch, heads, virtual, head_dim]` put before the tokens' own.
    pub fn forward_t(
        &self,
        hidden: &Tensor,
        blocks: &AttentionBlocks,
        train: bool,
        hook: Hook,
        prefix: Option<&(Tensor, Tensor)>,
    ) -> Tensor {
        let split = |linear: &nn::Linear, module: &str| {
            blocks.split(&project(linear, hidden, hook, module, train))
        };
        let queries = split(&self.query, "attention.self.query");
        let keys = split(&self.key, "attention.self.key");
        let values = split(&self.value, "attention.self.value");
        let mut attended = Vec::with_capacity(blocks.blocks.len());
        for (i, block) in blocks.blocks.iter().enumerate() {
            let heads = |rows: &Tensor| {
                rows.view([block.count, block.len, self.num_heads, self.head_dim])
                    .transpose(1, 2)
            };
            let (q, k, v) = (heads(&queries[i]), heads(&keys[i]), heads(&values[i]));
            let (k, v) = match prefix {
                Some((pk, pv)) => (
                    Tensor::cat(&[block.members_of(pk), k], 2),
                    Tensor::cat(&[block.members_of(pv), v], 2),
                ),
                None => (k, v),
            };
            let out = attend(&q, &k, &v, &block.additive_mask, self.dropout, train);
            attended.push(out.transpose(1, 2).reshape([block.count * block.len, -1]));
        }
        blocks.merge(&attended)
    }
}

/// Scaled dot-product attention of `[batch, heads, seq, head_dim]` queries, keys and values, with
/// dropout on the attention probabilities in training. Without dropout this is torch's fused
/// kernel. With it, torch falls back to unfused math that also checks every row for being fully
/// masked and draws its mask serially; written out here, the probabilities go through the
/// shim's dropout instead. The softmax runs in fp32 for reduced-precision inputs.
fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    additive_mask: &Tensor,
    dropout_p: f64,
    train: bool,
) -> Tensor {
    if !train || dropout_p <= 0.0 {
        return Tensor::scaled_dot_product_attention(
            q,
            k,
            v,
            Some(additive_mask),
            0.0,
            false,
            None,
            false,
        );
    }
    let head_dim = q.size().last().copied().unwrap_or(1);
    let scores = q.matmul(&k.transpose(-1, -2)) * (1.0 / (head_dim as f64).sqrt()) + additive_mask;
    let probs = scores.softmax(-1, Kind::Float).to_kind(v.kind());
    dropout(&probs, dropout_p, train).matmul(v)
}

/// The projection and residual layer norm after self-attention (`attention.output`).
#[derive(Debug)]
pub struct BertSelfOutput {
    dense: nn::Linear,
    layer_norm: nn::LayerNorm,
    dropout: f64,
}

impl BertSelfOutput {
    pub fn new(p: nn::Path, config: &BertConfig) -> Self {
        let h = config.hidden_size;
        Self {
            dense: nn::linear(&p / "dense", h, h, Default::default()),
            layer_norm: layer_norm(&p / "LayerNorm", config),
            dropout: config.hidden_dropout_prob,
        }
    }

    pub fn forward_t(&self, hidden: &Tensor, residual: &Tensor, train: bool, hook: Hook) -> Tensor {
        let projected = dropout(
            &project(&self.dense, hidden, hook, "attention.output.dense", train),
            self.dropout,
            train,
        );
        add_and_norm(
            projected,
            residual,
            &self.layer_norm,
            hook,
            Sublayer::Attention,
            train,
        )
    }
}

#[derive(Debug)]
pub struct BertAttention {
    self_attention: BertSelfAttention,
    output: BertSelfOutput,
}

impl BertAttention {
    pub fn new(p: nn::Path, config: &BertConfig) -> Self {
        Self {
            self_attention: BertSelfAttention::new(&p / "self", config),
            output: BertSelfOutput::new(&p / "output", config),
        }
    }

    pub fn forward_t(
        &self,
        hidden: &Tensor,
        blocks: &AttentionBlocks,
        train: bool,
        hook: Hook,
        prefix: Option<&(Tensor, Tensor)>,
    ) -> Tensor {
        let attended = self
            .self_attention
            .forward_t(hidden, blocks, train, hook, prefix);
        self.output.forward_t(&attended, hidden, train, hook)
    }
}

/// The feed-forward expansion (`intermediate`).
#[derive(Debug)]
pub struct BertIntermediate {
    dense: nn::Linear,
    act: HiddenAct,
}

impl BertIntermediate {
    pub fn new(p: nn::Path, config: &BertConfig) -> Self {
        Self {
            dense: nn::linear(
                &p / "dense",
                config.hidden_size,
                config.intermediate_size,
                Default::default(),
            ),
            act: config.hidden_act,
        }
    }

    pub fn forward(&self, hidden: &Tensor, hook: Hook, train: bool) -> Tensor {
        self.act.apply(&project(
            &self.dense,
            hidden,
            hook,
            "intermediate.dense",
            train,
        ))
    }
}

/// The feed-forward contraction and residual layer norm (`output`).
#[derive(Debug)]
pub struct BertOutput {
    dense: nn::Linear,
    layer_norm: nn::LayerNorm,
    dropout: f64,
}

impl BertOutput {
    pub fn new(p: nn::Path, config: &BertConfig) -> Self {
        Self {
            dense: nn::linear(
                &p / "dense",
                config.intermediate_size,
                config.hidden_size,
                Default::default(),
            ),
            layer_norm: layer_norm(&p / "LayerNorm", config),
            dropout: config.hidden_dropout_prob,
        }
    }

    pub fn forward_t(&self, hidden: &Tensor, residual: &Tensor, train: bool, hook: Hook) -> Tensor {
        let projected = dropout(
            &project(&self.dense, hidden, hook, "output.dense", train),
            self.dropout,
            train,
        );
        add_and_norm(
            projected,
            residual,
            &self.layer_norm,
            hook,
            Sublayer::FeedForward,
            train,
        )
    }
}

#[derive(Debug)]
pub struct BertLayer {
    attention: BertAttention,
    intermediate: BertIntermediate,
    output: BertOutput,
}

impl BertLayer {
    pub fn new(p: nn::Path, config: &BertConfig) -> Self {
        Self {
            attention: BertAttention::new(&p / "attention", config),
            intermediate: BertIntermediate::new(&p / "intermediate", config),
            output: BertOutput::new(&p / "output", config),
        }
    }

    /// `hidden` holds the real tokens' rows, `[tokens, hidden]`.
    pub fn forward_t(
        &self,
        hidden: &Tensor,
        blocks: &AttentionBlocks,
        train: bool,
        hook: Hook,
        prefix: Option<&(Tensor, Tensor)>,
    ) -> Tensor {
        let attended = self
            .attention
            .forward_t(hidden, blocks, train, hook, prefix);
        let expanded = self.intermediate.forward(&attended, hook, train);
        self.output.forward_t(&expanded, &attended, train, hook)
    }
}

#[derive(Debug)]
pub struct BertEncoder {
    layers: Vec<BertLayer>,
}

impl BertEncoder {
    pub fn new(p: nn::Path, config: &BertConfig) -> Self {
        let layers_path = &p / "layer";
        let layers = (0..config.num_hidden_layers)
            .map(|i| BertLayer::new(&layers_path / i, config))
            .collect();
        Self { layers }
    }
}

/// `tanh(dense(h[CLS]))`, kept only so that checkpoints which carry it save back whole.
#[derive(Debug)]
pub struct BertPooler {
    dense: nn::Linear,
}

impl BertPooler {
    pub fn new(p: nn::Path, config: &BertConfig) -> Self {
        let h = config.hidden_size;
        Self {
            dense: nn::linear(&p / "dense", h, h, Default::default()),
        }
    }

    pub fn forward(&self, last_hidden_state: &Tensor) -> Tensor {
        self.forward_hooked(last_hidden_state, None, false)
    }

    fn forward_hooked(
        &self,
        last_hidden_state: &Tensor,
        adapter: Option<&dyn EncoderAdapter>,
        train: bool,
    ) -> Tensor {
        let cls = last_hidden_state.select(1, 0);
        adapter
            .and_then(|a| {
                a.project(
                    None,
                    crate::peft::targets::BERT_POOLER,
                    &cls,
                    &self.dense,
                    train,
                )
            })
            .unwrap_or_else(|| self.dense.forward(&cls))
            .tanh()
    }
}

/// The real tokens of a padded `[batch, seq]` batch. The encoder runs everything that works
/// token by token (projections, feed-forward, layer norms, adapters) on the real tokens' rows
/// only, `[tokens, hidden]`, and lays them out on padded sequences just for attention (see
/// [`AttentionBlocks`]): padding is 40% of a typical batch of passages, and none of it is
/// computed.
#[derive(Debug)]
pub struct TokenGrid {
    batch: i64,
    seq: i64,
    /// Flat indices of the real tokens; `None` when the batch has no padding.
    real: Option<Tensor>,
    /// The same indices on the host (all of them when there is no padding).
    real_flat: Vec<i64>,
    /// Per sequence, one past its last real token.
    extents: Vec<i64>,
}

impl TokenGrid {
    pub fn new(attention_mask: &Tensor) -> Self {
        let (batch, seq) = attention_mask
            .size2()
            .expect("attention_mask is [batch, seq]");
        // One read of the mask on the host gives the real tokens and each sequence's extent.
        let mask = Vec::<i64>::try_from(
            &attention_mask
                .ne(0)
                .to_kind(Kind::Int64)
                .reshape([-1])
                .to_device(Device::Cpu),
        )
        .expect("the mask reads as int64");
        let real_flat: Vec<i64> = (0..batch * seq)
            .filter(|&i| mask[i as usize] != 0)
            .collect();
        let mut extents = vec![0i64; batch as usize];
        for &i in &real_flat {
            extents[(i / seq) as usize] = i % seq + 1;
        }
        let padded = real_flat.len() as i64 != batch * seq;
        TokenGrid {
            batch,
            seq,
            real: padded.then(|| Tensor::from_slice(&real_flat).to_device(attention_mask.device())),
            real_flat,
            extents,
        }
    }

    /// `[batch, seq, width]` to the real tokens' rows `[tokens, width]`.
    pub fn to_rows(&self, grid: &Tensor) -> Tensor {
        let width = grid.size().last().copied().unwrap_or(0);
        let flat = grid.reshape([self.batch * self.seq, width]);
        match &self.real {
            Some(real) => flat.index_select(0, real),
            None => flat,
        }
    }

    /// Rows `[tokens, width]` back to `[batch, seq, width]`, zero at padding.
    pub fn to_grid(&self, rows: &Tensor) -> Tensor {
        let width = rows.size().last().copied().unwrap_or(0);
        let flat = match &self.real {
            Some(real) => {
                Tensor::zeros([self.batch * self.seq, width], (rows.kind(), rows.device()))
                    .index_copy(0, real, rows)
            }
            None => rows.shallow_clone(),
        };
        flat.reshape([self.batch, self.seq, width])
    }

    /// The layout attention runs on, for keys masked by `additive_mask` (`[batch, 1, 1,
    /// virtual + seq]`, `virtual` being prefix tuning's learned keys ahead of the tokens').
    pub fn attention_blocks(&self, additive_mask: &Tensor, virtual_keys: i64) -> AttentionBlocks {
        let device = additive_mask.device();
        let groups = group_by_extent(&self.extents, ATTENTION_BLOCK_COST);
        if groups.len() == 1 && groups[0].1 == self.seq {
            return AttentionBlocks {
                blocks: vec![AttentionBlock {
                    members: None,
                    count: self.batch,
                    len: self.seq,
                    additive_mask: additive_mask.shallow_clone(),
                }],
                destination: self.real.as_ref().map(Tensor::shallow_clone),
                total: self.batch * self.seq,
            };
        }
        // Every real token's row goes to (its sequence's slot in its block, its position).
        let mut slot_start = vec![0i64; self.batch as usize];
        let mut block_len = vec![0i64; self.batch as usize];
        let mut blocks = Vec::with_capacity(groups.len());
        let mut offset = 0;
        for (members, len) in &groups {
            for (slot, &b) in members.iter().enumerate() {
                slot_start[b as usize] = offset + slot as i64 * len;
                block_len[b as usize] = *len;
            }
            let count = members.len() as i64;
            let index = Tensor::from_slice(members).to_device(device);
            blocks.push(AttentionBlock {
                additive_mask: additive_mask.index_select(0, &index).narrow(
                    3,
                    0,
                    virtual_keys + len,
                ),
                members: Some(index),
                count,
                len: *len,
            });
            offset += count * len;
        }
        // The rows are the real tokens in row-major [batch, seq] order.
        let destination: Vec<i64> = self
            .real_flat
            .iter()
            .map(|&flat| {
                let (b, position) = (flat / self.seq, flat % self.seq);
                debug_assert!(position < block_len[b as usize]);
                slot_start[b as usize] + position
            })
            .collect();
        AttentionBlocks {
            blocks,
            destination: Some(Tensor::from_slice(&destination).to_device(device)),
            total: offset,
        }
    }
}

/// What an extra attention block costs, in attention-matrix entries per head (a block's own cost
/// being its sequences times its length squared): about what the dozen or so extra small ops of a
/// block take on a CPU, next to attention's cost per entry.
const ATTENTION_BLOCK_COST: i64 = 2_000;

/// Sequences grouped into blocks of similar extent, each padded to its longest: the grouping of
/// the sequences sorted by extent into contiguous runs that minimizes `sum(count * len^2) +
/// block_cost * blocks` (dynamic programming over the sorted order). Returns each block's members
/// (batch indices) and length; sequences with no tokens count as length 1.
fn group_by_extent(extents: &[i64], block_cost: i64) -> Vec<(Vec<i64>, i64)> {
    let mut order: Vec<usize> = (0..extents.len()).collect();
    order.sort_by_key(|&i| (extents[i], i));
    let len = |i: usize| extents[order[i]].max(1);
    let n = order.len();
    // best[j]: the cheapest grouping of the first j sorted sequences; start[j]: its last block's start.
    let mut best = vec![0i64; n + 1];
    let mut start = vec![0usize; n + 1];
    for j in 1..=n {
        let longest = len(j - 1);
        let (cost, from) = (0..j)
            .map(|i| (best[i] + (j - i) as i64 * longest * longest + block_cost, i))
            .min()
            .expect("j >= 1");
        best[j] = cost;
        start[j] = from;
    }
    let mut groups = Vec::new();
    let mut j = n;
    while j > 0 {
        let i = start[j];
        let members = order[i..j].iter().map(|&b| b as i64).collect();
        groups.push((members, len(j - 1)));
        j = i;
    }
    groups.reverse();
    groups
}

/// Attention's layout of a batch: its sequences grouped by length into blocks, each padded only to
/// its own longest sequence, so that padding costs little even when lengths vary widely. Attention
/// is per sequence, so the grouping changes nothing but the cost (and the order of float sums).
#[derive(Debug)]
pub struct AttentionBlocks {
    blocks: Vec<AttentionBlock>,
    /// For each real token's row, its flat position in the blocks laid end to end; `None` when
    /// the one block is the whole unpadded batch.
    destination: Option<Tensor>,
    total: i64,
}

#[derive(Debug)]
struct AttentionBlock {
    /// Batch indices of the block's sequences; `None` for the whole batch in order.
    members: Option<Tensor>,
    count: i64,
    len: i64,
    /// `[count, 1, 1, virtual + len]`.
    additive_mask: Tensor,
}

impl AttentionBlock {
    /// The rows of a `[batch, ...]` tensor that belong to this block's sequences.
    fn members_of(&self, xs: &Tensor) -> Tensor {
        match &self.members {
            Some(index) => xs.index_select(0, index),
            None => xs.shallow_clone(),
        }
    }
}

impl AttentionBlocks {
    /// Each block's number of sequences and padded length.
    pub fn shapes(&self) -> Vec<(i64, i64)> {
        self.blocks.iter().map(|b| (b.count, b.len)).collect()
    }

    /// Rows `[tokens, width]` laid out as each block's `[count * len, width]`, zero at padding.
    fn split(&self, rows: &Tensor) -> Vec<Tensor> {
        let width = rows.size().last().copied().unwrap_or(0);
        let flat = match &self.destination {
            Some(destination) => Tensor::zeros([self.total, width], (rows.kind(), rows.device()))
                .index_copy(0, destination, rows),
            None => rows.shallow_clone(),
        };
        let sizes: Vec<i64> = self.blocks.iter().map(|b| b.count * b.len).collect();
        flat.split_with_sizes(sizes.as_slice(), 0)
    }

    /// The inverse of [`split`](Self::split): each block's `[count * len, width]` back to rows.
    fn merge(&self, blocks: &[Tensor]) -> Tensor {
        let flat = match blocks {
            [one] => one.shallow_clone(),
            _ => Tensor::cat(blocks, 0),
        };
        match &self.destination {
            Some(destination) => flat.index_select(0, destination),
            None => flat,
        }
    }
}

#[derive(Debug)]
pub struct BertModel {
    pub embeddings: BertEmbeddings,
    pub encoder: BertEncoder,
    pub pooler: Option<BertPooler>,
    pub config: BertConfig,
    adapter: Option<EncoderPeft>,
}

/// Inputs of one padded batch. `attention_mask` is 1 for real tokens and 0 for padding;
/// `token_type_ids` defaults to all zeros, and prompt or prefix tuning ignore it (segment 0
/// everywhere), as Python PEFT drops it for them.
#[derive(Debug)]
pub struct BertInput<'a> {
    pub input_ids: &'a Tensor,
    pub attention_mask: &'a Tensor,
    pub token_type_ids: Option<&'a Tensor>,
    /// The positions whose outputs are wanted, 1 or 0 (default: `attention_mask`). Only these
    /// are computed, and the output is zero elsewhere; ColBERT's queries want outputs at [MASK]
    /// padding that no token attends to.
    pub output_mask: Option<&'a Tensor>,
}

impl BertModel {
    /// Builds the model under `p` (the var store root for a bare encoder, `root / "bert"` inside heads).
    pub fn new(p: nn::Path, config: &BertConfig, with_pooler: bool) -> Self {
        Self {
            embeddings: BertEmbeddings::new(&p / "embeddings", config),
            encoder: BertEncoder::new(&p / "encoder", config),
            pooler: with_pooler.then(|| BertPooler::new(&p / "pooler", config)),
            config: config.clone(),
            adapter: None,
        }
    }

    /// Puts `adapter` on the model (`None` runs the plain model again) and returns the one it had.
    pub fn set_adapter(&mut self, adapter: Option<EncoderPeft>) -> Option<EncoderPeft> {
        std::mem::replace(&mut self.adapter, adapter)
    }

    pub fn adapter(&self) -> Option<&EncoderPeft> {
        self.adapter.as_ref()
    }

    /// Every linear layer by its Hugging Face module name (`encoder.layer.0.attention.self.query`,
    /// ..., `pooler.dense` when the model has a pooler): what adapters can wrap.
    pub fn linear_modules(&self) -> Vec<(String, &nn::Linear)> {
        let mut out = vec![];
        for (i, layer) in self.encoder.layers.iter().enumerate() {
            let attention = &layer.attention;
            for (module, linear) in [
                ("attention.self.query", &attention.self_attention.query),
                ("attention.self.key", &attention.self_attention.key),
                ("attention.self.value", &attention.self_attention.value),
                ("attention.output.dense", &attention.output.dense),
                ("intermediate.dense", &layer.intermediate.dense),
                ("output.dense", &layer.output.dense),
            ] {
                out.push((crate::peft::targets::bert_path(Some(i), module), linear));
            }
        }
        if let Some(pooler) = &self.pooler {
            out.push((crate::peft::targets::BERT_POOLER.to_string(), &pooler.dense));
        }
        out
    }

    /// transformers' `pooler_output`, `tanh(dense(h[CLS]))` (with the adapter, if it wraps the
    /// pooler); `None` for a model without a pooler.
    pub fn pooler_output_t(&self, last_hidden_state: &Tensor, train: bool) -> Option<Tensor> {
        let adapter = self.adapter.as_ref().map(|a| a as &dyn EncoderAdapter);
        self.pooler
            .as_ref()
            .map(|p| p.forward_hooked(last_hidden_state, adapter, train))
    }

    /// Loads `dir` (config.json + model.safetensors) into a fresh var store on `device`, cast to `kind`.
    /// Heads in the checkpoint (`cls.*`) are skipped; a pooler is kept when the checkpoint has one.
    pub fn from_pretrained(dir: &Path, device: Device, kind: Kind) -> Result<(nn::VarStore, Self)> {
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let (weights_path, tensors) = read_weights(dir)?;
        let with_pooler = tensors.keys().any(|k| k.contains("pooler."));
        let mut vs = nn::VarStore::new(device);
        let model = BertModel::new(vs.root(), &config, with_pooler);
        load_into(&mut vs, &weights_path, tensors, Prefix::None, &["cls."])?;
        cast(&mut vs, kind)?;
        Ok((vs, model))
    }

    fn additive_mask(&self, attention_mask: &Tensor, kind: Kind) -> Tensor {
        // A large finite negative rather than -inf, so that a row with no visible key stays finite.
        let blocked: Tensor = (1.0 - attention_mask.to_kind(Kind::Float)) * -1e9_f64;
        blocked.unsqueeze(1).unsqueeze(1).to_kind(kind)
    }

    /// How many leading positions of the output are prompt tuning's virtual tokens rather than
    /// input tokens (0 without a prompt-tuning adapter).
    pub fn virtual_tokens(&self) -> i64 {
        match &self.adapter {
            Some(EncoderPeft::Prompt(a)) => a.config.num_virtual_tokens,
            _ => 0,
        }
    }

    /// The mask of the output's positions for input `attention_mask` (`[batch, seq]`): with
    /// prompt tuning, ones for the virtual tokens first, as Python PEFT extends it. Pool and
    /// select over this mask, never over the input's, when the output may carry virtual tokens.
    pub fn output_mask(&self, attention_mask: &Tensor) -> Tensor {
        with_leading_ones(attention_mask, self.virtual_tokens())
    }

    /// The embedding output and what attention needs with it. Prompt and prefix tuning follow
    /// Python PEFT's `PeftModelForFeatureExtraction`, which drops `token_type_ids` (the model
    /// then uses segment 0 everywhere); prompt tuning puts its virtual tokens at positions
    /// `0..virtual` ahead of the text, while prefix tuning starts the text at position
    /// `virtual`, as transformers does after a cache of that length.
    fn embed(&self, input: &BertInput, train: bool) -> Embedded {
        let (batch, seq) = input.input_ids.size2().expect("input_ids is [batch, seq]");
        let words = self.embeddings.word_embeddings.forward(input.input_ids);
        let check_positions = |n: i64| {
            assert!(
                n + seq <= self.config.max_position_embeddings,
                "{n} virtual tokens + {seq} tokens exceed the {} positions of this BERT; shorten the inputs (max_length) or use fewer virtual tokens",
                self.config.max_position_embeddings
            )
        };
        match &self.adapter {
            Some(EncoderPeft::Prompt(a)) => {
                let n = a.config.num_virtual_tokens;
                check_positions(n);
                let prompt = a
                    .embeddings()
                    .to_kind(words.kind())
                    .unsqueeze(0)
                    .expand([batch, n, self.config.hidden_size], false);
                let embeds = Tensor::cat(&[prompt, words], 1);
                let segments = Tensor::zeros([batch, n + seq], (Kind::Int64, embeds.device()));
                let embedded = self
                    .embeddings
                    .forward_embeds_t(&embeds, &segments, 0, train);
                // The virtual tokens are real tokens to the encoder: they run through every
                // per-token layer, not only through attention.
                let mask = with_leading_ones(input.attention_mask, n);
                let grid = match input.output_mask {
                    Some(wanted) => TokenGrid::new(&with_leading_ones(wanted, n)),
                    None => TokenGrid::new(&mask),
                };
                Embedded {
                    output: embedded,
                    keys_mask: mask,
                    grid,
                    prefix: None,
                }
            }
            Some(EncoderPeft::Prefix(a)) => {
                let n = a.config.num_virtual_tokens;
                check_positions(n);
                let segments = input.input_ids.zeros_like();
                let embedded = self
                    .embeddings
                    .forward_embeds_t(&words, &segments, n, train);
                let keys_mask = with_leading_ones(input.attention_mask, n);
                let grid = TokenGrid::new(input.output_mask.unwrap_or(input.attention_mask));
                let prefix = a.key_values(batch, embedded.kind());
                Embedded {
                    output: embedded,
                    keys_mask,
                    grid,
                    prefix: Some(prefix),
                }
            }
            _ => {
                let zeros;
                let token_type_ids = match input.token_type_ids {
                    Some(t) => t,
                    None => {
                        zeros = input.input_ids.zeros_like();
                        &zeros
                    }
                };
                let embedded = self
                    .embeddings
                    .forward_embeds_t(&words, token_type_ids, 0, train);
                let grid = TokenGrid::new(input.output_mask.unwrap_or(input.attention_mask));
                Embedded {
                    output: embedded,
                    keys_mask: input.attention_mask.shallow_clone(),
                    grid,
                    prefix: None,
                }
            }
        }
    }

    /// The last hidden state; with `states`, also every hidden state (embedding output first).
    fn run(&self, input: &BertInput, train: bool, mut states: Option<&mut Vec<Tensor>>) -> Tensor {
        let Embedded {
            output: embedded,
            keys_mask,
            grid,
            prefix,
        } = self.embed(input, train);
        let mask = self.additive_mask(&keys_mask, embedded.kind());
        let virtual_keys = prefix
            .as_ref()
            .and_then(|p| p.first())
            .map_or(0, |(k, _)| k.size()[2]);
        let blocks = grid.attention_blocks(&mask, virtual_keys);
        let mut hidden = grid.to_rows(&embedded);
        if let Some(states) = states.as_mut() {
            states.push(embedded);
        }
        // Prompt and prefix tuning act through the embeddings and keys only: the layers run as
        // without an adapter.
        let adapter = match &self.adapter {
            Some(EncoderPeft::Prompt(_) | EncoderPeft::Prefix(_)) | None => None,
            Some(a) => Some(a as &dyn EncoderAdapter),
        };
        for (i, layer) in self.encoder.layers.iter().enumerate() {
            hidden = layer.forward_t(
                &hidden,
                &blocks,
                train,
                adapter.map(|a| (a, i)),
                prefix.as_ref().map(|p| &p[i]),
            );
            if let Some(states) = states.as_mut() {
                states.push(grid.to_grid(&hidden));
            }
        }
        match states {
            Some(states) => states.last().map(Tensor::shallow_clone).unwrap_or_default(),
            None => grid.to_grid(&hidden),
        }
    }

    /// The last hidden state, `[batch, seq, hidden]`, zero at padding. Dropout applies when
    /// `train` is true. With prompt tuning it is `[batch, virtual + seq, hidden]`, the virtual
    /// tokens first, as Python PEFT returns it; [`output_mask`](Self::output_mask) covers it.
    pub fn forward_t(&self, input: &BertInput, train: bool) -> Tensor {
        self.run(input, train, None)
    }

    /// Every hidden state as transformers' `output_hidden_states` gives them: the embedding output
    /// first, then one per layer (`num_hidden_layers + 1` tensors), the last being the last hidden
    /// state. Layer outputs are zero at padding.
    pub fn hidden_states_t(&self, input: &BertInput, train: bool) -> Vec<Tensor> {
        let mut states = Vec::with_capacity(self.encoder.layers.len() + 1);
        let _last = self.run(input, train, Some(&mut states));
        states
    }

    pub fn hidden_size(&self) -> i64 {
        self.config.hidden_size
    }
}

/// What the layers start from: the embedding output, the mask over attention keys (`[batch,
/// keys]`), the positions the per-token layers run on and, under prefix tuning, each layer's
/// learned keys and values.
struct Embedded {
    output: Tensor,
    keys_mask: Tensor,
    grid: TokenGrid,
    prefix: Option<Vec<(Tensor, Tensor)>>,
}

/// `mask` (`[batch, seq]`) with `n` columns of ones in front.
fn with_leading_ones(mask: &Tensor, n: i64) -> Tensor {
    if n == 0 {
        return mask.shallow_clone();
    }
    let batch = mask.size()[0];
    Tensor::cat(
        &[
            Tensor::ones([batch, n], (mask.kind(), mask.device())),
            mask.shallow_clone(),
        ],
        1,
    )
}

/// The MLM head's transform plus a decoder tied to the word embeddings (`cls.predictions.*`).
#[derive(Debug)]
pub struct BertLmPredictionHead {
    dense: nn::Linear,
    act: HiddenAct,
    layer_norm: nn::LayerNorm,
    decoder_weight: Tensor,
    bias: Tensor,
}

impl BertLmPredictionHead {
    pub fn new(p: nn::Path, config: &BertConfig, word_embeddings: &nn::Embedding) -> Self {
        let transform = &p / "transform";
        let decoder_weight = if config.tie_word_embeddings {
            word_embeddings.ws.shallow_clone()
        } else {
            (&p / "decoder").var(
                "weight",
                &[config.vocab_size, config.hidden_size],
                nn::Init::Const(0.),
            )
        };
        Self {
            dense: nn::linear(
                &transform / "dense",
                config.hidden_size,
                config.hidden_size,
                Default::default(),
            ),
            act: config.hidden_act,
            layer_norm: layer_norm(&transform / "LayerNorm", config),
            decoder_weight,
            bias: p.zeros("bias", &[config.vocab_size]),
        }
    }

    pub fn forward(&self, hidden: &Tensor) -> Tensor {
        let transformed = self
            .layer_norm
            .forward(&self.act.apply(&self.dense.forward(hidden)));
        transformed.linear(&self.decoder_weight, Some(&self.bias))
    }
}

/// `BertForMaskedLM`: the encoder under `bert.` and the prediction head under `cls.predictions.`.
#[derive(Debug)]
pub struct BertForMaskedLM {
    pub bert: BertModel,
    pub head: BertLmPredictionHead,
}

impl BertForMaskedLM {
    pub fn new(p: nn::Path, config: &BertConfig) -> Self {
        let bert = BertModel::new(&p / "bert", config, false);
        let head = BertLmPredictionHead::new(
            &p / "cls" / "predictions",
            config,
            &bert.embeddings.word_embeddings,
        );
        Self { bert, head }
    }

    /// Loads a checkpoint that has an MLM head (`cls.predictions.*`); errors if it has none.
    /// A pooler in the checkpoint is skipped.
    pub fn from_pretrained(dir: &Path, device: Device, kind: Kind) -> Result<(nn::VarStore, Self)> {
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let (weights_path, tensors) = read_weights(dir)?;
        if !tensors.keys().any(|k| k.starts_with("cls.predictions.")) {
            return Err(ModelError::format(
                &weights_path,
                "no masked-language-model head (`cls.predictions.*`) in this checkpoint",
            ));
        }
        let mut vs = nn::VarStore::new(device);
        let model = BertForMaskedLM::new(vs.root(), &config);
        load_into(
            &mut vs,
            &weights_path,
            tensors,
            Prefix::Bert,
            &["bert.pooler.", "cls.seq_relationship."],
        )?;
        cast(&mut vs, kind)?;
        Ok((vs, model))
    }

    /// Vocabulary logits, `[batch, seq, vocab]`.
    pub fn forward_t(&self, input: &BertInput, train: bool) -> Tensor {
        self.head.forward(&self.bert.forward_t(input, train))
    }

    /// SPLADE term weights, `[batch, vocab]`: max over real tokens of `log1p(relu(logits))`
    /// (and over prompt tuning's virtual tokens, which are real positions of the output).
    pub fn splade_t(&self, input: &BertInput, train: bool) -> Tensor {
        splade_pool(
            &self.forward_t(input, train),
            &self.bert.output_mask(input.attention_mask),
        )
    }
}

/// Max over unmasked tokens of `log1p(relu(logits))`; padding contributes 0, the floor of the activation.
pub fn splade_pool(logits: &Tensor, attention_mask: &Tensor) -> Tensor {
    let activated = logits.relu().log1p();
    let mask = attention_mask.unsqueeze(-1).to_kind(activated.kind());
    (activated * mask).amax([1], false)
}

/// Where the encoder's variables sit in the var store being loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    /// A bare encoder: `embeddings.*`, `encoder.*`, `pooler.*`.
    None,
    /// Inside a head model: `bert.embeddings.*`, ...
    Bert,
}

const ENCODER_PARTS: &[&str] = &["embeddings.", "encoder.", "pooler."];

/// Rewrites a checkpoint key into the var store's naming: modern LayerNorm names, and the
/// `bert.` prefix added or removed as `prefix` requires.
pub fn canonical_name(key: &str, prefix: Prefix) -> String {
    let key = if let Some(stem) = key.strip_suffix(".LayerNorm.gamma") {
        format!("{stem}.LayerNorm.weight")
    } else if let Some(stem) = key.strip_suffix(".LayerNorm.beta") {
        format!("{stem}.LayerNorm.bias")
    } else {
        key.to_string()
    };
    let is_encoder = |k: &str| ENCODER_PARTS.iter().any(|p| k.starts_with(p));
    match prefix {
        Prefix::None => match key.strip_prefix("bert.") {
            Some(rest) if is_encoder(rest) => rest.to_string(),
            _ => key,
        },
        Prefix::Bert if is_encoder(&key) => format!("bert.{key}"),
        Prefix::Bert => key,
    }
}

/// The weights file of a model folder (or the file itself): safetensors only, pickles refused.
pub fn weights_file(dir_or_file: &Path) -> Result<PathBuf> {
    if dir_or_file.is_file() {
        refuse_pickle(dir_or_file)?;
        return Ok(dir_or_file.to_path_buf());
    }
    let safetensors = dir_or_file.join("model.safetensors");
    if safetensors.is_file() {
        return Ok(safetensors);
    }
    for pickle in ["pytorch_model.bin", "model.pt", "model.pth"] {
        let path = dir_or_file.join(pickle);
        if path.is_file() {
            refuse_pickle(&path)?;
        }
    }
    Err(ModelError::MissingTensor {
        path: safetensors,
        name: "(the whole file: no model.safetensors in this folder)".into(),
    })
}

fn read_weights(dir_or_file: &Path) -> Result<(PathBuf, HashMap<String, Tensor>)> {
    let path = weights_file(dir_or_file)?;
    let tensors = load_safetensors(&path, Device::Cpu)?;
    Ok((path, tensors))
}

/// Copies checkpoint `tensors` (read from `path`) into every variable of `vs`, mapping names with
/// [`canonical_name`]. Keys under `skip` (heads the caller did not build) and `position_ids`
/// buffers are ignored; any other unexpected key, and any variable left without a value, is an error.
pub fn load_into(
    vs: &mut nn::VarStore,
    path: &Path,
    tensors: HashMap<String, Tensor>,
    prefix: Prefix,
    skip: &[&str],
) -> Result<()> {
    let mut variables = vs.variables();
    let tied_decoder = "cls.predictions.decoder.weight";
    let mut loaded = BTreeSet::new();
    let mut unexpected = Vec::new();
    let mut sorted: Vec<_> = tensors.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, tensor) in sorted {
        let mut name = canonical_name(&key, prefix);
        if name == "cls.predictions.decoder.bias" && !variables.contains_key(&name) {
            name = "cls.predictions.bias".into();
        }
        if name.ends_with("position_ids")
            || skip
                .iter()
                .any(|s| name.starts_with(s) || key.starts_with(s))
            || (name == tied_decoder && !variables.contains_key(tied_decoder))
        {
            continue;
        }
        let Some(var) = variables.get_mut(&name) else {
            unexpected.push(key);
            continue;
        };
        if var.size() != tensor.size() {
            return Err(ModelError::Shape {
                path: path.to_path_buf(),
                name: key,
                expected: var.size(),
                actual: tensor.size(),
            });
        }
        tch::no_grad(|| var.f_copy_(&tensor))?;
        loaded.insert(name);
    }
    if let Some(key) = unexpected.first() {
        return Err(ModelError::format(
            path,
            format!(
                "unexpected tensor `{key}` ({} unexpected in all: {}); this is not the BERT layout ragtune expects",
                unexpected.len(),
                unexpected.join(", ")
            ),
        ));
    }
    let mut missing: Vec<_> = variables
        .keys()
        .filter(|name| !loaded.contains(*name))
        .cloned()
        .collect();
    missing.sort();
    if let Some(name) = missing.first() {
        return Err(ModelError::MissingTensor {
            path: path.to_path_buf(),
            name: if missing.len() == 1 {
                name.clone()
            } else {
                format!(
                    "{name}` and {} more: `{}",
                    missing.len() - 1,
                    missing[1..].join("`, `")
                )
            },
        });
    }
    Ok(())
}

/// Casts every float variable to `kind` (Float, BFloat16 or Half).
pub fn cast(vs: &mut nn::VarStore, kind: Kind) -> Result<()> {
    match kind {
        Kind::Float => vs.float(),
        Kind::BFloat16 => vs.bfloat16(),
        Kind::Half => vs.half(),
        other => {
            return Err(ModelError::Unsupported(format!(
                "model weights of kind {other:?}; use Float, BFloat16 or Half"
            )))
        }
    }
    Ok(())
}

/// Saves every variable of `vs` under its Hugging Face name as safetensors (atomically).
/// Tied weights are saved once, as transformers does.
pub fn save_weights(vs: &nn::VarStore, path: &Path) -> Result<()> {
    crate::checkpoint::save_var_store(vs, path, None)
}
