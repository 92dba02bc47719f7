//! Scaled dot-product attention over all heads as one op: ctx = softmax(scale·Q·Kᵀ + mask)·V,
//! with q, k, v and ctx in the (batch, seq, hidden) layout of the linear layers. Composed of
//! candle ops it is fifteen graph nodes per layer (head reshapes, transposes, copies, two batched
//! matmuls, the softmax), each of which costs a zero-filled gradient buffer and an extra pass in
//! the backward; here it is one node, and the probabilities are the only state kept.
use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Device, Layout, Shape, Tensor};

use super::slice;
use super::softmax::{masked_softmax, softmax_grad};

struct Attention {
    heads: usize,
    scale: f64,
    /// (batch, 1, 1, keys) additive mask.
    mask: Tensor,
    /// The probabilities (batch·heads, queries, keys), kept for the backward pass (training).
    probs: Option<Mutex<Option<Tensor>>>,
}

/// (b, t, heads·hd) → (b·heads, t, hd), contiguous.
fn split_heads(x: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (b, t, h) = x.dims3()?;
    x.reshape((b, t, heads, h / heads))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b * heads, t, h / heads))
}

/// (b·heads, t, hd) → (b, t, heads·hd), contiguous.
fn merge_heads(x: &Tensor, b: usize) -> candle_core::Result<Tensor> {
    let (bh, t, hd) = x.dims3()?;
    let heads = bh / b;
    x.reshape((b, heads, t, hd))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, t, heads * hd))
}

fn tensor(s: &CpuStorage, l: &Layout) -> candle_core::Result<Tensor> {
    Tensor::from_slice(slice(s, l)?, l.shape(), &Device::Cpu)
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
        let (b, _, h) = lq.shape().dims3()?;
        if lk.shape() != lv.shape() || lk.shape().dims3()?.2 != h || h % self.heads != 0 {
            candle_core::bail!(
                "attention: q {:?}, k {:?}, v {:?}",
                lq.shape(),
                lk.shape(),
                lv.shape()
            );
        }
        let q = split_heads(&tensor(sq, lq)?, self.heads)?;
        let k = split_heads(&tensor(sk, lk)?, self.heads)?;
        let v = split_heads(&tensor(sv, lv)?, self.heads)?;
        let (bh, tq, _) = q.dims3()?;
        let t = k.dim(1)?;
        let scores = q.matmul(&k.t()?)?.reshape((b, self.heads, tq, t))?;
        let probs = masked_softmax(&scores, &self.mask, self.scale)?.reshape((bh, tq, t))?;
        let ctx = merge_heads(&probs.matmul(&v)?, b)?;
        if let Some(keep) = &self.probs {
            *keep
                .lock()
                .map_err(|_| candle_core::Error::Msg("attention: poisoned".into()))? = Some(probs);
        }
        let out = ctx.flatten_all()?.to_vec1::<f32>()?;
        Ok((CpuStorage::F32(out), Shape::from((b, tq, h))))
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
        let b = q.dim(0)?;
        let (q, k, v) = (
            split_heads(&q.detach(), self.heads)?,
            split_heads(&k.detach(), self.heads)?,
            split_heads(&v.detach(), self.heads)?,
        );
        let g = split_heads(&g.detach(), self.heads)?; // (bh, tq, hd)
        let dv = p.t()?.matmul(&g)?; // (bh, t, hd)
        let dp = g.matmul(&v.t()?)?; // (bh, tq, t)
        let ds = softmax_grad(&p, &dp, self.scale)?; // d(scores before scaling)
        let dq = ds.matmul(&k)?;
        let dk = ds.t()?.matmul(&q)?;
        Ok((
            Some(merge_heads(&dq, b)?),
            Some(merge_heads(&dk, b)?),
            Some(merge_heads(&dv, b)?),
        ))
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
        mask: mask.clone(),
        probs: training.then(|| Mutex::new(None)),
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}
