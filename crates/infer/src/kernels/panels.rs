//! f32 weights in column panels, multiplied as outer products: the layout and kernels for the
//! decoder's f32 linear layers.
//!
//! The weights `[n, k]` are stored once, at load, as panels of 16 weight rows: panel `q` holds
//! `w[16q + c, p]` at `(q·k + p)·16 + c`, zero past the last row. A product then broadcasts one
//! activation value and multiplies it with 16 consecutive outputs' weights: per step a tile of
//! up to 6 activation rows × 4 panels does 24 vector FMAs for 4 vector loads and 6 broadcasts,
//! and a chunk of `KC` steps of 4 panels (32 KiB) stays in L1 while every activation row of the
//! task passes over it. (The row-major dot-product kernel reads both operands as vectors from
//! L2 on every step, which held f32 prompt processing to about 40% of the FMA peak.)
//!
//! Each output is one vector lane accumulated by FMA over `p = 0, 1, …, k−1` in order, parked in
//! memory between chunks, and finally stored (or added to what `out` holds). That sequence does
//! not depend on the tile, the chunking or the thread split, so a row's result is the same
//! decoded alone or in a batch, as with the other kernels.

use super::OutPtr;
use crate::simd::Isa;
use rayon::prelude::*;

/// Weight rows per panel (one 512-bit vector of outputs).
pub const NR: usize = 16;
/// Steps of `p` per chunk: 4 panels × 128 steps × 64 bytes = 32 KiB.
const KC: usize = 128;
/// Activation rows and panels per register tile.
const MR: usize = 6;
const RN: usize = 4;
/// Groups of RN panels that share each chunk of the activations (their partial sums, for 256
/// rows, take 512 KiB of L2).
const GROUPS: usize = 8;

/// Packs a row-major `[n, k]` matrix into panels.
pub fn pack(w: &[f32], n: usize, k: usize) -> Vec<f32> {
    assert_eq!(w.len(), n * k);
    let panels = n.div_ceil(NR);
    let mut p = vec![0f32; panels * k * NR];
    p.par_chunks_mut(k * NR).enumerate().for_each(|(q, panel)| {
        for c in 0..NR.min(n - q * NR) {
            let row = &w[(q * NR + c) * k..(q * NR + c + 1) * k];
            for (i, &v) in row.iter().enumerate() {
                panel[i * NR + c] = v;
            }
        }
    });
    p
}

/// The row-major `[n, k]` matrix back from its panels.
pub fn unpack(p: &[f32], n: usize, k: usize) -> Vec<f32> {
    let mut w = vec![0f32; n * k];
    for (r, row) in w.chunks_mut(k.max(1)).enumerate().take(n) {
        let (q, c) = (r / NR, r % NR);
        for (i, v) in row.iter_mut().enumerate() {
            *v = p[(q * k + i) * NR + c];
        }
    }
    w
}

/// Sixteen f32 lanes in whatever registers the instruction set has.
trait Lanes: Copy {
    unsafe fn zero() -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    unsafe fn splat(v: f32) -> Self;
    /// `a·b + c`, rounded once where the instruction set fuses it.
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Lanes;
    use std::arch::x86_64::*;

    #[derive(Clone, Copy)]
    pub struct Zmm(__m512);
    impl Lanes for Zmm {
        #[inline(always)]
        unsafe fn zero() -> Self {
            Zmm(_mm512_setzero_ps())
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Zmm(_mm512_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm512_storeu_ps(p, self.0)
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            Zmm(_mm512_set1_ps(v))
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            Zmm(_mm512_fmadd_ps(a.0, b.0, c.0))
        }
    }

