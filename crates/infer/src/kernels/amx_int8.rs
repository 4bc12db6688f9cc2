//! Q8_0 and Q4_0 weights × int8 activations on AMX tiles (CPUs with AMX-INT8, under the
//! AVX-512 kernel set).
//!
//! `tdpbssd` multiplies a 16×32 tile of signed bytes (16 weight rows, one quantisation block
//! each) by an 8×64 tile (the same block of up to 16 activation rows, four bytes per entry) into
//! exact int32 block sums. Each sum is then scaled and added in f32, block after block in order:
//! `acc = fma(float(sum), fl(d_act · d_weight), acc)`, and finally `out = acc` or `out + acc`.
//!
//! A single activation row (decoding) runs without tiles (see `single_row`) but forms the
//! same exact block sums and then the same per-output sequence, as do the tiles whatever the
//! number of rows sharing them. So, as with the other kernels, a row's result never depends on
//! what it is batched with.
//!
//! Q8_0 weight rows are read in place: one block of a row is 32 contiguous signed bytes, the
//! A-tile layout. Q4_0 rows are unpacked to signed bytes (nibble − 8), 16 rows at a time, into a
//! buffer that the task then reuses for all its activation rows. Activations are packed into the
//! B-tile layout once per product; a single row is read in place.

use super::avx512::{QLoad, Q4, Q8};
use super::{bias_offset, f16_to_f32, QActs, WView, QK};
use crate::simd::Isa;
use rayon::prelude::*;
use std::arch::x86_64::*;
use tinyllama_engine::cpu::amx::{self, Tiles};

/// Whether the int8 formats run on AMX here (AVX-512 kernels chosen and AMX-INT8 usable).
pub fn usable() -> bool {
    amx::int8_available()
}

/// Activation rows as the kernels read them.
pub struct Acts<'a> {
    qa: &'a QActs,
    /// For more than one row: `[row tile][block][8][16]` words, word `(r, c)` holding the four
    /// bytes `4r..4r+4` of the block in row `16·tile + c` (the B-tile layout); zero past the
    /// last row.
    b: Vec<u32>,
    /// `[row tile][block][16]` activation scales, zero past the last row.
    d: Vec<f32>,
}

/// Lays out activations for [`block`]: several rows must be quantised without a bias offset
/// (the tiles multiply signed bytes), a single row with the VNNI kernels' offset
/// ([`bias_offset`] for [`Isa::Avx512`]).
pub fn pack(qa: &QActs) -> Acts<'_> {
    let (m, k) = (qa.rows, qa.k);
    let nb = k / QK;
    if m <= 1 {
        return Acts {
            qa,
            b: Vec::new(),
            d: Vec::new(),
        };
    }
    let tiles = m.div_ceil(16);
    let mut b = vec![0u32; tiles * nb * 128];
    let mut d = vec![0f32; tiles * nb * 16];
    b.par_chunks_mut(nb * 128)
        .zip(d.par_chunks_mut(nb * 16))
        .enumerate()
        .for_each(|(t, (bt, dt))| {
            let rows = 16.min(m - t * 16);
            // SAFETY: AVX-512 is present wherever this kernel set is chosen; the tile's rows lie
            // inside `qa.qs` and `bt` holds `nb · 128` words.
            unsafe { pack_tile(qa.qs.as_ptr().add(t * 16 * k), k, rows, bt) };
            for c in 0..rows {
                for blk in 0..nb {
                    dt[blk * 16 + c] = qa.d[(t * 16 + c) * nb + blk];
                }
            }
        });
    Acts { qa, b, d }
}

/// One tile of up to 16 activation rows (`k` bytes each, the first at `qs`) into the B-tile
/// layout: word `(blk, r, c)` is bytes `4r..4r+4` of block `blk` of row `c`, one gather per
/// 16 words.
#[target_feature(enable = "avx512f")]
unsafe fn pack_tile(qs: *const i8, k: usize, rows: usize, bt: &mut [u32]) {
    assert!(bt.len() >= k / QK * 128);
    let mask: __mmask16 = if rows >= 16 {
        0xffff
    } else {
        (1u16 << rows) - 1
    };
    let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let offsets = _mm512_mullo_epi32(lane, _mm512_set1_epi32(k as i32));
    for w in 0..k / 4 {
        let g = _mm512_mask_i32gather_epi32::<1>(
            _mm512_setzero_si512(),
            mask,
            offsets,
            qs.add(4 * w) as *const i32,
        );
        _mm512_storeu_si512(bt.as_mut_ptr().add(16 * w) as *mut __m512i, g);
    }
}

