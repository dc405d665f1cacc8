//! # lmshape
//!
//! Which transformer language model should a compute budget train — how big, what shape, how
//! long? lmshape answers with exact accounting and cited formulas:
//!
//! * [`model`]: a model's shape and architecture knobs — grouped-query or latent attention,
//!   dense and mixture-of-experts layers, sliding-window layers — read from a Hugging Face
//!   `config.json` (28 `model_type`s, [`model::hf::SUPPORTED_MODEL_TYPES`]; one serde struct
//!   per family) or built in code ([`Transformer`], [`presets`]);
//! * [`params`]: exact parameter counts per component, total and active per token;
//! * [`flops`]: FLOPs per token under named conventions (Kaplan, PaLM, Megatron-LM eq. 3,
//!   Chinchilla app. F);
//! * [`parallel`]: parallel layouts (tp, pp, dp, sequence parallelism, ZeRO, batches), the one
//!   set of validity rules, and [`parallel::LayoutSpace`], every layout of a GPU count;
//! * [`memory`]: training memory of the most loaded GPU (model states, activations by
//!   Korthikanti et al. 2022, pipeline in-flight micro-batches) and inference memory with a KV
//!   cache;
//! * [`heuristics`]: Kaplan's aspect ratio, Levine's width–depth relation, published shapes;
//! * [`search`]: lazy enumeration of every valid shape near a target size, and ranking;
//! * [`plan`]: the planner — budget → scaling-law bounds → target → every valid shape × layout →
//!   memory → speed → tokens → predicted loss → a ranked, explained recommendation;
//! * [`hardware`]: GPU presets and the pluggable [`hardware::GemmTimer`] (analytical
//!   tile/wave-quantization model, measured tables, cuBLAS with the `cuda` feature);
//! * [`framework`]: each training framework's byte counts per parameter, memory profile and
//!   speed profile, read by memory and step time alike;
//! * [`system`]: measured profiles of machines (GEMM, attention and collective tables, memory
//!   bandwidth, network) with provenance and their validated error band;
//! * [`step`]: a training step's time on a cluster, layer by layer, with calibration;
//! * [`serve`]: serving a model on a measured machine — prefill, decode, the concurrency its KV
//!   cache holds, tokens per second per user and per GPU, dollars per million tokens;
//! * [`scaling`]: compute budgets, published scaling laws (Kaplan, Chinchilla approaches 1–3,
//!   Besiroglu et al.), fitting a law to your own runs, inference-aware sizing and constraints.
//!
//! ```
//! use lmshape::model::hf::from_hf_config_str;
//! // Qwen2-0.5B's config.json: grouped-query attention, q/k/v biases, tied head.
//! let m = from_hf_config_str(r#"{"model_type": "qwen2", "hidden_size": 896,
//!     "intermediate_size": 4864, "num_attention_heads": 14, "num_hidden_layers": 24,
//!     "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": true}"#)?;
//! let counts = m.param_counts()?;
//! assert_eq!(counts.total_params, 494_032_768);
//! let f = lmshape::flops::kaplan_training_flops_per_token(&m, 2048, false)?;
//! assert!(f > 6.0 * counts.non_embedding_params as f64);
//! # Ok::<(), lmshape::Error>(())
//! ```
//!
//! The whole decision in one call — the planner on a small request:
//!
//! ```
//! use lmshape::{hardware::AnalyticalTimer, plan, PlanRequest};
//! let req = PlanRequest::bloom_reference()      // 384 A100 80GB, 18 weeks, BLOOM, ≥350B tokens
//!     .to_builder()
//!     .param_range(Some((170_000_000_000, 180_000_000_000)))
//!     .build()?;
//! let timer = AnalyticalTimer::new(req.cluster().gpu.clone());
//! let p = plan::plan(&req, &timer)?;
//! let best = p.best().expect("a feasible candidate");
//! assert!(best.tokens >= 350e9 && best.memory_bytes_per_gpu <= 80 << 30);
//! # Ok::<(), lmshape::Error>(())
//! ```
//!
//! ## Layers
//!
//! Each module refers only to the modules below it (`tests/layers.rs` reads the sources and
//! fails on any other reference):
//!
//! | module | may refer to |
//! |---|---|
//! | [`error`] | — |
//! | `checked` (types whose builder checks their rules) | `error` |
//! | [`model`] (with [`params`], the counts its validation needs) | `error` |
//! | [`parallel`] | `error`, `checked`, `model` |
//! | [`flops`] | `error`, `model`, `parallel` |
//! | [`hardware`] (GPU facts and GEMM timers) | `error` |
//! | [`framework`] (byte counts, memory and speed profiles) | `error`, `parallel` (ZeRO stages) |
//! | [`memory`] | the above |
//! | [`system`] (measured profiles of machines) | `error`, `hardware` |
//! | [`step`] | the above, `memory` and `system` |
//! | [`heuristics`] | `error`, `model` |
//! | [`presets`] | `error`, `model`, `heuristics` |
//! | [`search`] | `error`, `checked`, `model`, `parallel`, `flops`, `heuristics` |
//! | [`scaling`] | `error`, `model`, `parallel` |
//! | [`serve`] | the above but `plan` |
//! | [`plan`] | everything |
//!
//! ## Features
//! * `cuda`: `hardware::cuda::CudaTimer`, real cuBLAS GEMM timings through `cudarc` with
//!   dynamic loading (builds without a CUDA toolkit; returns an error, never panics, without a
//!   driver).
//!
//! ## Conventions
//! * Units live in names: `_params`, `_flops`, `_bytes`, `_seconds`, `_tokens`.
//! * Exact counts are `u64` with checked arithmetic (overflow is [`Error::Overflow`]); anything
//!   multiplied by tokens is `f64`.
//! * No I/O, printing or global state; every computation on user input returns [`Result`].
//! * Every formula cites its source in its doc comment.
#![deny(missing_docs)]
#![warn(clippy::missing_errors_doc)]

mod checked;
pub mod error;
pub mod flops;
pub mod framework;
pub mod hardware;
pub mod heuristics;
pub mod memory;
pub mod model;
mod numeric;
pub mod parallel;
pub mod plan;
pub mod presets;
pub mod scaling;
pub mod search;
pub mod serve;
pub mod step;
pub mod system;

pub use error::{Error, Result};
pub use flops::{FlopsConvention, Recompute, TokenFlops};
pub use memory::{MemoryOptions, Precision, TrainingMemory};
pub use model::params;
pub use model::{
    Architecture, BlockKind, LinearBiases, MlpKind, NormKind, PositionKind, Transformer,
};
pub use parallel::{ParallelLayout, Schedule, ZeroStage};
pub use params::{LayerParams, ParamCounts};
pub use plan::{Plan, PlanRequest};
pub use search::{Shape, ShapeSpace};

/// The README's examples, compiled and run as doctests so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
