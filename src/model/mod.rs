//! The model description: a decoder-only transformer's shape plus the architecture knobs that
//! change its parameter count, FLOPs and memory.
//!
//! Build one in code with [`Transformer::builder`], from a named preset ([`crate::presets`]), or from a
//! Hugging Face `config.json` ([`hf::from_hf_config_str`]).

pub mod hf;
pub mod params;
pub mod vision;

use crate::error::{Error, Result, divisible, positive};
use serde::{Deserialize, Serialize};

/// The feed-forward block's form.
///
/// Sources: Vaswani et al. 2017 §3.3 (two matrices); Shazeer 2020 "GLU Variants Improve
/// Transformer" eq. 6 (gated: SwiGLU/GeGLU use three matrices, gate, up and down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MlpKind {
    /// Two matrices `d×f` and `f×d` with an elementwise activation (GELU, ReLU).
    Standard,
    /// Three matrices: gate `d×f`, up `d×f`, down `f×d` (SwiGLU, GeGLU).
    Gated,
}

/// Normalisation layers' form.
///
/// Sources: Ba et al. 2016 (LayerNorm: scale and bias, `2d`); Zhang & Sennrich 2019 (RMSNorm:
/// scale only, `d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    /// LayerNorm with scale and bias: `2d` parameters.
    LayerNorm,
    /// LayerNorm with scale only: `d` parameters.
    LayerNormNoBias,
    /// RMSNorm: `d` parameters.
    RmsNorm,
    /// Normalisation without learned scale or bias: no parameters (OPT with
    /// `layer_norm_elementwise_affine = false`).
    NonParametric,
}