    #[derive(Clone, Copy)]
    pub struct Ymm2(__m256, __m256);
    impl Lanes for Ymm2 {
        #[inline(always)]
        unsafe fn zero() -> Self {
            Ymm2(_mm256_setzero_ps(), _mm256_setzero_ps())
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Ymm2(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm256_storeu_ps(p, self.0);
            _mm256_storeu_ps(p.add(8), self.1)
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            let s = _mm256_set1_ps(v);
            Ymm2(s, s)
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            Ymm2(
                _mm256_fmadd_ps(a.0, b.0, c.0),
                _mm256_fmadd_ps(a.1, b.1, c.1),
            )
        }
    }
}

/// Portable lanes: a separate multiply and add (no fused instruction is assumed).
#[derive(Clone, Copy)]
struct Plain([f32; NR]);
impl Lanes for Plain {
    #[inline(always)]
    unsafe fn zero() -> Self {
        Plain([0.0; NR])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Plain(std::ptr::read_unaligned(p as *const [f32; NR]))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        std::ptr::write_unaligned(p as *mut [f32; NR], self.0)
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Plain([v; NR])
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        let mut o = c.0;
        for (i, o) in o.iter_mut().enumerate() {
            *o += a.0[i] * b.0[i];
        }
        Plain(o)
    }
}

/// Where one register tile reads and writes.
#[derive(Clone, Copy)]
struct Tile {
    /// The tile's activations interleaved: `(i, p)` at `x[p·MR + i]`.
    x: *const f32,
    /// First panel; panels `k·NR` floats apart.
    w: *const f32,
    k: usize,
    /// Steps `p0..p1` of `p`; the first chunk starts from zero, the last one writes `out`.
    p0: usize,
    p1: usize,
    /// Partial sums between chunks: `RM` rows of `RN·NR` floats.
    park: *mut f32,
    out: *mut f32,
    ldo: usize,
    /// Valid outputs in the tile's last panel.
    last_cols: usize,
    accumulate: bool,
}

#[inline(always)]
unsafe fn tile<V: Lanes, const RM: usize, const RP: usize>(t: Tile) {
    let stride = t.k * NR;
    let mut acc = [[V::zero(); RP]; RM];
    if t.p0 > 0 {
        for (i, row) in acc.iter_mut().enumerate() {
            for (r, a) in row.iter_mut().enumerate() {
                *a = V::load(t.park.add((i * RN + r) * NR));
            }
        }
    }
    for p in t.p0..t.p1 {
        let mut w = [V::zero(); RP];
        for (r, w) in w.iter_mut().enumerate() {
            *w = V::load(t.w.add(r * stride + p * NR));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let a = V::splat(*t.x.add(p * MR + i));
            for (r, c) in row.iter_mut().enumerate() {
                *c = V::fma(a, w[r], *c);
            }
        }
    }
    if t.p1 < t.k {
        for (i, row) in acc.iter().enumerate() {
            for (r, a) in row.iter().enumerate() {
                a.store(t.park.add((i * RN + r) * NR));
            }
        }
        return;
    }
    let mut buf = [0f32; NR];
    for (i, row) in acc.iter().enumerate() {
        for (r, a) in row.iter().enumerate() {
            let cols = if r + 1 == RP { t.last_cols } else { NR };
            a.store(buf.as_mut_ptr());
            let o = t.out.add(i * t.ldo + r * NR);
            for (c, &v) in buf.iter().enumerate().take(cols) {
                *o.add(c) = if t.accumulate { *o.add(c) + v } else { v };
            }
        }
    }
}

#[inline(always)]
fn prefetch_l2(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        _mm_prefetch::<_MM_HINT_T1>(p as *const i8)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Runs the tiles of one block with lanes `V`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn block_with<V: Lanes>(
    x: &[f32],
    lda: usize,
    (i0, i1): (usize, usize),
    panels: &[f32],
    k: usize,
    (j0, j1): (usize, usize),
    out: *mut f32,
    ldo: usize,
    accumulate: bool,
) {
    let npanels = (j1 - j0).div_ceil(NR);
    let q0 = j0 / NR;
    // One row needs no chunking: nothing else would reuse the chunk.
    let kc = if i1 - i0 == 1 { k } else { KC };
    // Each register tile's rows are interleaved (`[p][MR]`), so its broadcasts read one stream
    // rather than MR rows far apart that crowd the chunk out of L1's sets. The buffer is the
    // thread's own and kept, so a product does not fault in fresh pages for it.
    let rows = i1 - i0;
    let mut bufs = BUFS.with(|b| b.take());
    let (packed, park, chunks) = (&mut bufs.0, &mut bufs.1, &mut bufs.2);
    let len = rows.next_multiple_of(MR) * k;
    if packed.len() < len {
        packed.resize(len, 0.0);
    }
    for (tr, tile) in packed[..len].chunks_mut(MR * k).enumerate() {
        // Every entry is written: rows past the end as zeros (no fill of the whole buffer).
        for r in 0..MR {
            let i = i0 + tr * MR + r;
            if i < i1 {
                let row = &x[i * lda..][..k];
                for (p, &v) in row.iter().enumerate() {
                    tile[p * MR + r] = v;
                }
            } else {
                (0..k).for_each(|p| tile[p * MR + r] = 0.0);
            }
        }
    }
    // Chunks in the order they run: groups of RN panels, gathered GROUPS at a time; within a
    // gathering, chunk by chunk of p, each over its groups. So one chunk of the activations
    // (all rows × KC) serves GROUPS groups from L2 before the next is needed.
    chunks.clear();
    let mut g0 = 0;
    while g0 < npanels {
        let g1 = (g0 + GROUPS * RN).min(npanels);
        let mut p0 = 0;
        while p0 < k {
            let p1 = (p0 + kc).min(k);
            for g in (g0..g1).step_by(RN) {
                chunks.push((g, RN.min(g1 - g), p0, p1, (g - g0) / RN));
            }
            p0 = p1;
        }
        g0 = g1;
    }
    let slot = rows.next_multiple_of(MR) * RN * NR;
    if k > kc && park.len() < GROUPS * slot {
        park.resize(GROUPS * slot, 0.0);
    }
    let tiles = rows.div_ceil(MR);
    for (c, &(g, rp, p0, p1, s)) in chunks.iter().enumerate() {
        let last_cols = (j1 - j0 - (g + rp - 1) * NR).min(NR);
        // The next chunk's weights are fetched into L2 while this one is used, a share by each
        // register tile, so its first tile does not wait on memory.
        let next = chunks.get(c + 1).filter(|_| rows > 1);
        let (next_lines, next_len) = next.map_or((0, 1), |&(_, nrp, np0, np1, _)| {
            (nrp * (np1 - np0), np1 - np0)
        });
        let mut i = i0;
        while i < i1 {
            let ti = (i - i0) / MR;
            if let Some(&(ng, _, np0, _, _)) = next {
                for l in ti * next_lines / tiles..(ti + 1) * next_lines / tiles {
                    let (r, p) = (l / next_len, np0 + l % next_len);
                    prefetch_l2(panels.as_ptr().add(((q0 + ng + r) * k + p) * NR));
                }
            }
            let rm = MR.min(i1 - i);
            let t = Tile {
                x: packed.as_ptr().add((i - i0) * k),
                w: panels.as_ptr().add((q0 + g) * k * NR),
                k,
                p0,
                p1,
                park: park
                    .as_mut_ptr()
                    .wrapping_add(s * slot + (i - i0) * RN * NR),
                out: out.add(i * ldo + j0 + g * NR),
                ldo,
                last_cols,
                accumulate,
            };
            super::tile_dispatch!(rm, rp, tile<V>(t);
                (1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2), (2, 3), (2, 4),
                (3, 1), (3, 2), (3, 3), (3, 4), (4, 1), (4, 2), (4, 3), (4, 4),
                (5, 1), (5, 2), (5, 3), (5, 4), (6, 1), (6, 2), (6, 3), (6, 4));
            i += rm;
        }
    }
    BUFS.with(|b| b.set(bufs));
}

thread_local! {
    /// Per thread: the interleaved activations, the parked partial sums and the chunk order of
    /// [`block_with`].
    static BUFS: std::cell::Cell<Buffers> = const {
        std::cell::Cell::new((Vec::new(), Vec::new(), Vec::new()))
    };
}

/// A chunk: first panel of its group, panels in it, steps `p0..p1`, its group's parking slot.
type Chunk = (usize, usize, usize, usize, usize);
type Buffers = (Vec<f32>, Vec<f32>, Vec<Chunk>);

/// `block_with` for one lane type, compiled with the instruction set's features.
macro_rules! block_for {
    ($name:ident, $features:literal, $lanes:ty) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name(
            x: &[f32],
            lda: usize,
            i: (usize, usize),
            panels: &[f32],
            k: usize,
            j: (usize, usize),
            out: *mut f32,
            ldo: usize,
            accumulate: bool,
        ) {
            block_with::<$lanes>(x, lda, i, panels, k, j, out, ldo, accumulate)
        }
    };
}
block_for!(block_avx512, "avx512f,avx2,fma", x86::Zmm);
block_for!(block_avx2, "avx2,fma", x86::Ymm2);

/// `out[i·ldo + j] (+)= Σ_p x[i·lda + p]·w[j, p]` for `i in i0..i1`, `j in j0..j1` (`j0` a
/// multiple of [`NR`]), with `w` `[n, k]` in panels.
///
/// # Safety
/// `isa` must be supported by this CPU; `out` must be valid for the block and written by nobody
/// else meanwhile. Operand sizes are checked.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn block(
    isa: Isa,
    x: &[f32],
    lda: usize,
    i: (usize, usize),
    panels: &[f32],
    n: usize,
    k: usize,
    j: (usize, usize),
    out: OutPtr,
    ldo: usize,
    accumulate: bool,
) {
    let ((i0, i1), (j0, j1)) = (i, j);
    if i1 <= i0 || j1 <= j0 {
        return;
    }
    if k == 0 {
        // Empty sums (no chunk would run).
        for r in i0..i1 {
            for c in j0..j1 {
                let o = out.get().add(r * ldo + c);
                *o = if accumulate { *o } else { 0.0 };
            }
        }
        return;
    }
    assert!(j0.is_multiple_of(NR) && j1 <= n && panels.len() >= n.div_ceil(NR) * k * NR);
    assert!(x.len() >= (i1 - 1) * lda + k);
    let out = out.get();
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => block_avx512(x, lda, i, panels, k, j, out, ldo, accumulate),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => block_avx2(x, lda, i, panels, k, j, out, ldo, accumulate),
        _ => block_with::<Plain>(x, lda, i, panels, k, j, out, ldo, accumulate),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_and_unpack_are_inverse() {
        for (n, k) in [(1, 1), (16, 3), (33, 5), (40, 7)] {
            let w: Vec<f32> = (0..n * k).map(|v| v as f32).collect();
            let p = pack(&w, n, k);
            assert_eq!(p.len(), n.div_ceil(NR) * NR * k);
            assert_eq!(unpack(&p, n, k), w);
            if n > 1 && k > 1 {
                assert_eq!(p[NR + 1], w[k + 1], "row 1, column 1 at (0·k + 1)·16 + 1");
            }
        }
    }
}
