//! Llama decoder (SmolLM2 and kin) on tch, with Hugging Face's module names so weights round-trip
//! through safetensors by name: `model.embed_tokens.weight`, `model.layers.{i}.self_attn.q_proj.weight`,
//! `model.layers.{i}.mlp.gate_proj.weight`, `model.norm.weight`, `lm_head.weight` (untied only).
//!
//! The numerics follow transformers' `LlamaForCausalLM` (RMSNorm in f32, rotate-half RoPE with
//! f32 angles, SDPA attention with an additive mask of the dtype's minimum), which is what the
//! parity tests hold it to.

use crate::gguf::GgufFile;
use crate::{ModelError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// The architecture hyper-parameters, as in a Hugging Face `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "HfLlamaConfig")]
pub struct LlamaConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub num_key_value_heads: i64,
    pub head_dim: i64,
    pub max_position_embeddings: i64,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<i64>,
    pub eos_token_ids: Vec<i64>,
    pub pad_token_id: Option<i64>,
}

/// `config.json` as transformers writes it (v4 with `rope_theta`, v5 with `rope_parameters`).
#[derive(Deserialize)]
struct HfLlamaConfig {
    vocab_size: i64,
    hidden_size: i64,
    intermediate_size: i64,
    num_hidden_layers: i64,
    num_attention_heads: i64,
    num_key_value_heads: Option<i64>,
    head_dim: Option<i64>,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: i64,
    #[serde(default = "default_rms_eps")]
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_parameters: Option<Value>,
    rope_scaling: Option<Value>,
    #[serde(default)]
    tie_word_embeddings: bool,
    bos_token_id: Option<i64>,
    eos_token_id: Option<Value>,
    pad_token_id: Option<i64>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    hidden_act: Option<String>,
    model_type: Option<String>,
}

fn default_max_positions() -> i64 {
    2048
}

fn default_rms_eps() -> f64 {
    1e-6
}

impl TryFrom<HfLlamaConfig> for LlamaConfig {
    type Error = String;

    fn try_from(c: HfLlamaConfig) -> std::result::Result<Self, String> {
        if let Some(t) = c.model_type.as_deref() {
            if t != "llama" {
                return Err(format!("model_type is `{t}`, expected `llama`"));
            }
        }
        if let Some(act) = c.hidden_act.as_deref() {
            if act != "silu" {
                return Err(format!("hidden_act `{act}` is not supported (only silu)"));
            }
        }
        if c.attention_bias || c.mlp_bias {
            return Err("attention_bias/mlp_bias are not supported".into());
        }
        let mut rope_theta = c.rope_theta;
        for params in [&c.rope_parameters, &c.rope_scaling].into_iter().flatten() {
            if params.is_null() {
                continue;
            }
            let rope_type = params
                .get("rope_type")
                .or_else(|| params.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("default");
            if rope_type != "default" {
                return Err(format!(
                    "RoPE scaling `{rope_type}` is not supported (only the default RoPE)"
                ));
            }
            if let Some(t) = params.get("rope_theta").and_then(Value::as_f64) {
                rope_theta = Some(t);
            }
        }
        let eos_token_ids = match c.eos_token_id {
            None | Some(Value::Null) => vec![],
            Some(Value::Number(n)) => vec![n.as_i64().ok_or("eos_token_id is not an integer")?],
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_i64().ok_or("eos_token_id holds a non-integer"))
                .collect::<std::result::Result<_, _>>()?,
            Some(other) => return Err(format!("eos_token_id is {other}, expected an integer")),
        };
        let config = LlamaConfig {
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_hidden_layers: c.num_hidden_layers,
            num_attention_heads: c.num_attention_heads,
            num_key_value_heads: c.num_key_value_heads.unwrap_or(c.num_attention_heads),
            head_dim: c
                .head_dim
                .unwrap_or(c.hidden_size / c.num_attention_heads.max(1)),
            max_position_embeddings: c.max_position_embeddings,
            rms_norm_eps: c.rms_norm_eps,
            rope_theta: rope_theta.unwrap_or(10_000.0),
            tie_word_embeddings: c.tie_word_embeddings,
            bos_token_id: c.bos_token_id,
            eos_token_ids,
            pad_token_id: c.pad_token_id,
        };
        config.validate()?;
        Ok(config)
    }
}

