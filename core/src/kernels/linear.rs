//! The adapted linear layer as one op: y = x·Wᵀ + b (+ (x·Âᵀ)·Bᵀ), W and b frozen, Â = the LoRA
//! A with λ and the scaling folded into its rows (so λ's gradient flows through Â by candle's
//! autograd on an r × in tensor). One node in the graph instead of eight: the backward pass
//! returns the gradients of x, Â and B and never the full-size gradient of W that candle's
//! matmul would compute, and the forward keeps one (n, out) buffer instead of three.
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Storage, Tensor};

use rayon::prelude::*;

use super::rows_per_task;
use super::simd::{vectorized, Kernel};

struct Frozen {
    /// (out, in)
    w: Tensor,
    /// (out,)
    b: Option<Tensor>,
}

/// Rows n and width of an input whose last dimension is `d_in`; the output shape.
fn dims(l: &Layout, d_in: usize, d_out: usize) -> candle_core::Result<(usize, Shape)> {
    let shape = l.shape().dims();
    match shape.last() {
        Some(&d) if d == d_in => {}
        _ => candle_core::bail!("linear: input {shape:?} does not end in {d_in} features"),
    }
    if l.contiguous_offsets().is_none() {
        candle_core::bail!("linear: input must be contiguous");
    }
    let mut out = shape.to_vec();
    let last = out.len() - 1;
    out[last] = d_out;
    Ok((l.shape().elem_count() / d_in, Shape::from(out)))
}

/// x (n, in) · Wᵀ with x given as any contiguous layout holding n·in values.
fn matmul_t(s: &CpuStorage, l: &Layout, n: usize, w: &Tensor) -> candle_core::Result<CpuStorage> {
    let (d_out, d_in) = w.dims2()?;
    let x2 = Layout::contiguous_with_offset((n, d_in), l.start_offset());
    let (ws, wl) = w.storage_and_layout();
    let Storage::Cpu(wc) = &*ws else {
        candle_core::bail!("linear: weight is not on the CPU")
    };
    s.matmul(wc, (1, n, d_out, d_in), &x2, &wl.transpose(0, 1)?)
}

fn f32s(s: &mut CpuStorage) -> candle_core::Result<&mut Vec<f32>> {
    match s {
        CpuStorage::F32(v) => Ok(v),
        _ => candle_core::bail!("linear: f32 only"),
    }
}

/// y += u (when given) + b, row by row.
struct AddRows<'a> {
    y: &'a mut [f32],
    u: Option<&'a [f32]>,
    b: Option<&'a [f32]>,
    d_out: usize,
}

impl Kernel for AddRows<'_> {
    #[inline(always)]
    fn run(self) {
        let d_out = self.d_out;
        match (self.u, self.b) {
            (Some(u), Some(b)) => {
                for (y, u) in self.y.chunks_exact_mut(d_out).zip(u.chunks_exact(d_out)) {
                    for ((y, u), b) in y.iter_mut().zip(u).zip(b) {
                        *y += u + b;
                    }
                }
            }
            (Some(u), None) => self.y.iter_mut().zip(u).for_each(|(y, u)| *y += u),
            (None, Some(b)) => {
                for y in self.y.chunks_exact_mut(d_out) {
                    y.iter_mut().zip(b).for_each(|(y, b)| *y += b);
                }
            }
            (None, None) => {}
        }
    }
}

fn add_rows(y: &mut [f32], u: Option<&[f32]>, b: Option<&[f32]>, d_out: usize) {
    let rows = rows_per_task(y.len() / d_out, d_out) * d_out;
    match u {
        Some(u) => y
            .par_chunks_mut(rows)
            .zip(u.par_chunks(rows))
            .for_each(|(y, u)| {
                vectorized(AddRows {
                    y,
                    u: Some(u),
                    b,
                    d_out,
                })
            }),
        None => y.par_chunks_mut(rows).for_each(|y| {
            vectorized(AddRows {
                y,
                u: None,
                b,
                d_out,
            })
        }),
    }
}

