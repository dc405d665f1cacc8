//! The training framework: the one description of its byte counts per parameter
//! ([`Precision`], [`Framework::precision`]) that memory and step time both read, its memory
//! profile (what the allocator and the runtime add, [`FrameworkProfile`]) and its speed
//! profile ([`SpeedProfile`]).
//!
//! The memory estimate ([`crate::memory`]) and the step model ([`crate::step`]) take the byte
//! counts from here, so a plan cannot size memory under one framework's counts and price its
//! data-parallel traffic under another's.

use serde::{Deserialize, Serialize};

/// Bytes per parameter of each model state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Precision {
    /// Working weights kept as a model state (bf16/fp16: 2; 0 when the 16-bit weights exist
    /// only while gathered, as under FSDP2).
    pub weight_bytes: u64,
    /// Gradients (16-bit: 2; fp32 accumulation: 4).
    pub grad_bytes: u64,
    /// fp32 master weights (4; 0 when the working weights are fp32).
    pub master_weight_bytes: u64,
    /// Optimizer states (Adam's two fp32 moments: 8).
    pub optimizer_state_bytes: u64,
    /// Bytes per stored activation element, and per element of the weights as the GEMMs
    /// read them when gathered (16-bit: 2).
    pub activation_bytes: u64,
    /// fp32 gradients of the rank's optimizer partition, kept beside the 16-bit ones and
    /// sharded like the optimizer states (DeepSpeed's ZeRO optimizers: 4; otherwise 0).
    #[serde(default)]
    pub partition_grad_bytes: u64,
    /// A gradient-accumulation buffer for every local parameter, kept beside the 16-bit
    /// gradients for the whole run and never sharded (DeepSpeed's `BF16_Optimizer`: fp32, 4;
    /// otherwise 0). Each 16-bit gradient is added into it through a copy in its dtype, one
    /// parameter at a time.
    #[serde(default)]
    pub full_grad_accum_bytes: u64,
    /// The optimizer partitions its master weights and moments over data parallelism itself,
    /// at ZeRO stage 0, and all-gathers the updated 16-bit weights after its step (DeepSpeed's
    /// `BF16_Optimizer`, "its own ZeRO stage 1"); such an optimizer runs at ZeRO stage 0 or 1
    /// only.
    #[serde(default)]
    pub shards_own_states: bool,
}

impl Precision {
    /// 16 bytes per parameter: 2 + 2 + 4 + 8 (ZeRO paper §3.1, `K = 12`).
    pub const MIXED_16: Precision = Precision {
        weight_bytes: 2,
        grad_bytes: 2,
        master_weight_bytes: 4,
        optimizer_state_bytes: 8,
        activation_bytes: 2,
        partition_grad_bytes: 0,
        full_grad_accum_bytes: 0,
        shards_own_states: false,
    };
    /// 20 bytes per parameter at `dp = 1`, DeepSpeed's ZeRO optimizers
    /// (`deepspeed/runtime/zero/stage_1_and_2.py`, `bf16_optimizer.py`): the 16 bytes of
    /// [`Precision::MIXED_16`] — 16-bit weights and gradients, fp32 master weights and Adam
    /// moments — plus the fp32 gradients of the rank's partition, which the optimizer
    /// accumulates into and steps from: `4 + 16/dp` under ZeRO stage 1.
    ///
    /// ```
    /// use lmshape::memory::Precision;
    /// assert_eq!(Precision::DEEPSPEED_20.bytes_per_param(), 20);
    /// ```
    pub const DEEPSPEED_20: Precision = Precision {
        partition_grad_bytes: 4,
        ..Precision::MIXED_16
    };
    /// DeepSpeed's `BF16_Optimizer` as BLOOM ran it (DeepSpeed 77b649d and 5ea1c60f8, 2022,
    /// `deepspeed/runtime/bf16_optimizer.py`): `8 + 12/dp` bytes per parameter —
    ///
    /// * bf16 weights, flattened, full (L86-95): 2;
    /// * bf16 gradients, full, allocated by every backward and kept until the next one clears
    ///   them (L259-272, L330-333; the pipeline engine keeps them, `pipe/engine.py` L748-762): 2;
    /// * an fp32 gradient-accumulation buffer of every local parameter, zeroed but never freed
    ///   or sharded (L120-123, L323-325): 4;
    /// * fp32 master weights and Adam's two fp32 moments of the rank's `1/dp` partition
    ///   (L107-110, L195-207): `12/dp`, however the engine's ZeRO stage is set (BigScience ran
    ///   it at stage 0: "it implements its own zero stage 1 equivalent").
    ///
    /// After the step the updated bf16 partitions are all-gathered over data parallelism in
    /// place (L251-254).
    ///
    /// ```
    /// use lmshape::framework::Precision;
    /// assert_eq!(Precision::DEEPSPEED_BF16.bytes_per_param(), 20);
    /// assert!(Precision::DEEPSPEED_BF16.shards_own_states);
    /// ```
    pub const DEEPSPEED_BF16: Precision = Precision {
        full_grad_accum_bytes: 4,
        shards_own_states: true,
        ..Precision::MIXED_16
    };
    /// 16 bytes per parameter, PyTorch FSDP2 with `MixedPrecisionPolicy(param_dtype=bf16,
    /// reduce_dtype=fp32)`: the sharded parameters are the fp32 master weights, gradients are
    /// reduced into fp32 shards, and Adam keeps two fp32 moments. No 16-bit copy is kept as a
    /// state: the 16-bit weights exist only gathered, in the working set.
    ///
    /// ```
    /// use lmshape::memory::Precision;
    /// assert_eq!(Precision::FSDP2_16.bytes_per_param(), 16);
    /// assert_eq!(Precision::FSDP2_16.weight_bytes, 0);
    /// ```
    pub const FSDP2_16: Precision = Precision {
        weight_bytes: 0,
        grad_bytes: 4,
        master_weight_bytes: 4,
        optimizer_state_bytes: 8,
        activation_bytes: 2,
        partition_grad_bytes: 0,
        full_grad_accum_bytes: 0,
        shards_own_states: false,
    };
    /// 18 bytes per parameter: 2 + 4 (fp32 gradient accumulation, Megatron-LM `main_grad`)
    /// + 4 + 8.
    pub const MIXED_18: Precision = Precision {
        weight_bytes: 2,
        grad_bytes: 4,
        master_weight_bytes: 4,
        optimizer_state_bytes: 8,
        activation_bytes: 2,
        partition_grad_bytes: 0,
        full_grad_accum_bytes: 0,
        shards_own_states: false,
    };

