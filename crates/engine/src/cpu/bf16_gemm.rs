//! Matrix products with bf16 operands and f32 accumulation — the CPU backend's `bf16`
//! precision, the numerics of PyTorch's bf16 autocast. f32 inputs are rounded to bf16 (nearest
//! even) while they are packed into AMX tiles; products are exact, sums are f32, the result is
//! f32.
//!
//! On CPUs without AMX the same values are computed by rounding the operands and running the
//! f32 gemm, which is slower than plain f32 and exists so the precision is testable (and
//! usable) everywhere.

use super::amx;
use super::gemm::{self, View};
use super::SendPtr;
use rayon::prelude::*;
use std::sync::Mutex;

/// f32 → bf16 bits, rounding to nearest even; NaN stays NaN.
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
    if x.is_nan() {
        0x7fc0
    } else {
        rounded
    }
}

/// bf16 bits → f32 (exact).
#[inline(always)]
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// `x` rounded to the nearest bf16 value, as an f32.
#[inline(always)]
pub fn round_bf16(x: f32) -> f32 {
    from_bf16(to_bf16(x))
}

/// Operand buffers kept between calls, so a product does not allocate (and fault in) megabytes
/// of fresh pages inside every training step: packed tiles on AMX, rounded copies otherwise.
#[derive(Default)]
pub struct PackBuffers {
    bufs: Mutex<Scratch>,
}

#[derive(Default)]
struct Scratch {
    tiles: (Vec<u32>, Vec<u32>),
    rounded: (Vec<f32>, Vec<f32>),
}

/// `c[i·c_rs + j] = (accumulate ? c : 0) + Σ_l bf16(a(i,l))·bf16(b(l,j))`, accumulated in f32.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    c_rs: usize,
    a: View<f32>,
    b: View<f32>,
    accumulate: bool,
    packs: &PackBuffers,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        c_rs >= n && (m - 1) * c_rs + n <= c.len(),
        "bf16 gemm: output out of bounds"
    );
    a.check(m, k, "lhs");
    b.check(k, n, "rhs");
    // Products run one at a time in a training step; a concurrent caller gets its own buffers.
    let mut guard = packs.bufs.try_lock();
    let mut own = Scratch::default();
    let scratch = match guard.as_deref_mut() {
        Ok(s) => s,
        Err(_) => &mut own,
    };
    #[cfg(target_arch = "x86_64")]
    if amx::available() && k > 0 {
        let (pa, pb) = &mut scratch.tiles;
        // SAFETY: views and output were bounds-checked above; AMX is available.
        unsafe { matmul_amx(m, n, k, c, c_rs, a, b, accumulate, pa, pb) };
        return;
    }
    let (ra, rb) = &mut scratch.rounded;
    emulated(m, n, k, c, c_rs, a, b, accumulate, ra, rb);
}

/// The reference path: round both operands to bf16 values and multiply in f32.
#[allow(clippy::too_many_arguments)]
pub fn matmul_emulated(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    c_rs: usize,
    a: View<f32>,
    b: View<f32>,
    accumulate: bool,
) {
    emulated(
        m,
        n,
        k,
        c,
        c_rs,
        a,
        b,
        accumulate,
        &mut Vec::new(),
        &mut Vec::new(),
    );
}

#[allow(clippy::too_many_arguments)]
fn emulated(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    c_rs: usize,
    a: View<f32>,
    b: View<f32>,
    accumulate: bool,
    ra: &mut Vec<f32>,
    rb: &mut Vec<f32>,
) {
    let round = |v: &View<f32>, rows: usize, cols: usize, out: &mut Vec<f32>| {
        if out.len() < rows * cols {
            out.resize(rows * cols, 0.0);
        }
        out[..rows * cols]
            .par_chunks_mut(cols.max(1))
            .enumerate()
            .for_each(|(i, row)| {
                for (j, x) in row.iter_mut().enumerate() {
                    *x = round_bf16(v.data[v.off + i * v.rs + j * v.cs]);
                }
            });
    };
    round(&a, m, k, ra);
    round(&b, k, n, rb);
    gemm::gemm(
        m,
        n,
        k,
        c,
        0,
        c_rs,
        View::row_major(&ra[..m * k], k),
        View::row_major(&rb[..k * n], n),
        1.0,
        accumulate,
        true,
    );
}

// Packed layout. A tile and a B tile are both 16×16 u32 words, each word a pair of bf16
// values adjacent in k (the lower k in the low half):
//   A tile: word [r][p] = (A[r][2p], A[r][2p+1])      — 16 rows × 32 k-values
//   B tile: word [p][j] = (B[2p][j], B[2p+1][j])      — 32 k-values × 16 columns
// A source whose k runs along memory fills A tiles and gives B tiles after a 16×16 word
// transpose; a source whose k runs across rows is the other way round. Tiles of one 16-row
// (16-column) block are stored consecutively over k; rows, columns and k are zero-padded.

