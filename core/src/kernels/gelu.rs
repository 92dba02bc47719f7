//! GELU (erf form, as BERT's "gelu") with a fused backward:
//!   y = x·Φ(x),  dy/dx = Φ(x) + x·φ(x).
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::math::{erf, exp};
use super::simd::{vectorized, Kernel};
use super::{slice, zeroed};

const CHUNK: usize = 1 << 14;

struct Gelu;
struct GeluGrad;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((
            CpuStorage::F32(gelu_values(slice(s, l)?)),
            l.shape().clone(),
        ))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&g.contiguous()?, &GeluGrad)?))
    }
}

impl CustomOp2 for GeluGrad {
    fn name(&self) -> &'static str {
        "gelu-erf-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, g) = (slice(s1, l1)?, slice(s2, l2)?);
        let mut dx = zeroed(x.len());
        dx.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
            .for_each(|(dx, (x, g))| vectorized(Bwd { x, g, dx }));
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

struct Fwd<'a> {
    x: &'a [f32],
    y: &'a mut [f32],
}

impl Kernel for Fwd<'_> {
    #[inline(always)]
    fn run(self) {
        for (y, &x) in self.y.iter_mut().zip(self.x) {
            *y = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

struct Bwd<'a> {
    x: &'a [f32],
    g: &'a [f32],
    dx: &'a mut [f32],
}

impl Kernel for Bwd<'_> {
    #[inline(always)]
    fn run(self) {
        let inv_sqrt_2pi = 0.5 * std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2;
        for ((dx, &x), &g) in self.dx.iter_mut().zip(self.x).zip(self.g) {
            let cdf = 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
            let pdf = inv_sqrt_2pi * exp(-0.5 * x * x);
            *dx = g * (cdf + x * pdf);
        }
    }
}

/// GELU of every value.
pub(super) fn gelu_values(x: &[f32]) -> Vec<f32> {
    let mut y = zeroed(x.len());
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| vectorized(Fwd { x, y }));
    y
}

/// GELU of a tensor, outside the graph.
pub(super) fn gelu_detached(x: &Tensor) -> candle_core::Result<Tensor> {
    x.detach().contiguous()?.apply_op1_no_bwd(&Gelu)
}

/// dz = g · GELU'(z).
pub(super) fn gelu_backward(z: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
    z.detach()
        .contiguous()?
        .apply_op2_no_bwd(&g.contiguous()?, &GeluGrad)
}

/// GELU of a contiguous f32 CPU tensor, differentiable.
pub fn gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Gelu)
}
