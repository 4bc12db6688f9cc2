//! Strided matrix multiplication on the CPU through the `gemm` crate, which picks AVX-512,
//! AVX2 or baseline micro-kernels at run time. Strides let every transposed product of the
//! forward and backward passes run without copying.

use crate::real::Real;

/// A read-only strided matrix view: element `(i, j)` is `data[off + i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub struct View<'a, T> {
    pub data: &'a [T],
    pub off: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> View<'a, T> {
    pub fn row_major(data: &'a [T], cols: usize) -> Self {
        View {
            data,
            off: 0,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose of a row-major `[rows, cols]` matrix, seen as `[cols, rows]`.
    pub fn transposed(data: &'a [T], cols: usize) -> Self {
        View {
            data,
            off: 0,
            rs: 1,
            cs: cols,
        }
    }
    pub(crate) fn check(&self, rows: usize, cols: usize, what: &str) {
        if rows > 0 && cols > 0 {
            let last = self.off + (rows - 1) * self.rs + (cols - 1) * self.cs;
            assert!(
                last < self.data.len(),
                "gemm: {what} view out of bounds ({last} >= {})",
                self.data.len()
            );
        }
    }
}

/// `c[i·c_rs + j] = (accumulate ? c : 0) + alpha · Σ_l a(i,l) b(l,j)` for `i < m, j < n`.
/// `parallel` lets gemm use the rayon pool; kernels that already run one task per head pass
/// `false`.
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [T],
    c_off: usize,
    c_rs: usize,
    a: View<T>,
    b: View<T>,
    alpha: T,
    accumulate: bool,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    a.check(m, k, "lhs");
    b.check(k, n, "rhs");
    assert!(
        c_off + (m - 1) * c_rs + n <= c.len(),
        "gemm: output out of bounds"
    );
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[c_off + i * c_rs..c_off + i * c_rs + n].fill(T::ZERO);
            }
        }
        return;
    }
    // SAFETY: all three views were bounds-checked above for the index ranges gemm touches;
    // `c` is borrowed mutably so nothing else aliases it.
    unsafe {
        gemm_raw(
            m,
            n,
            k,
            c.as_mut_ptr().add(c_off),
            c_rs,
            a.data.as_ptr().add(a.off),
            a.rs,
            a.cs,
            b.data.as_ptr().add(b.off),
            b.rs,
            b.cs,
            alpha,
            accumulate,
            parallel,
        )
    }
}

/// A matrix product with [`gemm`]'s arguments (alpha 1, parallel): how a fused op (the LM head)
/// multiplies in the backend's precision.
pub type Product<'a, T> =
    &'a (dyn Fn(usize, usize, usize, &mut [T], usize, usize, View<T>, View<T>, bool) + Sync);

/// The plain product in `T`.
#[allow(clippy::too_many_arguments)]
pub fn plain<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [T],
    c_off: usize,
    c_rs: usize,
    a: View<T>,
    b: View<T>,
    accumulate: bool,
) {
    gemm(m, n, k, c, c_off, c_rs, a, b, T::ONE, accumulate, true)
}

/// The unchecked form, for kernels that write disjoint strided regions of one buffer from
/// several threads.
///
/// # Safety
/// All pointers must be valid for the index ranges implied by `m, n, k` and the strides, and
/// the output region must not be written by anyone else concurrently.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_raw<T: Real>(
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
    b_cs: usize,
    alpha: T,
    accumulate: bool,
    parallel: bool,
) {
    let par = if parallel && rayon::current_num_threads() > 1 && m * n * k > 64 * 64 * 64 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    gemm::gemm(
        m,
        n,
        k,
        c,
        1,
        c_rs as isize,
        accumulate,
        a,
        a_cs as isize,
        a_rs as isize,
        b,
        b_cs as isize,
        b_rs as isize,
        T::ONE,
        alpha,
        false,
        false,
        false,
        par,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn transposes_and_accumulation_match_naive() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f64> = (0..m * k).map(|i| i as f64 * 0.5 - 3.0).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64).sin()).collect();
        let naive = |i: usize, j: usize| (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum::<f64>();
        let mut c = vec![1.0; m * n];
        gemm(
            m,
            n,
            k,
            &mut c,
            0,
            n,
            View::row_major(&a, k),
            View::row_major(&b, n),
            2.0,
            true,
            true,
        );
        for i in 0..m {
            for j in 0..n {
                assert!((c[i * n + j] - (1.0 + 2.0 * naive(i, j))).abs() < 1e-12);
            }
        }
        // aᵀ stored as [k, m]; bᵀ stored as [n, k].
        let at: Vec<f64> = (0..k * m).map(|x| a[(x % m) * k + x / m]).collect();
        let bt: Vec<f64> = (0..n * k).map(|x| b[(x % k) * n + x / k]).collect();
        let mut c2 = vec![0.0; m * n];
        gemm(
            m,
            n,
            k,
            &mut c2,
            0,
            n,
            View::transposed(&at, m),
            View::transposed(&bt, k),
            1.0,
            false,
            false,
        );
        for i in 0..m {
            for j in 0..n {
                assert!((c2[i * n + j] - naive(i, j)).abs() < 1e-12);
            }
        }
    }
}