fn bias_vec(b: &Option<Tensor>) -> candle_core::Result<Option<Vec<f32>>> {
    b.as_ref()
        .map(|b| b.flatten_all()?.to_vec1::<f32>())
        .transpose()
}

impl CustomOp1 for Frozen {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (d_out, d_in) = self.w.dims2()?;
        let (n, shape) = dims(l, d_in, d_out)?;
        let mut y = matmul_t(s, l, n, &self.w)?;
        let b = bias_vec(&self.b)?;
        add_rows(f32s(&mut y)?, None, b.as_deref(), d_out);
        Ok((y, shape))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        if !x.track_op() {
            return Ok(None); // e.g. the first layer's input: the embeddings are frozen
        }
        let d_out = self.w.dim(0)?;
        let n = g.elem_count() / d_out;
        let dx = g.detach().reshape((n, d_out))?.matmul(&self.w)?;
        Ok(Some(dx.reshape(x.shape())?))
    }
}

struct Lora {
    w: Tensor,
    b: Option<Tensor>,
}

impl CustomOp3 for Lora {
    fn name(&self) -> &'static str {
        "lora-linear"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sa: &CpuStorage,
        la: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (d_out, d_in) = self.w.dims2()?;
        let (n, shape) = dims(lx, d_in, d_out)?;
        let r = la.shape().dims2()?.0;
        if la.shape().dims2()? != (r, d_in) || lb.shape().dims2()? != (d_out, r) {
            candle_core::bail!(
                "lora-linear: A {:?} / B {:?} do not fit W {:?}",
                la.shape(),
                lb.shape(),
                self.w.shape()
            );
        }
        let mut y = matmul_t(sx, lx, n, &self.w)?;
        let x2 = Layout::contiguous_with_offset((n, d_in), lx.start_offset());
        let h = sx.matmul(sa, (1, n, r, d_in), &x2, &la.transpose(0, 1)?)?; // (n, r)
        let u = h.matmul(
            sb,
            (1, n, d_out, r),
            &Layout::contiguous((n, r)),
            &lb.transpose(0, 1)?,
        )?;
        let b = bias_vec(&self.b)?;
        let u = u.as_slice::<f32>()?;
        add_rows(f32s(&mut y)?, Some(u), b.as_deref(), d_out);
        Ok((y, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (d_out, d_in) = self.w.dims2()?;
        let n = g.elem_count() / d_out;
        let (a, b) = (a.detach(), b.detach());
        let g = g.detach().reshape((n, d_out))?;
        let x2 = x.detach().reshape((n, d_in))?;
        let gb = g.matmul(&b)?; // (n, r)
                                // The first layer's input (frozen embeddings) needs no gradient.
        let dx = match x.track_op() {
            true => Some((g.matmul(&self.w)? + gb.matmul(&a)?)?.reshape(x.shape())?),
            false => None,
        };
        let da = gb.t()?.matmul(&x2)?; // (r, in)
        let h = x2.matmul(&a.t()?)?; // (n, r)
        let db = g.t()?.matmul(&h)?; // (out, r)
        Ok((dx, Some(da), Some(db)))
    }
}

/// x: (..., in) contiguous f32 on the CPU; w: (out, in); b: (out,). Returns (..., out).
pub fn frozen_linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Frozen {
        w: w.clone(),
        b: b.cloned(),
    })
}

/// x·Wᵀ + b + (x·Âᵀ)·Bᵀ with Â: (r, in) (λ and the scaling folded in), B: (out, r);
/// differentiable in x, Â and B.
pub fn lora_linear(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    a_hat: &Tensor,
    lora_b: &Tensor,
) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op3(
        &a_hat.contiguous()?,
        &lora_b.contiguous()?,
        Lora {
            w: w.clone(),
            b: b.cloned(),
        },
    )
}
