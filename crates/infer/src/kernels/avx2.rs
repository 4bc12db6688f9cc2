//! AVX2+FMA kernels: 8-lane f32 FMAs for the float formats and `vpmaddubsw` for the int8
//! formats (unsigned × signed bytes into saturating int16 pairs, then pairs of pairs into
//! int32). Q8_0 uses the sign trick (|w| × sign(w)·a, both within -127..=127, so the int16
//! sums cannot saturate); Q4_0 nibbles are already unsigned.

use super::scalar::FloatWeight;
use super::{tile_dispatch, QActRows, QRows, QK};
use std::arch::x86_64::*;

pub(crate) trait Load8: FloatWeight {
    unsafe fn load8(p: *const Self) -> __m256;
}
impl Load8 for f32 {
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
}
impl Load8 for u16 {
    #[inline(always)]
    unsafe fn load8(p: *const u16) -> __m256 {
        let h = _mm_loadu_si128(p as *const __m128i);
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
    }
}

#[inline(always)]
unsafe fn store(o: *mut f32, v: f32, accumulate: bool) {
    *o = if accumulate { *o + v } else { v };
}

#[inline(always)]
unsafe fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_fp<W: Load8, const RM: usize, const RN: usize>(
    a: *const f32,
    lda: usize,
    w: *const W,
    ldw: usize,
    k: usize,
    out: *mut f32,
    ldo: usize,
    accumulate: bool,
) {
    let mut acc = [[_mm256_setzero_ps(); RN]; RM];
    let k8 = k / 8 * 8;
    let mut p = 0;
    while p < k8 {
        let mut wv = [_mm256_setzero_ps(); RN];
        for (j, v) in wv.iter_mut().enumerate() {
            *v = W::load8(w.add(j * ldw + p));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let av = _mm256_loadu_ps(a.add(i * lda + p));
            for (j, c) in row.iter_mut().enumerate() {
                *c = _mm256_fmadd_ps(av, wv[j], *c);
            }
        }
        p += 8;
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, c) in row.iter().enumerate() {
            let mut s = hsum256(*c);
            for q in k8..k {
                s += *a.add(i * lda + q) * (*w.add(j * ldw + q)).to_f32();
            }
            store(out.add(i * ldo + j), s, accumulate);
        }
    }
}

/// # Safety
/// The CPU must have AVX2, FMA and F16C; pointers as in [`super::block`].
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul_fp<W: Load8>(
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
    let mut j = 0;
    while j < n {
        let nb = (n - j).min(3);
        let mut i = 0;
        while i < m {
            let mb = (m - i).min(3);
            tile_dispatch!(mb, nb, tile_fp<W>(a.add(i * lda), lda, w.add(j * ldw), ldw, k, out.add(i * ldo + j), ldo, accumulate);
                (1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3), (3, 1), (3, 2), (3, 3));
            i += mb;
        }
        j += nb;
    }
}

/// One block's integer dot product for a weight format.
pub(crate) trait QDot {
    const BYTES: usize;
    /// The weight block in the form `dot` wants (two registers).
    unsafe fn prep(p: *const u8) -> (__m256i, __m256i);
    /// Eight int32 partial sums of weight × activation.
    unsafe fn dot(w: (__m256i, __m256i), a: __m256i, bias: *const i32) -> __m256i;
}

pub(crate) struct Q8;
impl QDot for Q8 {
    const BYTES: usize = QK;
    #[inline(always)]
    unsafe fn prep(p: *const u8) -> (__m256i, __m256i) {
        let w = _mm256_loadu_si256(p as *const __m256i);
        (w, _mm256_sign_epi8(w, w))
    }
    #[inline(always)]
    unsafe fn dot(w: (__m256i, __m256i), a: __m256i, _bias: *const i32) -> __m256i {
        let sa = _mm256_sign_epi8(a, w.0);
        _mm256_madd_epi16(_mm256_maddubs_epi16(w.1, sa), _mm256_set1_epi16(1))
    }
}

pub(crate) struct Q4;
impl QDot for Q4 {
    const BYTES: usize = QK / 2;
    #[inline(always)]
    unsafe fn prep(p: *const u8) -> (__m256i, __m256i) {
        let v = _mm_loadu_si128(p as *const __m128i);
        let both = _mm256_set_m128i(_mm_srli_epi16::<4>(v), v);
        let w = _mm256_and_si256(both, _mm256_set1_epi8(15));
        (w, w)
    }
    #[inline(always)]
    unsafe fn dot(w: (__m256i, __m256i), a: __m256i, bias: *const i32) -> __m256i {
        let s = _mm256_madd_epi16(_mm256_maddubs_epi16(w.0, a), _mm256_set1_epi16(1));
        _mm256_add_epi32(s, _mm256_loadu_si256(bias as *const __m256i))
    }
}

#[inline(always)]
unsafe fn splat_f16(h: u16) -> __m256 {
    _mm256_cvtph_ps(_mm_set1_epi16(h as i16))
}

#[inline(always)]
unsafe fn tile_q<D: QDot, const RM: usize, const RN: usize>(
    a: QActRows,
    w: QRows,
    nb: usize,
    out: *mut f32,
    ldo: usize,
    accumulate: bool,
) {
    let mut acc = [[_mm256_setzero_ps(); RN]; RM];
    let zero = _mm256_setzero_si256();
    for b in 0..nb {
        let mut wv = [(zero, zero); RN];
        let mut wd = [_mm256_setzero_ps(); RN];
        for j in 0..RN {
            wv[j] = D::prep(w.qs.add(j * w.row_bytes + b * D::BYTES));
            wd[j] = splat_f16(*w.d.add(j * nb + b));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let av = _mm256_loadu_si256(a.qs.add(i * a.k + b * QK) as *const __m256i);
            let bias = if a.bias.is_null() {
                a.bias
            } else {
                a.bias.add((i * nb + b) * 8)
            };
            let ad = _mm256_set1_ps(*a.d.add(i * nb + b));
            for (j, c) in row.iter_mut().enumerate() {
                let s = D::dot(wv[j], av, bias);
                *c = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(ad, wd[j]), *c);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, c) in row.iter().enumerate() {
            store(out.add(i * ldo + j), hsum256(*c), accumulate);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_quant<D: QDot>(
    a: QActRows,
    m: usize,
    w: QRows,
    n: usize,
    nb: usize,
    out: *mut f32,
    ldo: usize,
    accumulate: bool,
) {
    let mut j = 0;
    while j < n {
        let nbk = (n - j).min(2);
        let wj = QRows {
            qs: w.qs.add(j * w.row_bytes),
            d: w.d.add(j * nb),
            row_bytes: w.row_bytes,
        };
        let mut i = 0;
        while i < m {
            let mb = (m - i).min(3);
            let ai = QActRows {
                qs: a.qs.add(i * a.k),
                d: a.d.add(i * nb),
                bias: if a.bias.is_null() {
                    a.bias
                } else {
                    a.bias.add(i * nb * 8)
                },
                k: a.k,
            };
            tile_dispatch!(mb, nbk, tile_q<D>(ai, wj, nb, out.add(i * ldo + j), ldo, accumulate);
                (1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2));
            i += mb;
        }
        j += nbk;
    }
}

/// # Safety
/// The CPU must have AVX2, FMA and F16C; pointers as in [`super::block`]; activations
/// quantised without bias.
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
