//! Portable kernels: the reference the vector builds are tested against, and the path for
//! CPUs without AVX2.

use super::{bf16_to_f32, f16_to_f32, QActRows, QRows, QK};

/// A weight element the float kernels can read.
pub(crate) trait FloatWeight: Copy {
    fn to_f32(self) -> f32;
}
impl FloatWeight for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}
impl FloatWeight for u16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16_to_f32(self)
    }
}

#[inline(always)]
unsafe fn store(o: *mut f32, v: f32, accumulate: bool) {
    *o = if accumulate { *o + v } else { v };
}

/// # Safety
/// See [`super::block`].
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul_fp<W: FloatWeight>(
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
    for i in 0..m {
        for j in 0..n {
            let (ar, wr) = (a.add(i * lda), w.add(j * ldw));
            // Eight partial sums, so the compiler may vectorise and the order is fixed.
            let mut acc = [0f32; 8];
            let k8 = k / 8 * 8;
            let mut p = 0;
            while p < k8 {
                for (l, c) in acc.iter_mut().enumerate() {
                    *c += *ar.add(p + l) * (*wr.add(p + l)).to_f32();
                }
                p += 8;
            }
            let mut s = acc.iter().sum::<f32>();
            for p in k8..k {
                s += *ar.add(p) * (*wr.add(p)).to_f32();
            }
            store(out.add(i * ldo + j), s, accumulate);
        }
    }
}

#[allow(clippy::too_many_arguments)]
unsafe fn matmul_quant(
    a: QActRows,
    m: usize,
    w: QRows,
    n: usize,
    nb: usize,
    out: *mut f32,
    ldo: usize,
    accumulate: bool,
    q4: bool,
) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f32;
            for b in 0..nb {
                let aq = a.qs.add(i * a.k + b * QK);
                let mut isum = 0i32;
                if q4 {
                    let wq = w.qs.add(j * w.row_bytes + b * QK / 2);
                    for t in 0..QK / 2 {
                        let byte = *wq.add(t);
                        isum += ((byte & 15) as i32 - 8) * *aq.add(t) as i32;
                        isum += ((byte >> 4) as i32 - 8) * *aq.add(t + QK / 2) as i32;
                    }
                } else {
                    let wq = w.qs.add(j * w.row_bytes + b * QK) as *const i8;
                    for t in 0..QK {
                        isum += *wq.add(t) as i32 * *aq.add(t) as i32;
                    }
                }
                let scale = *a.d.add(i * nb + b) * f16_to_f32(*w.d.add(j * nb + b));
                s += isum as f32 * scale;
            }
            store(out.add(i * ldo + j), s, accumulate);
        }
    }
}

/// # Safety
/// See [`super::block`].
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
    matmul_quant(a, m, w, n, nb, out, ldo, accumulate, false)
}

/// # Safety
/// See [`super::block`].
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
    matmul_quant(a, m, w, n, nb, out, ldo, accumulate, true)
}