impl NormKind {
    /// Parameters of one norm over a vector of size `d` (overflow is an error).
    ///
    /// ```
    /// use lmshape::NormKind;
    /// assert_eq!(NormKind::LayerNorm.params(768)?, 1536);
    /// assert_eq!(NormKind::RmsNorm.params(768)?, 768);
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Overflow`] when `2d` does not fit `u64`.
    pub fn params(self, d: u64) -> Result<u64> {
        self.checked_params(d).ok_or(Error::Overflow {
            what: "norm parameters",
        })
    }

    /// [`NormKind::params`] as an `Option` (`None` on overflow).
    pub(crate) fn checked_params(self, d: u64) -> Option<u64> {
        match self {
            NormKind::LayerNorm => d.checked_mul(2),
            NormKind::LayerNormNoBias | NormKind::RmsNorm => Some(d),
            NormKind::NonParametric => Some(0),
        }
    }
}

/// How positions enter the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum PositionKind {
    /// A learned table of `max_positions + offset` rows of width `hidden_size` (GPT-2: offset 0;
    /// OPT: offset 2, `OPTLearnedPositionalEmbedding` in Hugging Face transformers).
    Learned {
        /// Extra rows stored beyond `max_positions`.
        offset: u64,
    },
    /// Rotary embeddings (Su et al. 2021): no parameters.
    Rotary,
    /// ALiBi attention biases (Press et al. 2022): no parameters.
    Alibi,
    /// No positional information (or relative schemes with no learned table counted here).
    None,
}

/// Which linear layers carry bias vectors.
///
/// GPT-2/BLOOM/OPT/GPT-NeoX: all; Qwen2: q, k, v only; LLaMA/Mistral/Gemma/Falcon-7B: none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LinearBiases {
    /// Query, key and value projections.
    pub qkv: bool,
    /// Attention output projection.
    pub attn_out: bool,
    /// MLP projections (every matrix of the block).
    pub mlp: bool,
}

impl LinearBiases {
    /// Every linear carries a bias.
    pub const ALL: LinearBiases = LinearBiases {
        qkv: true,
        attn_out: true,
        mlp: true,
    };
    /// Only the q, k, v projections (Qwen2).
    pub const QKV_ONLY: LinearBiases = LinearBiases {
        qkv: true,
        attn_out: false,
        mlp: false,
    };
    /// No linear carries a bias.
    pub const NONE: LinearBiases = LinearBiases {
        qkv: false,
        attn_out: false,
        mlp: false,
    };
}

/// How attention and MLP are arranged inside a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum BlockKind {
    /// `x + attn(norm(x))`, then `x + mlp(norm(x))`: two norms per layer.
    Sequential,
    /// `x + attn(norm_a(x)) + mlp(norm_m(x))` (GPT-J, GPT-NeoX `use_parallel_residual`, PaLM,
    /// Falcon). `shared_norm`: one norm feeds both branches (Falcon-7B); otherwise two norms
    /// (GPT-NeoX, Falcon-40B `ln_attn`/`ln_mlp`).
    Parallel {
        /// One norm feeds both branches.
        shared_norm: bool,
    },
    /// `x + norm(attn(norm(x)))`, then `x + norm(mlp(norm(x)))`: a norm before and after
    /// each branch, four per layer (Gemma 2 and 3: `input_layernorm`,
    /// `post_attention_layernorm`, `pre_feedforward_layernorm`, `post_feedforward_layernorm`).
    Sandwich,
}

impl BlockKind {
    /// Norm layers inside one transformer layer.
    pub fn norms_per_layer(self) -> u64 {
        match self {
            BlockKind::Parallel { shared_norm: true } => 1,
            BlockKind::Sandwich => 4,
            _ => 2,
        }
    }
}

/// Norms on the queries and keys inside attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QkNorm {
    /// None.
    #[default]
    None,
    /// One norm over each head's `head_dim` values, shared by the heads (Qwen3, Gemma 3:
    /// `q_norm`/`k_norm` of width `head_dim`).
    PerHead,
    /// One norm over all query (and all key) values (OLMo 2, OLMoE: `q_norm` of width
    /// `H·hd`, `k_norm` of width `KV·hd`).
    Full,
}

/// Architecture knobs that change the count but not the shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Architecture {
    /// Feed-forward form.
    pub mlp: MlpKind,
    /// Norm form (all norms of the model).
    pub norm: NormKind,
    /// Position embedding.
    pub position: PositionKind,
    /// Which linears carry biases.
    pub biases: LinearBiases,
    /// The output head shares the token-embedding matrix.
    pub tied_embeddings: bool,
    /// A norm right after the token embedding (BLOOM's `word_embeddings_layernorm`).
    pub embedding_norm: bool,
    /// Sequential or parallel attention/MLP.
    pub block: BlockKind,
    /// A norm after the last layer (absent in OPT-350m, `do_layer_norm_before = false`).
    pub final_norm: bool,
    /// Width of the token embedding when it differs from `hidden_size`; then bias-free
    /// `project_in` / `project_out` linears map between the two (OPT-350m:
    /// `word_embed_proj_dim = 512`).
    pub embed_proj_dim: Option<u64>,
    /// Norms on queries and keys.
    #[serde(default)]
    pub qk_norm: QkNorm,
    /// A learned attention sink (one logit) per head and layer (gpt-oss `sinks`).
    #[serde(default)]
    pub attention_sinks: bool,
}

impl Architecture {
    /// GPT-2 / GPT-3 (Radford et al. 2019; Brown et al. 2020): learned positions, LayerNorm,
    /// GELU MLP, all biases, tied head.
    pub fn gpt2() -> Architecture {
        Architecture {
            mlp: MlpKind::Standard,
            norm: NormKind::LayerNorm,
            position: PositionKind::Learned { offset: 0 },
            biases: LinearBiases::ALL,
            tied_embeddings: true,
            embedding_norm: false,
            block: BlockKind::Sequential,
            final_norm: true,
            embed_proj_dim: None,
            qk_norm: QkNorm::None,
            attention_sinks: false,
        }
    }

    /// BLOOM (BigScience 2022): ALiBi, embedding LayerNorm, all biases, tied head.
    pub fn bloom() -> Architecture {
        Architecture {
            position: PositionKind::Alibi,
            embedding_norm: true,
            ..Architecture::gpt2()
        }
    }

    /// GPT-NeoX / Pythia (Black et al. 2022): rotary, parallel residual with two norms, untied head.
    pub fn gpt_neox() -> Architecture {
        Architecture {
            position: PositionKind::Rotary,
            tied_embeddings: false,
            block: BlockKind::Parallel { shared_norm: false },
            ..Architecture::gpt2()
        }
    }

    /// OPT (Zhang et al. 2022): learned positions with offset 2, ReLU MLP, all biases, tied head.
    pub fn opt() -> Architecture {
        Architecture {
            position: PositionKind::Learned { offset: 2 },
            ..Architecture::gpt2()
        }
    }

    /// LLaMA / Mistral (Touvron et al. 2023): rotary, RMSNorm, SwiGLU, no biases, untied head.
    pub fn llama() -> Architecture {
        Architecture {
            mlp: MlpKind::Gated,
            norm: NormKind::RmsNorm,
            position: PositionKind::Rotary,
            biases: LinearBiases::NONE,
            tied_embeddings: false,
            embedding_norm: false,
            block: BlockKind::Sequential,
            final_norm: true,
            embed_proj_dim: None,
            qk_norm: QkNorm::None,
            attention_sinks: false,
        }
    }

    /// Qwen2 (Yang et al. 2024): LLaMA with q/k/v biases.
    pub fn qwen2() -> Architecture {
        Architecture {
            biases: LinearBiases::QKV_ONLY,
            ..Architecture::llama()
        }
    }

    /// Gemma (Gemma Team 2024): LLaMA-like with GeGLU, tied head.
    pub fn gemma() -> Architecture {
        Architecture {
            tied_embeddings: true,
            ..Architecture::llama()
        }
    }

    /// Falcon-7B style (Almazrouei et al. 2023): rotary, parallel block with one shared
    /// LayerNorm, GELU MLP, no biases, tied head.
    pub fn falcon() -> Architecture {
        Architecture {
            position: PositionKind::Rotary,
            biases: LinearBiases::NONE,
            block: BlockKind::Parallel { shared_norm: true },
            ..Architecture::gpt2()
        }
    }

    /// Look an architecture preset up by family name ([`ARCH_NAMES`]; case and `-`/`_` do not
    /// matter).
    ///
    /// ```
    /// use lmshape::Architecture;
    /// assert_eq!(Architecture::by_name("bloom").unwrap(), Architecture::bloom());
    /// assert!(Architecture::by_name("rwkv").is_err());
    /// ```
    ///
    /// # Errors
    /// [`Error::UnknownName`] listing the names.
    pub fn by_name(name: &str) -> Result<Architecture> {
        let key = name.to_ascii_lowercase().replace('-', "_");
        ARCHITECTURES
            .iter()
            .find(|(n, _)| *n == key)
            .map(|(_, build)| build())
            .ok_or_else(|| Error::UnknownName {
                kind: "architecture",
                name: name.to_string(),
                known: ARCH_NAMES.join(", "),
            })
    }
}