/// `out[i·ldo + j] (+)= Σ_p x[i, p]·w[j, p]` over the quantised operands, for `i in i0..i1`
/// (`i0` a multiple of 16), `j in j0..j1`.
///
/// # Safety
/// [`usable`] must be true; `out` must be valid for the block and written by nobody else
/// meanwhile. Operand sizes are checked.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
pub unsafe fn block(
    acts: &Acts,
    (i0, i1): (usize, usize),
    w: WView,
    (j0, j1): (usize, usize),
    k: usize,
    out: *mut f32,
    ldo: usize,
    accumulate: bool,
) {
    if i1 <= i0 || j1 <= j0 {
        return;
    }
    let nb = k / QK;
    let qa = acts.qa;
    assert!(k.is_multiple_of(QK) && qa.k == k && i1 <= qa.rows && i0.is_multiple_of(16));
    let (wq, wq_len, wdh, q4) = match w {
        WView::Q8 { qs, d } => (qs.as_ptr() as *const u8, qs.len(), d, false),
        WView::Q4 { qs, d } => (qs.as_ptr(), qs.len(), d, true),
        _ => panic!("amx_int8::block: weights must be Q8_0 or Q4_0"),
    };
    let row_bytes = if q4 { k / 2 } else { k };
    assert!(wq_len >= j1 * row_bytes && wdh.len() >= j1 * nb);
    let single = qa.rows == 1;
    let want_bias = if single {
        bias_offset(Isa::Avx512, q4)
    } else {
        0
    };
    assert!(
        qa.bias.is_empty() == (want_bias == 0),
        "activations were quantised for another kernel (bias offset {want_bias} expected)"
    );
    // Tiles 0–3: int32 sums (16×16); 4–5: weight blocks (16 rows × 32 bytes); 6–7: activation
    // blocks (8 rows × 4 bytes for each of 16 activation rows).
    let tiles = (!single).then(|| {
        Tiles::configure_shapes([
            (16, 64),
            (16, 64),
            (16, 64),
            (16, 64),
            (16, 32),
            (16, 32),
            (8, 64),
            (8, 64),
        ])
    });
    // The weight scales and unpacked rows go in this thread's buffers, kept between calls (a
    // decoded token runs this for every task of every product).
    let (mut wd, mut panel) = SCRATCH.with(|b| b.take());
    if wd.len() < 2 * nb * 16 {
        wd.resize(2 * nb * 16, 0.0);
    }
    let Some(tiles) = tiles else {
        // One activation row: 16 weight rows at a time.
        let mut j = j0;
        while j < j1 {
            let rows = 16.min(j1 - j);
            weight_scales(wdh.as_ptr().add(j * nb), nb, rows, wd.as_mut_ptr());
            let (src, o) = (wq.add(j * row_bytes), out.add(j));
            if q4 {
                single_row::<Q4>(qa, src, row_bytes, rows, nb, &wd, o, accumulate);
            } else {
                single_row::<Q8>(qa, src, row_bytes, rows, nb, &wd, o, accumulate);
            }
            j += 16;
        }
        SCRATCH.with(|b| b.set((wd, panel)));
        return;
    };
    // Several rows: 32 weight rows × 32 activation rows at a time (four tiles of sums).
    let mut j = j0;
    while j < j1 {
        let rows = 32.min(j1 - j);
        let src = wq.add(j * row_bytes);
        let a = if q4 || rows < 32 {
            if rows < 32 {
                // Rows past the end must be zero.
                panel.clear();
            }
            panel.resize(32 * k, 0);
            if q4 {
                unpack_q4(src, row_bytes, rows, nb, panel.as_mut_ptr());
            } else {
                for r in 0..rows {
                    std::ptr::copy_nonoverlapping(
                        src.add(r * row_bytes) as *const i8,
                        panel.as_mut_ptr().add(r * k),
                        k,
                    );
                }
            }
            panel.as_ptr()
        } else {
            src as *const i8
        };
        let rows0 = rows.min(16);
        weight_scales(wdh.as_ptr().add(j * nb), nb, rows0, wd.as_mut_ptr());
        if rows > 16 {
            let d1 = wdh.as_ptr().add((j + 16) * nb);
            weight_scales(d1, nb, rows - 16, wd.as_mut_ptr().add(nb * 16));
        }
        let mut t = i0 / 16;
        while t < i1.div_ceil(16) {
            let acts_n = (i1 - t * 16).min(32);
            let o = out.add(t * 16 * ldo + j);
            wide_tiles(&tiles, a, k, acts, t, &wd, rows, acts_n, o, ldo, accumulate);
            t += 2;
        }
        j += 32;
    }
    drop(tiles);
    SCRATCH.with(|b| b.set((wd, panel)));
}

