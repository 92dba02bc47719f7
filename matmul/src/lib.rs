//! f32 matrix products written into, or added to, a buffer the caller owns.
//!
//! Why: candle's CPU matmul returns a new buffer it first fills with zeros on the calling
//! thread, and a sum of two products is then a third buffer and an element-wise pass. In a
//! training step that zero-filling ran on one thread while the compute pool waited (on an
//! e5-small LoRA step, Intel Xeon Sapphire Rapids, 2 threads, a tenth of the step). The gemm
//! crate that candle multiplies with can accumulate into its destination (`dst = dst + a·b`),
//! but only through an `unsafe` call on raw pointers; this crate is that call, behind a safe
//! function that checks every index an operand's strides can reach. Like `fedp2eft-fpenv`, it
//! keeps the `unsafe` out of core.
#![allow(unsafe_code)]

use std::fmt;

/// A read-only matrix view: element (i, j) is `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> Mat<'a> {
    /// A row-major (rows, cols) matrix held contiguously in `data`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        Mat {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Whether every element the view names lies inside `data`.
    fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        let last = (self.rows - 1)
            .checked_mul(self.row_stride)
            .zip((self.cols - 1).checked_mul(self.col_stride))
            .and_then(|(a, b)| a.checked_add(b));
        matches!(last, Some(i) if i < self.data.len())
            && isize::try_from(self.row_stride).is_ok()
            && isize::try_from(self.col_stride).is_ok()
    }
}

/// Operands that do not fit each other or their buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError(String);

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "matmul: {}", self.0)
    }
}

impl std::error::Error for ShapeError {}

/// `dst = a · b` (or `dst += a · b` with `accumulate`), dst row-major (a.rows, b.cols) and
/// exactly that long. `threads` > 1 splits the work over rayon's pool, as candle does.
pub fn matmul(
    dst: &mut [f32],
    accumulate: bool,
    a: Mat<'_>,
    b: Mat<'_>,
    threads: usize,
) -> Result<(), ShapeError> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k {
        return Err(ShapeError(format!(
            "({m}, {k}) · ({}, {n}): inner sizes differ",
            b.rows
        )));
    }
    if m.checked_mul(n) != Some(dst.len()) {
        return Err(ShapeError(format!(
            "destination holds {} values, the product ({m}, {n})",
            dst.len()
        )));
    }
    if !a.in_bounds() || !b.in_bounds() {
        return Err(ShapeError(
            "an operand's strides reach past its data".into(),
        ));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let parallelism = match threads {
        0 | 1 => gemm::Parallelism::None,
        t => gemm::Parallelism::Rayon(t),
    };
    // SAFETY: dst is (m, n) row-major and exactly m·n long; every index (i, p) of a and (p, j)
    // of b that gemm reads, i < m, p < k, j < n, was checked to lie inside its slice; strides
    // fit in isize. dst is borrowed mutably, so it overlaps neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: Mat, b: Mat) -> Vec<f64> {
        let mut out = vec![0f64; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                for p in 0..a.cols {
                    out[i * b.cols + j] += f64::from(a.data[i * a.row_stride + p * a.col_stride])
                        * f64::from(b.data[p * b.row_stride + j * b.col_stride]);
                }
            }
        }
        out
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        // A fixed, sign-varying sequence; no RNG crate needed.
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 2001) as f32 / 1000.0
                    - 1.0
            })
            .collect()
    }

    #[test]
    fn products_equal_the_naive_sum_for_every_layout_and_both_modes() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 0, 4),
            (7, 5, 3),
            (64, 384, 8),
            (130, 33, 97),
            (1, 200, 1),
        ] {
            let (av, bv) = (values(m * k, 1), values(k * n, 7));
            let (at, bt) = (Mat::row_major(&av, k, m).t(), Mat::row_major(&bv, n, k).t());
            let (a, b) = (Mat::row_major(&av, m, k), Mat::row_major(&bv, k, n));
            for (a, b) in [(a, b), (at, b), (a, bt), (at, bt)] {
                let want = naive(a, b);
                for threads in [1, 2] {
                    let mut dst = vec![f32::NAN; m * n];
                    matmul(&mut dst, false, a, b, threads).expect("operands fit");
                    for (d, w) in dst.iter().zip(&want) {
                        assert!(
                            (f64::from(*d) - w).abs() < 1e-4 * (1.0 + w.abs()),
                            "{m}x{k}x{n}"
                        );
                    }
                    let base = values(m * n, 3);
                    let mut acc = base.clone();
                    matmul(&mut acc, true, a, b, threads).expect("operands fit");
                    for ((d, w), b0) in acc.iter().zip(&want).zip(&base) {
                        let w = w + f64::from(*b0);
                        assert!((f64::from(*d) - w).abs() < 1e-4 * (1.0 + w.abs()));
                    }
                }
            }
        }
    }

    #[test]
    fn misfits_are_refused_without_touching_the_destination() {
        let v = values(12, 0);
        let a = Mat::row_major(&v, 3, 4);
        let mut dst = vec![5.0; 9];
        assert!(matmul(&mut dst, false, a, a, 1).is_err()); // 4 ≠ 3
        assert!(matmul(&mut dst[..8], false, a, a.t(), 1).is_err()); // 8 ≠ 9
        let short = Mat { rows: 4, ..a };
        assert!(matmul(&mut [0.0; 12], false, short, a.t(), 1).is_err()); // reaches v[15]
        assert!(dst.iter().all(|&d| d == 5.0));
        matmul(&mut dst, false, a, a.t(), 1).expect("operands fit");
        assert!((f64::from(dst[0]) - naive(a, a.t())[0]).abs() < 1e-5);
    }
}