/// Builds one architecture preset.
type ArchitectureBuilder = fn() -> Architecture;

/// The registry of architecture presets by family name: [`Architecture::by_name`] and
/// [`ARCH_NAMES`] both come from it.
const ARCHITECTURES: [(&str, ArchitectureBuilder); 13] = [
    ("gpt2", Architecture::gpt2),
    ("gpt3", Architecture::gpt2),
    ("gpt", Architecture::gpt2),
    ("bloom", Architecture::bloom),
    ("gpt_neox", Architecture::gpt_neox),
    ("neox", Architecture::gpt_neox),
    ("pythia", Architecture::gpt_neox),
    ("opt", Architecture::opt),
    ("llama", Architecture::llama),
    ("mistral", Architecture::llama),
    ("qwen2", Architecture::qwen2),
    ("gemma", Architecture::gemma),
    ("falcon", Architecture::falcon),
];

/// Names accepted by [`Architecture::by_name`] (the registry's first column).
pub const ARCH_NAMES: [&str; ARCHITECTURES.len()] = {
    let mut out = [""; ARCHITECTURES.len()];
    let mut i = 0;
    while i < ARCHITECTURES.len() {
        out[i] = ARCHITECTURES[i].0;
        i += 1;
    }
    out
};

/// The FFN width of the original transformer over its hidden size, kept by GPT-2/GPT-3, BLOOM,
/// OPT and GPT-NeoX: `d_ff = 4·d` (Vaswani et al. 2017 §3.3: `d_ff = 2048` for
/// `d_model = 512`; Brown et al. 2020 Table 2.1: `d_ff = 4·d_model` for every GPT-3 size).
pub const STANDARD_FFN_MULTIPLIER: u64 = 4;

/// `4·d` ([`STANDARD_FFN_MULTIPLIER`]), checked.
///
/// ```
/// assert_eq!(lmshape::model::standard_ffn_size(12288)?, 49152);
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// [`Error::Overflow`] when `4·d` does not fit `u64`.
pub fn standard_ffn_size(hidden_size: u64) -> Result<u64> {
    crate::error::mul(hidden_size, STANDARD_FFN_MULTIPLIER, "ffn_size")
}

/// Each head's width when the hidden size splits evenly into heads, `hidden / heads` (the
/// multi-head attention of Vaswani et al. 2017 §3.2.2, `d_k = d_model / h`, as GPT-2, BLOOM,
/// OPT and GPT-NeoX assert it). `names` are the two quantities as the caller's input calls
/// them (`("n_embd", "n_head")` for a GPT-2 config), so the error speaks the user's words.
///
/// ```
/// let names = ("hidden_size", "num_heads");
/// assert_eq!(lmshape::model::split_into_heads(14336, 112, names)?, 128);
/// assert!(lmshape::model::split_into_heads(8, 12, names).is_err());
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// [`Error::ZeroSize`] for no heads, [`Error::NotDivisible`] when the width does not split.
pub fn split_into_heads(
    hidden_size: u64,
    num_heads: u64,
    names: (&'static str, &'static str),
) -> Result<u64> {
    positive(num_heads, names.1)?;
    divisible(
        "the width must split evenly into attention heads",
        names.0,
        hidden_size,
        names.1,
        num_heads,
    )?;
    Ok(hidden_size / num_heads)
}

/// How attention projects its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Attention {
    /// q, k and v projections of `H·hd`, `KV·hd`, `KV·hd` (multi-head, grouped-query or
    /// multi-query attention by `num_kv_heads`).
    #[default]
    Standard,
    /// Multi-head latent attention (DeepSeek-AI 2024, DeepSeek-V2 §2.1): see
    /// [`LatentAttention`].
    MultiLatent(LatentAttention),
}

/// DeepSeek-V2/V3 multi-head latent attention (`modeling_deepseek.py`, `DeepseekV3Attention`):
/// queries through an optional low-rank `q_a_proj d×r_q` + norm + `q_b_proj r_q×H(n+r)` (or one
/// `q_proj d×H(n+r)`); keys and values through `kv_a_proj_with_mqa d×(r_kv + r)` + norm on the
/// `r_kv` latent + `kv_b_proj r_kv×H(n + v)`; output `o_proj H·v×d`. `n` = `qk_nope_head_dim`,
/// `r` = `qk_rope_head_dim` (the rope key is shared by the heads), `v` = `v_head_dim`. The KV
/// cache keeps the latent and the rope key: `r_kv + r` values per token and layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct LatentAttention {
    /// Rank of the query compression (`None`: a full `q_proj`).
    pub q_lora_rank: Option<u64>,
    /// Rank of the key/value compression.
    pub kv_lora_rank: u64,
    /// Per-head query/key width without rotary embedding.
    pub qk_nope_head_dim: u64,
    /// Per-head query/key width with rotary embedding.
    pub qk_rope_head_dim: u64,
    /// Per-head value width.
    pub v_head_dim: u64,
}