/// Words in one tile.
const TILE_WORDS: usize = amx::TILE_ELEMS / 2;

/// The pair word of two f32 values.
#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    to_bf16(lo) as u32 | (to_bf16(hi) as u32) << 16
}

/// `v(i, l)` for a view, 0 outside `rows × cols`.
#[inline(always)]
fn at(v: &View<f32>, i: usize, l: usize, rows: usize, cols: usize) -> f32 {
    if i < rows && l < cols {
        v.data[v.off + i * v.rs + l * v.cs]
    } else {
        0.0
    }
}

super::simd::multiversion! {
    /// One tile from a view whose rows run along k in memory (`cs == 1`): `block(r, l) =
    /// v(i0 + r, l0 + l)` as words `[r][p]` (A) or, with `transpose`, `[p][r]` (B of a
    /// transposed source).
    pub fn runs_tile(d: &mut [u32], v: View<f32>, i0: usize, rows: usize, k: usize, l0: usize, transpose: bool) {
        let mut tile = [0u32; TILE_WORDS];
        for r in 0..16 {
            let words = &mut tile[r * 16..r * 16 + 16];
            if i0 + r < rows && l0 + amx::TILE_K <= k {
                let run = &v.data[v.off + (i0 + r) * v.rs + l0..][..amx::TILE_K];
                for (w, two) in words.iter_mut().zip(run.chunks_exact(2)) {
                    *w = pair(two[0], two[1]);
                }
            } else {
                for (p, w) in words.iter_mut().enumerate() {
                    *w = pair(at(&v, i0 + r, l0 + 2 * p, rows, k), at(&v, i0 + r, l0 + 2 * p + 1, rows, k));
                }
            }
        }
        if transpose {
            for r in 0..16 {
                for p in 0..16 {
                    d[p * 16 + r] = tile[r * 16 + p];
                }
            }
        } else {
            d[..TILE_WORDS].copy_from_slice(&tile);
        }
    }
}

super::simd::multiversion! {
    /// One tile from a view whose k runs across rows of memory (`v(l, j)` with `cs == 1`):
    /// `block(l, j) = v(l0 + l, j0 + j)` as words `[p][j]` (B) or, with `transpose`, `[j][p]`
    /// (A of a transposed source).
    pub fn rows_tile(d: &mut [u32], v: View<f32>, j0: usize, cols: usize, k: usize, l0: usize, transpose: bool) {
        let mut tile = [0u32; TILE_WORDS];
        for p in 0..16 {
            let (l, words) = (l0 + 2 * p, &mut tile[p * 16..p * 16 + 16]);
            if j0 + 16 <= cols && l + 1 < k {
                let r0 = &v.data[v.off + l * v.rs + j0..][..16];
                let r1 = &v.data[v.off + (l + 1) * v.rs + j0..][..16];
                for ((w, &x0), &x1) in words.iter_mut().zip(r0).zip(r1) {
                    *w = pair(x0, x1);
                }
            } else {
                for (j, w) in words.iter_mut().enumerate() {
                    *w = pair(at(&v, l, j0 + j, k, cols), at(&v, l + 1, j0 + j, k, cols));
                }
            }
        }
        if transpose {
            for p in 0..16 {
                for j in 0..16 {
                    d[j * 16 + p] = tile[p * 16 + j];
                }
            }
        } else {
            d[..TILE_WORDS].copy_from_slice(&tile);
        }
    }
}

/// Calls `f(block, k_tile, tile)` for every tile of a packed operand (`blocks` 16-wide blocks ×
/// `kt` k-tiles, stored block-major), in parallel. `along_k` orders each task's work along k
/// within one block — right when k runs along memory rows; otherwise each task takes one
/// k-tile across a group of blocks, so it reads whole stretches of the source rows instead of
/// one cache line from each of thousands of rows (which thrashes the TLB on wide matrices).
fn for_each_tile(
    out: &mut [u32],
    blocks: usize,
    kt: usize,
    along_k: bool,
    f: impl Fn(usize, usize, &mut [u32]) + Sync,
) {
    assert!(out.len() >= blocks * kt * TILE_WORDS);
    let ptr = SendPtr(out.as_mut_ptr());
    // SAFETY: each (block, k-tile) pair is visited by exactly one task, and tiles are disjoint.
    let tile = |bi: usize, t: usize| unsafe {
        std::slice::from_raw_parts_mut(ptr.get().add((bi * kt + t) * TILE_WORDS), TILE_WORDS)
    };
    if along_k {
        (0..blocks).into_par_iter().for_each(|bi| {
            for t in 0..kt {
                f(bi, t, tile(bi, t));
            }
        });
    } else {
        const GROUP: usize = 16; // 256 columns: 1 KiB of each f32 source row per task
        let groups = blocks.div_ceil(GROUP);
        (0..kt * groups).into_par_iter().for_each(|task| {
            let (t, g) = (task / groups, task % groups);
            for bi in g * GROUP..((g + 1) * GROUP).min(blocks) {
                f(bi, t, tile(bi, t));
            }
        });
    }
}

