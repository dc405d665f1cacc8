//! The pipeline: the ends of the model, the slowest stage, point-to-point sends and the
//! schedule's stage-times.

use super::gemms::{LayerVariant, timed};
use super::layer::variant_times;
use super::{Cluster, LayerTimes, StepOptions};
use crate::error::Result;
use crate::hardware::analytical::ATTAINABLE_HBM_FRACTION;
use crate::hardware::{Gemm, GemmTimer};
use crate::model::Transformer;
use crate::parallel::{ParallelLayout, Placement};
use crate::system::CollectiveOp;

/// Per-micro-batch times of the work outside the layers: the last stage's logits (forward
/// GEMM, its two backward GEMMs and the fp32 cross-entropy's reads and writes) and the first
/// stage's embedding gather and scatter-add.
pub(crate) struct EndTimes {
    pub(crate) logits_gemm: f64,
    pub(crate) logits_memory: f64,
    pub(crate) embedding_memory: f64,
}

pub(crate) fn end_times(
    placed: &Placement<'_>,
    cluster: &Cluster,
    timer: &dyn GemmTimer,
    opts: &StepOptions,
) -> Result<EndTimes> {
    let (model, layout) = (placed.model(), placed.layout());
    let e = opts.dtype.bytes() as f64;
    let (s, b, h) = (
        layout.local_seq_len() as f64,
        layout.micro_batch as f64,
        model.hidden_size as f64,
    );
    let bw = cluster.gpu.memory_bytes_per_s * ATTAINABLE_HBM_FRACTION;
    let vocab_per_rank = placed.padded_vocab() / layout.tp;
    let logits = Gemm {
        m: layout.local_seq_len() * layout.micro_batch,
        n: vocab_per_rank,
        k: model.embed_dim(),
        batch: 1,
        dtype: opts.dtype,
        pass: crate::hardware::GemmPass::Forward,
        block_scaled: false,
    };
    Ok(EndTimes {
        logits_gemm: timed(timer, &logits, &cluster.gpu)?
            + timed(timer, &logits.data_grad(), &cluster.gpu)?
            + timed(timer, &logits.weight_grad(), &cluster.gpu)?,
        logits_memory: 3.0 * 4.0 * s * b * vocab_per_rank as f64 * 2.0 / bw,
        embedding_memory: 3.0 * e * s * b * h / bw,
    })
}

/// One micro-batch's forward and backward on the slowest pipeline stage, by kind of work
/// (GEMM and memory-bound work after the software efficiency).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StageTimes {
    pub(crate) gemm: f64,
    pub(crate) memory: f64,
    pub(crate) tp_comm: f64,
    pub(crate) all_to_all: f64,
    pub(crate) cp_comm: f64,
}

impl StageTimes {
    pub(crate) fn total(&self) -> f64 {
        self.gemm + self.memory + self.tp_comm + self.all_to_all + self.cp_comm
    }
}

/// The slowest pipeline stage: every stage's layers summed by [`LayerVariant`] (each variant
/// timed once, when a stage first holds it), the first stage's embedding and the last stage's
/// logits added.
pub(crate) fn slowest_stage(
    placed: &Placement<'_>,
    cluster: &Cluster,
    timer: &dyn GemmTimer,
    opts: &StepOptions,
    ends: &EndTimes,
) -> Result<StageTimes> {
    let (model, layout) = (placed.model(), placed.layout());
    let stages = placed.stages();
    let uniform = model.moe.is_none() && model.local_attention.is_none();
    let mut times: [Option<LayerTimes>; 4] = [None; 4];
    let sw = cluster.software_efficiency;
    let pp = layout.pp;
    let mut slowest = StageTimes::default();
    for index in 0..pp {
        let range = stages.range(index, pp);
        let mut sum = LayerTimes::default();
        let mut add = |variant: LayerVariant, layers: u64| -> Result<()> {
            if layers == 0 {
                return Ok(());
            }
            let lt = match times[variant.index()] {
                Some(lt) => lt,
                None => {
                    let lt = variant_times(model, layout, cluster, timer, opts, variant)?;
                    times[variant.index()] = Some(lt);
                    lt
                }
            };
            let l = layers as f64;
            sum.gemm += l * lt.gemm;
            sum.memory += l * lt.memory;
            sum.tp_comm += l * lt.tp_comm;
            sum.all_to_all += l * lt.all_to_all;
            sum.cp_comm += l * lt.cp_comm;
            Ok(())
        };
        if uniform {
            add(
                LayerVariant {
                    moe: false,
                    local: false,
                },
                range.end - range.start,
            )?;
        } else {
            let mut counts = [0u64; 4];
            for i in range {
                counts[LayerVariant::of(model, i).index()] += 1;
            }
            for (idx, &n) in counts.iter().enumerate() {
                add(
                    LayerVariant {
                        moe: idx >= 2,
                        local: idx % 2 == 1,
                    },
                    n,
                )?;
            }
        }
        if index + 1 == pp {
            sum.gemm += ends.logits_gemm;
            sum.memory += ends.logits_memory;
        }
        if index == 0 {
            sum.memory += ends.embedding_memory;
        }
        let stage = StageTimes {
            gemm: sum.gemm / sw,
            memory: sum.memory / sw,
            tp_comm: sum.tp_comm,
            all_to_all: sum.all_to_all,
            cp_comm: sum.cp_comm,
        };
        if stage.total() > slowest.total() {
            slowest = stage;
        }
    }
    Ok(slowest)
}

/// Point-to-point sends per micro-batch between stages: the activation forward and its
/// gradient backward, `sbh/t` bytes with Megatron-LM's scatter/gather (Narayanan et al. 2021
/// §4.1; `s/cp` tokens under context parallelism), over NVLink when the whole pipeline group
/// sits in one node; the interleaved schedule sends at every model chunk's boundary, `v` times as often (§2.2.2: "the amount of communication
/// also increases by v").
pub(crate) fn p2p_seconds(
    model: &Transformer,
    layout: &ParallelLayout,
    cluster: &Cluster,
    opts: &StepOptions,
) -> f64 {
    if layout.pp == 1 {
        return 0.0;
    }
    let sbh_bytes = layout.local_seq_len() as f64
        * layout.micro_batch as f64
        * model.hidden_size as f64
        * opts.dtype.bytes() as f64;
    let bytes = sbh_bytes / layout.tp as f64;
    // Neighbouring stages are `tp · cp · dp` ranks apart (pipeline outermost).
    let stride = layout
        .tp
        .saturating_mul(layout.cp)
        .saturating_mul(layout.dp);
    let v = layout.virtual_stages() as f64;
    let send = if cluster.system.is_some() {
        // Two neighbouring stages, `stride` ranks apart.
        cluster.collective_seconds(CollectiveOp::SendRecv, bytes, 2, stride)
    } else {
        let intra = cluster.ranks_per_node(layout.pp, stride) == layout.pp;
        bytes / cluster.link_bytes_per_s(intra) + cluster.collective_latency_seconds
    };
    2.0 * v * send
}

/// Stage-times of a step: `m + p − 1` under 1F1B, `m + (p − 1)/v` interleaved (Narayanan et
/// al. 2021 §2.2).
pub(crate) fn pipeline_slots(layout: &ParallelLayout, m: u64) -> f64 {
    m as f64 + (layout.pp - 1) as f64 / layout.virtual_stages() as f64
}
