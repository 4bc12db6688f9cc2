//! A linear layer `y = x·Wᵀ` of the decoder in any weight format, spread over the rayon pool
//! in blocks of activation rows × weight rows.

use crate::kernels::{self, bias_offset, panels, quantize_acts, Act, OutPtr, WView};
use crate::quant::{convert, WeightFormat, Weights};
use crate::simd::Isa;
use rayon::prelude::*;

pub struct Linear {
    /// Output features (weight rows).
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    pub w: Weights,
}

/// Below this many multiply-adds a product runs on the calling thread (pool overhead would
/// dominate).
const PARALLEL_MIN_WORK: usize = 1 << 16;
/// Activation rows per task for long inputs (prompt processing).
const ROWS_PER_TASK: usize = 64;
/// Activation rows per task for f32 panels: each task streams its weight columns once from
/// memory, so more rows per task read the weights fewer times.
const PANEL_ROWS_PER_TASK: usize = 256;
/// Weight rows per task are a multiple of this (whole kernel tiles).
const WEIGHT_ROW_ALIGN: usize = 32;

impl Linear {
    /// Converts a `[rows, cols]` f32 matrix to `format` (block formats need `cols % 32 == 0`;
    /// other matrices stay f32).
    pub fn new(w: Vec<f32>, rows: usize, cols: usize, format: WeightFormat) -> Self {
        assert_eq!(w.len(), rows * cols);
        let w = match convert(w, rows, cols, format) {
            Weights::F32(w) => Weights::F32Panels {
                p: panels::pack(&w, rows, cols),
                n: rows,
                k: cols,
            },
            w => w,
        };
        Linear { rows, cols, w }
    }

    pub fn from_weights(w: Weights, rows: usize, cols: usize) -> Self {
        Linear { rows, cols, w }
    }

    pub fn format(&self) -> WeightFormat {
        self.w.format()
    }

    fn view(&self) -> WView<'_> {
        match &self.w {
            Weights::F32(w) => WView::F32 { w, ldw: self.cols },
            Weights::F32Panels { .. } => unreachable!("panels have their own kernels"),
            Weights::Bf16(w) => WView::Bf16 { w, ldw: self.cols },
            Weights::Q8_0 { qs, d } => WView::Q8 { qs, d },
            Weights::Q4_0 { qs, d } => WView::Q4 { qs, d },
        }
    }

    /// `out[m, rows] (+)= x[m, cols] · Wᵀ` with the active instruction set.
    pub fn forward(&self, x: &[f32], m: usize, out: &mut [f32], accumulate: bool) {
        self.forward_isa(crate::simd::active(), x, m, out, accumulate)
    }

    pub fn forward_isa(&self, isa: Isa, x: &[f32], m: usize, out: &mut [f32], accumulate: bool) {
        let (n, k) = (self.rows, self.cols);
        assert!(
            x.len() >= m * k && out.len() >= m * n,
            "linear: buffer sizes"
        );
        #[cfg(target_arch = "x86_64")]
        if let (Weights::Bf16(w), Isa::Avx512) = (&self.w, isa) {
            if kernels::amx_bf16::usable(k) {
                // One buffer for every product; a concurrent caller packs into its own.
                static ACTS: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());
                let mut guard = ACTS.try_lock();
                let mut own = Vec::new();
                let buf = match guard.as_deref_mut() {
                    Ok(b) => b,
                    Err(_) => &mut own,
                };
                let acts = kernels::amx_bf16::pack(buf, x, m, k, k);
                let outp = OutPtr(out.as_mut_ptr());
                let run = |i: (usize, usize), j: (usize, usize)| {
                    // SAFETY: blocks are disjoint and inside `out` (checked above).
                    unsafe {
                        kernels::amx_bf16::block(&acts, i, w, k, j, k, outp.get(), n, accumulate)
                    }
                };
                par_blocks(m, n, k, run);
                return;
            }
        }
        #[cfg(target_arch = "x86_64")]
        if self.format().is_quantized() && isa == Isa::Avx512 && kernels::amx_int8::usable() {
            // Signed × signed tiles need no bias offset; one row runs on VNNI and does.
            let q4 = self.format() == WeightFormat::Q4_0;
            let qa = quantize_acts(x, m, k, if m == 1 { bias_offset(isa, q4) } else { 0 });
            let acts = kernels::amx_int8::pack(&qa);
            let w = self.view();
            let outp = OutPtr(out.as_mut_ptr());
            let run = |i: (usize, usize), j: (usize, usize)| {
                // SAFETY: AMX-INT8 is usable (checked above); blocks are disjoint and inside
                // `out` (checked above).
                unsafe { kernels::amx_int8::block(&acts, i, w, j, k, outp.get(), n, accumulate) }
            };
            par_blocks(m, n, k, run);
            return;
        }
        if let Weights::F32Panels { p, .. } = &self.w {
            let outp = OutPtr(out.as_mut_ptr());
            let run = |i: (usize, usize), j: (usize, usize)| {
                // SAFETY: blocks are disjoint and inside `out` (checked above); the kernels
                // check operand sizes.
                unsafe { panels::block(isa, x, k, i, p, n, k, j, outp, n, accumulate) }
            };
            par_blocks_sized(m, n, k, PANEL_ROWS_PER_TASK, run);
            return;
        }
        let qa;
        let act = if self.format().is_quantized() {
            qa = quantize_acts(
                x,
                m,
                k,
                bias_offset(isa, self.format() == WeightFormat::Q4_0),
            );
            Act::Q(&qa)
        } else {
            Act::F32 { x, lda: k }
        };
        let w = self.view();
        let outp = OutPtr(out.as_mut_ptr());
        let run = |i: (usize, usize), j: (usize, usize)| {
            // SAFETY: blocks are disjoint and inside `out` (checked above).
            unsafe { kernels::block(isa, act, i, w, j, k, outp.get(), n, accumulate) }
        };
        par_blocks(m, n, k, run);
    }
}

