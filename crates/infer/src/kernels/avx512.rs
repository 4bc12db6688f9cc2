//! AVX-512 kernels: 16-lane f32 FMAs for the float formats (bf16 widened on load), and the
//! VNNI instruction `vpdpbusd` (unsigned × signed bytes, summed in groups of four into int32)
//! for the int8 formats. Weights are made unsigned by an offset that the activation bias
//! cancels (see [`super::QActs::bias`]).

use super::scalar::FloatWeight;
use super::{tile_dispatch, QActRows, QRows, QK};
use std::arch::x86_64::*;

/// A float weight element loaded sixteen at a time.
pub(crate) trait Load16: FloatWeight {
    unsafe fn load16(p: *const Self) -> __m512;
}
impl Load16 for f32 {
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
}
impl Load16 for u16 {
    /// bf16 is the top half of an f32: widen to 32 bits and shift into place.
    #[inline(always)]
    unsafe fn load16(p: *const u16) -> __m512 {
        let h = _mm256_loadu_si256(p as *const __m256i);
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
    }
}

#[inline(always)]
unsafe fn store(o: *mut f32, v: f32, accumulate: bool) {
    *o = if accumulate { *o + v } else { v };
}

/// Bytes of weight rows per panel: a panel stays in L2 (2 MiB per core on the machines we
/// measure) while every activation row of the call passes over it, so each weight is read
/// from memory once per call rather than once per tile of activation rows.
const PANEL_BYTES: usize = 768 << 10;

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_fp<W: Load16, const RM: usize, const RN: usize>(
    a: *const f32,
    lda: usize,
    w: *const W,
    ldw: usize,
    k: usize,
    out: *mut f32,
    ldo: usize,
    accumulate: bool,
) {
    let mut acc = [[_mm512_setzero_ps(); RN]; RM];
    let k16 = k / 16 * 16;
    let mut p = 0;
    while p < k16 {
        let mut wv = [_mm512_setzero_ps(); RN];
        for (j, v) in wv.iter_mut().enumerate() {
            *v = W::load16(w.add(j * ldw + p));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let av = _mm512_loadu_ps(a.add(i * lda + p));
            for (j, c) in row.iter_mut().enumerate() {
                *c = _mm512_fmadd_ps(av, wv[j], *c);
            }
        }
        p += 16;
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, c) in row.iter().enumerate() {
            let mut s = _mm512_reduce_add_ps(*c);
            for q in k16..k {
                s += *a.add(i * lda + q) * (*w.add(j * ldw + q)).to_f32();
            }
            store(out.add(i * ldo + j), s, accumulate);
        }
    }
}

/// # Safety
/// The CPU must have the enabled features; pointers as in [`super::block`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul_fp<W: Load16>(
    a: *const f32,
    lda: usize,
    m: usize,
    w: *const W,
    ldw: usize,
    n: usize,
    k: usize,
    out: *mut f32,
    ldo: usize,
    accumulate: bool,
) {
    // Every output is one vector accumulator over all of k, reduced once: the tile shape and
    // the panel split change which outputs are computed together, never how one is computed.
    let panel = (PANEL_BYTES / (k * std::mem::size_of::<W>()).max(1)).max(6) / 6 * 6;
    let mut j0 = 0;
    while j0 < n {
        let j1 = (j0 + panel).min(n);
        let mut i = 0;
        while i < m {
            let mb = (m - i).min(4);
            let mut j = j0;
            while j < j1 {
                let nb = (j1 - j).min(6);
                tile_dispatch!(mb, nb, tile_fp<W>(a.add(i * lda), lda, w.add(j * ldw), ldw, k, out.add(i * ldo + j), ldo, accumulate);
                    (1, 1), (1, 2), (1, 3), (1, 4), (1, 5), (1, 6), (2, 1), (2, 2), (2, 3), (2, 4), (2, 5), (2, 6),
                    (3, 1), (3, 2), (3, 3), (3, 4), (3, 5), (3, 6), (4, 1), (4, 2), (4, 3), (4, 4), (4, 5), (4, 6));
                j += nb;
            }
            i += mb;
        }
        j0 = j1;
    }
}

