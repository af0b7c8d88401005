//! A safe, bounds-checked front to the `gemm` crate's `f32` matrix multiply
//! (the kernel candle itself calls on the CPU), for the fused layers of
//! [`crate::conv`] and [`crate::dense`].
//!
//! This is the crate's one module with `unsafe` code: `gemm::gemm` takes raw
//! pointers and strides. Every call goes through [`matmul`], which checks
//! that each operand's farthest element lies inside its slice and that the
//! destination is a distinct, mutable, row-major buffer, so the pointer
//! arithmetic inside `gemm` stays in bounds.

#![allow(unsafe_code)]

use gemm::Parallelism;

/// A read-only `rows x cols` matrix over a slice, element `(r, c)` at
/// `r * rs + c * cs`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// The row-major `rows x cols` matrix held by `data` (which may be longer).
    pub(crate) fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// Its number of columns.
    pub(crate) fn cols(&self) -> usize {
        self.cols
    }

    /// Its first `cols` columns (no copy). Panics if it has fewer: a bug in
    /// the caller.
    pub(crate) fn first_cols(self, cols: usize) -> Self {
        assert!(cols <= self.cols, "first_cols: {cols} of {}", self.cols);
        Mat { cols, ..self }
    }

    /// The transpose (no copy).
    pub(crate) fn t(self) -> Self {
        Mat {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Whether every element lies inside the slice.
    fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        let last = (self.rows - 1)
            .checked_mul(self.rs)
            .and_then(|a| (self.cols - 1).checked_mul(self.cs).and_then(|b| a.checked_add(b)));
        matches!(last, Some(l) if l < self.data.len())
    }
}

/// `dst = lhs @ rhs` (or `dst += lhs @ rhs` with `accumulate`), `dst`
/// row-major `lhs.rows x rhs.cols`, on the calling thread.
///
/// # Panics
/// If the inner dimensions differ or an operand does not fit its slice: a
/// bug in the caller, never a data condition.
pub(crate) fn matmul(dst: &mut [f32], lhs: Mat<'_>, rhs: Mat<'_>, accumulate: bool) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(rhs.rows, k, "matmul: inner dimensions {k} and {}", rhs.rows);
    assert!(dst.len() >= m * n, "matmul: destination of {} for {m}x{n}", dst.len());
    assert!(lhs.in_bounds() && rhs.in_bounds(), "matmul: operand outside its slice");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    // Strides fit in isize: each is at most a slice length.
    let s = |v: usize| v as isize;
    // SAFETY: `dst` holds m*n elements, row-major (row stride n, column
    // stride 1), and is borrowed mutably, so it aliases neither operand;
    // `in_bounds` checked that (rows-1)*rs + (cols-1)*cs of each operand is
    // inside its slice, and the shapes agree (m x k times k x n). `gemm`
    // reads `dst` only when `read_dst` is true, and reads/writes nothing
    // outside these index ranges.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            s(n),
            accumulate,
            lhs.data.as_ptr(),
            s(lhs.cs),
            s(lhs.rs),
            rhs.data.as_ptr(),
            s(rhs.cs),
            s(rhs.rs),
            1.0,
            1.0,
            false,
            false,
            false,
            // On the calling thread: callers spread tiles or rows over
            // rayon's threads themselves (2 vCPUs here are one core's
            // hyperthreads, where splitting one product did not pay).
            Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        out
    }

    #[test]
    fn matches_naive_with_transposes_and_accumulation() {
        let (m, k, n) = (7, 5, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        let mut dst = vec![0.0; m * n];
        matmul(&mut dst, Mat::rows(&a, m, k), Mat::rows(&b, k, n), false);
        for (x, y) in dst.iter().zip(&want) {
            assert!((x - y).abs() < 1e-5);
        }
        // (b^T)^T through a transposed copy of b.
        let mut bt = vec![0.0; n * k];
        for p in 0..k {
            for j in 0..n {
                bt[j * k + p] = b[p * n + j];
            }
        }
        matmul(&mut dst, Mat::rows(&a, m, k), Mat::rows(&bt, n, k).t(), true);
        for (x, y) in dst.iter().zip(&want) {
            assert!((x - 2.0 * y).abs() < 1e-4, "accumulates");
        }
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn short_operand_panics_instead_of_reading_past_it() {
        let a = vec![1.0; 5];
        let b = vec![1.0; 6];
        let mut dst = vec![0.0; 4];
        matmul(&mut dst, Mat::rows(&a, 2, 3), Mat::rows(&b, 3, 2), false);
    }
}