/// Runs `f` over a grid of (row range, column range) blocks covering `m × n`, in parallel when
/// the product is big enough. The split never changes results (see [`crate::kernels`]).
pub fn par_blocks(m: usize, n: usize, k: usize, f: impl Fn((usize, usize), (usize, usize)) + Sync) {
    par_blocks_sized(m, n, k, ROWS_PER_TASK, f)
}

/// [`par_blocks`] with up to `rows_per_task` activation rows per block.
pub fn par_blocks_sized(
    m: usize,
    n: usize,
    k: usize,
    rows_per_task: usize,
    f: impl Fn((usize, usize), (usize, usize)) + Sync,
) {
    let threads = rayon::current_num_threads();
    if threads <= 1 || m * n * k < PARALLEL_MIN_WORK {
        f((0, m), (0, n));
        return;
    }
    let mc = m.clamp(1, rows_per_task);
    let m_chunks = m.div_ceil(mc);
    let n_target = (4 * threads).div_ceil(m_chunks).max(1);
    let nc = n
        .div_ceil(n_target)
        .next_multiple_of(WEIGHT_ROW_ALIGN)
        .max(WEIGHT_ROW_ALIGN);
    let n_chunks = n.div_ceil(nc);
    (0..m_chunks * n_chunks).into_par_iter().for_each(|t| {
        let (ic, jc) = (t / n_chunks, t % n_chunks);
        f(
            (ic * mc, ((ic + 1) * mc).min(m)),
            (jc * nc, ((jc + 1) * nc).min(n)),
        )
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinyllama_model::rng::Rng;

    /// `lin.forward_isa` accumulating onto ones equals `1 + want(i, j)` within f32 round-off.
    fn accumulated_matches(
        lin: &Linear,
        isa: Isa,
        x: &[f32],
        m: usize,
        want: impl Fn(usize, usize) -> f64,
        what: &str,
    ) {
        let n = lin.rows;
        let mut out = vec![1.0f32; m * n];
        lin.forward_isa(isa, x, m, &mut out, true);
        for i in 0..m {
            for j in 0..n {
                let (got, want) = (out[i * n + j] as f64, 1.0 + want(i, j));
                assert!(
                    (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "{what} {isa:?} {m}x{n}x{} [{i},{j}] {got} vs {want}",
                    lin.cols
                );
            }
        }
    }

    /// bf16 weights on every kernel set against an f64 reference; where AMX runs the product
    /// the activations are rounded to bf16 first (as in llama.cpp). Odd weight-row counts
    /// exercise the padded last block, 1 and 17 rows the half-width tile.
    #[test]
    fn bf16_products_match_reference() {
        let k = 96;
        let mut r = Rng::new(4);
        for (m, n) in [(1, 40), (17, 64), (70, 50)] {
            let x: Vec<f32> = (0..m * k).map(|_| r.normal() as f32).collect();
            let w: Vec<f32> = (0..n * k).map(|_| r.normal() as f32 * 0.1).collect();
            let lin = Linear::new(w, n, k, WeightFormat::Bf16);
            let Weights::Bf16(wb) = &lin.w else {
                unreachable!()
            };
            let wf = |j: usize, p: usize| crate::kernels::bf16_to_f32(wb[j * k + p]) as f64;
            let round = |v: f32| half::bf16::from_f32(v).to_f32();
            for isa in crate::simd::available() {
                #[cfg(target_arch = "x86_64")]
                let amx = isa == Isa::Avx512 && crate::kernels::amx_bf16::usable(k);
                #[cfg(not(target_arch = "x86_64"))]
                let amx = false;
                let want = |i: usize, j: usize| {
                    (0..k)
                        .map(|p| {
                            let a = x[i * k + p];
                            (if amx { round(a) } else { a }) as f64 * wf(j, p)
                        })
                        .sum::<f64>()
                };
                accumulated_matches(&lin, isa, &x, m, want, &format!("amx={amx}"));
            }
        }
    }

    /// f32 weights (column panels) on every kernel set against an f64 reference: one row (no
    /// chunking), several rows with k beyond one chunk (partial sums parked between chunks), and
    /// row and column counts that leave partial register tiles and a partial last panel.
    #[test]
    fn f32_products_match_reference() {
        let mut r = Rng::new(6);
        for (m, n, k) in [(1, 40, 300), (7, 33, 260), (70, 50, 129), (13, 16, 5)] {
            let x: Vec<f32> = (0..m * k).map(|_| r.normal() as f32).collect();
            let w: Vec<f32> = (0..n * k).map(|_| r.normal() as f32 * 0.1).collect();
            let lin = Linear::new(w.clone(), n, k, WeightFormat::F32);
            assert_eq!(crate::quant::dequantize(&lin.w), w);
            let want = |i: usize, j: usize| {
                (0..k)
                    .map(|p| x[i * k + p] as f64 * w[j * k + p] as f64)
                    .sum::<f64>()
            };
            for isa in crate::simd::available() {
                accumulated_matches(&lin, isa, &x, m, want, "f32");
            }
        }
    }

    /// Q8_0 and Q4_0 on every kernel set (AMX tiles where usable) against the exact product of
    /// the two quantised operands. Odd block counts exercise the single last block, 17 and 70
    /// rows partial row tiles, odd weight-row counts the zero-padded last weight tile.
    #[test]
    fn quant_products_match_reference() {
        let mut r = Rng::new(8);
        for (m, n, k) in [(1, 40, 96), (17, 50, 256), (70, 33, 160), (2, 16, 32)] {
            let x: Vec<f32> = (0..m * k).map(|_| r.normal() as f32).collect();
            let w: Vec<f32> = (0..n * k).map(|_| r.normal() as f32 * 0.1).collect();
            for f in [WeightFormat::Q8_0, WeightFormat::Q4_0] {
                let lin = Linear::new(w.clone(), n, k, f);
                let wdeq = crate::quant::dequantize(&lin.w);
                let qa = quantize_acts(&x, m, k, 0);
                let xdeq: Vec<f64> = (0..m * k)
                    .map(|i| qa.qs[i] as f64 * qa.d[i / crate::kernels::QK] as f64)
                    .collect();
                let want = |i: usize, j: usize| {
                    (0..k)
                        .map(|p| xdeq[i * k + p] * wdeq[j * k + p] as f64)
                        .sum::<f64>()
                };
                for isa in crate::simd::available() {
                    accumulated_matches(&lin, isa, &x, m, want, &format!("{f:?}"));
                }
            }
        }
    }

    /// Long rows with a k % 16 tail (the scalar end of the float kernels, and no AMX for bf16
    /// since k is not a multiple of 32), accumulating: each row of a many-row product must
    /// equal its single-row product bit for bit.
    #[test]
    fn long_float_rows_with_a_tail_equal_single_rows_bitwise() {
        let (m, n, k) = (21, 40, 1048);
        let mut r = Rng::new(12);
        let x: Vec<f32> = (0..m * k).map(|_| r.normal() as f32).collect();
        let w: Vec<f32> = (0..n * k).map(|_| r.normal() as f32 * 0.1).collect();
        for f in [WeightFormat::F32, WeightFormat::Bf16] {
            let lin = Linear::new(w.clone(), n, k, f);
            for isa in crate::simd::available() {
                let mut all = vec![0.5f32; m * n];
                lin.forward_isa(isa, &x, m, &mut all, true);
                for i in 0..m {
                    let mut one = vec![0.5f32; n];
                    lin.forward_isa(isa, &x[i * k..(i + 1) * k], 1, &mut one, true);
                    assert_eq!(one, all[i * n..(i + 1) * n], "{f:?} {isa:?} row {i}");
                }
            }
        }
    }

    #[test]
    fn threaded_forward_equals_single_row_forward_bitwise() {
        // The second shape has an odd number of blocks per row and partial tiles on both sides.
        for (m, n, k) in [(37, 300, 256), (35, 40, 96)] {
            threaded_equals_single_rows(m, n, k);
        }
    }

    fn threaded_equals_single_rows(m: usize, n: usize, k: usize) {
        let mut r = Rng::new(9);
        let x: Vec<f32> = (0..m * k).map(|_| r.normal() as f32).collect();
        let w: Vec<f32> = (0..n * k).map(|_| r.normal() as f32 * 0.1).collect();
        for f in WeightFormat::ALL {
            let lin = Linear::new(w.clone(), n, k, f);
            for isa in crate::simd::available() {
                let mut all = vec![0f32; m * n];
                lin.forward_isa(isa, &x, m, &mut all, false);
                for i in [0, 5, m - 1] {
                    let mut one = vec![0f32; n];
                    lin.forward_isa(isa, &x[i * k..(i + 1) * k], 1, &mut one, false);
                    assert_eq!(one, all[i * n..(i + 1) * n], "{f:?} {isa:?} row {i}");
                }
            }
        }
    }
}
