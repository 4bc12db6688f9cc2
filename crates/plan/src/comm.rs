//! The communication cost of data parallelism per optimizer step, and what it does to the
//! step time with and without overlapping it with compute.
//!
//! ZeRO-1 (and plain data parallel) moves, per GPU and step, the gradients into a reduce-scatter
//! and the updated parameters out of an all-gather. A ring over `N` GPUs sends `(N−1)/N` of the
//! buffer through every GPU's slowest link in each of the two, so
//! `t = 2 · (N−1)/N · bytes / bandwidth`, where the bandwidth is the intra-node link (NVLink)
//! on one node and each GPU's share of the network (InfiniBand) across nodes — the ring crosses
//! the network, and NCCL's rings give every GPU its own NIC on DGX-style nodes.
//!
//! The gradient reduce-scatter can run while the backward pass produces earlier layers'
//! gradients, and the all-gather while the next forward pass consumes the first layers: with
//! overlap only about one layer's share stays exposed, so `step ≈ max(compute, comm) +
//! comm / layers`; without it, `step = compute + comm`.

use serde::{Deserialize, Serialize};

/// Nominal link speeds, GB/s in one direction per GPU.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interconnect {
    /// Within a node (NVLink, or PCIe).
    pub link_gbs: f64,
    /// Across nodes, this GPU's share of the network.
    pub network_gbs: f64,
    pub gpus_per_node: u64,
}

/// Built-in figures for the catalogue's GPUs, by catalogue name: NVLink 3 (A100) 300 GB/s, NVLink
/// 4 (H100/H200 SXM) 450 GB/s, PCIe 4.0/5.0 x16 about 25/50 GB/s in practice; one InfiniBand HDR
/// (200 Gb/s = 25 GB/s) NIC per A100 as in DGX A100, NDR (400 Gb/s = 50 GB/s) per H100/H200.
pub fn interconnect_for(gpu: &str) -> Interconnect {
    let (link, net) = match gpu {
        "A100-40GB" | "A100-80GB" => (300.0, 25.0),
        "H100-SXM" | "H200" => (450.0, 50.0),
        "H100-PCIe" => (50.0, 50.0),
        "L40S" => (25.0, 25.0),
        _ => (25.0, 12.5),
    };
    Interconnect {
        link_gbs: link,
        network_gbs: net,
        gpus_per_node: 8,
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommCost {
    pub gpus: u64,
    pub nodes: u64,
    pub interconnect: Interconnect,
    /// Bytes each GPU sends per step (reduce-scatter + all-gather).
    pub bytes_per_gpu: f64,
    /// The bandwidth that bounds it (GB/s) and which link that is.
    pub bottleneck_gbs: f64,
    pub bottleneck: String,
    pub comm_s: f64,
    /// Compute per optimizer step, when the step's tokens and a throughput are known.
    pub compute_s: Option<f64>,
    pub step_no_overlap_s: Option<f64>,
    pub step_overlap_s: Option<f64>,
    pub tokens_per_sec_per_gpu_no_overlap: Option<f64>,
    pub tokens_per_sec_per_gpu_overlap: Option<f64>,
}

/// The cost for `params` parameters with gradients of `grad_bytes` bytes each (the all-gather
/// moves the same number of parameter bytes), over `gpus` GPUs. `step_tokens_per_gpu` and
/// `tokens_per_sec_per_gpu` (compute-only throughput) give the step times; `layers` the exposed
/// share under overlap.
pub fn zero1_step(
    params: f64,
    grad_bytes: f64,
    gpus: u64,
    ic: Interconnect,
    step_tokens_per_gpu: Option<f64>,
    tokens_per_sec_per_gpu: Option<f64>,
    layers: Option<usize>,
) -> CommCost {
    let n = gpus.max(1) as f64;
    let nodes = gpus.div_ceil(ic.gpus_per_node.max(1)).max(1);
    let (bw, which) = if nodes > 1 {
        (ic.link_gbs.min(ic.network_gbs), "network between nodes")
    } else {
        (ic.link_gbs, "link within the node")
    };
    let bytes = 2.0 * (n - 1.0) / n * params * grad_bytes;
    let comm_s = if gpus <= 1 { 0.0 } else { bytes / (bw * 1e9) };
    let compute_s = step_tokens_per_gpu
        .zip(tokens_per_sec_per_gpu)
        .map(|(t, r)| t / r);
    let exposed = comm_s / layers.unwrap_or(1).max(1) as f64;
    let no_overlap = compute_s.map(|c| c + comm_s);
    let overlap = compute_s.map(|c| c.max(comm_s) + exposed.min(comm_s));
    let per_gpu = |s: Option<f64>| step_tokens_per_gpu.zip(s).map(|(t, s)| t / s);
    CommCost {
        gpus,
        nodes,
        interconnect: ic,
        bytes_per_gpu: bytes,
        bottleneck_gbs: bw,
        bottleneck: which.into(),
        comm_s,
        compute_s,
        step_no_overlap_s: no_overlap,
        step_overlap_s: overlap,
        tokens_per_sec_per_gpu_no_overlap: per_gpu(no_overlap),
        tokens_per_sec_per_gpu_overlap: per_gpu(overlap),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tinyllama_on_two_a100_nodes() {
        // 1.1B parameters, bf16 gradients, 16 GPUs on 2 nodes, 2M tokens per step (131,072 per
        // GPU) at 24k tokens/s/GPU of compute.
        let c = zero1_step(
            1.1e9,
            2.0,
            16,
            interconnect_for("A100-40GB"),
            Some(131_072.0),
            Some(24_000.0),
            Some(22),
        );
        assert_eq!(c.nodes, 2);
        assert_eq!(c.bottleneck_gbs, 25.0);
        // 2 · 15/16 · 2.2 GB = 4.125 GB through 25 GB/s.
        assert!((c.bytes_per_gpu - 4.125e9).abs() < 1e6);
        assert!((c.comm_s - 0.165).abs() < 1e-3, "{}", c.comm_s);
        let (a, b) = (c.step_no_overlap_s.unwrap(), c.step_overlap_s.unwrap());
        assert!((a - (5.461 + 0.165)).abs() < 0.01, "{a}");
        assert!(b < a && b > 5.461, "{b}");
        // One node: NVLink, twelve times faster.
        let one = zero1_step(
            1.1e9,
            2.0,
            8,
            interconnect_for("A100-40GB"),
            None,
            None,
            None,
        );
        assert_eq!(one.bottleneck_gbs, 300.0);
        assert!(one.step_overlap_s.is_none());
        assert_eq!(
            zero1_step(1e9, 2.0, 1, interconnect_for("H200"), None, None, None).comm_s,
            0.0
        );
    }
}
