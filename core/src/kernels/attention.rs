//! Scaled dot-product attention over all heads as one op: ctx = softmax(scale·Q·Kᵀ + mask)·V,
//! with q, k, v and ctx in the (batch, seq, hidden) layout of the linear layers. Composed of
//! candle ops it is fifteen graph nodes per layer (head reshapes, transposes, copies, two batched
//! matmuls, the softmax), each of which costs a zero-filled gradient buffer and an extra pass in
//! the backward; here it is one node, and the probabilities are the only state kept.
//!
//! One parallel task per batch element does its heads one after another: the scores of a head
//! (queries × keys) are computed, normalised and multiplied by V while they are in cache, and
//! every operand is read in place from the (seq, hidden) slabs (no split or merge copies).
use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Device, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::simd::{vectorized, Kernel};
use super::softmax::{softmax_grad_row, softmax_row};
use super::tile::{matmul, transpose, Out, View};
use super::{slice, zeroed};

/// The sizes of one call.
#[derive(Clone, Copy)]
struct Dims {
    heads: usize,
    /// Head width.
    hd: usize,
    /// Hidden size, heads · hd: the row stride of every slab.
    h: usize,
    queries: usize,
    keys: usize,
    scale: f32,
}

struct Attention {
    heads: usize,
    scale: f64,
    /// (batch · keys) additive mask: 0 for tokens, a large negative for padding.
    bias: Vec<f32>,
    /// The probabilities (batch, heads, queries, keys), kept for the backward pass (training).
    probs: Option<Mutex<Option<Vec<f32>>>>,
}

impl Attention {
    fn dims(&self, b: usize, queries: usize, keys: usize, h: usize) -> candle_core::Result<Dims> {
        if h % self.heads != 0 || self.bias.len() != b * keys {
            candle_core::bail!(
                "attention: hidden {h} over {} heads, mask of {} values for {b} × {keys} keys",
                self.heads,
                self.bias.len()
            );
        }
        Ok(Dims {
            heads: self.heads,
            hd: h / self.heads,
            h,
            queries,
            keys,
            scale: self.scale as f32,
        })
    }
}

/// One batch element's forward: ctx (queries, h) from q (queries, h), k and v (keys, h). The
/// probabilities of head i go to `probs[i · stride..]` (stride 0: one scratch reused).
struct Forward<'a> {
    d: Dims,
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    bias: &'a [f32],
    ctx: &'a mut [f32],
    probs: &'a mut [f32],
    stride: usize,
    /// (hd, keys) scratch for a head's Kᵀ.
    kt: &'a mut [f32],
}

impl Kernel for Forward<'_> {
    #[inline(always)]
    fn run(self) {
        let Dims {
            heads,
            hd,
            h,
            queries: tq,
            keys: t,
            scale,
        } = self.d;
        for head in 0..heads {
            let col = head * hd;
            let off = head * self.stride;
            transpose(self.k, col, h, t, hd, self.kt);
            let mut s = Out {
                data: &mut *self.probs,
                off,
                rs: t,
            };
            matmul(
                tq,
                t,
                hd,
                View::rows(self.q, col, h),
                View::rows(self.kt, 0, t),
                &mut s,
            );
            for row in self.probs[off..off + tq * t].chunks_exact_mut(t) {
                softmax_row(row, self.bias, scale);
            }
            let p = View::rows(self.probs, off, t);
            let mut ctx = Out {
                data: &mut *self.ctx,
                off: col,
                rs: h,
            };
            matmul(tq, hd, t, p, View::rows(self.v, col, h), &mut ctx);
        }
    }
}

/// One batch element's backward from the kept probabilities p (heads, queries, keys) and the
/// output gradient g (queries, h): dq (queries, h), dk and dv (keys, h).
struct Backward<'a> {
    d: Dims,
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    p: &'a [f32],
    g: &'a [f32],
    dq: &'a mut [f32],
    dk: &'a mut [f32],
    dv: &'a mut [f32],
    /// (hd, keys) scratch for a head's Vᵀ.
    vt: &'a mut [f32],
    /// (queries, keys) scratch for the gradient of a head's scores.
    ds: &'a mut [f32],
}

impl Kernel for Backward<'_> {
    #[inline(always)]
    fn run(self) {
        let Dims {
            heads,
            hd,
            h,
            queries: tq,
            keys: t,
            scale,
        } = self.d;
        for head in 0..heads {
            let col = head * hd;
            let off = head * tq * t;
            let g = View::rows(self.g, col, h);
            // dV = Pᵀ·G
            matmul(
                t,
                hd,
                tq,
                View::transposed(self.p, off, t),
                g,
                &mut head_cols(self.dv, col, h),
            );
            // dP = G·Vᵀ, then dS = scale · P ⊙ (dP − Σ dP ⊙ P) row by row.
            transpose(self.v, col, h, t, hd, self.vt);
            let mut ds = Out {
                data: &mut *self.ds,
                off: 0,
                rs: t,
            };
            matmul(tq, t, hd, g, View::rows(self.vt, 0, t), &mut ds);
            let p = &self.p[off..off + tq * t];
            for (d, p) in self.ds.chunks_exact_mut(t).zip(p.chunks_exact(t)) {
                softmax_grad_row(d, p, scale);
            }
            // dQ = dS·K, dK = dSᵀ·Q
            let k = View::rows(self.k, col, h);
            matmul(
                tq,
                hd,
                t,
                View::rows(self.ds, 0, t),
                k,
                &mut head_cols(self.dq, col, h),
            );
            let q = View::rows(self.q, col, h);
            matmul(
                t,
                hd,
                tq,
                View::transposed(self.ds, 0, t),
                q,
                &mut head_cols(self.dk, col, h),
            );
        }
    }
}

