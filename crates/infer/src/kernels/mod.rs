//! Products of activation rows with weight rows, `out[i, j] = Σ_p a[i, p] · w[j, p]`, for every
//! weight format the decoder keeps (f32, bf16, Q8_0, Q4_0), in scalar, AVX2 and AVX-512 builds.
//!
//! Both operands are read along `p` (rows are contiguous), so each output is a dot product kept
//! in a vector accumulator and reduced at the end. Tiles of several activation rows × several
//! weight rows share their loads, but every output element goes through exactly the same
//! sequence of operations whatever the tile, the number of rows or the thread split. So a
//! sequence's logits are bit-for-bit the same decoded alone, in a batch of 50, or verified
//! several tokens at a time by speculative decoding.
//!
//! The int8 formats multiply activations quantised on the fly to 8 bits in blocks of 32 (as
//! llama.cpp does), with exact integer dot products per block and one float scale per block.
//!
//! Linear layers use other kernels where they are faster, each with the same guarantee:
//! f32 weights kept in column panels and multiplied as outer products ([`panels`], every
//! instruction set), and on CPUs with AMX, bf16 ([`amx_bf16`]) and Q8_0/Q4_0 ([`amx_int8`])
//! weights on tiles. The row-major kernels here serve attention and CPUs without AMX.

#[cfg(target_arch = "x86_64")]
pub mod amx_bf16;
#[cfg(target_arch = "x86_64")]
pub mod amx_int8;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod panels;
pub mod scalar;

use crate::simd::Isa;
use rayon::prelude::*;

/// Elements per quantisation block (Q8_0 and Q4_0).
pub const QK: usize = 32;

/// Activation rows quantised to int8 in blocks of [`QK`], for the Q8_0 and Q4_0 products.
#[derive(Clone, Debug, Default)]
pub struct QActs {
    pub rows: usize,
    pub k: usize,
    /// `[rows, k]` int8 values in -127..=127.
    pub qs: Vec<i8>,
    /// `[rows, k/32]` scales: value ≈ qs · d.
    pub d: Vec<f32>,
    /// `[rows, k/32, 8]`: `-offset ·` the sum of each group of four consecutive values. The
    /// vector kernels multiply *unsigned* weight bytes (weight + offset) with signed
    /// activations, and start each block's integer sum here to cancel the offset.
    pub bias: Vec<i32>,
}

/// The offset the vector kernels add to weights to make them unsigned: Q4_0 nibbles are
/// stored as 0..=15 for values -8..=7; int8 weights get 128 where the VNNI instruction
/// (unsigned × signed) is used. The scalar and AVX2 Q8_0 paths need none.
pub fn bias_offset(isa: Isa, q4: bool) -> i32 {
    match (isa, q4) {
        (Isa::Scalar, _) => 0,
        (_, true) => 8,
        (Isa::Avx512, false) => 128,
        (Isa::Avx2, false) => 0,
    }
}

/// Quantises `rows` rows of `k` values (`k` a multiple of 32): per block `d = max|x| / 127`,
/// `q = round(x / d)` (half to even).
pub fn quantize_acts(x: &[f32], rows: usize, k: usize, offset: i32) -> QActs {
    assert!(k.is_multiple_of(QK) && x.len() >= rows * k);
    let nb = k / QK;
    let mut a = QActs {
        rows,
        k,
        qs: vec![0; rows * k],
        d: vec![0.0; rows * nb],
        bias: vec![0; if offset != 0 { rows * nb * 8 } else { 0 }],
    };
    let one_row = |r: usize, qs: &mut [i8], d: &mut [f32], bias: &mut [i32]| {
        quantize_row(&x[r * k..(r + 1) * k], qs, d, bias, offset)
    };
    let bias_w = if offset != 0 { nb * 8 } else { 0 };
    if rows >= 4 {
        if offset != 0 {
            a.qs.par_chunks_mut(k)
                .zip(a.d.par_chunks_mut(nb))
                .zip(a.bias.par_chunks_mut(bias_w))
                .enumerate()
                .for_each(|(r, ((q, d), bias))| one_row(r, q, d, bias));
        } else {
            a.qs.par_chunks_mut(k)
                .zip(a.d.par_chunks_mut(nb))
                .enumerate()
                .for_each(|(r, (q, d))| one_row(r, q, d, &mut []));
        }
    } else {
        for r in 0..rows {
            let (q, d) = (
                &mut a.qs[r * k..(r + 1) * k],
                &mut a.d[r * nb..(r + 1) * nb],
            );
            let bias = if offset != 0 {
                &mut a.bias[r * bias_w..(r + 1) * bias_w]
            } else {
                &mut [][..]
            };
            one_row(r, q, d, bias);
        }
    }
    a
}

