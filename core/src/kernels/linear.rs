//! The adapted linear layer as one op: y = x·Wᵀ + b (+ (x·Âᵀ)·Bᵀ), W and b frozen, Â = the LoRA
//! A with λ and the scaling folded into its rows (so λ's gradient flows through Â by candle's
//! autograd on an r × in tensor). One node in the graph instead of eight: the backward pass
//! returns the gradients of x, Â and B and never the full-size gradient of W that candle's
//! matmul would compute, and the forward keeps one (n, out) buffer instead of three.
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Storage, Tensor};

use rayon::prelude::*;

use super::gelu::{gelu_backward, gelu_detached, gelu_values};
use fedp2eft_matmul::{matmul, Mat};

use super::simd::{vectorized, Kernel};
use super::{rows_per_task, zeroed};

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

/// A 2-D view of a tensor's values in whatever strides it has (a transposed weight included).
fn mat<'a>((s, l): &'a (candle_core::StorageRef<'_>, &Layout)) -> candle_core::Result<Mat<'a>> {
    let Storage::Cpu(c) = &**s else {
        candle_core::bail!("linear: tensor is not on the CPU")
    };
    let (rows, cols) = l.shape().dims2()?;
    let st = l.stride();
    Ok(Mat {
        data: &c.as_slice::<f32>()?[l.start_offset()..],
        rows,
        cols,
        row_stride: st[0],
        col_stride: st[1],
    })
}

/// The (n, d) row-major matrix that a contiguous layout of n·d values holds.
fn rows_of<'a>(s: &'a CpuStorage, l: &Layout, n: usize, d: usize) -> candle_core::Result<Mat<'a>> {
    Ok(Mat::row_major(super::slice(s, l)?, n, d))
}

/// dst = a·b, or dst += a·b, on candle's thread count: written straight into dst by gemm, so
/// a sum of products needs no buffer of its own and no element-wise pass.
fn product(dst: &mut [f32], accumulate: bool, a: Mat, b: Mat) -> candle_core::Result<()> {
    matmul(dst, accumulate, a, b, candle_core::utils::get_num_threads())
        .map_err(|e| candle_core::Error::Msg(e.to_string()))
}

/// a·b in a new row-major buffer (zero-filled by the pool, never read by gemm).
fn new_product(a: Mat, b: Mat) -> candle_core::Result<Vec<f32>> {
    let mut dst = zeroed(a.rows * b.cols);
    product(&mut dst, false, a, b)?;
    Ok(dst)
}

fn tensor(v: Vec<f32>, shape: impl Into<Shape>) -> candle_core::Result<Tensor> {
    Tensor::from_vec(v, shape, &candle_core::Device::Cpu)
}

/// y += b, row by row.
struct AddBias<'a> {
    y: &'a mut [f32],
    b: &'a [f32],
}

impl Kernel for AddBias<'_> {
    #[inline(always)]
    fn run(self) {
        for y in self.y.chunks_exact_mut(self.b.len()) {
            y.iter_mut().zip(self.b).for_each(|(y, b)| *y += b);
        }
    }
}

/// Adds the bias (when there is one) to every row of y, on the pool.
fn add_bias(y: &mut [f32], b: Option<&[f32]>) {
    let Some(b) = b.filter(|b| !b.is_empty()) else {
        return;
    };
    let rows = rows_per_task(y.len() / b.len(), b.len()) * b.len();
    y.par_chunks_mut(rows)
        .for_each(|y| vectorized(AddBias { y, b }));
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
        let wg = self.w.storage_and_layout();
        let mut y = new_product(rows_of(s, l, n, d_in)?, mat(&wg)?.t())?;
        let b = bias_vec(&self.b)?;
        add_bias(&mut y, b.as_deref());
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        if !x.track_op() {
            return Ok(None); // e.g. the first layer's input: the embeddings are frozen
        }
        let d_out = self.w.dim(0)?;
        let n = g.elem_count() / d_out;
        let g = g.detach().reshape((n, d_out))?;
        let (gg, wg) = (g.storage_and_layout(), self.w.storage_and_layout());
        let dx = tensor(new_product(mat(&gg)?, mat(&wg)?)?, x.shape())?;
        Ok(Some(input_grad(x, dx, self.gelu)?))
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
        let x = rows_of(sx, lx, n, d_in)?;
        let wg = self.w.storage_and_layout();
        let mut y = new_product(x, mat(&wg)?.t())?;
        let h = new_product(x, rows_of(sa, la, r, d_in)?.t())?; // (n, r)
        product(
            &mut y,
            true,
            Mat::row_major(&h, n, r),
            rows_of(sb, lb, d_out, r)?.t(),
        )?;
        let b = bias_vec(&self.b)?;
        add_bias(&mut y, b.as_deref());
        Ok((CpuStorage::F32(y), shape))
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
        let r = a.dim(0)?;
        let g = g.detach().reshape((n, d_out))?;
        let x2 = input_tensor(x, self.gelu)?.reshape((n, d_in))?;
        let (ag, bg, gg, xg, wg) = (
            a.storage_and_layout(),
            b.storage_and_layout(),
            g.storage_and_layout(),
            x2.storage_and_layout(),
            self.w.storage_and_layout(),
        );
        let (am, bm, gm, xm) = (mat(&ag)?, mat(&bg)?, mat(&gg)?, mat(&xg)?);
        let gb = new_product(gm, bm)?; // (n, r)
        let gbm = Mat::row_major(&gb, n, r);
        // The first layer's input (frozen embeddings) needs no gradient.
        let dx = match x.track_op() {
            true => {
                let mut d = new_product(gm, mat(&wg)?)?;
                product(&mut d, true, gbm, am)?;
                Some(input_grad(x, tensor(d, x.shape())?, self.gelu)?)
            }
            false => None,
        };
        let da = tensor(new_product(gbm.t(), xm)?, (r, d_in))?;
        let h = new_product(xm, am.t())?; // (n, r)
        let db = tensor(new_product(gm.t(), Mat::row_major(&h, n, r))?, (d_out, r))?;
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