    /// Bytes Adam's step moves per parameter of the rank's optimizer shard: it reads the
    /// gradient it steps from (the fp32 partition where the framework keeps one, else the
    /// gradient buffer), reads and writes the master weights and both moments, and writes the
    /// working weights (Kingma & Ba 2015, Algorithm 1, one pass over each state). Megatron-Core's
    /// counts give 4 + 8 + 16 + 2 = 30.
    ///
    /// ```
    /// use lmshape::framework::Precision;
    /// assert_eq!(Precision::MIXED_18.optimizer_step_bytes(), 30);
    /// assert_eq!(Precision::FSDP2_16.optimizer_step_bytes(), 28);
    /// ```
    pub fn optimizer_step_bytes(&self) -> u64 {
        let grad = if self.partition_grad_bytes > 0 {
            self.partition_grad_bytes
        } else if self.full_grad_accum_bytes > 0 {
            self.full_grad_accum_bytes
        } else {
            self.grad_bytes
        };
        grad + 2 * self.master_weight_bytes + 2 * self.optimizer_state_bytes + self.weight_bytes
    }

    /// The ZeRO stage the optimizer's own states are sharded at: `zero`, raised to stage 1
    /// where the optimizer partitions them itself ([`Precision::shards_own_states`]).
    ///
    /// ```
    /// use lmshape::framework::Precision;
    /// use lmshape::ZeroStage;
    /// assert_eq!(Precision::DEEPSPEED_BF16.state_sharding(ZeroStage::None), ZeroStage::OptimizerStates);
    /// assert_eq!(Precision::MIXED_18.state_sharding(ZeroStage::None), ZeroStage::None);
    /// ```
    pub fn state_sharding(&self, zero: crate::parallel::ZeroStage) -> crate::parallel::ZeroStage {
        if self.shards_own_states {
            zero.max(crate::parallel::ZeroStage::OptimizerStates)
        } else {
            zero
        }
    }

    /// Whether the optimizer runs at ZeRO stage `zero`: one that shards its own states
    /// ([`Precision::shards_own_states`]) runs at stage 0 or 1 only (DeepSpeed's engine
    /// raises `NotImplementedError` for `BF16_Optimizer` beyond: 77b649d `pipe/engine.py`
    /// L255-260).
    ///
    /// # Errors
    /// [`crate::error::Error::Inconsistent`] for such an optimizer at ZeRO stage 2 or 3.
    pub fn check_zero(&self, zero: crate::parallel::ZeroStage) -> crate::error::Result<()> {
        if self.shards_own_states && zero >= crate::parallel::ZeroStage::Gradients {
            return Err(crate::error::Error::Inconsistent {
                rule: "an optimizer that shards its own states (DeepSpeed's BF16_Optimizer) runs at ZeRO stage 0 or 1",
                detail: format!("zero = {zero}"),
            });
        }
        Ok(())
    }