crate::simd::multiversion! {
    /// One activation row of [`quantize_acts`]. Rounds half to even (one vector instruction;
    /// llama.cpp's vectorised activation quantisation rounds the same way).
    pub fn quantize_row(x: &[f32], qs: &mut [i8], d: &mut [f32], bias: &mut [i32], offset: i32) {
        for (b, (xb, q)) in x.chunks_exact(QK).zip(qs.chunks_exact_mut(QK)).enumerate() {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            let db = amax / 127.0;
            let id = if db > 0.0 { 1.0 / db } else { 0.0 };
            for (qi, &v) in q.iter_mut().zip(xb) {
                *qi = (v * id).round_ties_even() as i8;
            }
            d[b] = db;
            if offset != 0 {
                for l in 0..8 {
                    let s: i32 = q[4 * l..4 * l + 4].iter().map(|&v| v as i32).sum();
                    bias[b * 8 + l] = -offset * s;
                }
            }
        }
    }
}

/// The left operand of a product.
#[derive(Clone, Copy)]
pub enum Act<'a> {
    /// Rows `lda` apart.
    F32 {
        x: &'a [f32],
        lda: usize,
    },
    Q(&'a QActs),
}

/// The right operand: weight rows, each `k` long.
#[derive(Clone, Copy)]
pub enum WView<'a> {
    /// Rows `ldw` apart.
    F32 { w: &'a [f32], ldw: usize },
    /// bf16 bits, rows `ldw` apart.
    Bf16 { w: &'a [u16], ldw: usize },
    /// `[n, k]` int8 values and `[n, k/32]` f16 scales.
    Q8 { qs: &'a [i8], d: &'a [u16] },
    /// `[n, k/2]` bytes, per block of 32 values 16 bytes: byte `t` holds value `t` in its low
    /// nibble and value `t + 16` in its high nibble, each stored as value + 8 (ggml's order);
    /// `[n, k/32]` f16 scales.
    Q4 { qs: &'a [u8], d: &'a [u16] },
}

/// A raw output pointer that may cross threads; each task writes a disjoint block.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub *mut f32);
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}
impl OutPtr {
    /// A method (not field access) so closures capture the whole `Send` wrapper.
    pub fn get(self) -> *mut f32 {
        self.0
    }
}

/// Computes `out[i·ldo + j] (+)= Σ_p a[i, p]·w[j, p]` for `i in i0..i1`, `j in j0..j1` on the
/// calling thread.
///
/// # Safety
/// `out` must be valid for writes at every `i·ldo + j` of the block and nobody else may touch
/// that block meanwhile. The slices in `a` and `w` must cover rows `i0..i1` and `j0..j1` of
/// length `k` (checked with assertions).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn block(
    isa: Isa,
    a: Act,
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
    let (m, n) = (i1 - i0, j1 - j0);
    let out = out.add(i0 * ldo + j0);
    match (a, w) {
        (Act::F32 { x, lda }, WView::F32 { w, ldw }) => {
            assert!(x.len() >= (i1 - 1) * lda + k && w.len() >= (j1 - 1) * ldw + k);
            let (ap, wp) = (x.as_ptr().add(i0 * lda), w.as_ptr().add(j0 * ldw));
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => avx512::matmul_fp(ap, lda, m, wp, ldw, n, k, out, ldo, accumulate),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => avx2::matmul_fp(ap, lda, m, wp, ldw, n, k, out, ldo, accumulate),
                _ => scalar::matmul_fp(ap, lda, m, wp, ldw, n, k, out, ldo, accumulate),
            }
        }
        (Act::F32 { x, lda }, WView::Bf16 { w, ldw }) => {
            assert!(x.len() >= (i1 - 1) * lda + k && w.len() >= (j1 - 1) * ldw + k);
            let (ap, wp) = (x.as_ptr().add(i0 * lda), w.as_ptr().add(j0 * ldw));
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => avx512::matmul_fp(ap, lda, m, wp, ldw, n, k, out, ldo, accumulate),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => avx2::matmul_fp(ap, lda, m, wp, ldw, n, k, out, ldo, accumulate),
                _ => scalar::matmul_fp(ap, lda, m, wp, ldw, n, k, out, ldo, accumulate),
            }
        }
        (Act::Q(qa), WView::Q8 { qs, d }) => {
            let nb = k / QK;
            assert!(qa.k == k && qa.rows >= i1 && qs.len() >= j1 * k && d.len() >= j1 * nb);
            let ws = QRows {
                qs: qs.as_ptr().add(j0 * k) as *const u8,
                d: d.as_ptr().add(j0 * nb),
                row_bytes: k,
            };
            quant_block(isa, qa, i0, m, ws, false, n, nb, out, ldo, accumulate);
        }
        (Act::Q(qa), WView::Q4 { qs, d }) => {
            let nb = k / QK;
            assert!(qa.k == k && qa.rows >= i1 && qs.len() >= j1 * k / 2 && d.len() >= j1 * nb);
            let ws = QRows {
                qs: qs.as_ptr().add(j0 * k / 2),
                d: d.as_ptr().add(j0 * nb),
                row_bytes: k / 2,
            };
            quant_block(isa, qa, i0, m, ws, true, n, nb, out, ldo, accumulate);
        }
        _ => panic!("kernels::block: activation and weight formats do not match"),
    }
}