/// A mixture-of-experts feed-forward block (Shazeer et al. 2017; Fedus et al. 2022) and which
/// layers have it. Router `d×E` (+ `E` bias when `router_bias`); `E` experts of width
/// `expert_ffn_size` in the model's MLP form (+ biases when `expert_biases`); shared experts
/// that every token uses, together `shared_ffn_size` wide (DeepSeek: `n_shared_experts ×
/// moe_intermediate_size`; Qwen2-MoE: `shared_expert_intermediate_size`), with a `d×1` gate
/// when `shared_expert_gate`; DeepSeek-V3's `e_score_correction_bias` (`E` values) when
/// `score_correction_bias`.
///
/// Layer `i` is a mixture-of-experts layer when `i ≥ first_dense_layers` and
/// `(i + layer_offset) % layer_period == 0` (DeepSeek: `first_k_dense_replace`,
/// `moe_layer_freq`, offset 0; Qwen2-MoE: `decoder_sparse_step`, offset 1); the other layers
/// have the dense MLP of width `ffn_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Moe {
    /// Routed experts `E`.
    pub num_experts: u64,
    /// Routed experts per token `k`.
    pub top_k: u64,
    /// Width of one routed expert.
    pub expert_ffn_size: u64,
    /// Shared experts (reported; their width is `shared_ffn_size`).
    pub num_shared_experts: u64,
    /// Width of the shared experts together (0: none).
    pub shared_ffn_size: u64,
    /// A sigmoid gate `d×1` on the shared expert (Qwen2-MoE).
    pub shared_expert_gate: bool,
    /// The router has a bias (gpt-oss).
    pub router_bias: bool,
    /// Each expert's linears have biases (gpt-oss).
    pub expert_biases: bool,
    /// DeepSeek-V3's per-expert routing correction bias.
    pub score_correction_bias: bool,
    /// Leading layers with the dense MLP.
    pub first_dense_layers: u64,
    /// Every `layer_period`-th layer after them is a mixture-of-experts layer.
    pub layer_period: u64,
    /// Offset of the period (see the type's docs).
    pub layer_offset: u64,
}

impl Moe {
    /// `num_experts` routed experts of `expert_ffn_size`, `top_k` per token, in every layer; no
    /// shared experts, no biases, no correction bias (Mixtral's form; set the other fields with
    /// struct update).
    ///
    /// ```
    /// let moe = lmshape::model::Moe::routed(8, 2, 14336);
    /// assert!(moe.is_moe_layer(0) && moe.shared_ffn_size == 0);
    /// ```
    pub fn routed(num_experts: u64, top_k: u64, expert_ffn_size: u64) -> Moe {
        Moe {
            num_experts,
            top_k,
            expert_ffn_size,
            num_shared_experts: 0,
            shared_ffn_size: 0,
            shared_expert_gate: false,
            router_bias: false,
            expert_biases: false,
            score_correction_bias: false,
            first_dense_layers: 0,
            layer_period: 1,
            layer_offset: 0,
        }
    }

    /// Whether layer `i` (from 0) has the mixture-of-experts block.
    pub fn is_moe_layer(&self, i: u64) -> bool {
        i >= self.first_dense_layers
            && self.layer_period > 0
            && (i % self.layer_period + self.layer_offset % self.layer_period) % self.layer_period
                == 0
    }

    /// Mixture-of-experts layers among layers `range` (counted in closed form, no loop).
    pub fn moe_layers_in(&self, range: std::ops::Range<u64>) -> u64 {
        let start = range.start.max(self.first_dense_layers);
        if start >= range.end || self.layer_period == 0 {
            return 0;
        }
        // Layers i in [start, end) with (i + offset) % period == 0.
        let p = self.layer_period;
        let count_below = |n: u64| -> u64 {
            // i in [0, n) with (i + offset) % p == 0.
            let o = self.layer_offset % p;
            let first = (p - o) % p;
            if n <= first {
                0
            } else {
                (n - first - 1) / p + 1
            }
        };
        count_below(range.end) - count_below(start)
    }

    fn validate(&self, model_layers: u64) -> Result<()> {
        positive(self.num_experts, "num_experts")?;
        positive(self.top_k, "top_k")?;
        positive(self.expert_ffn_size, "expert_ffn_size")?;
        positive(self.layer_period, "moe layer_period")?;
        if self.top_k > self.num_experts {
            return Err(Error::Inconsistent {
                rule: "a token cannot be routed to more experts than there are",
                detail: format!(
                    "top_k = {} > num_experts = {}",
                    self.top_k, self.num_experts
                ),
            });
        }
        if self.first_dense_layers > model_layers {
            return Err(Error::Inconsistent {
                rule: "dense leading layers cannot exceed the layers",
                detail: format!(
                    "first_dense_layers = {} > num_layers = {model_layers}",
                    self.first_dense_layers
                ),
            });
        }
        Ok(())
    }
}