    /// Model-state bytes per parameter without sharding.
    pub fn bytes_per_param(&self) -> u64 {
        self.weight_bytes
            + self.grad_bytes
            + self.full_grad_accum_bytes
            + self.partition_grad_bytes
            + self.master_weight_bytes
            + self.optimizer_state_bytes
    }
}

/// The training framework whose byte counts, buffers and allocator a device figure assumes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Framework {
    /// Megatron-Core with Transformer Engine (2024–26): bf16 weights, a contiguous fp32
    /// gradient buffer, the distributed optimizer (fp32 master weights and Adam moments sharded
    /// over data parallelism), fused cross-entropy.
    #[default]
    MegatronCore,
    /// Megatron-DeepSpeed as BigScience ran it in 2022: DeepSpeed's optimizer under ZeRO
    /// stage 1, accumulating the 16-bit gradients into fp32 ones for the rank's partition
    /// ([`Precision::DEEPSPEED_20`]), with DeepSpeed's communication buckets.
    MegatronDeepspeed,
    /// DeepSpeed ZeRO-3: every model state sharded; each layer's weights gathered before use
    /// and the next one prefetched.
    Deepspeed,
    /// PyTorch FSDP2: parameters sharded per layer and all-gathered before use (one layer
    /// prefetched), gradients reduce-scattered per layer.
    Fsdp,
}

impl Framework {
    /// The bytes per parameter the framework keeps: Megatron-Core's fp32 gradient buffer
    /// ([`Precision::MIXED_18`]); DeepSpeed's ZeRO optimizers, 16-bit gradients plus fp32 ones
    /// for the rank's partition ([`Precision::DEEPSPEED_20`]); FSDP2 with bf16 parameters and
    /// fp32 gradient reduction, fp32 shards and no 16-bit state ([`Precision::FSDP2_16`]).
    ///
    /// Where DeepSpeed's fp32 gradients live was read off BigScience's measured rows, the one
    /// structural choice made on data (graded in `tests/memory.rs`): full fp32 gradients
    /// beside kept 16-bit ones (`8 + 12/dp` bytes under ZeRO-1) put the allocated estimate
    /// above the measured device figure (a reserved factor of 0.98); 16-bit gradients with
    /// an fp32 copy made only for the step leave two rows 13–14% off; the partition kept
    /// throughout (`4 + 16/dp`) grades within −7.6% to +6.9% out of sample.
    ///
    /// ```
    /// use lmshape::memory::{Framework, Precision};
    /// assert_eq!(Framework::MegatronDeepspeed.precision(), Precision::DEEPSPEED_20);
    /// assert_eq!(Framework::MegatronCore.precision().bytes_per_param(), 18);
    /// ```
    pub fn precision(self) -> Precision {
        self.default_optimizer().precision()
    }

    /// The optimizer the framework's engine picks for a bf16 run at ZeRO stage `zero`:
    /// DeepSpeed wraps the optimizer in `BF16_Optimizer` at stage 0 and in its ZeRO
    /// optimizer from stage 1 (`engine.py` `_configure_optimizer`, DeepSpeed 77b649d and
    /// 5ea1c60f8, 2022; today stage 1 takes it only with fp32 gradient accumulation asked
    /// for); the other frameworks keep their usual one ([`Framework::default_optimizer`]).
    ///
    /// ```
    /// use lmshape::framework::{Framework, Optimizer};
    /// use lmshape::ZeroStage;
    /// assert_eq!(Framework::MegatronDeepspeed.bf16_optimizer(ZeroStage::None), Optimizer::DeepspeedBf16);
    /// assert_eq!(Framework::MegatronDeepspeed.bf16_optimizer(ZeroStage::OptimizerStates), Optimizer::DeepspeedZero);
    /// assert_eq!(Framework::MegatronCore.bf16_optimizer(ZeroStage::None), Optimizer::Megatron);
    /// ```
    pub fn bf16_optimizer(self, zero: crate::parallel::ZeroStage) -> Optimizer {
        match self {
            Framework::MegatronDeepspeed | Framework::Deepspeed
                if zero == crate::parallel::ZeroStage::None =>
            {
                Optimizer::DeepspeedBf16
            }
            _ => self.default_optimizer(),
        }
    }