impl LlamaConfig {
    fn validate(&self) -> std::result::Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
        ];
        if let Some((name, v)) = positive.iter().find(|(_, v)| *v <= 0) {
            return Err(format!("{name} is {v}, expected a positive number"));
        }
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if self.head_dim % 2 != 0 {
            return Err(format!(
                "head_dim {} is odd; RoPE needs it even",
                self.head_dim
            ));
        }
        Ok(())
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_file(path: &std::path::Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ModelError::format(path, format!("not a usable Llama config: {e}")))
    }

    /// Builds the config from `llama.*` GGUF metadata. GGUF Llama files have tied embeddings
    /// exactly when they carry no `output.weight`.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let arch = gguf.get_str("general.architecture")?;
        if arch != "llama" {
            return Err(ModelError::Unsupported(format!(
                "{}: architecture `{arch}` (only llama)",
                gguf.path().display()
            )));
        }
        let key = |k: &str| format!("llama.{k}");
        let heads = gguf.get_i64(&key("attention.head_count"))?;
        let hidden = gguf.get_i64(&key("embedding_length"))?;
        let vocab_size = match gguf.get(&key("vocab_size")) {
            Some(_) => gguf.get_i64(&key("vocab_size"))?,
            None => gguf.get_str_array("tokenizer.ggml.tokens")?.len() as i64,
        };
        let head_dim = match gguf.get(&key("rope.dimension_count")) {
            Some(_) => gguf.get_i64(&key("rope.dimension_count"))?,
            None => hidden / heads.max(1),
        };
        if gguf
            .get(&key("rope.scaling.type"))
            .and_then(|v| v.as_str())
            .is_some_and(|t| t != "none")
        {
            return Err(ModelError::Unsupported(format!(
                "{}: RoPE scaling (llama.rope.scaling.type) is not supported",
                gguf.path().display()
            )));
        }
        let optional_id = |k: &str| gguf.get(k).and_then(|v| v.as_i64());
        let config = LlamaConfig {
            vocab_size,
            hidden_size: hidden,
            intermediate_size: gguf.get_i64(&key("feed_forward_length"))?,
            num_hidden_layers: gguf.get_i64(&key("block_count"))?,
            num_attention_heads: heads,
            num_key_value_heads: match gguf.get(&key("attention.head_count_kv")) {
                Some(_) => gguf.get_i64(&key("attention.head_count_kv"))?,
                None => heads,
            },
            head_dim,
            max_position_embeddings: gguf.get_i64(&key("context_length"))?,
            // f32 in the file: widen through its shortest decimal form, as HF configs hold 1e-05.
            rms_norm_eps: shortest_f64(gguf.get_f64(&key("attention.layer_norm_rms_epsilon"))?),
            rope_theta: match gguf.get(&key("rope.freq_base")) {
                Some(_) => shortest_f64(gguf.get_f64(&key("rope.freq_base"))?),
                None => 10_000.0,
            },
            tie_word_embeddings: gguf.tensor_info("output.weight").is_none(),
            bos_token_id: optional_id("tokenizer.ggml.bos_token_id"),
            eos_token_ids: optional_id("tokenizer.ggml.eos_token_id")
                .into_iter()
                .collect(),
            pad_token_id: optional_id("tokenizer.ggml.padding_token_id"),
        };
        config
            .validate()
            .map_err(|m| gguf.error(format!("llama metadata: {m}")))?;
        Ok(config)
    }

    /// `config.json` for transformers' `LlamaForCausalLM`.
    pub fn to_hf_json(&self, torch_dtype: &str) -> Value {
        let eos = match self.eos_token_ids.as_slice() {
            [one] => json!(one),
            many => json!(many),
        };
        json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": null,
            "hidden_act": "silu",
            "attention_bias": false,
            "attention_dropout": 0.0,
            "mlp_bias": false,
            "initializer_range": 0.02,
            "pretraining_tp": 1,
            "use_cache": true,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
            "pad_token_id": self.pad_token_id,
            "torch_dtype": torch_dtype,
        })
    }
}