/// Sliding-window (local) attention layers (Beltagy et al. 2020; Mistral 7B; Gemma 2/3;
/// gpt-oss): within every `period` layers the first `local_layers` attend to at most the last
/// `window` tokens, the rest attend globally. Mistral 7B: window 4096, period 1, every layer
/// local; Gemma 2 and gpt-oss: period 2, layer 0 local; Gemma 3: period 6, five local then one
/// global. Parameters are unchanged; FLOPs and the KV cache see at most the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LocalAttention {
    /// Tokens a local layer attends to.
    pub window: u64,
    /// Layers per period.
    pub period: u64,
    /// Local layers at the start of each period.
    pub local_layers: u64,
}

impl LocalAttention {
    /// Whether layer `i` (from 0) is local: `i mod period < local_layers`.
    ///
    /// ```
    /// // Gemma 3: five local layers, then one global.
    /// let w = lmshape::model::LocalAttention { window: 1024, period: 6, local_layers: 5 };
    /// assert!(w.is_local_layer(4) && !w.is_local_layer(5) && w.is_local_layer(6));
    /// ```
    pub fn is_local_layer(&self, i: u64) -> bool {
        i % self.period.max(1) < self.local_layers
    }

    /// Local (windowed) layers among the first `num_layers`: the layers `i` with
    /// [`LocalAttention::is_local_layer`], counted in closed form.
    pub fn local_layer_count(&self, num_layers: u64) -> u64 {
        let p = self.period.max(1);
        let local = self.local_layers.min(p);
        num_layers / p * local + (num_layers % p).min(local)
    }

    fn validate(&self) -> Result<()> {
        positive(self.window, "sliding window")?;
        positive(self.period, "local attention period")?;
        if self.local_layers > self.period {
            return Err(Error::Inconsistent {
                rule: "local layers per period cannot exceed the period",
                detail: format!("{} local of {}", self.local_layers, self.period),
            });
        }
        Ok(())
    }
}

/// A decoder-only transformer language model, validated at construction.
///
/// `head_dim` may differ from `hidden_size / num_heads` (Gemma-7B: 3072 hidden, 16 heads of 256).
/// `num_kv_heads < num_heads` is grouped-query attention (Ainslie et al. 2023); `1` is
/// multi-query attention (Shazeer 2019).
///
/// ```
/// use lmshape::{Architecture, Transformer};
/// // Llama-2-7B (Touvron et al. 2023, Table 1; Hugging Face config.json).
/// let m = Transformer::builder().vocab_size(32000).hidden_size(4096).num_layers(32).num_heads(32).num_kv_heads(32).head_dim(128).ffn_size(11008).max_positions(4096).arch(Architecture::llama()).build()?;
/// assert_eq!(m.param_counts()?.total_params, 6_738_415_616);
/// # Ok::<(), lmshape::Error>(())
/// ```
/// Deserializing validates: a value that breaks a rule is an error, never a `Transformer`.
///
/// ```
/// let bad = r#"{"vocab_size":1,"hidden_size":8,"num_layers":0,"num_heads":1,"num_kv_heads":1,
///   "head_dim":8,"ffn_size":8,"max_positions":8,"arch":{"mlp":"standard","norm":"layer_norm",
///   "position":{"kind":"rotary"},"biases":{"qkv":false,"attn_out":false,"mlp":false},
///   "tied_embeddings":true,"embedding_norm":false,"block":{"kind":"sequential"},
///   "final_norm":true,"embed_proj_dim":null}}"#;
/// let e = serde_json::from_str::<lmshape::Transformer>(bad).unwrap_err();
/// assert!(e.to_string().contains("num_layers must be positive"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "TransformerBuilder")]
pub struct Transformer {
    /// Rows of the token embedding (often padded, e.g. BLOOM's 250880).
    pub(crate) vocab_size: u64,
    /// Residual stream width `d`.
    pub(crate) hidden_size: u64,
    /// Transformer layers `L`.
    pub(crate) num_layers: u64,
    /// Query heads `H`.
    pub(crate) num_heads: u64,
    /// Key/value heads (equal to `num_heads` for multi-head attention).
    pub(crate) num_kv_heads: u64,
    /// Width of one head.
    pub(crate) head_dim: u64,
    /// Feed-forward inner width `f`.
    pub(crate) ffn_size: u64,
    /// Context length the model was built for (learned position rows, default FLOPs context).
    pub(crate) max_positions: u64,
    /// Architecture knobs.
    pub(crate) arch: Architecture,
    /// Attention projections (standard or latent).
    #[serde(default)]
    pub(crate) attention: Attention,
    /// Mixture-of-experts block and the layers that have it.
    #[serde(default)]
    pub(crate) moe: Option<Moe>,
    /// Sliding-window layers.
    #[serde(default)]
    pub(crate) local_attention: Option<LocalAttention>,
    /// Multi-token-prediction modules shipped with the weights but not part of the causal LM
    /// (DeepSeek-V3 `num_nextn_predict_layers`); counted only on request
    /// ([`crate::params::ParamCounts::mtp_params`]).
    #[serde(default)]
    pub(crate) mtp_layers: u64,
}

