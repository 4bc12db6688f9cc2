//! Launch geometry and scratch sizes: pure functions of the problem shape (never of timing or of
//! the particular GPU), so reductions sum in the same order everywhere, and so they can be
//! tested on the host.

use crate::device::Launch;
use tinyllama_engine::AttnShape;

/// Threads per block of the elementwise kernels.
pub const ELEMENTWISE_THREADS: u32 = 256;
/// Upper bound on blocks of a grid-stride elementwise launch.
pub const ELEMENTWISE_MAX_BLOCKS: usize = 65_536;
/// Partial sums of the sum-of-squares reduction (at most).
pub const SUMSQ_MAX_BLOCKS: usize = 1024;
/// Blocks (at most) of the RMSNorm weight-gradient partial reduction.
pub const RMSNORM_BWD_MAX_BLOCKS: usize = 512;
/// Attention tiles: query rows per forward block, key rows per tile / backward block.
pub const ATT_BR: usize = 64;
pub const ATT_BC: usize = 64;
pub const ATT_THREADS: u32 = 128;
/// Threads per row of the cross-entropy kernel.
pub const XENT_THREADS: u32 = 512;
/// f32 logits kept in flight by the fused LM-head loss (256 MiB).
pub const HEAD_CHUNK_BYTES: usize = 256 << 20;
/// Dynamic shared memory a kernel may use without opting in.
pub const DEFAULT_SMEM_LIMIT: usize = 48 * 1024;

pub fn ceil_div(a: usize, b: usize) -> usize {
    a.div_ceil(b)
}

/// A grid-stride launch over `n` elements.
pub fn elementwise(n: usize) -> Launch {
    let blocks = ceil_div(n.max(1), ELEMENTWISE_THREADS as usize).min(ELEMENTWISE_MAX_BLOCKS);
    Launch::linear(blocks as u32, ELEMENTWISE_THREADS)
}

/// The sum-of-squares launch: its grid (hence the summation order) depends on `n` only.
pub fn sumsq(n: usize) -> Launch {
    let blocks = ceil_div(n.max(1), ELEMENTWISE_THREADS as usize * 4).min(SUMSQ_MAX_BLOCKS);
    Launch::linear(blocks as u32, ELEMENTWISE_THREADS)
}

/// Threads for a kernel with one block per row of `dim` elements.
pub fn row_threads(dim: usize, max: u32) -> u32 {
    (ceil_div(dim.max(1), 32) * 32).min(max as usize) as u32
}

/// (blocks, rows per block) of the RMSNorm backward pass.
pub fn rmsnorm_bwd_split(rows: usize) -> (usize, usize) {
    let blocks = rows.clamp(1, RMSNORM_BWD_MAX_BLOCKS);
    let per = ceil_div(rows.max(1), blocks);
    (ceil_div(rows.max(1), per), per)
}

/// Query rows per inner tile of the attention backward kernel for a head dimension (must match
/// the instantiations at the end of attention.cu).
pub fn attn_bwd_bq(head_dim: usize) -> usize {
    if head_dim <= 64 {
        64
    } else {
        32
    }
}

/// Dynamic shared memory of `attn_fwd_hd{HD}`: K tile [64][HD+8] and Vᵀ tile [HD][64+8], bf16.
pub fn attn_fwd_smem(hd: usize) -> usize {
    2 * (ATT_BC * (hd + 8) + hd * (ATT_BC + 8))
}

/// Dynamic shared memory of `attn_bwd_hd{HD}` (see the carve-up at the top of attn_bwd_impl).
pub fn attn_bwd_smem(hd: usize) -> usize {
    let bq = attn_bwd_bq(hd);
    let (ldh, ldq, ldc) = (hd + 8, bq + 8, ATT_BC + 8);
    let bf16s = 2 * ATT_BC * ldh + hd * ldc + 2 * bq * ldh + 2 * hd * ldq + bq * ldc;
    2 * bf16s + 4 * 2 * bq
}

pub fn attn_fwd_launch(s: &AttnShape) -> Launch {
    Launch {
        grid: [
            ceil_div(s.tq, ATT_BR) as u32,
            s.n_heads as u32,
            s.batch as u32,
        ],
        block: [ATT_THREADS, 1, 1],
        smem: attn_fwd_smem(s.head_dim) as u32,
    }
}

pub fn attn_bwd_launch(s: &AttnShape) -> Launch {
    Launch {
        grid: [
            ceil_div(s.tk, ATT_BC) as u32,
            s.n_kv_heads as u32,
            s.batch as u32,
        ],
        block: [ATT_THREADS, 1, 1],
        smem: attn_bwd_smem(s.head_dim) as u32,
    }
}

/// `attn_bwd_dot`: one warp per (sequence, query, head), 8 warps per block.
pub fn attn_dot_launch(s: &AttnShape) -> Launch {
    Launch::linear(ceil_div(s.batch * s.tq * s.n_heads, 8) as u32, 256)
}

/// Rows of logits the fused LM-head loss computes at once: as many as fit in
/// [`HEAD_CHUNK_BYTES`] of f32, a multiple of 64 when there is room (GEMM-friendly), at least 1.
pub fn head_chunk_rows(vocab: usize) -> usize {
    let rows = HEAD_CHUNK_BYTES / (4 * vocab.max(1));
    if rows >= 128 {
        rows / 64 * 64
    } else {
        rows.max(1)
    }
}

