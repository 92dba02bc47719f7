//! The adapted linear layer as one op: y = x·Wᵀ + b (+ (x·Âᵀ)·Bᵀ), W and b frozen, Â = the LoRA
//! A with λ and the scaling folded into its rows (so λ's gradient flows through Â by candle's
//! autograd on an r × in tensor). One node in the graph instead of eight: the backward pass
//! returns the gradients of x, Â and B and never the full-size gradient of W that candle's
//! matmul would compute, and the forward keeps one (n, out) buffer instead of three.
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Storage, Tensor};

use rayon::prelude::*;

use super::gelu::{gelu_backward, gelu_detached, gelu_values};
use super::rows_per_task;
use super::simd::{vectorized, Kernel};

struct Frozen {
    /// (out, in)
    w: Tensor,
    /// (out,)
    b: Option<Tensor>,
    /// The op's input is z and the layer sees GELU(z): BERT's feed-forward output layer. Only
    /// z is kept for the backward pass; GELU(z) is recomputed there.
    gelu: bool,
}

/// The layer's actual input: x itself, or GELU(x) in a buffer of its own.
fn input<'a>(
    s: &'a CpuStorage,
    l: &'a Layout,
    gelu: bool,
    buf: &'a mut Option<(CpuStorage, Layout)>,
) -> candle_core::Result<(&'a CpuStorage, &'a Layout)> {
    if !gelu {
        return Ok((s, l));
    }
    let a = gelu_values(super::slice(s, l)?);
    let (s, l) = buf.insert((CpuStorage::F32(a), Layout::contiguous(l.shape())));
    Ok((s, l))
}

/// The input seen by the layer in the backward pass, outside the graph.
fn input_tensor(x: &Tensor, gelu: bool) -> candle_core::Result<Tensor> {
    if gelu {
        gelu_detached(x)
    } else {
        Ok(x.detach())
    }
}

/// The gradient of the op's input from that of the layer's input.
fn input_grad(x: &Tensor, d: Tensor, gelu: bool) -> candle_core::Result<Tensor> {
    if gelu {
        gelu_backward(x, &d)
    } else {
        Ok(d)
    }
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
        let mut buf = None;
        let (s, l) = input(s, l, self.gelu, &mut buf)?;
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
        Ok(Some(input_grad(x, dx.reshape(x.shape())?, self.gelu)?))
    }
}

struct Lora {
    w: Tensor,
    b: Option<Tensor>,
    /// As in `Frozen`.
    gelu: bool,
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
        let mut buf = None;
        let (sx, lx) = input(sx, lx, self.gelu, &mut buf)?;
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
        let x2 = input_tensor(x, self.gelu)?.reshape((n, d_in))?;
        let gb = g.matmul(&b)?; // (n, r)
                                // The first layer's input (frozen embeddings) needs no gradient.
        let dx = match x.track_op() {
            true => {
                let d = (g.matmul(&self.w)? + gb.matmul(&a)?)?.reshape(x.shape())?;
                Some(input_grad(x, d, self.gelu)?)
            }
            false => None,
        };
        let da = gb.t()?.matmul(&x2)?; // (r, in)
        let h = x2.matmul(&a.t()?)?; // (n, r)
        let db = g.t()?.matmul(&h)?; // (out, r)
        Ok((dx, Some(da), Some(db)))
    }
}

/// A frozen weight (out, in) in the memory layout the fused linear multiplies fastest; same
/// shape and values. gemm packs an operand that is not column-major on the calling thread alone
/// when it spans few rows of its output, and the weight is that operand in the forward x·Wᵀ
/// when stored (out, in), in the backward ∂y·W when stored transposed. On micro-batches (a few
/// hundred rows) that packing halved the speed of every linear with out = 384 (AMD Zen 4,
/// docs/performance.md, "Pool settings and weight layout"); packing over the wider side is shared by the
/// threads. So a weight with in ≥ out is stored transposed (in, out) and used as its (out, in)
/// view, and the forward, which every inference and feature pass runs, never packs it.
pub fn weight_layout(w: &Tensor) -> candle_core::Result<Tensor> {
    let (d_out, d_in) = w.dims2()?;
    if !super::supported(w) || d_in < d_out {
        return w.contiguous();
    }
    let stored_t = w.stride() == [1, d_out] && w.layout().start_offset() == 0;
    if stored_t {
        return Ok(w.clone());
    }
    w.t()?.contiguous()?.t()
}

/// x: (..., in) contiguous f32 on the CPU; w: (out, in); b: (out,). Returns (..., out).
pub fn frozen_linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    linear(x, w, b, None, false)
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
    linear(x, w, b, Some((a_hat, lora_b)), false)
}

/// The layer applied to GELU(z), without keeping GELU(z) (BERT's feed-forward output layer):
/// equal to `linear(gelu(z), ..)` in value and in every gradient.
pub fn linear_of_gelu(
    z: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    lora: Option<(&Tensor, &Tensor)>,
) -> candle_core::Result<Tensor> {
    linear(z, w, b, lora, true)
}

fn linear(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    lora: Option<(&Tensor, &Tensor)>,
    gelu: bool,
) -> candle_core::Result<Tensor> {
    let (w, b) = (w.clone(), b.cloned());
    let x = x.contiguous()?;
    match lora {
        None => x.apply_op1(Frozen { w, b, gelu }),
        Some((a_hat, lora_b)) => x.apply_op3(
            &a_hat.contiguous()?,
            &lora_b.contiguous()?,
            Lora { w, b, gelu },
        ),
    }
}