fn shortest_f64(v: f64) -> f64 {
    (v as f32).to_string().parse().unwrap_or(v)
}

/// Root-mean-square norm with a learned scale, computed in f32 whatever the model's dtype.
#[derive(Debug)]
pub struct RmsNorm {
    pub weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(p: nn::Path, size: i64, eps: f64) -> Self {
        RmsNorm {
            weight: p.var("weight", &[size], nn::Init::Const(1.0)),
            eps,
        }
    }
}

impl Module for RmsNorm {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let kind = xs.kind();
        let x = xs.to_kind(Kind::Float);
        let variance = x.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        let normed = x * (variance + self.eps).rsqrt();
        &self.weight * normed.to_kind(kind)
    }
}

/// What a parameter-efficient method (LoRA, IA3, prefix tuning, ...) needs to change a Llama
/// without touching its weights. The model calls it for every projection; returning `None` keeps
/// the base projection, so a model without an adapter computes exactly what it did before.
pub trait DecoderAdapter: std::fmt::Debug {
    /// The output of projection `module` of layer `layer` (`self_attn.q_proj`, `mlp.down_proj`, ...)
    /// for input `xs`, in place of `base.forward(xs)`.
    fn project(&self, layer: usize, module: &str, xs: &Tensor, base: &nn::Linear)
        -> Option<Tensor>;

    /// A replacement for the attention or MLP output `xs` of layer `layer`, before the residual
    /// add (where bottleneck adapters sit); `None` keeps it. `residual_add(h)` is what the layer
    /// computes next from it (`h` plus the residual stream).
    fn after_sublayer(
        &self,
        _layer: usize,
        _sublayer: crate::peft::Sublayer,
        _xs: &Tensor,
        _residual_add: &dyn Fn(&Tensor) -> Tensor,
    ) -> Option<Tensor> {
        None
    }
}

/// `residual + xs`, with the adapter's sublayer hook on `xs` first.
fn add_residual(
    xs: Tensor,
    residual: &Tensor,
    hook: Hook,
    sublayer: crate::peft::Sublayer,
) -> Tensor {
    let add = |h: &Tensor| residual + h;
    let xs = hook
        .and_then(|(adapter, layer)| adapter.after_sublayer(layer, sublayer, &xs, &add))
        .unwrap_or(xs);
    add(&xs)
}

type Hook<'a> = Option<(&'a dyn DecoderAdapter, usize)>;

fn project(base: &nn::Linear, xs: &Tensor, hook: Hook, module: &str) -> Tensor {
    hook.and_then(|(adapter, layer)| adapter.project(layer, module, xs, base))
        .unwrap_or_else(|| base.forward(xs))
}

fn linear(p: nn::Path, inputs: i64, outputs: i64) -> nn::Linear {
    nn::linear(
        p,
        inputs,
        outputs,
        nn::LinearConfig {
            bias: false,
            ..Default::default()
        },
    )
}

/// Grouped-query self-attention.
#[derive(Debug)]
pub struct Attention {
    pub q_proj: nn::Linear,
    pub k_proj: nn::Linear,
    pub v_proj: nn::Linear,
    pub o_proj: nn::Linear,
    num_heads: i64,
    num_kv_heads: i64,
    head_dim: i64,
}

impl Attention {
    fn new(p: nn::Path, c: &LlamaConfig) -> Self {
        let q_out = c.num_attention_heads * c.head_dim;
        let kv_out = c.num_key_value_heads * c.head_dim;
        Attention {
            q_proj: linear(&p / "q_proj", c.hidden_size, q_out),
            k_proj: linear(&p / "k_proj", c.hidden_size, kv_out),
            v_proj: linear(&p / "v_proj", c.hidden_size, kv_out),
            o_proj: linear(&p / "o_proj", q_out, c.hidden_size),
            num_heads: c.num_attention_heads,
            num_kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
        }
    }

