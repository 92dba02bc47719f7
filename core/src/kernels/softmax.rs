//! Attention probabilities: softmax(scale·scores + mask) over the last dimension, with a fused
//! backward dx = scale·y ⊙ (dy − Σ dy⊙y). The mask is an additive bias per (batch, key).
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::math::{exp, max, sum_by};
use super::simd::{vectorized, Kernel};
use super::{rows_per_task, slice, zeroed};

struct MaskedSoftmax {
    scale: f32,
    /// (batch · keys): 0 for tokens, a large negative for padding.
    bias: Vec<f32>,
    /// Rows of scores per batch element (heads · queries).
    rows_per_batch: usize,
}

struct SoftmaxGrad {
    scale: f32,
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s, l)?;
        let keys = l.shape().dims()[l.shape().rank() - 1];
        let mut y = zeroed(x.len());
        let rows = rows_per_task(x.len() / keys, keys);
        y.par_chunks_mut(rows * keys)
            .zip(x.par_chunks(rows * keys))
            .enumerate()
            .for_each(|(task, (y, x))| {
                vectorized(Fwd {
                    op: self,
                    first_row: task * rows,
                    keys,
                    x,
                    y,
                })
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let op = SoftmaxGrad { scale: self.scale };
        Ok(Some(y.apply_op2_no_bwd(&g.contiguous()?, &op)?))
    }
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "masked-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (y, g) = (slice(s1, l1)?, slice(s2, l2)?);
        let keys = l1.shape().dims()[l1.shape().rank() - 1];
        let mut dx = zeroed(y.len());
        let rows = rows_per_task(y.len() / keys, keys) * keys;
        dx.par_chunks_mut(rows)
            .zip(y.par_chunks(rows).zip(g.par_chunks(rows)))
            .for_each(|(dx, (y, g))| {
                vectorized(Bwd {
                    scale: self.scale,
                    keys,
                    y,
                    g,
                    dx,
                })
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

struct Fwd<'a> {
    op: &'a MaskedSoftmax,
    first_row: usize,
    keys: usize,
    x: &'a [f32],
    y: &'a mut [f32],
}

impl Kernel for Fwd<'_> {
    #[inline(always)]
    fn run(self) {
        let (op, keys) = (self.op, self.keys);
        for (i, (y, x)) in self
            .y
            .chunks_exact_mut(keys)
            .zip(self.x.chunks_exact(keys))
            .enumerate()
        {
            let b = (self.first_row + i) / op.rows_per_batch;
            y.copy_from_slice(x);
            softmax_row(y, &op.bias[b * keys..(b + 1) * keys], op.scale);
        }
    }
}

/// y ← softmax(scale·y + bias) in place, for one row of scores.
#[inline(always)]
pub(super) fn softmax_row(y: &mut [f32], bias: &[f32], scale: f32) {
    for (y, &m) in y.iter_mut().zip(bias) {
        *y = *y * scale + m;
    }
    let max = max(y);
    for y in y.iter_mut() {
        *y = exp(*y - max);
    }
    let sum = sum_by(y.len(), |i| y[i]);
    let inv = 1.0 / sum;
    for y in y.iter_mut() {
        *y *= inv;
    }
}

/// d ← scale·y ⊙ (d − Σ d⊙y) in place: one row of the softmax backward, d the gradient of the
/// probabilities y on entry and of the scores (before scaling) on exit.
#[inline(always)]
pub(super) fn softmax_grad_row(d: &mut [f32], y: &[f32], scale: f32) {
    let dot = sum_by(d.len(), |i| y[i] * d[i]);
    for (d, &y) in d.iter_mut().zip(y) {
        *d = scale * y * (*d - dot);
    }
}

struct Bwd<'a> {
    scale: f32,
    keys: usize,
    y: &'a [f32],
    g: &'a [f32],
    dx: &'a mut [f32],
}

impl Kernel for Bwd<'_> {
    #[inline(always)]
    fn run(self) {
        let keys = self.keys;
        let rows = self
            .dx
            .chunks_exact_mut(keys)
            .zip(self.y.chunks_exact(keys).zip(self.g.chunks_exact(keys)));
        for (dx, (y, g)) in rows {
            dx.copy_from_slice(g);
            softmax_grad_row(dx, y, self.scale);
        }
    }
}

/// scores: (batch, heads, queries, keys); mask_bias: (batch, keys) additive. Differentiable in
/// the scores.
pub fn masked_softmax(
    scores: &Tensor,
    mask_bias: &Tensor,
    scale: f64,
) -> candle_core::Result<Tensor> {
    let (b, h, q, k) = scores.dims4()?;
    let bias = mask_bias.flatten_all()?.to_vec1::<f32>()?;
    if bias.len() != b * k {
        candle_core::bail!(
            "masked-softmax: mask has {} values, expected {}",
            bias.len(),
            b * k
        );
    }
    let op = MaskedSoftmax {
        scale: scale as f32,
        bias,
        rows_per_batch: h * q,
    };
    scores.contiguous()?.apply_op1(op)
}