/// The one way to build a [`Transformer`]: set the fields, then [`TransformerBuilder::build`]
/// validates them. It is also the serde form, so deserializing goes through the same rules.
/// Start from [`Transformer::builder`] (every size zero: unset sizes are errors) or from an
/// existing model with [`Transformer::to_builder`].
///
/// ```
/// use lmshape::{Architecture, Transformer};
/// // Llama-2-7B (Touvron et al. 2023, Table 1; Hugging Face config.json).
/// let m = Transformer::builder()
///     .vocab_size(32000).hidden_size(4096).num_layers(32).num_heads(32).num_kv_heads(32)
///     .head_dim(128).ffn_size(11008).max_positions(4096).arch(Architecture::llama())
///     .build()?;
/// assert_eq!(m.param_counts()?.total_params, 6_738_415_616);
/// // A variant of it, checked again.
/// let gqa = m.to_builder().num_kv_heads(8).build()?;
/// assert!(gqa.total_params()? < m.total_params()?);
/// assert!(m.to_builder().num_kv_heads(5).build().is_err());
/// # Ok::<(), lmshape::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TransformerBuilder {
    vocab_size: u64,
    hidden_size: u64,
    num_layers: u64,
    num_heads: u64,
    num_kv_heads: u64,
    head_dim: u64,
    ffn_size: u64,
    max_positions: u64,
    arch: Architecture,
    #[serde(default)]
    attention: Attention,
    #[serde(default)]
    moe: Option<Moe>,
    #[serde(default)]
    local_attention: Option<LocalAttention>,
    #[serde(default)]
    mtp_layers: u64,
}

impl TransformerBuilder {
    /// Rows of the token embedding.
    pub fn vocab_size(mut self, vocab_size: u64) -> TransformerBuilder {
        self.vocab_size = vocab_size;
        self
    }

    /// Residual stream width `d`.
    pub fn hidden_size(mut self, hidden_size: u64) -> TransformerBuilder {
        self.hidden_size = hidden_size;
        self
    }

    /// Transformer layers `L`.
    pub fn num_layers(mut self, num_layers: u64) -> TransformerBuilder {
        self.num_layers = num_layers;
        self
    }

    /// Query heads `H`.
    pub fn num_heads(mut self, num_heads: u64) -> TransformerBuilder {
        self.num_heads = num_heads;
        self
    }

    /// Key/value heads.
    pub fn num_kv_heads(mut self, num_kv_heads: u64) -> TransformerBuilder {
        self.num_kv_heads = num_kv_heads;
        self
    }

    /// Width of one head.
    pub fn head_dim(mut self, head_dim: u64) -> TransformerBuilder {
        self.head_dim = head_dim;
        self
    }

    /// Feed-forward inner width `f`.
    pub fn ffn_size(mut self, ffn_size: u64) -> TransformerBuilder {
        self.ffn_size = ffn_size;
        self
    }

    /// Context length the model was built for.
    pub fn max_positions(mut self, max_positions: u64) -> TransformerBuilder {
        self.max_positions = max_positions;
        self
    }

    /// Architecture knobs.
    pub fn arch(mut self, arch: Architecture) -> TransformerBuilder {
        self.arch = arch;
        self
    }

    /// Attention projections.
    pub fn attention(mut self, attention: Attention) -> TransformerBuilder {
        self.attention = attention;
        self
    }

    /// Mixture-of-experts block.
    pub fn moe(mut self, moe: Option<Moe>) -> TransformerBuilder {
        self.moe = moe;
        self
    }

    /// Sliding-window layers.
    pub fn local_attention(
        mut self,
        local_attention: Option<LocalAttention>,
    ) -> TransformerBuilder {
        self.local_attention = local_attention;
        self
    }

    /// Multi-token-prediction modules shipped with the weights.
    pub fn mtp_layers(mut self, mtp_layers: u64) -> TransformerBuilder {
        self.mtp_layers = mtp_layers;
        self
    }

    /// The model, if it obeys every rule ([`Transformer::validate`]).
    ///
    /// # Errors
    /// The first rule broken.
    pub fn build(self) -> Result<Transformer> {
        let m = Transformer {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            num_layers: self.num_layers,
            num_heads: self.num_heads,
            num_kv_heads: self.num_kv_heads,
            head_dim: self.head_dim,
            ffn_size: self.ffn_size,
            max_positions: self.max_positions,
            arch: self.arch,
            attention: self.attention,
            moe: self.moe,
            local_attention: self.local_attention,
            mtp_layers: self.mtp_layers,
        };
        m.validate()?;
        Ok(m)
    }
}

impl TryFrom<TransformerBuilder> for Transformer {
    type Error = Error;

    fn try_from(b: TransformerBuilder) -> Result<Transformer> {
        b.build()
    }
}

impl Transformer {
    /// A builder with every size zero and the defaults of the rest (standard attention, no
    /// experts, no windows, no multi-token-prediction modules), GPT-2's architecture knobs.
    pub fn builder() -> TransformerBuilder {
        TransformerBuilder {
            vocab_size: 0,
            hidden_size: 0,
            num_layers: 0,
            num_heads: 0,
            num_kv_heads: 0,
            head_dim: 0,
            ffn_size: 0,
            max_positions: 0,
            arch: Architecture::gpt2(),
            attention: Attention::Standard,
            moe: None,
            local_attention: None,
            mtp_layers: 0,
        }
    }

