//! Data parallelism and the optimizer: the exposed gradient reduction and weight gathers, Adam's
//! step and FP8 weight casts.

use super::{Cluster, StepOptions};
use crate::error::Result;
use crate::hardware::analytical::ATTAINABLE_HBM_FRACTION;
use crate::parallel::{ParallelLayout, ZeroStage};
use crate::system::CollectiveOp;

/// Parameters the most loaded rank holds: the dense part (reduced and sharded over `dp`) and
/// the routed experts (over the expert-data-parallel degree).
pub(crate) struct HeldParams {
    pub(crate) dense: f64,
    pub(crate) experts: f64,
    pub(crate) expert_dp: u64,
}

impl HeldParams {
    /// Parameters of this rank's shard of the states ZeRO stage `stage` shards, at stage
    /// `zero` (at or above `stage`: over the data-parallel degrees).
    pub(crate) fn sharded(
        &self,
        layout: &ParallelLayout,
        zero: ZeroStage,
        stage: ZeroStage,
    ) -> f64 {
        if zero >= stage {
            self.dense / layout.weight_dp() as f64 + self.experts / self.expert_dp as f64
        } else {
            self.dense + self.experts
        }
    }
}

/// The exposed data-parallel communication of the most loaded rank: its dense parameters over
/// `dp` (ranks `tp` apart) and its routed experts over the expert-data-parallel degree (ranks
/// `ep · etp` apart), each by [`Cluster::collective_seconds`]:
///
/// * **ZeRO 0**: an all-reduce of the gradients (`grad_bytes` each); an optimizer that
///   shards its own states also all-gathers the updated 16-bit weights (DeepSpeed's
///   `BF16_Optimizer`: it all-reduces its fp32 buffer in the 16-bit communication type,
///   77b649d `engine.py` L2049-2074, L712-721).
/// * **ZeRO 1–2** (Megatron-Core's distributed optimizer, Rajbhandari et al. 2020 §5): a
///   reduce-scatter of the gradients and an all-gather of the updated weights
///   (16-bit, `activation_bytes`). With [`Cluster::overlap_dp_comm`] the reduce-scatter hides behind the
///   last micro-batch's backward (two thirds of a stage-time); with
///   [`Cluster::overlap_param_gather`] the all-gather behind the first forward (one third).
/// * **ZeRO 3 / FSDP** (§5.3; Zhao et al. 2023 §3): per micro-batch the weights are gathered
///   for the forward and again for the backward and the gradients reduce-scattered, layer by
///   layer with prefetch, so the traffic hides behind the compute of the micro-batches; what
///   exceeds it is exposed, and never less than one layer's share (the first gather).
pub(crate) fn data_parallel_seconds(
    layout: &ParallelLayout,
    cluster: &Cluster,
    opts: &StepOptions,
    held: &HeldParams,
    stage_seconds: f64,
    stage_layers: u64,
) -> Result<f64> {
    let grad = opts.memory.precision.grad_bytes as f64;
    // Weights travel as the GEMMs read them (16 bits), also where the framework keeps no
    // 16-bit copy as a state (FSDP2 gathers its fp32 shards cast to bf16).
    let weight = opts.memory.precision.activation_bytes as f64;
    let groups = [
        (held.dense, layout.weight_dp(), layout.tp),
        (
            held.experts,
            held.expert_dp,
            layout.ep.saturating_mul(layout.expert_tp()),
        ),
    ];
    let (mut grads, mut weights) = (0.0, 0.0);
    for (params, ranks, stride) in groups {
        if params <= 0.0 {
            continue;
        }
        if layout.zero == ZeroStage::None {
            grads +=
                cluster.collective_seconds(CollectiveOp::AllReduce, params * grad, ranks, stride);
            if opts.memory.precision.shards_own_states {
                weights += cluster.collective_seconds(
                    CollectiveOp::AllGather,
                    params * weight,
                    ranks,
                    stride,
                );
            }
        } else {
            grads += cluster.collective_seconds(
                CollectiveOp::ReduceScatter,
                params * grad,
                ranks,
                stride,
            );
            weights +=
                cluster.collective_seconds(CollectiveOp::AllGather, params * weight, ranks, stride);
        }
    }
    if layout.zero == ZeroStage::Weights {
        let m = layout.num_micro_batches()? as f64;
        let traffic = m * (grads + 2.0 * weights);
        let first_gather = traffic / (m * 3.0 * stage_layers.max(1) as f64);
        return Ok((traffic - m * stage_seconds).max(first_gather));
    }
    let hidden = |on: bool, fraction: f64| if on { stage_seconds * fraction } else { 0.0 };
    Ok(
        (grads - hidden(cluster.overlap_dp_comm, 2.0 / 3.0)).max(0.0)
            + (weights - hidden(cluster.overlap_param_gather, 1.0 / 3.0)).max(0.0),
    )
}

/// Adam's step over HBM: [`crate::framework::Precision::optimizer_step_bytes`] per parameter
/// of the rank's shard under ZeRO (30 under Megatron-Core's counts).
pub(crate) fn optimizer_seconds(
    layout: &ParallelLayout,
    cluster: &Cluster,
    opts: &StepOptions,
    held: &HeldParams,
) -> f64 {
    let p = &opts.memory.precision;
    p.optimizer_step_bytes() as f64
        * held.sharded(
            layout,
            p.state_sharding(layout.zero),
            ZeroStage::OptimizerStates,
        )
        / (cluster.gpu.memory_bytes_per_s * ATTAINABLE_HBM_FRACTION)
}

/// FP8 weight casts: once per step (Transformer Engine caches the cast weights over the
/// micro-batches of a step), each local weight read in 16 bits and written twice in 8 bits
/// (the weight and its transpose, with MXFP8's scales).
pub(crate) fn weight_cast_seconds(
    layout: &ParallelLayout,
    cluster: &Cluster,
    opts: &StepOptions,
    held: &HeldParams,
) -> f64 {
    let cast = opts.memory.gemm_precision.cast_bytes();
    if cast == 0.0 {
        return 0.0;
    }
    (opts.dtype.bytes() as f64 + 2.0 * cast) * held.sharded(layout, layout.zero, ZeroStage::Weights)
        / (cluster.gpu.memory_bytes_per_s * ATTAINABLE_HBM_FRACTION)
}