    fn forward(
        &self,
        xs: &Tensor,
        rope: &(Tensor, Tensor),
        mask: Option<&Tensor>,
        cache: Option<&mut (Tensor, Tensor)>,
        hook: Hook,
    ) -> Tensor {
        let (b, t, _) = xs.size3().expect("hidden states are [batch, seq, hidden]");
        let heads = |x: Tensor, n: i64| x.view([b, t, n, self.head_dim]).transpose(1, 2);
        let q = heads(
            project(&self.q_proj, xs, hook, "self_attn.q_proj"),
            self.num_heads,
        );
        let k = heads(
            project(&self.k_proj, xs, hook, "self_attn.k_proj"),
            self.num_kv_heads,
        );
        let v = heads(
            project(&self.v_proj, xs, hook, "self_attn.v_proj"),
            self.num_kv_heads,
        );
        let (cos, sin) = rope;
        let q = apply_rope(&q, cos, sin);
        let mut k = apply_rope(&k, cos, sin);
        let mut v = v;
        if let Some(entry) = cache {
            if entry.0.numel() > 0 {
                k = Tensor::cat(&[&entry.0, &k], 2);
                v = Tensor::cat(&[&entry.1, &v], 2);
            }
            *entry = (k.shallow_clone(), v.shallow_clone());
        }
        let n_rep = self.num_heads / self.num_kv_heads;
        let k = repeat_kv(&k, n_rep);
        let v = repeat_kv(&v, n_rep);
        let scale = (self.head_dim as f64).powf(-0.5);
        let causal_only = mask.is_none();
        let out = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            mask,
            0.0,
            causal_only && t > 1,
            scale,
            false,
        );
        let out = out
            .transpose(1, 2)
            .reshape([b, t, self.num_heads * self.head_dim]);
        project(&self.o_proj, &out, hook, "self_attn.o_proj")
    }
}

fn repeat_kv(x: &Tensor, n_rep: i64) -> Tensor {
    if n_rep == 1 {
        return x.shallow_clone();
    }
    let (b, kv, t, d) = x.size4().expect("[batch, kv_heads, seq, head_dim]");
    x.unsqueeze(2)
        .expand([b, kv, n_rep, t, d], false)
        .reshape([b, kv * n_rep, t, d])
}

fn rotate_half(x: &Tensor) -> Tensor {
    let half = x.size().last().copied().unwrap_or(0) / 2;
    let x1 = x.narrow(-1, 0, half);
    let x2 = x.narrow(-1, half, half);
    Tensor::cat(&[-x2, x1], -1)
}

fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    x * cos + rotate_half(x) * sin
}

/// SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`.
#[derive(Debug)]
pub struct Mlp {
    pub gate_proj: nn::Linear,
    pub up_proj: nn::Linear,
    pub down_proj: nn::Linear,
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Tensor {
        self.forward_hooked(xs, None)
    }
}

impl Mlp {
    fn forward_hooked(&self, xs: &Tensor, hook: Hook) -> Tensor {
        let gate = project(&self.gate_proj, xs, hook, "mlp.gate_proj").silu();
        let up = project(&self.up_proj, xs, hook, "mlp.up_proj");
        project(&self.down_proj, &(gate * up), hook, "mlp.down_proj")
    }
}

#[derive(Debug)]
pub struct DecoderLayer {
    pub self_attn: Attention,
    pub mlp: Mlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    fn forward(
        &self,
        hidden: &Tensor,
        rope: &(Tensor, Tensor),
        mask: Option<&Tensor>,
        cache: Option<&mut (Tensor, Tensor)>,
        hook: Hook,
    ) -> Tensor {
        // Residual adds stay out of place: the norms keep `hidden` for their backward pass.
        let attn_in = self.input_layernorm.forward(hidden);
        let attn = self.self_attn.forward(&attn_in, rope, mask, cache, hook);
        let hidden = add_residual(attn, hidden, hook, crate::peft::Sublayer::Attention);
        let mlp = self
            .mlp
            .forward_hooked(&self.post_attention_layernorm.forward(&hidden), hook);
        add_residual(mlp, &hidden, hook, crate::peft::Sublayer::FeedForward)
    }
}

/// Per-layer keys and values of the tokens seen so far, `[batch, kv_heads, seq, head_dim]`.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
}