/// A general view (neither stride 1): element by element.
fn strided_tile(
    d: &mut [u32],
    f: impl Fn(usize, usize) -> f32,
    b0: usize,
    l0: usize,
    a_side: bool,
) {
    for x in 0..16 {
        for p in 0..16 {
            let w = pair(f(b0 + x, l0 + 2 * p), f(b0 + x, l0 + 2 * p + 1));
            d[if a_side { x * 16 + p } else { p * 16 + x }] = w;
        }
    }
}

/// Packs an operand seen as `v(x, l)` — `x` the row of A or the column of B, `l` along k —
/// as `out.len() / (kt·256)` blocks of 16 x-values × `kt` tiles: A tiles (words `[x][p]`) or,
/// with `b_side`, B tiles (words `[p][x]`).
fn pack(v: View<f32>, xs: usize, k: usize, kt: usize, b_side: bool, out: &mut [u32]) {
    let blocks = out.len() / (kt * TILE_WORDS);
    let l0 = |t: usize| t * amx::TILE_K;
    if v.cs == 1 {
        // k runs along memory.
        for_each_tile(out, blocks, kt, true, |bx, t, d| {
            runs_tile(d, v, bx * 16, xs, k, l0(t), b_side)
        });
    } else if v.rs == 1 {
        // k runs across memory rows: vᵀ is row-major.
        let vt = View {
            data: v.data,
            off: v.off,
            rs: v.cs,
            cs: 1,
        };
        for_each_tile(out, blocks, kt, false, |bx, t, d| {
            rows_tile(d, vt, bx * 16, xs, k, l0(t), !b_side)
        });
    } else {
        for_each_tile(out, blocks, kt, true, |bx, t, d| {
            strided_tile(d, |x, l| at(&v, x, l, xs, k), bx * 16, l0(t), !b_side)
        });
    }
}

/// `b` (k×n) as its transposed view `bᵀ(j, l)`, the form [`pack`] takes for B.
fn transposed(b: View<f32>) -> View<f32> {
    View {
        data: b.data,
        off: b.off,
        rs: b.cs,
        cs: b.rs,
    }
}

/// `b` (k×n) packed as AMX B tiles, for callers that keep the left operand in place (the
/// decoder's bf16 weights): 16-column blocks (padded to an even count) of `k.div_ceil(32)`
/// tiles of [`amx::TILE_ELEMS`] bf16 values each, two bf16 per `u32` word. `out` only grows;
/// every word of the returned length is written.
pub fn pack_rhs(b: View<f32>, k: usize, n: usize, out: &mut Vec<u32>) -> usize {
    let kt = k.div_ceil(amx::TILE_K);
    let need = n.div_ceil(32) * 2 * kt * TILE_WORDS;
    if out.len() < need {
        out.resize(need, 0);
    }
    pack(transposed(b), n, k, kt, true, &mut out[..need]);
    need
}

