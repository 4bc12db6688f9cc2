//! The products inside attention, which are small (one side is the head dimension, 32–128;
//! the others a block of 64 query rows or up to a context of keys) and many (thousands per
//! layer). A general gemm spends more time planning and packing such shapes than multiplying;
//! this kernel needs no packing, because every product in attention can be arranged so that the
//! right operand is read along contiguous rows:
//!
//!   `c[i, j] (+)= alpha · Σ_l a(i, l) · b[l, j]`,  a(i, l) = `a[i·a_rs + l·a_cs]`, b row-major.
//!
//! Each 8×32 output tile keeps its sums in registers (16 AVX-512 vectors of f32) over all of k:
//! per step of l, two row loads of b, eight broadcasts of a and sixteen fused multiply-adds.

use crate::real::Real;

/// Rows and columns of the register tile.
const MR: usize = 8;
const NR: usize = 32;

/// See the module documentation.
///
/// # Safety
/// `a`, `b` and `c` must be valid for every index the shapes and strides imply, and nothing
/// else may write the output region concurrently.
#[allow(clippy::too_many_arguments)]
pub unsafe fn product<T: Real>(
    (m, n, k): (usize, usize, usize),
    c: *mut T,
    c_rs: usize,
    (a, a_rs, a_cs): (*const T, usize, usize),
    (b, b_rs): (*const T, usize),
    alpha: T,
    accumulate: bool,
) {
    let args = Args {
        m,
        n,
        k,
        c,
        c_rs,
        a,
        a_rs,
        a_cs,
        b,
        b_rs,
        alpha,
        accumulate,
    };
    #[cfg(target_arch = "x86_64")]
    match super::simd::level() {
        // SAFETY: the CPU was checked for these features.
        2 => return product_v4(&args),
        1 => return product_v3(&args),
        _ => {}
    }
    product_body::<T, false>(&args)
}

struct Args<T> {
    m: usize,
    n: usize,
    k: usize,
    c: *mut T,
    c_rs: usize,
    a: *const T,
    a_rs: usize,
    a_cs: usize,
    b: *const T,
    b_rs: usize,
    alpha: T,
    accumulate: bool,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi2")]
unsafe fn product_v4<T: Real>(x: &Args<T>) {
    product_body::<T, true>(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn product_v3<T: Real>(x: &Args<T>) {
    product_body::<T, true>(x)
}

/// Tiles the output: full MR-row blocks, then single rows; within each, NR-, 8- and 1-wide
/// column blocks.
#[inline(always)]
unsafe fn product_body<T: Real, const FMA: bool>(x: &Args<T>) {
    let mut i = 0;
    while i + MR <= x.m {
        columns::<T, MR, FMA>(x, i);
        i += MR;
    }
    while i < x.m {
        columns::<T, 1, FMA>(x, i);
        i += 1;
    }
}

#[inline(always)]
unsafe fn columns<T: Real, const R: usize, const FMA: bool>(x: &Args<T>, i0: usize) {
    let mut j = 0;
    while j + NR <= x.n {
        tile::<T, R, NR, FMA>(x, i0, j);
        j += NR;
    }
    while j + 8 <= x.n {
        tile::<T, R, 8, FMA>(x, i0, j);
        j += 8;
    }
    while j < x.n {
        tile::<T, R, 1, FMA>(x, i0, j);
        j += 1;
    }
}

/// One R×C output tile over all of k, sums kept in `acc` (registers, for the sizes used).
#[inline(always)]
unsafe fn tile<T: Real, const R: usize, const C: usize, const FMA: bool>(
    x: &Args<T>,
    i0: usize,
    j0: usize,
) {
    let mut acc = [[T::ZERO; C]; R];
    for l in 0..x.k {
        let brow = std::slice::from_raw_parts(x.b.add(l * x.b_rs + j0), C);
        let acol = x.a.add(i0 * x.a_rs + l * x.a_cs);
        for (r, row) in acc.iter_mut().enumerate() {
            let av = *acol.add(r * x.a_rs);
            for (s, &bv) in row.iter_mut().zip(brow) {
                *s = if FMA {
                    av.mul_add(bv, *s)
                } else {
                    *s + av * bv
                };
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        let out = std::slice::from_raw_parts_mut(x.c.add((i0 + r) * x.c_rs + j0), C);
        for (o, &s) in out.iter_mut().zip(row) {
            *o = if x.accumulate {
                *o + x.alpha * s
            } else {
                x.alpha * s
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tile size and edge, strided and transposed left operands, accumulate on and off.
    #[test]
    fn matches_naive_for_all_edges() {
        for &(m, n, k) in &[(1, 1, 1), (8, 32, 5), (9, 33, 7), (17, 41, 64), (3, 100, 2)] {
            let a: Vec<f64> = (0..m * k * 2)
                .map(|i| ((i * 37 % 101) as f64) / 50.0 - 1.0)
                .collect();
            let b: Vec<f64> = (0..k * (n + 3))
                .map(|i| ((i * 53 % 97) as f64) / 48.0 - 1.0)
                .collect();
            // (a_rs, a_cs): row-major with padding, and transposed.
            for (a_rs, a_cs) in [(2 * k, 1), (1, m)] {
                let aa = |i: usize, l: usize| a[i * a_rs + l * a_cs];
                for accumulate in [false, true] {
                    let mut c = vec![0.5; m * (n + 2)];
                    unsafe {
                        product(
                            (m, n, k),
                            c.as_mut_ptr(),
                            n + 2,
                            (a.as_ptr(), a_rs, a_cs),
                            (b.as_ptr(), n + 3),
                            0.75,
                            accumulate,
                        )
                    };
                    for i in 0..m {
                        for j in 0..n + 2 {
                            let got = c[i * (n + 2) + j];
                            if j >= n {
                                assert_eq!(got, 0.5, "padding column written");
                                continue;
                            }
                            let s: f64 = (0..k).map(|l| aa(i, l) * b[l * (n + 3) + j]).sum();
                            let want = if accumulate { 0.5 } else { 0.0 } + 0.75 * s;
                            assert!(
                                (got - want).abs() < 1e-12,
                                "{m}x{n}x{k} [{i},{j}] {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