thread_local! {
    /// Per thread: [`block`]'s weight scales and unpacked weight rows.
    static SCRATCH: std::cell::Cell<(Vec<f32>, Vec<i8>)> =
        const { std::cell::Cell::new((Vec::new(), Vec::new())) };
}

/// The weight scales of 16 rows (`rows` of them real) as `[block][row]` f32, zero past `rows`.
/// Pairs of blocks are fetched with one 32-bit gather per pair.
#[inline(always)]
unsafe fn weight_scales(d: *const u16, nb: usize, rows: usize, out: *mut f32) {
    let mask: __mmask16 = if rows >= 16 {
        0xffff
    } else {
        (1u16 << rows) - 1
    };
    let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let offsets = _mm512_mullo_epi32(lane, _mm512_set1_epi32((nb * 2) as i32));
    let mut b = 0;
    while b + 2 <= nb {
        // Row r's 32-bit word at block b holds blocks b (low half) and b + 1 (high half), both
        // inside the row.
        let g = _mm512_mask_i32gather_epi32::<1>(
            _mm512_setzero_si512(),
            mask,
            offsets,
            d.add(b) as *const i32,
        );
        let lo = _mm512_cvtepi32_epi16(g);
        let hi = _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(g));
        _mm512_storeu_ps(out.add(b * 16), _mm512_cvtph_ps(lo));
        _mm512_storeu_ps(out.add((b + 1) * 16), _mm512_cvtph_ps(hi));
        b += 2;
    }
    if b < nb {
        for r in 0..16 {
            *out.add(b * 16 + r) = if r < rows {
                f16_to_f32(*d.add(r * nb + b))
            } else {
                0.0
            };
        }
    }
}

/// Unpacks `rows` Q4_0 rows into signed bytes (`[16][k]`, rows `k` apart): block byte `t` holds
/// value `t` in its low nibble and `t + 16` in its high nibble, each + 8.
#[inline(always)]
unsafe fn unpack_q4(src: *const u8, row_bytes: usize, rows: usize, nb: usize, dst: *mut i8) {
    let k = nb * QK;
    let low = _mm512_set1_epi8(15);
    let eight = _mm512_set1_epi8(8);
    // Four blocks per step: 64 packed bytes become [b0 low, b0 high, b1 low, …] (128 bytes).
    let first = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
    let second = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
    for r in 0..rows {
        let (s, o) = (src.add(r * row_bytes), dst.add(r * k));
        let mut b = 0;
        while b + 4 <= nb {
            let v = _mm512_loadu_si512(s.add(b * 16) as *const __m512i);
            let lo = _mm512_sub_epi8(_mm512_and_si512(v, low), eight);
            let hi = _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16::<4>(v), low), eight);
            let p = o.add(b * QK) as *mut __m512i;
            _mm512_storeu_si512(p, _mm512_permutex2var_epi64(lo, first, hi));
            _mm512_storeu_si512(p.add(1), _mm512_permutex2var_epi64(lo, second, hi));
            b += 4;
        }
        while b < nb {
            let v = _mm_loadu_si128(s.add(b * 16) as *const __m128i);
            let (low, eight) = (_mm_set1_epi8(15), _mm_set1_epi8(8));
            let lo = _mm_sub_epi8(_mm_and_si128(v, low), eight);
            let hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16::<4>(v), low), eight);
            _mm_storeu_si128(o.add(b * QK) as *mut __m128i, lo);
            _mm_storeu_si128(o.add(b * QK + 16) as *mut __m128i, hi);
            b += 1;
        }
    }
}