/// # Safety
/// Views and output bounds-checked by the caller; AMX available.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_amx(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    c_rs: usize,
    a: View<f32>,
    b: View<f32>,
    accumulate: bool,
    pa: &mut Vec<u32>,
    pb: &mut Vec<u32>,
) {
    let mt = m.div_ceil(32) * 2; // 16-row tiles, an even number
    let nt = n.div_ceil(32) * 2;
    let kt = k.div_ceil(amx::TILE_K);
    let need_a = mt * kt * TILE_WORDS;
    let need_b = nt * kt * TILE_WORDS;
    if pa.len() < need_a {
        pa.resize(need_a, 0);
    }
    if pb.len() < need_b {
        pb.resize(need_b, 0);
    }
    rayon::join(
        || pack(a, m, k, kt, false, &mut pa[..need_a]),
        || pack(transposed(b), n, k, kt, true, &mut pb[..need_b]),
    );
    let (pa, pb) = (
        SendPtr(pa.as_mut_ptr() as *mut u16),
        SendPtr(pb.as_mut_ptr() as *mut u16),
    );
    let block = kt * amx::TILE_ELEMS;
    // Tasks: (32-row block, group of 32-column blocks). Enough tasks to balance the threads,
    // few enough that each configures its tiles once for a good amount of work.
    let (mb, nb) = (mt / 2, nt / 2);
    let threads = rayon::current_num_threads().max(1);
    let groups = (4 * threads).div_ceil(mb).clamp(1, nb);
    let per_group = nb.div_ceil(groups);
    let cp = SendPtr(c.as_mut_ptr());
    (0..mb * groups).into_par_iter().for_each(|task| {
        let (ib, g) = (task / groups, task % groups);
        let (jb0, jb1) = (g * per_group, ((g + 1) * per_group).min(nb));
        if jb0 >= jb1 {
            return;
        }
        let tiles = amx::Tiles::configure();
        let mut acc = [0f32; 32 * 32];
        let a_tiles = amx::ATiles::packed(
            pa.get().add(2 * ib * block),
            pa.get().add((2 * ib + 1) * block),
        );
        let i0 = ib * 32;
        let rows = 32.min(m - i0);
        for jb in jb0..jb1 {
            let b0 = pb.get().add(2 * jb * block);
            let b1 = pb.get().add((2 * jb + 1) * block);
            let j0 = jb * 32;
            let cols = 32.min(n - j0);
            let corner = cp.get().add(i0 * c_rs + j0);
            if rows == 32 && cols == 32 {
                // A whole block: the tiles load and store C in place.
                tiles.kernel::<2>(a_tiles, b0, b1, kt, corner, c_rs, accumulate);
                continue;
            }
            tiles.kernel::<2>(a_tiles, b0, b1, kt, acc.as_mut_ptr(), 32, false);
            for r in 0..rows {
                // SAFETY: row i0+r, columns j0..j0+cols belong to this task alone.
                let dst = std::slice::from_raw_parts_mut(corner.add(r * c_rs), cols);
                let src = &acc[r * 32..r * 32 + cols];
                if accumulate {
                    dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                } else {
                    dst.copy_from_slice(src);
                }
            }
        }
        drop(tiles);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn rounding_is_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3·2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: rounds up to even.
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(to_bf16(-2.5), 0xc020);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
        // f32::MAX lies above the largest bf16 by more than half a step: it rounds to +inf,
        // never into NaN bits.
        assert_eq!(to_bf16(f32::MAX), 0x7f80);
    }

    /// f64 reference with bf16-rounded operands.
    fn reference(m: usize, n: usize, k: usize, a: &View<f32>, b: &View<f32>) -> Vec<f64> {
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|l| {
                        round_bf16(a.data[a.off + i * a.rs + l * a.cs]) as f64
                            * round_bf16(b.data[b.off + l * b.rs + j * b.cs]) as f64
                    })
                    .sum();
            }
        }
        c
    }

    /// Every transpose combination, ragged edges in all three dimensions, accumulate on and
    /// off; checked against f64 within f32 summation error. Runs the AMX kernel where the CPU
    /// has it and the emulated path always.
    #[test]
    fn matches_rounded_reference_for_all_layouts() {
        let packs = PackBuffers::default();
        if !amx::available() {
            eprintln!("note: this CPU has no AMX; only the emulated bf16 path is checked");
        }
        for &(m, n, k) in &[
            (1, 1, 1),
            (5, 7, 3),
            (33, 17, 40),
            (64, 96, 64),
            (70, 45, 131),
        ] {
            let a_store = data(m * k, 1);
            let b_store = data(k * n, 2);
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let av = if ta {
                    View::transposed(&a_store, m)
                } else {
                    View::row_major(&a_store, k)
                };
                let bv = if tb {
                    View::transposed(&b_store, k)
                } else {
                    View::row_major(&b_store, n)
                };
                let want = reference(m, n, k, &av, &bv);
                for accumulate in [false, true] {
                    let base = data(m * n, 3);
                    let mut c1 = base.clone();
                    matmul(m, n, k, &mut c1, n, av, bv, accumulate, &packs);
                    let mut c2 = base.clone();
                    matmul_emulated(m, n, k, &mut c2, n, av, bv, accumulate);
                    for i in 0..m * n {
                        let w = want[i] + if accumulate { base[i] as f64 } else { 0.0 };
                        let tol = 1e-5 * (k as f64).sqrt() * (1.0 + w.abs());
                        assert!(
                            (c1[i] as f64 - w).abs() < tol && (c2[i] as f64 - w).abs() < tol,
                            "{m}x{n}x{k} ta={ta} tb={tb} acc={accumulate} [{i}]: {} {} vs {w}",
                            c1[i],
                            c2[i]
                        );
                    }
                }
            }
        }
    }

    /// A strided output (c_rs > n) leaves the gap columns alone.
    #[test]
    fn strided_output_leaves_other_columns() {
        let packs = PackBuffers::default();
        let (m, n, k) = (20, 10, 50);
        let a = data(m * k, 4);
        let b = data(k * n, 5);
        let mut c = vec![7.0f32; m * 16];
        matmul(
            m,
            n,
            k,
            &mut c,
            16,
            View::row_major(&a, k),
            View::row_major(&b, n),
            false,
            &packs,
        );
        for i in 0..m {
            assert!(c[i * 16 + n..i * 16 + 16].iter().all(|&x| x == 7.0));
        }
    }
}