    /// The optimizer the framework uses unless told otherwise.
    ///
    /// ```
    /// use lmshape::framework::{Framework, Optimizer};
    /// assert_eq!(Framework::MegatronDeepspeed.default_optimizer(), Optimizer::DeepspeedZero);
    /// ```
    pub fn default_optimizer(self) -> Optimizer {
        match self {
            Framework::MegatronCore => Optimizer::Megatron,
            Framework::Fsdp => Optimizer::Fsdp2,
            Framework::MegatronDeepspeed | Framework::Deepspeed => Optimizer::DeepspeedZero,
        }
    }
}

/// The optimizer wrapper whose byte counts a run keeps ([`Optimizer::precision`]); each
/// framework has its usual one ([`Framework::default_optimizer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Optimizer {
    /// Megatron's distributed optimizer with its fp32 gradient buffer ([`Precision::MIXED_18`]).
    Megatron,
    /// DeepSpeed's ZeRO stage 1/2 optimizer: 16-bit gradients and an fp32 partition
    /// ([`Precision::DEEPSPEED_20`]).
    DeepspeedZero,
    /// DeepSpeed's `BF16_Optimizer` (bf16 at ZeRO stage 0, as BLOOM trained):
    /// [`Precision::DEEPSPEED_BF16`].
    DeepspeedBf16,
    /// FSDP2 with bf16 compute and fp32 reduction ([`Precision::FSDP2_16`]).
    Fsdp2,
}

impl Optimizer {
    /// The bytes per parameter it keeps.
    ///
    /// ```
    /// use lmshape::framework::{Optimizer, Precision};
    /// assert_eq!(Optimizer::DeepspeedBf16.precision(), Precision::DEEPSPEED_BF16);
    /// ```
    pub fn precision(self) -> Precision {
        match self {
            Optimizer::Megatron => Precision::MIXED_18,
            Optimizer::DeepspeedZero => Precision::DEEPSPEED_20,
            Optimizer::DeepspeedBf16 => Precision::DEEPSPEED_BF16,
            Optimizer::Fsdp2 => Precision::FSDP2_16,
        }
    }
}

crate::error::named!(Optimizer, "optimizer", [
    Megatron => "megatron",
    DeepspeedZero => "deepspeed-zero",
    DeepspeedBf16 => "deepspeed-bf16",
    Fsdp2 => "fsdp2",
]);

crate::error::named!(Framework, "framework", [
    MegatronCore => "megatron-core",
    MegatronDeepspeed => "megatron-deepspeed",
    Deepspeed => "deepspeed",
    Fsdp => "fsdp",
]);

/// A framework's memory profile: its byte counts ([`FrameworkProfile::memory_options`]) and
/// what the allocator and the runtime add to the allocated estimate.
///
/// * `reserved_factor`: `torch.cuda.max_memory_reserved / max_memory_allocated` — the caching
///   allocator's rounding and fragmentation;
/// * `runtime_bytes`: what `nvidia-smi` shows beyond the reserved pool — the CUDA context,
///   cuBLAS/cuDNN/Transformer Engine workspaces, NCCL buffers.
///
/// The gathered weights, whole gradients and gradient buckets of sharded layouts (ZeRO-2/3,
/// FSDP) are part of the estimate's working set ([`crate::memory::TrainingMemory::transient_bytes`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FrameworkProfile {
    /// The framework.
    pub framework: Framework,
    /// Reserved over allocated.
    pub reserved_factor: f64,
    /// Device memory beyond the reserved pool, bytes.
    pub runtime_bytes: u64,
    /// The range of `(estimate − measured) / measured` of the device figure over measured runs
    /// held out of the profile's fit, `(most under, most over)`: the memory band
    /// ([`crate::memory::DeviceMemory::band_bytes`]) and its verdict read the first.
    pub device_error: (f64, f64),
}