impl KvCache {
    pub fn new(config: &LlamaConfig) -> Self {
        KvCache {
            layers: (0..config.num_hidden_layers)
                .map(|_| (Tensor::new(), Tensor::new()))
                .collect(),
        }
    }

    /// A cache that starts with the given per-layer keys and values (prefix tuning's learned
    /// prefixes, which are already in the rotated key space).
    pub fn from_layers(layers: Vec<(Tensor, Tensor)>) -> Self {
        KvCache { layers }
    }

    /// Tokens already cached (0 before the first forward).
    pub fn seq_len(&self) -> i64 {
        self.layers
            .first()
            .filter(|(k, _)| k.defined() && k.numel() > 0)
            .map(|(k, _)| k.size()[2])
            .unwrap_or(0)
    }
}

/// `LlamaForCausalLM`: the decoder stack plus the language-model head.
#[derive(Debug)]
pub struct Llama {
    pub config: LlamaConfig,
    pub embed_tokens: nn::Embedding,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    /// `None` when the head is tied to `embed_tokens`.
    pub lm_head: Option<nn::Linear>,
    inv_freq: Tensor,
    adapter: Option<std::rc::Rc<dyn DecoderAdapter>>,
    /// Recompute layer activations in the backward pass (see `checkpointing`).
    gradient_checkpointing: bool,
}