    /// A builder holding this model's fields, to derive a variant (validated again by
    /// [`TransformerBuilder::build`]).
    pub fn to_builder(&self) -> TransformerBuilder {
        TransformerBuilder {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            num_layers: self.num_layers,
            num_heads: self.num_heads,
            num_kv_heads: self.num_kv_heads,
            head_dim: self.head_dim,
            ffn_size: self.ffn_size,
            max_positions: self.max_positions,
            arch: self.arch,
            attention: self.attention,
            moe: self.moe,
            local_attention: self.local_attention,
            mtp_layers: self.mtp_layers,
        }
    }

    /// Rows of the token embedding.
    pub fn vocab_size(&self) -> u64 {
        self.vocab_size
    }

    /// Residual stream width `d`.
    pub fn hidden_size(&self) -> u64 {
        self.hidden_size
    }

    /// Transformer layers `L`.
    pub fn num_layers(&self) -> u64 {
        self.num_layers
    }

    /// Query heads `H`.
    pub fn num_heads(&self) -> u64 {
        self.num_heads
    }

    /// Key/value heads.
    pub fn num_kv_heads(&self) -> u64 {
        self.num_kv_heads
    }

    /// Width of one head.
    pub fn head_dim(&self) -> u64 {
        self.head_dim
    }

    /// Feed-forward inner width `f`.
    pub fn ffn_size(&self) -> u64 {
        self.ffn_size
    }

    /// Context length the model was built for.
    pub fn max_positions(&self) -> u64 {
        self.max_positions
    }

    /// Architecture knobs.
    pub fn arch(&self) -> Architecture {
        self.arch
    }

    /// Attention projections.
    pub fn attention(&self) -> Attention {
        self.attention
    }

    /// Widths of one attention head's query/key and value: `head_dim` both for standard
    /// attention; for multi-head latent attention `qk_nope + qk_rope` (the model's `head_dim`,
    /// which its rules hold equal) and `v_head_dim` (DeepSeek-AI 2024, DeepSeek-V2 §2.1.2).
    ///
    /// ```
    /// let m = lmshape::presets::by_name("gpt3-175b")?;
    /// assert_eq!(m.head_widths(), (128, 128));
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    pub fn head_widths(&self) -> (u64, u64) {
        match &self.attention {
            Attention::Standard => (self.head_dim, self.head_dim),
            Attention::MultiLatent(mla) => (self.head_dim, mla.v_head_dim),
        }
    }

    /// Mixture-of-experts block.
    pub fn moe(&self) -> Option<Moe> {
        self.moe
    }

    /// Sliding-window layers.
    pub fn local_attention(&self) -> Option<LocalAttention> {
        self.local_attention
    }

    /// Multi-token-prediction modules shipped with the weights.
    pub fn mtp_layers(&self) -> u64 {
        self.mtp_layers
    }

    /// The same model with a mixture-of-experts block, validated.
    ///
    /// # Errors
    /// The first rule broken ([`Transformer::validate`]).
    pub fn with_moe(self, moe: Moe) -> Result<Transformer> {
        self.to_builder().moe(Some(moe)).build()
    }

    /// The same model with multi-head latent attention, validated. `num_kv_heads` becomes
    /// `num_heads` and `head_dim` the query/key width `qk_nope + qk_rope`.
    ///
    /// # Errors
    /// The first rule broken ([`Transformer::validate`]).
    pub fn with_latent_attention(self, mla: LatentAttention) -> Result<Transformer> {
        let head_dim = crate::error::add(mla.qk_nope_head_dim, mla.qk_rope_head_dim, "head_dim")?;
        self.to_builder()
            .attention(Attention::MultiLatent(mla))
            .num_kv_heads(self.num_heads)
            .head_dim(head_dim)
            .build()
    }

    /// The same model with sliding-window layers, validated.
    ///
    /// # Errors
    /// The first rule broken ([`Transformer::validate`]).
    pub fn with_local_attention(self, local: LocalAttention) -> Result<Transformer> {
        self.to_builder().local_attention(Some(local)).build()
    }

    /// The same model shipping `layers` multi-token-prediction modules.
    ///
    /// # Errors
    /// The first rule broken ([`Transformer::validate`]).
    pub fn with_mtp_layers(self, layers: u64) -> Result<Transformer> {
        self.to_builder().mtp_layers(layers).build()
    }

    /// A multi-head model with `head_dim = hidden / heads` and `ffn = 4·hidden` (GPT-style).
    ///
    /// ```
    /// use lmshape::{Architecture, Transformer};
    /// let m = Transformer::standard(50257, 768, 12, 12, 1024, Architecture::gpt2())?;
    /// assert_eq!(m.param_counts()?.total_params, 124_439_808);
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    ///
    /// # Errors
    /// A width that does not split into the heads, or the rules of [`TransformerBuilder::build`].
    pub fn standard(
        vocab_size: u64,
        hidden_size: u64,
        num_layers: u64,
        num_heads: u64,
        max_positions: u64,
        arch: Architecture,
    ) -> Result<Transformer> {
        let head_dim = split_into_heads(hidden_size, num_heads, ("hidden_size", "num_heads"))?;
        Transformer::builder()
            .vocab_size(vocab_size)
            .hidden_size(hidden_size)
            .num_layers(num_layers)
            .num_heads(num_heads)
            .num_kv_heads(num_heads)
            .head_dim(head_dim)
            .ffn_size(standard_ffn_size(hidden_size)?)
            .max_positions(max_positions)
            .arch(arch)
            .build()
    }