/// Quantised weight rows for the kernels.
#[derive(Clone, Copy)]
pub(crate) struct QRows {
    pub qs: *const u8,
    pub d: *const u16,
    pub row_bytes: usize,
}

/// Quantised activation rows for the kernels, starting at the block's first row.
#[derive(Clone, Copy)]
pub(crate) struct QActRows {
    pub qs: *const i8,
    pub d: *const f32,
    pub bias: *const i32,
    pub k: usize,
}

#[allow(clippy::too_many_arguments)]
unsafe fn quant_block(
    isa: Isa,
    qa: &QActs,
    i0: usize,
    m: usize,
    w: QRows,
    q4: bool,
    n: usize,
    nb: usize,
    out: *mut f32,
    ldo: usize,
    accumulate: bool,
) {
    let want = bias_offset(isa, q4);
    let has_bias = !qa.bias.is_empty();
    assert!(
        (want != 0) == has_bias,
        "activations were quantised for another kernel (bias offset {want} expected)"
    );
    let a = QActRows {
        qs: qa.qs.as_ptr().add(i0 * qa.k),
        d: qa.d.as_ptr().add(i0 * nb),
        bias: if has_bias {
            qa.bias.as_ptr().add(i0 * nb * 8)
        } else {
            std::ptr::null()
        },
        k: qa.k,
    };
    match (isa, q4) {
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, false) => avx512::matmul_q8(a, m, w, n, nb, out, ldo, accumulate),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, true) => avx512::matmul_q4(a, m, w, n, nb, out, ldo, accumulate),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, false) => avx2::matmul_q8(a, m, w, n, nb, out, ldo, accumulate),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, true) => avx2::matmul_q4(a, m, w, n, nb, out, ldo, accumulate),
        (_, false) => scalar::matmul_q8(a, m, w, n, nb, out, ldo, accumulate),
        (_, true) => scalar::matmul_q4(a, m, w, n, nb, out, ldo, accumulate),
    }
}

/// f16 bits to f32 (exact), for scales.
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    half::f16::from_bits(h).to_f32()
}

