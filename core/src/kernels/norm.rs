//! Layer norm over the last dimension with frozen γ, β and a fused backward:
//!   x̂ = (x − μ)·rstd,  y = x̂·γ + β,  dx = rstd·(gγ − mean(gγ) − x̂·mean(gγ·x̂)),  gγ = dy·γ.
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::math::sum_by;
use super::simd::{vectorized, Kernel};
use super::{rows_per_task, slice, zeroed};

struct LayerNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

struct LayerNormGrad {
    gamma: Vec<f32>,
    eps: f32,
}

/// Mean and 1/sd of a row (two passes, as torch does).
#[inline(always)]
fn moments(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = sum_by(x.len(), |i| x[i]) / n;
    let var = sum_by(x.len(), |i| (x[i] - mean) * (x[i] - mean)) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp1 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((CpuStorage::F32(self.rows(slice(s, l)?)), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(self.grad(&x.detach(), g)?))
    }
}

impl LayerNorm {
    /// The normalised rows of x.
    fn rows(&self, x: &[f32]) -> Vec<f32> {
        let h = self.gamma.len();
        let mut y = zeroed(x.len());
        let rows = rows_per_task(x.len() / h, h) * h;
        y.par_chunks_mut(rows)
            .zip(x.par_chunks(rows))
            .for_each(|(y, x)| vectorized(Fwd { op: self, x, y }));
        y
    }

    fn grad(&self, z: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
        let op = LayerNormGrad {
            gamma: self.gamma.clone(),
            eps: self.eps,
        };
        z.apply_op2_no_bwd(&g.contiguous()?, &op)
    }
}

/// LN(a + x): the residual connection and the norm in one op, so that the sum is neither a
/// graph node nor kept for the backward pass (it is recomputed there).
struct AddLayerNorm(LayerNorm);

struct Add<'a> {
    a: &'a [f32],
    x: &'a [f32],
    z: &'a mut [f32],
}

impl Kernel for Add<'_> {
    #[inline(always)]
    fn run(self) {
        for ((z, a), x) in self.z.iter_mut().zip(self.a).zip(self.x) {
            *z = a + x;
        }
    }
}

impl CustomOp2 for AddLayerNorm {
    fn name(&self) -> &'static str {
        "add-layer-norm"
    }

    fn cpu_fwd(
        &self,
        sa: &CpuStorage,
        la: &Layout,
        sx: &CpuStorage,
        lx: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a, x) = (slice(sa, la)?, slice(sx, lx)?);
        if la.shape() != lx.shape() {
            candle_core::bail!("add-layer-norm: {:?} + {:?}", la.shape(), lx.shape());
        }
        let mut z = zeroed(a.len());
        vectorized(Add { a, x, z: &mut z });
        Ok((CpuStorage::F32(self.0.rows(&z)), la.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        x: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let z = (a.detach() + x.detach())?;
        let dz = self.0.grad(&z, g)?;
        let pick = |t: &Tensor| t.track_op().then(|| dz.clone());
        Ok((pick(a), pick(x)))
    }
}

impl CustomOp2 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, g) = (slice(s1, l1)?, slice(s2, l2)?);
        let h = self.gamma.len();
        let mut dx = zeroed(x.len());
        let rows = rows_per_task(x.len() / h, h) * h;
        dx.par_chunks_mut(rows)
            .zip(x.par_chunks(rows).zip(g.par_chunks(rows)))
            .for_each(|(dx, (x, g))| vectorized(Bwd { op: self, x, g, dx }));
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

struct Fwd<'a> {
    op: &'a LayerNorm,
    x: &'a [f32],
    y: &'a mut [f32],
}

impl Kernel for Fwd<'_> {
    #[inline(always)]
    fn run(self) {
        let (gamma, beta, h) = (&self.op.gamma, &self.op.beta, self.op.gamma.len());
        for (y, x) in self.y.chunks_exact_mut(h).zip(self.x.chunks_exact(h)) {
            let (mean, rstd) = moments(x, self.op.eps);
            for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
                *y = (x - mean) * rstd * g + b;
            }
        }
    }
}

struct Bwd<'a> {
    op: &'a LayerNormGrad,
    x: &'a [f32],
    g: &'a [f32],
    dx: &'a mut [f32],
}

impl Kernel for Bwd<'_> {
    #[inline(always)]
    fn run(self) {
        let (gamma, h) = (&self.op.gamma, self.op.gamma.len());
        let rows = self
            .dx
            .chunks_exact_mut(h)
            .zip(self.x.chunks_exact(h).zip(self.g.chunks_exact(h)));
        for (dx, (x, g)) in rows {
            let (mean, rstd) = moments(x, self.op.eps);
            let m1 = sum_by(h, |i| g[i] * gamma[i]) / h as f32;
            let m2 = sum_by(h, |i| g[i] * gamma[i] * (x[i] - mean) * rstd) / h as f32;
            for (((dx, &x), &g), &w) in dx.iter_mut().zip(x).zip(g).zip(gamma) {
                let xh = (x - mean) * rstd;
                *dx = rstd * (g * w - m1 - xh * m2);
            }
        }
    }
}

fn op(weight: &Tensor, bias: &Tensor, eps: f64, x: &Tensor) -> candle_core::Result<LayerNorm> {
    let op = LayerNorm {
        gamma: weight.to_vec1::<f32>()?,
        beta: bias.to_vec1::<f32>()?,
        eps: eps as f32,
    };
    if x.dim(candle_core::D::Minus1)? != op.gamma.len() {
        candle_core::bail!("layer-norm: input width differs from the weight's");
    }
    Ok(op)
}

/// Layer norm of x (..., h) with frozen weight and bias (h,), differentiable in x only.
pub fn layer_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(op(weight, bias, eps, x)?)
}

/// LN(a + x) (the post-LN residual block), differentiable in a and x.
pub fn add_layer_norm(
    a: &Tensor,
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> candle_core::Result<Tensor> {
    let op = AddLayerNorm(op(weight, bias, eps, x)?);
    a.contiguous()?.apply_op2(&x.contiguous()?, op)
}