/// Checks an attention call as the CPU backend does, plus what the kernels require.
pub fn check_attn(s: &AttnShape) -> Result<(), String> {
    if s.n_kv_heads == 0 || !s.n_heads.is_multiple_of(s.n_kv_heads) {
        return Err(format!(
            "{} query heads are not a multiple of {} key/value heads",
            s.n_heads, s.n_kv_heads
        ));
    }
    if s.tk < s.tq || s.kv_stride < s.tk || s.tq == 0 {
        return Err(format!(
            "bad attention lengths tq {} tk {} kv_stride {}",
            s.tq, s.tk, s.kv_stride
        ));
    }
    if !crate::kernels::ATTN_HEAD_DIMS.contains(&s.head_dim) {
        return Err(format!(
            "head dimension {} has no CUDA attention kernel (available: {:?})",
            s.head_dim,
            crate::kernels::ATTN_HEAD_DIMS
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(tq: usize, tk: usize, hd: usize) -> AttnShape {
        AttnShape {
            batch: 3,
            tq,
            tk,
            kv_stride: tk,
            n_heads: 8,
            n_kv_heads: 2,
            head_dim: hd,
        }
    }

    #[test]
    fn elementwise_grids_cover_n_and_stay_bounded() {
        for n in [0, 1, 255, 256, 257, 1 << 20, 1 << 30] {
            let l = elementwise(n);
            let covered = l.grid[0] as usize * l.block[0] as usize;
            assert!(l.grid[0] >= 1);
            assert!(covered >= n.min(ELEMENTWISE_MAX_BLOCKS * 256), "n={n}");
            assert!(l.grid[0] as usize <= ELEMENTWISE_MAX_BLOCKS);
        }
        assert!(sumsq(1 << 30).grid[0] as usize <= SUMSQ_MAX_BLOCKS);
        assert_eq!(sumsq(10).grid[0], 1);
    }

    #[test]
    fn rmsnorm_backward_split_covers_every_row_once() {
        for rows in [1, 7, 512, 513, 16384, 100_000] {
            let (blocks, per) = rmsnorm_bwd_split(rows);
            assert!(blocks <= RMSNORM_BWD_MAX_BLOCKS);
            assert!(
                blocks * per >= rows && (blocks - 1) * per < rows,
                "rows={rows}"
            );
        }
        assert_eq!(row_threads(2048, 256), 256);
        assert_eq!(row_threads(40, 256), 64);
    }

    #[test]
    fn attention_shared_memory_matches_the_kernel_carve_up_and_fits_the_gpus() {
        // Hand-computed from attention.cu.
        assert_eq!(attn_fwd_smem(64), 18_432);
        assert_eq!(attn_fwd_smem(128), 35_840);
        assert_eq!(attn_bwd_smem(64), 74_240);
        assert_eq!(attn_bwd_smem(128), 96_000);
        assert_eq!(attn_bwd_smem(32), 44_032);
        for &hd in crate::kernels::ATTN_HEAD_DIMS {
            // sm_80 allows 163 KiB per block after opting in (sm_90: 227 KiB).
            assert!(attn_fwd_smem(hd) <= 163 * 1024);
            assert!(attn_bwd_smem(hd) <= 163 * 1024);
            // 16-byte alignment of every region follows from these being multiples of 16.
            assert_eq!(attn_fwd_smem(hd) % 16, 0);
            assert_eq!(attn_bwd_smem(hd) % 16, 0);
            // The dQ tile split needs whole 16-row strips over 4 warps.
            let bq = attn_bwd_bq(hd);
            assert!(
                bq.is_multiple_of(16)
                    && 4usize.is_multiple_of(bq / 16)
                    && (hd / 8).is_multiple_of(4 / (bq / 16))
            );
        }
    }

    #[test]
    fn attention_grids_tile_queries_and_keys() {
        let s = shape(2048, 2048, 64);
        let f = attn_fwd_launch(&s);
        assert_eq!(f.grid, [32, 8, 3]);
        let b = attn_bwd_launch(&s);
        assert_eq!(b.grid, [32, 2, 3]);
        let odd = shape(65, 130, 32);
        assert_eq!(attn_fwd_launch(&odd).grid[0], 2);
        assert_eq!(attn_bwd_launch(&odd).grid[0], 3);
        assert!(attn_dot_launch(&odd).grid[0] as usize * 8 >= 3 * 65 * 8);
    }

    #[test]
    fn attention_shape_checks() {
        assert!(check_attn(&shape(16, 16, 64)).is_ok());
        assert!(check_attn(&shape(16, 8, 64)).is_err());
        assert!(check_attn(&shape(16, 16, 48)).is_err());
        let mut s = shape(16, 16, 64);
        s.n_kv_heads = 3;
        assert!(check_attn(&s).is_err());
    }

    #[test]
    fn head_chunks_fit_the_budget() {
        assert_eq!(head_chunk_rows(32_000), 2048);
        assert_eq!(head_chunk_rows(512), 131_072);
        assert_eq!(head_chunk_rows(1 << 30), 1);
        for v in [1, 100, 32_000, 128_256, 1 << 24] {
            assert!(head_chunk_rows(v) * v * 4 <= HEAD_CHUNK_BYTES.max(4 * v));
        }
    }
}