impl Llama {
    /// Creates the variables under `root` (use `vs.root()`), named as in Hugging Face.
    pub fn new(root: &nn::Path, config: &LlamaConfig) -> Result<Self> {
        config.validate().map_err(ModelError::Invalid)?;
        let model = root / "model";
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let p = &model / "layers" / i;
                DecoderLayer {
                    self_attn: Attention::new(&p / "self_attn", config),
                    mlp: Mlp {
                        gate_proj: linear(
                            &p / "mlp" / "gate_proj",
                            config.hidden_size,
                            config.intermediate_size,
                        ),
                        up_proj: linear(
                            &p / "mlp" / "up_proj",
                            config.hidden_size,
                            config.intermediate_size,
                        ),
                        down_proj: linear(
                            &p / "mlp" / "down_proj",
                            config.intermediate_size,
                            config.hidden_size,
                        ),
                    },
                    input_layernorm: RmsNorm::new(
                        &p / "input_layernorm",
                        config.hidden_size,
                        config.rms_norm_eps,
                    ),
                    post_attention_layernorm: RmsNorm::new(
                        &p / "post_attention_layernorm",
                        config.hidden_size,
                        config.rms_norm_eps,
                    ),
                }
            })
            .collect();
        let exponents =
            Tensor::arange_start_step(0, config.head_dim, 2, (Kind::Int64, root.device()))
                .to_kind(Kind::Float)
                / config.head_dim as f64;
        let inv_freq = Tensor::from(config.rope_theta as f32)
            .to_device(root.device())
            .pow(&exponents)
            .reciprocal();
        Ok(Llama {
            config: config.clone(),
            embed_tokens: nn::embedding(
                &model / "embed_tokens",
                config.vocab_size,
                config.hidden_size,
                Default::default(),
            ),
            layers,
            norm: RmsNorm::new(&model / "norm", config.hidden_size, config.rms_norm_eps),
            lm_head: (!config.tie_word_embeddings)
                .then(|| linear(root / "lm_head", config.hidden_size, config.vocab_size)),
            inv_freq,
            adapter: None,
            gradient_checkpointing: false,
        })
    }

    /// Puts `adapter` in front of every projection (`None` runs the plain base model again).
    pub fn set_adapter(&mut self, adapter: Option<std::rc::Rc<dyn DecoderAdapter>>) {
        self.adapter = adapter;
    }

    pub fn adapter(&self) -> Option<&std::rc::Rc<dyn DecoderAdapter>> {
        self.adapter.as_ref()
    }

    /// With checkpointing on, forward passes that record gradients keep only each decoder
    /// layer's input and recompute the layer in the backward pass. The model must then stay
    /// alive (and unchanged) until that backward pass.
    pub fn set_gradient_checkpointing(&mut self, on: bool) {
        self.gradient_checkpointing = on;
    }

    /// Layer `layer` on `hidden`, with the adapter hook, without a cache (the checkpoint's
    /// recomputation).
    pub(crate) fn layer_forward(
        &self,
        layer: usize,
        hidden: &Tensor,
        rope: &(Tensor, Tensor),
        mask: Option<&Tensor>,
    ) -> Tensor {
        let hook = self.adapter.as_deref().map(|a| (a, layer));
        self.layers[layer].forward(hidden, rope, mask, None, hook)
    }

    /// Final hidden states (after the last norm), `[batch, seq, hidden]`.
    ///
    /// `attention_mask` is `[batch, past + seq]`, 1 for real tokens and 0 for padding (left
    /// padding for generation). Without `position_ids`, positions count real tokens only, as
    /// transformers does for left-padded batches. With `cache`, keys and values are appended to it.
    pub fn forward_hidden(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        position_ids: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        input_ids.size2().map_err(|_| {
            ModelError::Invalid(format!(
                "input_ids must be [batch, seq], got {:?}",
                input_ids.size()
            ))
        })?;
        let embeds = self.embed_tokens.forward(input_ids);
        self.forward_hidden_from_embeds(&embeds, attention_mask, position_ids, cache)
    }

    /// `forward_hidden` from input embeddings `[batch, seq, hidden]` (prompt tuning prepends
    /// learned ones).
    pub fn forward_hidden_from_embeds(
        &self,
        embeds: &Tensor,
        attention_mask: Option<&Tensor>,
        position_ids: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let (b, t, _) = embeds.size3().map_err(|_| {
            ModelError::Invalid(format!(
                "embeddings must be [batch, seq, hidden], got {:?}",
                embeds.size()
            ))
        })?;
        let past = cache.as_ref().map_or(0, |c| c.seq_len());
        let device = embeds.device();
        if let Some(m) = attention_mask {
            if m.size() != [b, past + t] {
                return Err(ModelError::Invalid(format!(
                    "attention_mask is {:?}, expected [{b}, {}] (past {past} + new {t})",
                    m.size(),
                    past + t
                )));
            }
        }
        let positions = match (position_ids, attention_mask) {
            (Some(p), _) => p.shallow_clone(),
            (None, Some(m)) => (m.to_kind(Kind::Int64).cumsum(-1, Kind::Int64) - 1)
                .clamp_min(0)
                .narrow(1, past, t),
            (None, None) => Tensor::arange_start(past, past + t, (Kind::Int64, device))
                .unsqueeze(0)
                .expand([b, t], false),
        };
        let kind = embeds.kind();
        // Without padding and without a cache, SDPA's causal flag replaces the explicit mask.
        let mask = match attention_mask {
            Some(m) => Some(additive_mask(m, t, past, kind)),
            None if past > 0 => Some(additive_mask(
                &Tensor::ones([b, past + t], (Kind::Int64, device)),
                t,
                past,
                kind,
            )),
            None => None,
        };
        self.run_layers(embeds, &positions, mask.as_ref(), cache)
    }

    /// Final hidden states of packed rows: each row holds several examples back to back.
    /// `segment_ids` `[batch, seq]` numbers the examples of a row from 1 (0 is padding); a token
    /// attends only to earlier tokens of its own example (a block-diagonal causal mask), and
    /// `position_ids` restart at 0 for each example, so every example sees exactly what it would
    /// see alone in a row.
    pub fn forward_hidden_packed(
        &self,
        input_ids: &Tensor,
        segment_ids: &Tensor,
        position_ids: &Tensor,
    ) -> Result<Tensor> {
        let size = input_ids.size();
        if size.len() != 2 || segment_ids.size() != size || position_ids.size() != size {
            return Err(ModelError::Invalid(format!(
                "packed input_ids {:?}, segment_ids {:?} and position_ids {:?} must all be [batch, seq]",
                size,
                segment_ids.size(),
                position_ids.size()
            )));
        }
        let embeds = self.embed_tokens.forward(input_ids);
        let mask = block_causal_mask(segment_ids, embeds.kind());
        self.run_layers(&embeds, position_ids, Some(&mask), None)
    }

    /// The decoder stack and the final norm over `embeds`, with RoPE at `positions` and an
    /// additive attention mask (`None`: plain causal).
    fn run_layers(
        &self,
        embeds: &Tensor,
        positions: &Tensor,
        mask: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let mut hidden = embeds.shallow_clone();
        let kind = hidden.kind();
        let freqs =
            positions.to_kind(Kind::Float).unsqueeze(-1) * self.inv_freq.unsqueeze(0).unsqueeze(0);
        let angles = Tensor::cat(&[&freqs, &freqs], -1);
        let rope = (
            angles.cos().to_kind(kind).unsqueeze(1),
            angles.sin().to_kind(kind).unsqueeze(1),
        );
        if self.gradient_checkpointing && cache.is_none() && crate::checkpointing::grad_enabled() {
            // A checkpoint node passes gradients on only when its input requires them; with
            // frozen embeddings (PEFT) make the input a leaf that does.
            if !hidden.requires_grad() {
                hidden = hidden.detach().set_requires_grad(true);
            }
            for i in 0..self.layers.len() {
                hidden = crate::checkpointing::checkpointed_layer(self, i, &hidden, &rope, mask)?;
            }
            return Ok(self.norm.forward(&hidden));
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let entry = cache.as_mut().map(|c| &mut c.layers[i]);
            let hook = self.adapter.as_deref().map(|a| (a, i));
            hidden = layer.forward(&hidden, &rope, mask, entry, hook);
        }
        Ok(self.norm.forward(&hidden))
    }

    /// Vocabulary logits for hidden states from `forward_hidden`.
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => hidden.linear::<Tensor>(&self.embed_tokens.ws, None),
        }
    }

    /// Logits `[batch, seq, vocab]`; see `forward_hidden` for the arguments.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        position_ids: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let hidden = self.forward_hidden(input_ids, attention_mask, position_ids, cache)?;
        Ok(self.logits(&hidden))
    }
}

