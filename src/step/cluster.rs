//! The cluster a step runs on: GPUs, nodes, links, and the cost of a ring collective.

use crate::error::{Error, Result};
use crate::hardware::GpuSpec;
use crate::system::{CollectiveOp, SystemProfile};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The cluster a step runs on. Deserializing validates ([`Cluster::validate`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ClusterFields")]
pub struct Cluster {
    /// GPU model.
    pub gpu: GpuSpec,
    /// GPUs per node (tensor parallelism stays inside a node up to this).
    pub gpus_per_node: u64,
    /// Per-direction NVLink bandwidth per GPU, bytes/s.
    pub intra_node_bytes_per_s: f64,
    /// Network bandwidth of one node (all NICs), bytes/s.
    pub inter_node_bytes_per_s: f64,
    /// Fraction of link bandwidth a collective achieves (NCCL bus bandwidth / link rate).
    pub collective_efficiency: f64,
    /// Fixed latency per collective or send, seconds.
    pub collective_latency_seconds: f64,
    /// Multiplier on compute throughput for the software stack, in `(0, 1]` (1.0 = as fast as
    /// the timer and HBM model say; calibrate with [`super::calibrate_software_efficiency`]).
    pub software_efficiency: f64,
    /// Overlap the data-parallel gradient reduction with the last backward pass
    /// (Megatron-Core `--overlap-grad-reduce`).
    pub overlap_dp_comm: bool,
    /// Overlap the distributed optimizer's weight all-gather with the next forward pass
    /// (Megatron-Core `--overlap-param-gather`).
    #[serde(default)]
    pub overlap_param_gather: bool,
    /// Overlap the mixture-of-experts all-to-all with the shared experts' GEMMs
    /// (Megatron-Core `--moe-shared-expert-overlap`).
    #[serde(default)]
    pub overlap_shared_experts: bool,
    /// The machine's measured profile: attention kernels, memory-bound kernels and collectives
    /// are taken from it (and its GEMMs through [`crate::system::SystemTimer`]); without one,
    /// the analytical constants above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<Arc<SystemProfile>>,
}

/// The fields of a [`Cluster`] as they arrive from serde, before validation.
#[derive(Deserialize)]
pub(crate) struct ClusterFields {
    pub(crate) gpu: GpuSpec,
    pub(crate) gpus_per_node: u64,
    pub(crate) intra_node_bytes_per_s: f64,
    pub(crate) inter_node_bytes_per_s: f64,
    pub(crate) collective_efficiency: f64,
    pub(crate) collective_latency_seconds: f64,
    pub(crate) software_efficiency: f64,
    pub(crate) overlap_dp_comm: bool,
    #[serde(default)]
    pub(crate) overlap_param_gather: bool,
    #[serde(default)]
    pub(crate) overlap_shared_experts: bool,
    #[serde(default)]
    pub(crate) system: Option<Arc<SystemProfile>>,
}

impl TryFrom<ClusterFields> for Cluster {
    type Error = Error;

    fn try_from(f: ClusterFields) -> Result<Cluster> {
        let c = Cluster {
            gpu: f.gpu,
            gpus_per_node: f.gpus_per_node,
            intra_node_bytes_per_s: f.intra_node_bytes_per_s,
            inter_node_bytes_per_s: f.inter_node_bytes_per_s,
            collective_efficiency: f.collective_efficiency,
            collective_latency_seconds: f.collective_latency_seconds,
            software_efficiency: f.software_efficiency,
            overlap_dp_comm: f.overlap_dp_comm,
            overlap_param_gather: f.overlap_param_gather,
            overlap_shared_experts: f.overlap_shared_experts,
            system: f.system,
        };
        c.validate()?;
        Ok(c)
    }
}

impl Cluster {
    /// A Selene-class DGX A100 cluster running well-tuned Megatron-LM (Narayanan et al. 2021
    /// §5: 8 A100 80GB per node on NVLink 3 — 600 GB/s, i.e. 300 GB/s each way — and 8 × 200
    /// Gb/s HDR InfiniBand per node). Two assumptions, not measurements of this repository: a
    /// collective reaches 77% of the link rate (about 230 of 300 GB/s of NVLink bus bandwidth
    /// for a large all-reduce on a DGX A100, as commonly reported for nccl-tests), and each
    /// collective or send costs 10 µs.
    pub fn selene() -> Cluster {
        Cluster::reference_node(GpuSpec::a100_80gb())
    }

    /// The vendor's reference node of `gpu` ([`GpuSpec::node_gpus`] GPUs and
    /// [`GpuSpec::node_network_bytes_per_s`] of network per node), other constants as
    /// [`Cluster::dgx`].
    ///
    /// ```
    /// use lmshape::{hardware::GpuSpec, step::Cluster};
    /// let c = Cluster::reference_node(GpuSpec::h100_sxm());
    /// assert_eq!(c.inter_node_bytes_per_s, 8.0 * 400e9 / 8.0); // DGX H100: 8 × 400 Gb/s
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    pub fn reference_node(gpu: GpuSpec) -> Cluster {
        let network = gpu.node_network_bytes_per_s;
        let gpus_per_node = gpu.node_gpus;
        Cluster {
            gpus_per_node,
            ..Cluster::dgx(gpu, network)
        }
    }

    /// A DGX-style node of `gpu` with `inter_node_bytes_per_s` of network per node, other
    /// constants as [`Cluster::selene`].
    pub fn dgx(gpu: GpuSpec, inter_node_bytes_per_s: f64) -> Cluster {
        Cluster {
            intra_node_bytes_per_s: gpu.nvlink_bytes_per_s / 2.0,
            gpu,
            gpus_per_node: 8,
            inter_node_bytes_per_s,
            collective_efficiency: 0.77,
            collective_latency_seconds: 10e-6,
            software_efficiency: 1.0,
            overlap_dp_comm: false,
            overlap_param_gather: false,
            overlap_shared_experts: false,
            system: None,
        }
    }

    /// The cluster of a measured machine: its GPU, its GPUs per node and its network, timed by
    /// its profile. The other constants stay [`Cluster::dgx`]'s (used only for what the
    /// profile does not say).
    ///
    /// ```
    /// use lmshape::{step::Cluster, system::SystemProfile};
    /// let c = Cluster::from_system(SystemProfile::shared("gb200-nvl72")?)?;
    /// assert_eq!((c.gpu.name.as_str(), c.gpus_per_node), ("gb200", 72));
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    ///
    /// # Errors
    /// A profile whose GPU is not a preset.
    pub fn from_system(profile: Arc<SystemProfile>) -> Result<Cluster> {
        let gpu = profile.gpu_spec()?;
        Ok(Cluster {
            gpus_per_node: profile.gpus_per_node,
            system: Some(profile.clone()),
            ..Cluster::dgx(gpu, profile.network.nic_bytes_per_s)
        })
    }

    /// Seconds of a collective over `ranks` GPUs whose ranks are `stride` apart, each holding
    /// `bytes` (the whole buffer: an all-reduce's, reduce-scatter's input, all-gather's output,
    /// an all-to-all's send buffer, one send's payload): by the measured profile when the
    /// cluster has one ([`SystemProfile::collective_seconds`]), else by the ring model
    /// ([`Cluster::ring_seconds`]; an all-to-all sends `(n − 1)/n` of its buffer, the shares
    /// to the node's GPUs over NVLink and the rest over the network).
    pub fn collective_seconds(&self, op: CollectiveOp, bytes: f64, ranks: u64, stride: u64) -> f64 {
        if ranks <= 1 {
            return 0.0;
        }
        let per_node = self.ranks_per_node(ranks, stride);
        if let Some(p) = &self.system {
            return p.collective_seconds(op, ranks, per_node, bytes);
        }
        match op {
            CollectiveOp::AllReduce => self.ring_seconds(2.0, bytes, ranks, stride),
            CollectiveOp::AllGather | CollectiveOp::ReduceScatter => {
                self.ring_seconds(1.0, bytes, ranks, stride)
            }
            CollectiveOp::AllToAll => {
                let share = bytes / ranks as f64;
                let nvlink = share * (per_node - 1) as f64 / self.link_bytes_per_s(true);
                let network = share * (ranks - per_node) as f64 / self.link_bytes_per_s(false);
                nvlink.max(network) + self.collective_latency_seconds
            }
            CollectiveOp::SendRecv => {
                bytes / self.link_bytes_per_s(per_node == ranks) + self.collective_latency_seconds
            }
        }
    }

    /// Jean Zay's A100 partition as BigScience used it for BLOOM
    /// (`bloom_throughput_tp8.json`: 8 A100 80GB per node on NVLink, 4 × 100 Gb/s Omni-Path per
    /// node), uncalibrated.
    pub fn jean_zay() -> Cluster {
        Cluster::jean_zay_with(GpuSpec::a100_80gb())
    }

    /// Jean Zay's network (4 × 100 Gb/s Omni-Path per node of 8 GPUs) with another GPU in the
    /// nodes, as the `--cluster jean-zay` flag builds it for any `--gpu`.
    pub fn jean_zay_with(gpu: GpuSpec) -> Cluster {
        Cluster::dgx(gpu, 4.0 * 100e9 / 8.0)
    }

    /// Check that every figure is physical: bandwidths between 1 kB/s and 1 PB/s, collective
    /// efficiency in `[0.01, 1]`, software efficiency in `[0.01, 1]` (software cannot make the
    /// hardware faster than the timer's kernels), latency between 0 and 1 s, at least one GPU
    /// per node. Values outside give impossible step times, so they are errors.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] naming the figure out of range.
    pub fn validate(&self) -> Result<()> {
        use crate::error::in_range_f64;
        const BANDWIDTH: &str = "a bandwidth between 1e3 and 1e15 bytes/s";
        crate::error::positive(self.gpus_per_node, "gpus_per_node")?;
        in_range_f64(
            self.intra_node_bytes_per_s,
            1e3,
            1e15,
            "intra_node_bytes_per_s",
            BANDWIDTH,
        )?;
        in_range_f64(
            self.inter_node_bytes_per_s,
            1e3,
            1e15,
            "inter_node_bytes_per_s",
            BANDWIDTH,
        )?;
        in_range_f64(
            self.gpu.memory_bytes_per_s,
            1e3,
            1e15,
            "memory_bytes_per_s",
            BANDWIDTH,
        )?;
        in_range_f64(
            self.collective_efficiency,
            0.01,
            1.0,
            "collective_efficiency",
            "in [0.01, 1]",
        )?;
        in_range_f64(
            self.software_efficiency,
            0.01,
            1.0,
            "software_efficiency",
            "in [0.01, 1]",
        )?;
        in_range_f64(
            self.collective_latency_seconds,
            0.0,
            1.0,
            "collective_latency_seconds",
            "between 0 and 1 second",
        )?;
        Ok(())
    }

    /// Bandwidth available to one GPU in a collective over a group that stays inside a node
    /// (`intra`) or spans nodes (the node's network shared by its GPUs).
    pub(crate) fn link_bytes_per_s(&self, intra: bool) -> f64 {
        let raw = if intra {
            self.intra_node_bytes_per_s
        } else {
            self.inter_node_bytes_per_s / self.gpus_per_node as f64
        };
        raw * self.collective_efficiency
    }

    /// How many of a group's `ranks` GPUs, `stride` apart in the global rank order, share one
    /// node (or NVLink domain): `min(ranks, node / stride)`, at least 1. The group stays on
    /// NVLink when this is `ranks`.
    ///
    /// ```
    /// use lmshape::step::Cluster;
    /// let c = Cluster::selene(); // 8 GPUs per node
    /// assert_eq!(c.ranks_per_node(16, 2), 4); // data parallelism beside tp 2
    /// assert_eq!(c.ranks_per_node(4, 16), 1); // a group wider apart than a node
    /// ```
    pub fn ranks_per_node(&self, ranks: u64, stride: u64) -> u64 {
        (self.gpus_per_node / stride.max(1)).clamp(1, ranks.max(1))
    }

    /// Seconds of a ring collective over `ranks` GPUs whose ranks are `stride` apart in the
    /// global rank order (tensor parallelism innermost, then data parallelism: Megatron-Core's
    /// `tp-cp-ep-dp-pp`), each GPU holding `bytes`: `passes = 2` for an all-reduce
    /// (reduce-scatter then all-gather, `2(n−1)/n` of the buffer; Patarasuk & Yuan 2009), `1`
    /// for a reduce-scatter or an all-gather. `g = min(n, node/stride)` of the ranks share a
    /// node (an NVLink domain). Within a node the buffer moves over NVLink; across nodes NCCL
    /// runs one ring per NIC, so the group's `g` GPUs on a node share `g` NICs' worth of the
    /// node's network (the other groups on the node use the rest), and the slower of the two
    /// links bounds the pipelined ring: `passes · max((g−1)/g · B / nvlink, (n−1)/n · B /
    /// (g · nic))`, at the collective efficiency, plus the latency.
    ///
    /// ```
    /// use lmshape::{hardware::GpuSpec, step::Cluster};
    /// let c = Cluster::reference_node(GpuSpec::h100_sxm()); // 8 GPUs, 8 × 400 Gb/s
    /// // 16 ranks, one per node (tp 8 inside): each moves 15/16 of 1 GB over its 50 GB/s NIC.
    /// let one = c.ring_seconds(2.0, 1e9, 16, 8) - c.collective_latency_seconds;
    /// assert!((one - 2.0 * 15.0 / 16.0 * 1e9 / (50e9 * c.collective_efficiency)).abs() < 1e-12);
    /// // 128 ranks, eight per node: the eight share the node's eight NICs.
    /// let eight = c.ring_seconds(2.0, 1e9, 128, 1) - c.collective_latency_seconds;
    /// assert!(eight < one / 7.0);
    /// ```
    pub fn ring_seconds(&self, passes: f64, bytes: f64, ranks: u64, stride: u64) -> f64 {
        if ranks <= 1 {
            return 0.0;
        }
        let n = ranks as f64;
        let g = self.ranks_per_node(ranks, stride);
        let intra = if g > 1 {
            (g - 1) as f64 / g as f64 * bytes / self.link_bytes_per_s(true)
        } else {
            0.0
        };
        let inter = if g < ranks {
            (n - 1.0) / n * bytes / (g as f64 * self.link_bytes_per_s(false))
        } else {
            0.0
        };
        passes * intra.max(inter) + self.collective_latency_seconds
    }
}