/// Loads quantised weights as unsigned bytes (value + offset), in value order.
pub(crate) trait QLoad {
    /// Bytes per block in a weight row.
    const BYTES: usize;
    /// One block: 32 bytes.
    unsafe fn load(p: *const u8) -> __m256i;
    /// Two consecutive blocks: 64 bytes.
    unsafe fn load2(p: *const u8) -> __m512i;
    /// One block in the low half, as `load2` lays it out; reads nothing past the block.
    unsafe fn load_last(p: *const u8) -> __m512i;
}

pub(crate) struct Q8;
impl QLoad for Q8 {
    const BYTES: usize = QK;
    /// Flipping the sign bit adds 128 (mod 256): -127..=127 becomes 1..=255.
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m256i {
        _mm256_xor_si256(
            _mm256_loadu_si256(p as *const __m256i),
            _mm256_set1_epi8(-128),
        )
    }
    #[inline(always)]
    unsafe fn load2(p: *const u8) -> __m512i {
        _mm512_xor_si512(
            _mm512_loadu_si512(p as *const __m512i),
            _mm512_set1_epi8(-128),
        )
    }
    #[inline(always)]
    unsafe fn load_last(p: *const u8) -> __m512i {
        _mm512_xor_si512(
            _mm512_maskz_loadu_epi8(0xffff_ffff, p as *const i8),
            _mm512_set1_epi8(-128),
        )
    }
}

pub(crate) struct Q4;
impl QLoad for Q4 {
    const BYTES: usize = QK / 2;
    /// Low nibbles are values 0..16 and high nibbles values 16..32 of the block.
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m256i {
        let v = _mm_loadu_si128(p as *const __m128i);
        let both = _mm256_set_m128i(_mm_srli_epi16::<4>(v), v);
        _mm256_and_si256(both, _mm256_set1_epi8(15))
    }
    /// 32 bytes hold two blocks; nibbles are split into [b0 low, b1 low, b0 high, b1 high]
    /// and the 128-bit lanes reordered to [b0 low, b0 high, b1 low, b1 high].
    #[inline(always)]
    unsafe fn load2(p: *const u8) -> __m512i {
        let v = _mm256_loadu_si256(p as *const __m256i);
        let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(v), _mm256_srli_epi16::<4>(v));
        let z = _mm512_and_si512(z, _mm512_set1_epi8(15));
        _mm512_shuffle_i64x2::<0b11_01_10_00>(z, z)
    }
    #[inline(always)]
    unsafe fn load_last(p: *const u8) -> __m512i {
        let v = _mm256_maskz_loadu_epi8(0xffff, p as *const i8);
        let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(v), _mm256_srli_epi16::<4>(v));
        let z = _mm512_and_si512(z, _mm512_set1_epi8(15));
        _mm512_shuffle_i64x2::<0b11_01_10_00>(z, z)
    }
}

/// Eight copies of an f16 scale as f32.
#[inline(always)]
unsafe fn splat_f16(h: u16) -> __m256 {
    _mm256_cvtph_ps(_mm_set1_epi16(h as i16))
}

/// Sixteen lanes: eight copies of each of two f16 scales, as f32.
#[inline(always)]
unsafe fn splat2_f16(h0: u16, h1: u16) -> __m512 {
    _mm512_cvtph_ps(_mm256_set_m128i(
        _mm_set1_epi16(h1 as i16),
        _mm_set1_epi16(h0 as i16),
    ))
}

#[inline(always)]
unsafe fn splat2(a: f32, b: f32) -> __m512 {
    _mm512_insertf32x8::<1>(_mm512_set1_ps(a), _mm256_set1_ps(b))
}