impl FrameworkProfile {
    /// The profile of `framework`. Constants and where they come from:
    ///
    /// * Megatron-Core: reserved factor 1.03, the median reserved/allocated ratio of the four
    ///   measured B200 runs in `tests/data/megatron_core_b200_llama3_70b_l12.json` (1.030,
    ///   1.029, 1.028, 1.065); no buckets beyond its contiguous gradient buffer (already in
    ///   the 18 bytes per parameter).
    /// * Megatron-DeepSpeed: reserved factor 1.16, fitted to BigScience's nine measured A100
    ///   peaks (`bloom_throughput_tp8.json`, graded leave-one-out in `tests/memory.rs`); under
    ///   their ZeRO-1 the gradient all-reduce buckets are used after the backward, when no
    ///   activations are held, and whatever of them lingers is inside that fit.
    /// * DeepSpeed ZeRO-3 and FSDP2: reserved factor 1.10 — an assumption
    ///   not yet calibrated (no measured runs in the repository).
    /// * Every framework: 1.5 GiB of runtime per GPU — an assumption (a CUDA context of about
    ///   0.5 GiB, cuBLAS and Transformer Engine workspaces, NCCL buffers).
    ///
    /// The device error ([`FrameworkProfile::device_error`]), graded in `tests/memory.rs`:
    /// Megatron-Core −3.0% to −0.1%, its reserved figure on the four B200 runs (no device
    /// figure was measured; the runtime on top is the assumption above); Megatron-DeepSpeed
    /// −7.6% to +6.9%, BigScience's nine device peaks held out one at a time; DeepSpeed ZeRO-3
    /// and FSDP2 ±15%, an assumption (no measured runs here) wider than either.
    pub fn of(framework: Framework) -> FrameworkProfile {
        let runtime_bytes = 3 << 29;
        let (reserved_factor, device_error) = match framework {
            Framework::MegatronCore => (1.03, (-0.030, -0.001)),
            Framework::MegatronDeepspeed => (1.16, (-0.076, 0.069)),
            Framework::Deepspeed | Framework::Fsdp => (1.10, (-0.15, 0.15)),
        };
        FrameworkProfile {
            framework,
            reserved_factor,
            runtime_bytes,
            device_error,
        }
    }

    /// What the memory band rests on, in words.
    pub fn band_basis(&self) -> &'static str {
        match self.framework {
            Framework::MegatronCore => {
                "reserved figure of four measured Megatron-Core B200 runs: -3.0% to -0.1% (tests/memory.rs)"
            }
            Framework::MegatronDeepspeed => {
                "device peaks of BigScience's nine measured A100 rows, held out: -7.6% to +6.9% (tests/memory.rs)"
            }
            Framework::Deepspeed | Framework::Fsdp => {
                "unvalidated: no measured runs of this framework in the repository, so a wide default band (+-15%)"
            }
        }
    }
}

/// A framework's speed for the analytical model: one software efficiency ([`crate::step::Cluster::software_efficiency`]) fitted once
/// to measured runs of that framework, with where it was fitted. Frameworks without measured
/// runs here keep 1.0 (the analytical model as it stands).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SpeedProfile {
    /// The framework.
    pub framework: Framework,
    /// The fitted software efficiency.
    pub software_efficiency: f64,
    /// The runs it was fitted on and its held-out error.
    pub calibrated_on: &'static str,
}

impl SpeedProfile {
    /// The profile of `framework`:
    ///
    /// * Megatron-Core (Transformer Engine, 2024–26): 0.69, fitted on NVIDIA's five dense
    ///   DGX-GB200 runs (`tests/data/megatron_bridge_gb200.json`; leave-one-out −17% to +20%;
    ///   the four mixture-of-experts runs, held out, +14% to +47%).
    /// * Megatron-DeepSpeed (2022): 0.739, fitted on BigScience's 23 A100 runs
    ///   (`tests/data/bloom_throughput_tp8.json`; leave-one-out median 3.2%, worst 11.8%).
    ///
    /// Measured machine profiles ([`crate::system`]) need none of these: they are untuned, and
    /// a user's own steps calibrate them ([`crate::step::calibrate_profile`]).
    /// * DeepSpeed ZeRO-3 and FSDP2: 1.0, uncalibrated.
    ///
    /// ```
    /// use lmshape::framework::{Framework, SpeedProfile};
    /// assert_eq!(SpeedProfile::of(Framework::MegatronDeepspeed).software_efficiency, 0.739);
    /// ```
    pub fn of(framework: Framework) -> SpeedProfile {
        let (software_efficiency, calibrated_on) = match framework {
            Framework::MegatronCore => (
                0.69,
                "NVIDIA's five dense DGX-GB200 runs (Megatron-Bridge 25.11); leave-one-out -17% to +20%",
            ),
            Framework::MegatronDeepspeed => (
                0.739,
                "BigScience's 23 A100 runs (Jean Zay, 2022); leave-one-out median 3.2%, worst 11.8%",
            ),
            Framework::Deepspeed | Framework::Fsdp => (1.0, "uncalibrated"),
        };
        SpeedProfile {
            framework,
            software_efficiency,
            calibrated_on,
        }
    }
}
