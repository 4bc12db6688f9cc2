//! What a training run allocates on the GPU, computed from the shapes (the same buffers the
//! engine and this backend create; a test checks the formula against the allocations of a real
//! step on a device that only counts).

use crate::tiling;
use serde::Serialize;
use tinyllama_model::ModelConfig;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TrainingMemory {
    /// f32 master weights and their bf16 copies.
    pub weights: u64,
    /// f32 weight gradients.
    pub grads: u64,
    /// AdamW's two f32 moments.
    pub optimizer: u64,
    /// Saved activations, activation gradients, the logits chunk, ids and per-row statistics.
    pub activations: u64,
    /// Op scratch allocated during a step (attention dQ accumulator, bf16 logit gradients,
    /// reduction partials) and the rotary table.
    pub scratch: u64,
    /// cuBLASLt's workspace.
    pub workspace: u64,
}

impl TrainingMemory {
    pub fn total(&self) -> u64 {
        self.weights
            + self.grads
            + self.optimizer
            + self.activations
            + self.scratch
            + self.workspace
    }
}

/// Device memory of a training run of `cfg` with micro-batches of `batch` × `seq` on the CUDA
/// backend (bf16 activations, f32 master weights, gradients and AdamW state), without the CUDA
/// context itself (a few hundred MiB, driver-dependent). An upper bound by at most a few KiB.
pub fn training_memory(
    cfg: &ModelConfig,
    batch: usize,
    seq: usize,
    recompute: bool,
) -> TrainingMemory {
    let n_params = cfg.num_params();
    let n = (batch * seq) as u64;
    let (d, qd, kvd, f) = (
        cfg.dim as u64,
        (cfg.n_heads * cfg.head_dim()) as u64,
        cfg.kv_dim() as u64,
        cfg.ffn_dim as u64,
    );
    let lse = 4 * (batch * cfg.n_heads * seq) as u64;
    // One layer's saved set: ln1, rstd1, q, k, v, att, lse, mid, ln2, rstd2, g, u.
    let layer = 2 * n * d
        + 4 * n
        + 2 * n * qd
        + 4 * n * kvd
        + 2 * n * qd
        + lse
        + 4 * n * d
        + 4 * n
        + 4 * n * f;
    let sets = if recompute { 1 } else { cfg.n_layers as u64 };
    let chunk = tiling::head_chunk_rows(cfg.vocab_size).min(batch * seq) as u64;
    let v = cfg.vocab_size as u64;
    let activations = sets * layer
        + (cfg.n_layers as u64 + 1) * 2 * n * d // residual stream
        + 2 * n * f // h (forward scratch)
        + 2 * n * d + 4 * n + 4 * n // lnf, rstdf, losses
        + 4 * chunk * v // logits chunk
        + 2 * n * (2 * d + 2 * qd + 2 * kvd + 3 * f) // dres dln dq datt dk dv dg du dh
        + 2 * 4 * n; // ids, targets
    let (blocks, _) = tiling::rmsnorm_bwd_split(batch * seq);
    let rope = 4 * (cfg.max_seq_len * cfg.head_dim()) as u64;
    let sumsq = 8 * (tiling::SUMSQ_MAX_BLOCKS as u64 + 1);
    let emb = 4 * (2 * n + 1) + 4 * n; // ids grouped: order, starts (+1), distinct ids (≤ n)
    let scratch = lse // attention D
        + 4 * n * qd // dQ accumulator
        + 2 * chunk * v // bf16 logit gradients
        + 4 * blocks as u64 * d // RMSNorm weight-gradient partials
        + rope
        + sumsq
        + emb;
    TrainingMemory {
        weights: 6 * n_params,
        grads: 4 * n_params,
        optimizer: 8 * n_params,
        activations,
        scratch,
        workspace: 32 << 20,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{AllocStats, Arg, Device, Gemm, Launch};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use tinyllama_engine::{Activations, Backend, Llama};
    use tinyllama_model::{presets, HostWeights};

    /// A device that runs nothing and only counts: allocations (peak) and kernel launches.
    #[derive(Default)]
    struct Counting {
        next: AtomicU64,
        stats: AllocStats,
        launches: Mutex<Vec<String>>,
    }

    impl Device for Counting {
        fn name(&self) -> String {
            "counting".into()
        }
        fn alloc(&self, bytes: usize) -> u64 {
            self.stats.add(bytes);
            0x1000_0000
                + self
                    .next
                    .fetch_add((bytes as u64).div_ceil(256) * 256, Ordering::Relaxed)
        }
        fn free(&self, _ptr: u64, bytes: usize) {
            self.stats.sub(bytes);
        }
        fn memset_zero(&self, _: u64, _: usize) {}
        fn htod(&self, _: u64, _: &[u8]) {}
        fn dtoh(&self, dst: &mut [u8], _: u64) {
            dst.fill(0);
        }
        fn dtod(&self, _: u64, _: u64, _: usize) {}
        fn launch(&self, kernel: &str, _: Launch, _: &[Arg]) {
            self.launches.lock().unwrap().push(kernel.into());
        }
        fn gemm(&self, _: &Gemm) {}
        fn sync(&self) {}
        fn mem_info(&self) -> Option<(u64, u64)> {
            None
        }
        fn stats(&self) -> &AllocStats {
            &self.stats
        }
    }

    fn step(recompute: bool) -> (u64, TrainingMemory, Vec<String>) {
        let mut cfg = presets::get("micro-1m").unwrap();
        cfg.vocab_size = 3000;
        let (batch, seq) = (3, 40);
        let dev = Arc::new(Counting::default());
        let be = crate::CudaBackend::with_device(dev.clone());
        let host = HostWeights::init(&cfg, 1);
        let mut model = Llama::new(be, &host).unwrap();
        let mut acts = Activations::with_recompute(&model, batch, seq, recompute);
        let mut grads = model.zero_grads();
        let (mut m, mut v) = (model.zero_grads(), model.zero_grads());
        dev.launches.lock().unwrap().clear();
        let inputs: Vec<u32> = (0..batch * seq).map(|i| (i % 50) as u32).collect();
        let targets: Vec<i32> = (0..batch * seq).map(|i| (i % 70) as i32).collect();
        model
            .forward_backward(&mut acts, &mut grads, &inputs, &targets, 1.0)
            .unwrap();
        let _norm: f64 = grads.iter().map(|g| model.backend.sum_squares(g)).sum();
        for i in 0..model.weights.len() {
            model.backend.adamw(
                &mut model.weights[i],
                &grads[i],
                &mut m[i],
                &mut v[i],
                1e-3,
                0.9,
                0.95,
                1e-8,
                0.1,
                1,
                1.0,
            );
        }
        for g in grads.iter_mut() {
            model.backend.fill(g, 0.0);
        }
        let launches = dev.launches.lock().unwrap().clone();
        let mut plan = training_memory(&cfg, batch, seq, recompute);
        plan.workspace = 0; // the counting device has no cuBLASLt
        (dev.stats.peak(), plan, launches)
    }

    #[test]
    fn the_formula_matches_what_a_training_step_allocates() {
        for recompute in [false, true] {
            let (peak, plan, _) = step(recompute);
            // Exact but for two small upper bounds (the reduction partials are sized for the
            // largest possible tensor, the id grouping for all-distinct ids).
            assert!(
                peak <= plan.total() && plan.total() - peak < 16 << 10,
                "recompute {recompute}: allocated {peak}, formula {} ({plan:?})",
                plan.total()
            );
        }
    }

    #[test]
    fn a_training_step_never_converts_between_precisions() {
        // Every buffer has the kind its ops want: no temporaries, no casts; the bf16 weight
        // copies are refreshed by the fused AdamW, not by separate cast kernels.
        let (_, _, launches) = step(false);
        assert!(launches.iter().any(|k| k == "adamw"));
        let casts: Vec<_> = launches.iter().filter(|k| k.starts_with("cast_")).collect();
        assert!(casts.is_empty(), "{casts:?}");
    }

    #[test]
    fn tinyllama_1b_micro_batch_8x2048_fits_in_40_gib_without_recomputation() {
        let cfg = presets::get("tinyllama-1.1b").unwrap();
        let m = training_memory(&cfg, 8, 2048, false);
        let gib = m.total() as f64 / (1u64 << 30) as f64;
        // 40 GiB cards leave ~39.5 GiB to the process; the CUDA context takes a few hundred MiB.
        assert!(gib < 38.0, "{gib:.2} GiB: {m:?}");
        let r = training_memory(&cfg, 8, 2048, true);
        assert!(r.activations < m.activations / 5);
    }
}