/// Two blocks per step in 512-bit registers; an odd last block in a 256-bit one, added in
/// before the final reduction.
#[inline(always)]
unsafe fn tile_q<L: QLoad, const RM: usize, const RN: usize>(
    a: QActRows,
    w: QRows,
    nb: usize,
    out: *mut f32,
    ldo: usize,
    accumulate: bool,
) {
    let mut acc = [[_mm512_setzero_ps(); RN]; RM];
    let mut b = 0;
    while b + 2 <= nb {
        let mut wv = [_mm512_setzero_si512(); RN];
        let mut wd = [_mm512_setzero_ps(); RN];
        for j in 0..RN {
            wv[j] = L::load2(w.qs.add(j * w.row_bytes + b * L::BYTES));
            wd[j] = splat2_f16(*w.d.add(j * nb + b), *w.d.add(j * nb + b + 1));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let av = _mm512_loadu_si512(a.qs.add(i * a.k + b * QK) as *const __m512i);
            let bias = _mm512_loadu_si512(a.bias.add((i * nb + b) * 8) as *const __m512i);
            let ad = splat2(*a.d.add(i * nb + b), *a.d.add(i * nb + b + 1));
            for (j, c) in row.iter_mut().enumerate() {
                let s = _mm512_dpbusd_epi32(bias, wv[j], av);
                *c = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(ad, wd[j]), *c);
            }
        }
        b += 2;
    }
    if b < nb {
        let mut wv = [_mm256_setzero_si256(); RN];
        let mut wd = [_mm256_setzero_ps(); RN];
        for j in 0..RN {
            wv[j] = L::load(w.qs.add(j * w.row_bytes + b * L::BYTES));
            wd[j] = splat_f16(*w.d.add(j * nb + b));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let av = _mm256_loadu_si256(a.qs.add(i * a.k + b * QK) as *const __m256i);
            let bias = _mm256_loadu_si256(a.bias.add((i * nb + b) * 8) as *const __m256i);
            let ad = _mm256_set1_ps(*a.d.add(i * nb + b));
            for (j, c) in row.iter_mut().enumerate() {
                let s = _mm256_dpbusd_epi32(bias, wv[j], av);
                let t = _mm256_mul_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(ad, wd[j]));
                *c = _mm512_add_ps(*c, _mm512_zextps256_ps512(t));
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, c) in row.iter().enumerate() {
            store(out.add(i * ldo + j), _mm512_reduce_add_ps(*c), accumulate);
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_quant<L: QLoad>(
    a: QActRows,
    m: usize,
    w: QRows,
    n: usize,
    nb: usize,
    out: *mut f32,
    ldo: usize,
    accumulate: bool,
) {
    // One activation row (decoding) takes eight weight rows per tile, so the activation's loads
    // and scale spread over twice the work; each output's operations are the same either way.
    let wide = if m == 1 { 8 } else { 4 };
    let mut j = 0;
    while j < n {
        let nbk = (n - j).min(wide);
        let wj = QRows {
            qs: w.qs.add(j * w.row_bytes),
            d: w.d.add(j * nb),
            row_bytes: w.row_bytes,
        };
        let mut i = 0;
        while i < m {
            let mb = (m - i).min(4);
            let ai = QActRows {
                qs: a.qs.add(i * a.k),
                d: a.d.add(i * nb),
                bias: a.bias.add(i * nb * 8),
                k: a.k,
            };
            tile_dispatch!(mb, nbk, tile_q<L>(ai, wj, nb, out.add(i * ldo + j), ldo, accumulate);
                (1, 1), (1, 2), (1, 3), (1, 4), (1, 5), (1, 6), (1, 7), (1, 8),
                (2, 1), (2, 2), (2, 3), (2, 4),
                (3, 1), (3, 2), (3, 3), (3, 4), (4, 1), (4, 2), (4, 3), (4, 4));
            i += mb;
        }
        j += nbk;
    }
}

/// # Safety
/// The CPU must have AVX-512 with VNNI; pointers as in [`super::block`]; activations
/// quantised with bias offset 128.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul_q8(
    a: QActRows,
    m: usize,
    w: QRows,
    n: usize,
    nb: usize,
    out: *mut f32,
    ldo: usize,
    accumulate: bool,
) {
    matmul_quant::<Q8>(a, m, w, n, nb, out, ldo, accumulate)
}

/// # Safety
/// As [`matmul_q8`], with bias offset 8.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul_q4(
    a: QActRows,
    m: usize,
    w: QRows,
    n: usize,
    nb: usize,
    out: *mut f32,
    ldo: usize,
    accumulate: bool,
) {
    matmul_quant::<Q4>(a, m, w, n, nb, out, ldo, accumulate)
}