/// `[batch, 1, seq, seq]` for packed rows: 0 where query i may attend key j (j <= i, same
/// example, not padding), the dtype's minimum elsewhere.
fn block_causal_mask(segment_ids: &Tensor, kind: Kind) -> Tensor {
    let device = segment_ids.device();
    let t = segment_ids.size()[1];
    let pos = Tensor::arange(t, (Kind::Int64, device));
    let causal = pos.unsqueeze(0).le_tensor(&pos.unsqueeze(1)); // [t, t]: key <= query
    let same = segment_ids
        .unsqueeze(2)
        .eq_tensor(&segment_ids.unsqueeze(1)); // [b, t, t]
    let real_keys = segment_ids.ne(0).unsqueeze(1); // [b, 1, t]
    let allowed = same
        .logical_and(&causal.unsqueeze(0))
        .logical_and(&real_keys)
        .unsqueeze(1);
    Tensor::zeros(allowed.size(), (kind, device))
        .masked_fill(&allowed.logical_not(), min_value(kind))
}

fn min_value(kind: Kind) -> f64 {
    match kind {
        Kind::BFloat16 => -3.3895313892515355e38,
        Kind::Half => -65504.0,
        Kind::Double => f64::MIN,
        _ => f32::MIN as f64,
    }
}

/// `[batch, 1, seq, past + seq]`: 0 where query i may attend key j (causal and not padding),
/// the dtype's minimum elsewhere, so fully masked (padding) rows stay finite.
fn additive_mask(mask: &Tensor, t: i64, past: i64, kind: Kind) -> Tensor {
    let device = mask.device();
    let total = past + t;
    let query_pos = Tensor::arange_start(past, total, (Kind::Int64, device)).unsqueeze(1);
    let key_pos = Tensor::arange(total, (Kind::Int64, device)).unsqueeze(0);
    let causal = key_pos.le_tensor(&query_pos); // [t, total]
    let keys = mask.to_kind(Kind::Bool).unsqueeze(1).unsqueeze(1); // [b, 1, 1, total]
    let allowed = causal.unsqueeze(0).unsqueeze(0).logical_and(&keys);
    Tensor::zeros(allowed.size(), (kind, device))
        .masked_fill(&allowed.logical_not(), min_value(kind))
}
