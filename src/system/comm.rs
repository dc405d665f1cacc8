//! Collectives: nccl-tests latencies inside a node (or NVLink domain) by operation, group size
//! and message size, or a fitted model of them; the node's NICs across nodes.

use super::SystemProfile;
use crate::error::{Error, Result, positive_f64};
use serde::{Deserialize, Serialize};

/// A collective operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectiveOp {
    /// All-reduce (`2(n−1)/n` of the buffer moves per GPU in a ring).
    AllReduce,
    /// All-gather (`(n−1)/n` of the output).
    AllGather,
    /// Reduce-scatter (`(n−1)/n` of the input).
    ReduceScatter,
    /// All-to-all (`(n−1)/n` of the send buffer leaves the GPU).
    #[serde(alias = "alltoall")]
    AllToAll,
    /// One send from one GPU to another.
    #[serde(alias = "p2p")]
    SendRecv,
}

impl CollectiveOp {
    /// Passes over the buffer a ring makes: 2 for an all-reduce, 1 otherwise.
    fn passes(self) -> f64 {
        match self {
            CollectiveOp::AllReduce => 2.0,
            _ => 1.0,
        }
    }
}

/// nccl-tests latencies of one operation on `ranks` GPUs of one node, by message size (the
/// nccl-tests size argument, bytes), microseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectiveTable {
    /// The operation.
    pub op: CollectiveOp,
    /// GPUs taking part.
    pub ranks: u64,
    /// Message sizes, ascending.
    pub bytes: Vec<u64>,
    /// Latencies, microseconds.
    pub micros: Vec<f64>,
}

/// A fitted model of one operation inside a node (SimuMax's form): `fixed + hop·(n − 1) +
/// scale·(n + offset)/n · bytes / (link · efficiency)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FittedCollective {
    /// The operation.
    pub op: CollectiveOp,
    /// Fraction of the link rate reached.
    pub efficiency: f64,
    /// Link rate, bytes/s.
    pub link_bytes_per_s: f64,
    /// Latency per hop, seconds.
    pub hop_latency_seconds: f64,
    /// Fixed latency, seconds.
    pub fixed_latency_seconds: f64,
    /// Volume factor.
    pub scale: f64,
    /// Volume offset.
    pub offset: f64,
}

/// The collectives of a node: measured tables, or a fitted model.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Collectives {
    /// Measured tables.
    #[serde(default)]
    pub tables: Vec<CollectiveTable>,
    /// Fitted models.
    #[serde(default)]
    pub fitted: Vec<FittedCollective>,
}

impl Collectives {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.tables.is_empty() && self.fitted.is_empty() {
            return Err(Error::ZeroSize {
                field: "collectives",
            });
        }
        for t in &self.tables {
            crate::error::positive(t.ranks, "collective ranks")?;
            if t.bytes.is_empty()
                || t.bytes.len() != t.micros.len()
                || !t.bytes.is_sorted_by(|a, b| a < b)
                || t.bytes[0] == 0
            {
                return Err(Error::Inconsistent {
                    rule: "a collective table has ascending positive sizes, one latency each",
                    detail: format!("{:?} on {} ranks", t.op, t.ranks),
                });
            }
            for &m in &t.micros {
                positive_f64(m, "collective latency")?;
            }
        }
        for f in &self.fitted {
            positive_f64(f.efficiency, "collective efficiency")?;
            positive_f64(f.link_bytes_per_s, "collective link")?;
            crate::error::non_negative_f64(f.hop_latency_seconds, "hop latency")?;
            crate::error::non_negative_f64(f.fixed_latency_seconds, "fixed latency")?;
            positive_f64(f.scale, "collective scale")?;
        }
        Ok(())
    }

    /// Seconds of `op` on `g` GPUs of one node, each holding `bytes`.
    fn in_node(&self, op: CollectiveOp, g: u64, bytes: f64) -> Option<f64> {
        if g <= 1 {
            return Some(0.0);
        }
        // A send between two GPUs, where no send was fitted: half of a two-GPU all-gather of
        // twice the bytes.
        let (op, g, bytes) = match op {
            CollectiveOp::SendRecv if self.fitted.iter().all(|f| f.op != op) => {
                (CollectiveOp::AllGather, 2, 2.0 * bytes)
            }
            other => (other, g, bytes),
        };
        if let Some(f) = self.fitted.iter().find(|f| f.op == op) {
            let n = g as f64;
            return Some(
                f.fixed_latency_seconds
                    + f.hop_latency_seconds * (n - 1.0)
                    + f.scale * (n + f.offset).max(0.0) / n * bytes
                        / (f.link_bytes_per_s * f.efficiency),
            );
        }
        // The measured group size nearest below (or the smallest), its bandwidth term scaled
        // by the ring's (g − 1)/g.
        let tables = self.tables.iter().filter(|t| t.op == op);
        let t = tables
            .clone()
            .filter(|t| t.ranks <= g)
            .max_by_key(|t| t.ranks)
            .or_else(|| tables.min_by_key(|t| t.ranks))?;
        let ring = |n: u64| (n as f64 - 1.0) / n as f64;
        Some(interpolate(t, bytes) * ring(g) / ring(t.ranks.max(2)))
    }
}

/// Seconds of a table at `bytes`: log-log between its sizes, its smallest latency below them,
/// proportional to the size above them (bandwidth-bound).
fn interpolate(t: &CollectiveTable, bytes: f64) -> f64 {
    let last = t.bytes.len() - 1;
    let us = if bytes <= t.bytes[0] as f64 {
        t.micros[0]
    } else if bytes >= t.bytes[last] as f64 {
        t.micros[last] * bytes / t.bytes[last] as f64
    } else {
        let hi = t.bytes.partition_point(|&b| (b as f64) < bytes);
        let lo = hi - 1;
        let (a, b) = ((t.bytes[lo] as f64).ln(), (t.bytes[hi] as f64).ln());
        let w = (bytes.ln() - a) / (b - a);
        (t.micros[lo].ln() + (t.micros[hi].ln() - t.micros[lo].ln()) * w).exp()
    };
    us * 1e-6
}

/// Seconds of `op` over `ranks` GPUs, `per_node` of them on each node (see
/// [`SystemProfile::collective_seconds`]): inside one node the measured collective; across
/// nodes the slower of the node part (the `per_node` GPUs of a node among themselves) and the
/// network part (`passes · (n − 1)/n` of the buffer through the `per_node` GPUs' share of the
/// node's NICs, plus the network latency per step of the ring).
pub(crate) fn seconds(
    p: &SystemProfile,
    op: CollectiveOp,
    ranks: u64,
    per_node: u64,
    bytes: f64,
) -> f64 {
    if ranks <= 1 || bytes <= 0.0 {
        return 0.0;
    }
    let g = per_node.clamp(1, ranks);
    let inside = p.collectives.in_node(op, g, bytes).unwrap_or(0.0);
    if g >= ranks {
        return inside;
    }
    let nic = p.network.nic_bytes_per_s / p.gpus_per_node as f64 * g as f64;
    let n = ranks as f64;
    let volume = match op {
        CollectiveOp::SendRecv => bytes,
        _ => op.passes() * (n - 1.0) / n * bytes,
    };
    let steps = match op {
        CollectiveOp::SendRecv => 1.0,
        _ => op.passes() * (ranks / g) as f64,
    };
    inside.max(volume / nic + steps * p.network.latency_seconds)
}
