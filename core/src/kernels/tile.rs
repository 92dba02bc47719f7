//! Small matrix products for per-head attention, C = A·B with m, n, k of a few dozen to a few
//! hundred, on one thread, the operands read in place through strides: a head's columns of a
//! (seq, hidden) slab, the probabilities or their transpose. candle's batched matmul runs such
//! products one after another, each split over the threads and each on contiguous heads (split
//! and merge copies around it); here one task does a batch element's heads back to back with
//! its operands in cache. Called inside `vectorized`, so the register tiles below compile to
//! AVX-512 / AVX2 + FMA / NEON fused multiply-adds.

/// Rows of a register tile.
const R: usize = 4;
/// Columns of a register tile: one AVX-512 vector, two AVX2 or four NEON ones.
const W: usize = 16;

/// A read-only matrix: element (i, p) at `data[off + i·rs + p·cs]`.
#[derive(Clone, Copy)]
pub(super) struct View<'a> {
    pub data: &'a [f32],
    pub off: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// Row-major with row stride `rs`, starting at `off`.
    pub fn rows(data: &'a [f32], off: usize, rs: usize) -> Self {
        View {
            data,
            off,
            rs,
            cs: 1,
        }
    }

    /// The transpose of the row-major matrix with row stride `rs` at `off`.
    pub fn transposed(data: &'a [f32], off: usize, rs: usize) -> Self {
        View {
            data,
            off,
            rs: 1,
            cs: rs,
        }
    }

    #[inline(always)]
    fn at(&self, i: usize, p: usize) -> f32 {
        self.data[self.off + i * self.rs + p * self.cs]
    }
}

/// A matrix written row by row: element (i, j) at `data[off + i·rs + j]`.
pub(super) struct Out<'a> {
    pub data: &'a mut [f32],
    pub off: usize,
    pub rs: usize,
}

/// C = A·B for A (m, k) and B (k, n); B must have unit column stride (its rows are loaded as
/// vectors). C is overwritten, not accumulated into.
#[inline(always)]
pub(super) fn matmul(m: usize, n: usize, k: usize, a: View, b: View, c: &mut Out) {
    debug_assert_eq!(b.cs, 1);
    let full_cols = n - n % W;
    let full_rows = m - m % R;
    for j0 in (0..full_cols).step_by(W) {
        for i0 in (0..full_rows).step_by(R) {
            tile::<R>(i0, j0, k, a, b, c);
        }
        for i0 in full_rows..m {
            tile::<1>(i0, j0, k, a, b, c);
        }
    }
    for i in 0..m {
        for j in full_cols..n {
            let mut s = 0f32;
            for p in 0..k {
                s = a.at(i, p).mul_add(b.at(p, j), s);
            }
            c.data[c.off + i * c.rs + j] = s;
        }
    }
}

/// Rows i0..i0 + RR, columns j0..j0 + W of C, accumulated in registers over all of k.
#[inline(always)]
fn tile<const RR: usize>(i0: usize, j0: usize, k: usize, a: View, b: View, c: &mut Out) {
    let mut acc = [[0f32; W]; RR];
    for p in 0..k {
        let start = b.off + p * b.rs + j0;
        let row = &b.data[start..start + W];
        let av: [f32; RR] = std::array::from_fn(|r| a.at(i0 + r, p));
        for (acc, &av) in acc.iter_mut().zip(&av) {
            for (acc, &bv) in acc.iter_mut().zip(row) {
                *acc = av.mul_add(bv, *acc);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        let start = c.off + (i0 + r) * c.rs + j0;
        c.data[start..start + W].copy_from_slice(acc);
    }
}

/// dst (cols, rows) = the transpose of the (rows, cols) block at `off` with row stride `rs`.
#[inline(always)]
pub(super) fn transpose(
    src: &[f32],
    off: usize,
    rs: usize,
    rows: usize,
    cols: usize,
    dst: &mut [f32],
) {
    for i in 0..rows {
        let row = &src[off + i * rs..off + i * rs + cols];
        for (j, &x) in row.iter().enumerate() {
            dst[j * rows + i] = x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path (full tiles, the one-row tiles, the column tail) against the plain triple
    /// loop in f64, on strided and transposed views.
    #[test]
    fn matmul_matches_the_triple_loop() {
        let vals = |n: usize, seed: u32| -> Vec<f32> {
            (0..n)
                .map(|i| {
                    ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32
                        / 500.0
                        - 1.0
                })
                .collect()
        };
        for (m, n, k) in [(7, 37, 5), (16, 32, 32), (1, 16, 128), (9, 3, 17)] {
            // A given transposed inside a wider buffer, B as rows of a wider slab.
            let (a_rs, b_rs) = (m + 3, n + 5);
            let a = vals(k * a_rs + 2, 1);
            let b = vals(k * b_rs + 1, 2);
            let av = View::transposed(&a, 2, a_rs);
            let bv = View::rows(&b, 1, b_rs);
            let mut c = vec![f32::NAN; m * (n + 2)];
            matmul(
                m,
                n,
                k,
                av,
                bv,
                &mut Out {
                    data: &mut c,
                    off: 0,
                    rs: n + 2,
                },
            );
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|p| av.at(i, p) as f64 * bv.at(p, j) as f64)
                        .sum();
                    let got = c[i * (n + 2) + j] as f64;
                    assert!(
                        (got - want).abs() < 1e-5,
                        "({m},{n},{k}) at ({i},{j}): {got} vs {want}"
                    );
                }
            }
        }
    }
}