/// A head's columns (from `col`) of a (seq, h) slab, as a product's output.
#[inline(always)]
fn head_cols(data: &mut [f32], col: usize, h: usize) -> Out<'_> {
    Out {
        data,
        off: col,
        rs: h,
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn cpu_fwd(
        &self,
        sq: &CpuStorage,
        lq: &Layout,
        sk: &CpuStorage,
        lk: &Layout,
        sv: &CpuStorage,
        lv: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, tq, h) = lq.shape().dims3()?;
        let (bk, t, hk) = lk.shape().dims3()?;
        if lk.shape() != lv.shape() || bk != b || hk != h {
            candle_core::bail!(
                "attention: q {:?}, k {:?}, v {:?}",
                lq.shape(),
                lk.shape(),
                lv.shape()
            );
        }
        let d = self.dims(b, tq, t, h)?;
        let (q, k, v) = (slice(sq, lq)?, slice(sk, lk)?, slice(sv, lv)?);
        let mut ctx = zeroed(b * tq * h);
        let task =
            |bi: usize, ctx: &mut [f32], probs: &mut [f32], stride: usize, kt: &mut [f32]| {
                vectorized(Forward {
                    d,
                    q: &q[bi * tq * h..(bi + 1) * tq * h],
                    k: &k[bi * t * h..(bi + 1) * t * h],
                    v: &v[bi * t * h..(bi + 1) * t * h],
                    bias: &self.bias[bi * t..(bi + 1) * t],
                    ctx,
                    probs,
                    stride,
                    kt,
                })
            };
        let kt = || vec![0f32; d.hd * t];
        match &self.probs {
            Some(keep) => {
                let mut probs = zeroed(b * d.heads * tq * t);
                ctx.par_chunks_mut(tq * h)
                    .zip(probs.par_chunks_mut(d.heads * tq * t))
                    .enumerate()
                    .for_each_init(kt, |kt, (bi, (ctx, p))| task(bi, ctx, p, tq * t, kt));
                *keep
                    .lock()
                    .map_err(|_| candle_core::Error::Msg("attention: poisoned".into()))? =
                    Some(probs);
            }
            None => {
                ctx.par_chunks_mut(tq * h).enumerate().for_each_init(
                    || (kt(), vec![0f32; tq * t]),
                    |(kt, p), (bi, ctx)| task(bi, ctx, p, 0, kt),
                );
            }
        }
        Ok((CpuStorage::F32(ctx), Shape::from((b, tq, h))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _ctx: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let p = self
            .probs
            .as_ref()
            .and_then(|m| m.lock().ok().and_then(|mut p| p.take()))
            .ok_or_else(|| candle_core::Error::Msg("attention: no probabilities kept".into()))?;
        let (b, tq, h) = q.dims3()?;
        let t = k.dim(1)?;
        let d = self.dims(b, tq, t, h)?;
        let g = g.contiguous()?;
        let (gs, qs, ks, vs) = (
            g.storage_and_layout(),
            q.storage_and_layout(),
            k.storage_and_layout(),
            v.storage_and_layout(),
        );
        let (g, q, k, v) = (
            cpu(&gs.0, gs.1)?,
            cpu(&qs.0, qs.1)?,
            cpu(&ks.0, ks.1)?,
            cpu(&vs.0, vs.1)?,
        );
        let (mut dq, mut dk, mut dv) = (zeroed(b * tq * h), zeroed(b * t * h), zeroed(b * t * h));
        let (nq, nk, np) = (tq * h, t * h, d.heads * tq * t);
        dq.par_chunks_mut(nq)
            .zip(dk.par_chunks_mut(nk).zip(dv.par_chunks_mut(nk)))
            .enumerate()
            .for_each_init(
                || (vec![0f32; d.hd * t], vec![0f32; tq * t]),
                |(vt, ds), (bi, (dq, (dk, dv)))| {
                    vectorized(Backward {
                        d,
                        q: &q[bi * nq..(bi + 1) * nq],
                        k: &k[bi * nk..(bi + 1) * nk],
                        v: &v[bi * nk..(bi + 1) * nk],
                        p: &p[bi * np..(bi + 1) * np],
                        g: &g[bi * nq..(bi + 1) * nq],
                        dq,
                        dk,
                        dv,
                        vt,
                        ds,
                    })
                },
            );
        let tensor = |x: Vec<f32>, n: usize| Tensor::from_vec(x, (b, n, h), &Device::Cpu);
        Ok((
            Some(tensor(dq, tq)?),
            Some(tensor(dk, t)?),
            Some(tensor(dv, t)?),
        ))
    }
}

/// The contiguous f32 values of a CPU tensor's storage.
fn cpu<'a>(s: &'a Storage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match s {
        Storage::Cpu(c) => slice(c, l),
        _ => candle_core::bail!("attention: tensor is not on the CPU"),
    }
}

/// Multi-head attention. q: (batch, queries, hidden), k and v: (batch, keys, hidden),
/// mask: (batch, 1, 1, keys) additive. Differentiable in q, k and v.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    heads: usize,
    scale: f64,
) -> candle_core::Result<Tensor> {
    let training = q.track_op() || k.track_op() || v.track_op();
    let op = Attention {
        heads,
        scale,
        bias: mask.flatten_all()?.to_vec1::<f32>()?,
        probs: training.then(|| Mutex::new(None)),
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}
