//! bf16 weights × activations on AMX tiles (CPUs with AMX-BF16, under the AVX-512 kernel set):
//! activations are rounded to bf16 once per product and packed as B tiles; weight rows are read
//! in place as A tiles (a row-major bf16 matrix is already the A-tile layout), so loading a
//! model costs nothing extra. Sums are f32, as in llama.cpp's bf16 path, which also rounds the
//! activations to bf16.
//!
//! Every output is one tile element accumulated over the k-tiles in order, whatever the number
//! of rows, the tile it falls in or the thread split — so, as with the other kernels, a row's
//! result does not depend on what it is batched with.

use tinyllama_engine::cpu::amx::{self, ATiles, Tiles};
use tinyllama_engine::cpu::bf16_gemm;
use tinyllama_engine::cpu::gemm::View;

/// Whether bf16 products run on AMX here (AVX-512 kernels chosen and AMX-BF16 usable).
pub fn usable(k: usize) -> bool {
    k.is_multiple_of(amx::TILE_K) && amx::available()
}

/// Activation rows packed as B tiles (see [`bf16_gemm::pack_rhs`]).
pub struct PackedActs<'a> {
    tiles: &'a [u32],
    kt: usize,
    rows: usize,
}

/// Packs `m` rows of `k` activations (rows `lda` apart) into `buf`, which only grows (decoding
/// packs once per product per token, so it is reused rather than allocated).
pub fn pack<'a>(
    buf: &'a mut Vec<u32>,
    x: &[f32],
    m: usize,
    k: usize,
    lda: usize,
) -> PackedActs<'a> {
    // The activations as the k×m right operand: element (l, i) = x[i·lda + l].
    let v = View {
        data: x,
        off: 0,
        rs: 1,
        cs: lda,
    };
    let len = bf16_gemm::pack_rhs(v, k, m, buf);
    PackedActs {
        tiles: &buf[..len],
        kt: k / amx::TILE_K,
        rows: m,
    }
}

/// `out[i·ldo + j] (+)= Σ_p bf16(x[i, p])·w[j, p]` for `i in i0..i1` (`i0` a multiple of 32),
/// `j in j0..j1`.
///
/// # Safety
/// `w` must hold rows `j0..j1` of `k` values, `ldw` apart; `out` must be valid for the block
/// and written by nobody else meanwhile.
#[allow(clippy::too_many_arguments)]
pub unsafe fn block(
    acts: &PackedActs,
    (i0, i1): (usize, usize),
    w: &[u16],
    ldw: usize,
    (j0, j1): (usize, usize),
    k: usize,
    out: *mut f32,
    ldo: usize,
    accumulate: bool,
) {
    assert!(i0.is_multiple_of(32) && i1 <= acts.rows && acts.kt * amx::TILE_K == k);
    assert!(j1 == j0 || w.len() >= (j1 - 1) * ldw + k);
    let kt = acts.kt;
    let tile_block = kt * amx::TILE_ELEMS;
    let bp = acts.tiles.as_ptr() as *const u16;
    let tiles = Tiles::configure();
    let mut buf = [0f32; 32 * 32];
    // The last weight block may have fewer than 32 rows: copied into a zero-padded buffer so no
    // tile load reads past the matrix.
    let mut pad: Vec<u16> = Vec::new();
    let mut j = j0;
    while j < j1 {
        let rows = 32.min(j1 - j);
        let (a, a_ld) = if rows == 32 {
            (w.as_ptr().add(j * ldw), ldw)
        } else {
            pad.clear();
            pad.resize(32 * k, 0);
            for r in 0..rows {
                pad[r * k..(r + 1) * k].copy_from_slice(&w[(j + r) * ldw..(j + r) * ldw + k]);
            }
            (pad.as_ptr(), k)
        };
        let a_tiles = ATiles::in_place(a, a_ld);
        let mut i = i0;
        while i < i1 {
            let cols = 32.min(i1 - i);
            let b0 = bp.add((i / 16) * tile_block);
            if cols <= 16 {
                tiles.kernel::<1>(a_tiles, b0, b0, kt, buf.as_mut_ptr(), 32, false);
            } else {
                let b1 = b0.add(tile_block);
                tiles.kernel::<2>(a_tiles, b0, b1, kt, buf.as_mut_ptr(), 32, false);
            }
            // buf[r][c] is output (activation row i + c, weight row j + r).
            for c in 0..cols {
                let o = out.add((i + c) * ldo + j);
                for r in 0..rows {
                    let v = buf[r * 32 + c];
                    *o.add(r) = if accumulate { *o.add(r) + v } else { v };
                }
            }
            i += 32;
        }
        j += 32;
    }
    drop(tiles);
}