/// One activation row (decoding) against 16 weight rows, without tiles: a one-column tile
/// would waste AMX's work and, for Q4_0, need every weight unpacked through memory. VNNI
/// (`vpdpbusd`) forms the partial sums of two blocks per weight row on the raw weights (made
/// unsigned by an offset that the activation bias cancels, as in the VNNI kernels); a transposing
/// reduction turns the 16 rows' partials into each block's exact int32 sums, one vector over the
/// weight rows per block; the scaling is then the tiles' epilogue, term for term.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn single_row<L: QLoad>(
    qa: &QActs,
    w: *const u8,
    row_bytes: usize,
    rows: usize,
    nb: usize,
    wd: &[f32],
    out: *mut f32,
    accumulate: bool,
) {
    let (x, bias) = (qa.qs.as_ptr(), qa.bias.as_ptr());
    let mut acc = _mm512_setzero_ps();
    let mut b = 0;
    while b < nb {
        let two = b + 1 < nb;
        let (av, bv) = if two {
            (
                _mm512_loadu_si512(x.add(b * QK) as *const __m512i),
                _mm512_loadu_si512(bias.add(b * 8) as *const __m512i),
            )
        } else {
            (
                _mm512_maskz_loadu_epi8(0xffff_ffff, x.add(b * QK)),
                _mm512_maskz_loadu_epi32(0xff, bias.add(b * 8)),
            )
        };
        // v[r]: lanes 0–7 partial sums of block b in weight row r, lanes 8–15 of block b + 1.
        let mut v = [_mm512_setzero_si512(); 16];
        for (r, v) in v.iter_mut().enumerate() {
            if r < rows {
                let p = w.add(r * row_bytes + b * L::BYTES);
                let wv = if two { L::load2(p) } else { L::load_last(p) };
                *v = _mm512_dpbusd_epi32(bv, wv, av);
            }
        }
        let (s0, s1) = reduce_blocks(&v);
        let scale = |h: usize| {
            _mm512_mul_ps(
                _mm512_set1_ps(*qa.d.get_unchecked(b + h)),
                _mm512_loadu_ps(wd.as_ptr().add((b + h) * 16)),
            )
        };
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s0), scale(0), acc);
        if two {
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s1), scale(1), acc);
        }
        b += 2;
    }
    let mask: __mmask16 = if rows >= 16 {
        0xffff
    } else {
        (1u16 << rows) - 1
    };
    if accumulate {
        acc = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, out), acc);
    }
    _mm512_mask_storeu_ps(out, mask, acc);
}

/// Sums each half of sixteen vectors: returns `(s0, s1)` with `s0[r]` the sum of lanes 0–7 of
/// `v[r]` and `s1[r]` of lanes 8–15. Each step adds two interleavings of a pair of vectors, so
/// the partials halve while the rows per vector double (44 operations for 32 sums).
#[inline(always)]
unsafe fn reduce_blocks(v: &[__m512i; 16]) -> (__m512i, __m512i) {
    // Per 128-bit lane: [r, r+1, r, r+1] with two partials each.
    let mut p = [_mm512_setzero_si512(); 8];
    for (q, p) in p.iter_mut().enumerate() {
        let (a, c) = (v[2 * q], v[2 * q + 1]);
        *p = _mm512_add_epi32(_mm512_unpacklo_epi32(a, c), _mm512_unpackhi_epi32(a, c));
    }
    // Per 128-bit lane: rows 4g..4g+4, one partial each; lanes 0–1 hold block b's two halves,
    // lanes 2–3 block b + 1's.
    let mut z = [_mm512_setzero_si512(); 4];
    for (g, z) in z.iter_mut().enumerate() {
        let (a, c) = (p[2 * g], p[2 * g + 1]);
        *z = _mm512_add_epi32(_mm512_unpacklo_epi64(a, c), _mm512_unpackhi_epi64(a, c));
    }
    // [rows 4h.. of b, rows 4h.. of b+1, rows 4h+4.. of b, rows 4h+4.. of b+1].
    let half = |a: __m512i, c: __m512i| {
        _mm512_add_epi32(
            _mm512_shuffle_i32x4::<0b10_00_10_00>(a, c),
            _mm512_shuffle_i32x4::<0b11_01_11_01>(a, c),
        )
    };
    let (w0, w1) = (half(z[0], z[1]), half(z[2], z[3]));
    (
        _mm512_shuffle_i32x4::<0b10_00_10_00>(w0, w1),
        _mm512_shuffle_i32x4::<0b11_01_11_01>(w0, w1),
    )
}