/// bf16 bits to f32 (exact).
#[inline(always)]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Dispatches `(mb, nb)` to a const-generic tile function over the given combinations.
macro_rules! tile_dispatch {
    ($mb:expr, $nb:expr, $f:ident <$g:ty> $args:tt; $( ($m:literal, $n:literal) ),* ) => {
        match ($mb, $nb) {
            $( ($m, $n) => $f::<$g, $m, $n> $args, )*
            _ => unreachable!("tile shape"),
        }
    };
}
#[allow(unused_imports)]
pub(crate) use tile_dispatch;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant;
    use tinyllama_model::rng::Rng;

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut r = Rng::new(seed);
        (0..n).map(|_| r.normal() as f32).collect()
    }

    fn reference(a: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|p| a[i * k + p] as f64 * w[j * k + p] as f64)
                    .sum();
            }
        }
        out
    }

    fn run(isa: Isa, a: Act, w: WView, m: usize, n: usize, k: usize, acc: bool) -> Vec<f32> {
        let mut out = vec![1.0f32; m * n];
        unsafe { block(isa, a, (0, m), w, (0, n), k, out.as_mut_ptr(), n, acc) };
        out
    }

    #[test]
    fn float_kernels_match_reference_on_every_isa_and_shape() {
        for &(m, n, k) in &[(1, 1, 1), (3, 7, 5), (5, 9, 40), (9, 13, 67), (4, 4, 128)] {
            let a = rand(m * k, 1);
            let w = rand(n * k, 2);
            let want = reference(&a, &w, m, n, k);
            let wb: Vec<u16> = w
                .iter()
                .map(|&x| half::bf16::from_f32(x).to_bits())
                .collect();
            let wbf: Vec<f32> = wb.iter().map(|&h| bf16_to_f32(h)).collect();
            let want_b = reference(&a, &wbf, m, n, k);
            for isa in crate::simd::available() {
                let got = run(
                    isa,
                    Act::F32 { x: &a, lda: k },
                    WView::F32 { w: &w, ldw: k },
                    m,
                    n,
                    k,
                    false,
                );
                for (g, r) in got.iter().zip(&want) {
                    assert!(
                        (*g as f64 - r).abs() < 1e-4 * (1.0 + r.abs()),
                        "{isa:?} {m}x{n}x{k}: {g} vs {r}"
                    );
                }
                let got = run(
                    isa,
                    Act::F32 { x: &a, lda: k },
                    WView::Bf16 { w: &wb, ldw: k },
                    m,
                    n,
                    k,
                    true,
                );
                for (g, r) in got.iter().zip(&want_b) {
                    assert!(
                        (*g as f64 - 1.0 - r).abs() < 1e-4 * (1.0 + r.abs()),
                        "bf16 {isa:?}: {g} vs {r}"
                    );
                }
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_tiling() {
        let (m, n, k) = (11, 10, 96);
        let a = rand(m * k, 3);
        let w = rand(n * k, 4);
        for isa in crate::simd::available() {
            let full = run(
                isa,
                Act::F32 { x: &a, lda: k },
                WView::F32 { w: &w, ldw: k },
                m,
                n,
                k,
                false,
            );
            for i in 0..m {
                for j in 0..n {
                    let mut one = [0f32];
                    unsafe {
                        block(
                            isa,
                            Act::F32 {
                                x: &a[i * k..],
                                lda: k,
                            },
                            (0, 1),
                            WView::F32 {
                                w: &w[j * k..],
                                ldw: k,
                            },
                            (0, 1),
                            k,
                            one.as_mut_ptr(),
                            1,
                            false,
                        )
                    };
                    assert_eq!(
                        one[0].to_bits(),
                        full[i * n + j].to_bits(),
                        "{isa:?} ({i},{j})"
                    );
                }
            }
        }
    }

    #[test]
    fn quant_kernels_match_dequantised_reference() {
        for &(m, n, k) in &[(1, 1, 32), (3, 7, 64), (6, 9, 96), (4, 4, 256)] {
            let a = rand(m * k, 5);
            let w = rand(n * k, 6);
            let q8 = quant::quantize_q8_0(&w, n, k);
            let q4 = quant::quantize_q4_0(&w, n, k);
            for isa in crate::simd::available() {
                for (is_q4, wdeq) in [
                    (false, quant::dequantize(&q8)),
                    (true, quant::dequantize(&q4)),
                ] {
                    let qa = quantize_acts(&a, m, k, bias_offset(isa, is_q4));
                    // The exact product of the two quantised operands.
                    let adeq: Vec<f32> =
                        (0..m * k).map(|i| qa.qs[i] as f32 * qa.d[i / QK]).collect();
                    let want = reference(&adeq, &wdeq, m, n, k);
                    let view = match (&q8, &q4, is_q4) {
                        (quant::Weights::Q8_0 { qs, d }, _, false) => WView::Q8 { qs, d },
                        (_, quant::Weights::Q4_0 { qs, d }, true) => WView::Q4 { qs, d },
                        _ => unreachable!(),
                    };
                    let got = run(isa, Act::Q(&qa), view, m, n, k, false);
                    for (g, r) in got.iter().zip(&want) {
                        assert!(
                            (*g as f64 - r).abs() < 1e-4 * (1.0 + r.abs()),
                            "{isa:?} q4={is_q4} {m}x{n}x{k}: {g} vs {r}"
                        );
                    }
                }
            }
        }
    }
}