    /// Check every rule; [`TransformerBuilder::build`] calls this.
    ///
    /// # Errors
    /// The first rule broken: a zero size, a head grouping, a mixture-of-experts, window or
    /// latent-attention setting that contradicts itself, or counts that overflow `u64`.
    pub fn validate(&self) -> Result<()> {
        self.check_rules()?;
        // Fails with Error::Overflow if any count does not fit u64 (the sizes bound every
        // component and the active count; the multi-token-prediction modules are counted apart).
        if self.mtp_layers > 0 {
            self.param_counts()?;
        } else {
            crate::params::sizes(self)?;
        }
        Ok(())
    }

    /// Every rule but the counts' size: what the counting code needs to run without dividing
    /// by zero (it calls this first, so a model built by hand with a broken rule is an error,
    /// never a panic).
    pub(crate) fn check_rules(&self) -> Result<()> {
        positive(self.vocab_size, "vocab_size")?;
        positive(self.hidden_size, "hidden_size")?;
        positive(self.num_layers, "num_layers")?;
        positive(self.num_heads, "num_heads")?;
        positive(self.num_kv_heads, "num_kv_heads")?;
        positive(self.head_dim, "head_dim")?;
        positive(self.ffn_size, "ffn_size")?;
        positive(self.max_positions, "max_positions")?;
        if let Some(p) = self.arch.embed_proj_dim {
            positive(p, "embed_proj_dim")?;
        }
        if let Some(moe) = &self.moe {
            moe.validate(self.num_layers)?;
        }
        if let Some(local) = &self.local_attention {
            local.validate()?;
        }
        if let Attention::MultiLatent(mla) = &self.attention {
            positive(mla.kv_lora_rank, "kv_lora_rank")?;
            positive(mla.v_head_dim, "v_head_dim")?;
            if let Some(r) = mla.q_lora_rank {
                positive(r, "q_lora_rank")?;
            }
            if self.num_kv_heads != self.num_heads
                || Some(self.head_dim) != mla.qk_nope_head_dim.checked_add(mla.qk_rope_head_dim)
            {
                return Err(Error::Inconsistent {
                    rule: "latent attention has as many kv heads as heads and head_dim = qk_nope + qk_rope",
                    detail: format!(
                        "num_kv_heads = {}, num_heads = {}, head_dim = {}, qk_nope + qk_rope = {} + {}",
                        self.num_kv_heads,
                        self.num_heads,
                        self.head_dim,
                        mla.qk_nope_head_dim,
                        mla.qk_rope_head_dim
                    ),
                });
            }
        }
        if self.num_kv_heads > self.num_heads {
            return Err(Error::Inconsistent {
                rule: "kv heads cannot exceed query heads",
                detail: format!(
                    "num_kv_heads = {} > num_heads = {}",
                    self.num_kv_heads, self.num_heads
                ),
            });
        }
        divisible(
            "query heads must split evenly into kv heads groups",
            "num_heads",
            self.num_heads,
            "num_kv_heads",
            self.num_kv_heads,
        )?;
        Ok(())
    }

    /// Check that the model can attend over `tokens` positions: a learned position table has
    /// `max_positions` rows and no row for a later position (GPT-2's `wpe`, OPT's
    /// `embed_positions`), so a longer sequence or context is an error. Rotary, ALiBi and
    /// position-free models accept any length (quality beyond the trained context is not
    /// this crate's question).
    ///
    /// ```
    /// let gpt3 = lmshape::presets::by_name("gpt3-small")?; // 2048 learned positions
    /// assert!(gpt3.check_context(2048, "seq_len").is_ok());
    /// let e = gpt3.check_context(1_000_000, "seq_len").unwrap_err();
    /// assert!(e.to_string().contains("seq_len = 1000000"));
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Inconsistent`] naming `what` and both lengths.
    pub fn check_context(&self, tokens: u64, what: &'static str) -> Result<()> {
        if matches!(self.arch.position, PositionKind::Learned { .. }) && tokens > self.max_positions
        {
            return Err(Error::Inconsistent {
                rule: "a model with learned positions attends over at most its position table",
                detail: format!(
                    "{what} = {tokens} > max_positions = {} (max_position_embeddings / n_positions in the config)",
                    self.max_positions
                ),
            });
        }
        Ok(())
    }

    /// Query width `H · head_dim` (Kaplan's `d_attn`).
    pub fn attn_dim(&self) -> u64 {
        self.num_heads.saturating_mul(self.head_dim)
    }

    /// Key/value width `KV · head_dim`.
    pub fn kv_dim(&self) -> u64 {
        self.num_kv_heads.saturating_mul(self.head_dim)
    }

    /// Width of the token embedding (`embed_proj_dim` or `hidden_size`).
    pub fn embed_dim(&self) -> u64 {
        self.arch.embed_proj_dim.unwrap_or(self.hidden_size)
    }

    /// Kaplan et al. 2020 aspect ratio `d_model / n_layer`.
    pub fn aspect_ratio(&self) -> f64 {
        self.hidden_size as f64 / self.num_layers as f64
    }
}
