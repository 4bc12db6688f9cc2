//! A linear layer `y = x·Wᵀ` of the decoder in any weight format, spread over the rayon pool
//! in blocks of activation rows × weight rows.

use crate::kernels::{self, bias_offset, quantize_acts, Act, OutPtr, WView};
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
/// Weight rows per task are a multiple of this (whole kernel tiles).
const WEIGHT_ROW_ALIGN: usize = 16;

impl Linear {
    /// Converts a `[rows, cols]` f32 matrix to `format` (block formats need `cols % 32 == 0`;
    /// other matrices stay f32).
    pub fn new(w: Vec<f32>, rows: usize, cols: usize, format: WeightFormat) -> Self {
        assert_eq!(w.len(), rows * cols);
        Linear {
            rows,
            cols,
            w: convert(w, rows, cols, format),
        }
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
    let threads = rayon::current_num_threads();
    if threads <= 1 || m * n * k < PARALLEL_MIN_WORK {
        f((0, m), (0, n));
        return;
    }
    let mc = m.clamp(1, ROWS_PER_TASK);
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

    #[test]
    fn threaded_forward_equals_single_row_forward_bitwise() {
        let (m, n, k) = (37, 300, 256);
        let mut r = Rng::new(9);
        let x: Vec<f32> = (0..m * k).map(|_| r.normal() as f32).collect();
        let w: Vec<f32> = (0..n * k).map(|_| r.normal() as f32 * 0.1).collect();
        for f in WeightFormat::ALL {
            let lin = Linear::new(w.clone(), n, k, f);
            for isa in crate::simd::available() {
                let mut all = vec![0f32; m * n];
                lin.forward_isa(isa, &x, m, &mut all, false);
                for i in [0, 5, 36] {
                    let mut one = vec![0f32; n];
                    lin.forward_isa(isa, &x[i * k..(i + 1) * k], 1, &mut one, false);
                    assert_eq!(one, all[i * n..(i + 1) * n], "{f:?} {isa:?} row {i}");
                }
            }
        }
    }
}