/// Up to 32 activation rows (row tiles `t`, `t + 1`) against up to 32 weight rows (A tiles
/// at `a` and 16 rows on, rows `k` bytes apart): four tiles of sums per block, each scaled into
/// f32 accumulators kept in memory (vectors over activation rows), transposed into `out` at the
/// end. Where fewer than 17 rows of either side are real, the second tile repeats the first
/// and its sums are not used.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn wide_tiles(
    _tiles: &Tiles,
    a: *const i8,
    k: usize,
    acts: &Acts,
    t: usize,
    wd: &[f32],
    rows: usize,
    acts_n: usize,
    out: *mut f32,
    ldo: usize,
    accumulate: bool,
) {
    let nb = k / QK;
    let (two_w, two_a) = (rows > 16, acts_n > 16);
    let b0 = acts.b.as_ptr().add(t * nb * 128);
    let b1 = if two_a { b0.add(nb * 128) } else { b0 };
    let a1 = if two_w { a.add(16 * k) } else { a };
    let d0 = acts.d.as_ptr().add(t * nb * 16);
    let mut sums = Sums([0; 4 * 256]);
    let sp = sums.0.as_mut_ptr();
    // acc[q]: q = 2·(weight tile) + (activation tile); row r lane c = output (c, r).
    let mut acc = Accs([0.0; 4 * 256]);
    let ap = acc.0.as_mut_ptr();
    for b in 0..nb {
        std::arch::asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "tileloadd tmm4, [{a0} + {sa}*1]",
            "tileloadd tmm6, [{x0} + {s}*1]",
            "tdpbssd tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{x1} + {s}*1]",
            "tdpbssd tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a1} + {sa}*1]",
            "tdpbssd tmm2, tmm5, tmm6",
            "tdpbssd tmm3, tmm5, tmm7",
            "tilestored [{c0} + {s}*1], tmm0",
            "tilestored [{c1} + {s}*1], tmm1",
            "tilestored [{c2} + {s}*1], tmm2",
            "tilestored [{c3} + {s}*1], tmm3",
            a0 = in(reg) a.add(b * QK),
            a1 = in(reg) a1.add(b * QK),
            x0 = in(reg) b0.add(b * 128),
            x1 = in(reg) b1.add(b * 128),
            c0 = in(reg) sp,
            c1 = in(reg) sp.add(256),
            c2 = in(reg) sp.add(512),
            c3 = in(reg) sp.add(768),
            sa = in(reg) k,
            s = in(reg) 64usize,
            options(nostack)
        );
        for q in 0..4 {
            let (wt, at) = (q / 2, q % 2);
            if (wt == 1 && !two_w) || (at == 1 && !two_a) {
                continue;
            }
            let ad = _mm512_loadu_ps(d0.add((at * nb + b) * 16));
            let w = wd.as_ptr().add((wt * nb + b) * 16);
            let (c, accq) = (sp.add(256 * q), ap.add(256 * q));
            for r in 0..16 {
                let s = _mm512_cvtepi32_ps(_mm512_load_si512(c.add(16 * r) as *const __m512i));
                let scale = _mm512_mul_ps(ad, _mm512_set1_ps(*w.add(r)));
                let o = accq.add(16 * r);
                _mm512_store_ps(o, _mm512_fmadd_ps(s, scale, _mm512_load_ps(o)));
            }
        }
    }
    for q in 0..4 {
        let (wt, at) = (q / 2, q % 2);
        let n_rows = rows.saturating_sub(16 * wt).min(16);
        let n_act = acts_n.saturating_sub(16 * at).min(16);
        let accq = &acc.0[256 * q..256 * (q + 1)];
        for c in 0..n_act {
            let o = out.add((16 * at + c) * ldo + 16 * wt);
            for r in 0..n_rows {
                let v = accq[r * 16 + c];
                *o.add(r) = if accumulate { *o.add(r) + v } else { v };
            }
        }
    }
}

/// f32 accumulators, aligned like [`Sums`].
#[repr(C, align(64))]
struct Accs<const N: usize>([f32; N]);

/// Tile sums, aligned for full-line stores and loads.
#[repr(C, align(64))]
struct Sums<const N: usize>([i32; N]);
