//! Building blocks of the encoder that are not linear layers: layer norm, softmax, embeddings.
//! Fused candle kernels are used when no gradient flows through the op (they have no backward);
//! the composite forms are used when one does.
use candle_core::{DType, Tensor, D};

use super::word_table::WordTable;
use crate::kernels;
use crate::Result;

#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    /// LN(a + x): the post-LN residual block, fused on the CPU.
    pub fn forward_residual(&self, a: &Tensor, x: &Tensor) -> Result<Tensor> {
        if kernels::supported(x) && !self.weight.track_op() && !self.bias.track_op() {
            return Ok(kernels::add_layer_norm(
                a,
                x,
                &self.weight,
                &self.bias,
                self.eps,
            )?);
        }
        self.forward(&(a + x)?)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if kernels::supported(x) && !self.weight.track_op() && !self.bias.track_op() {
            return Ok(kernels::layer_norm(x, &self.weight, &self.bias, self.eps)?);
        }
        if !x.track_op() && x.is_contiguous() {
            return Ok(candle_nn::ops::layer_norm(
                x,
                &self.weight,
                &self.bias,
                self.eps as f32,
            )?);
        }
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let xn = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(xn.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)?)
    }
}

/// Softmax over the last dimension.
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    if !x.track_op() {
        return Ok(candle_nn::ops::softmax_last_dim(&x.contiguous()?)?);
    }
    Ok(candle_nn::ops::softmax(x, D::Minus1)?)
}

/// Word + position + token-type embeddings followed by layer norm.
#[derive(Debug, Clone)]
pub struct Embeddings {
    /// (vocab, hidden); frozen: it dominates memory and barely moves under fine-tuning.
    /// Compact for large vocabularies (`build::F16_WORD_TABLE_MIN`), else f32.
    pub word: WordTable,
    pub position: Tensor,
    pub token_type: Tensor,
    pub norm: LayerNorm,
    pub first_position: usize,
}

impl Embeddings {
    /// ids: (batch, seq) u32 → (batch, seq, hidden)
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let hidden = self.word.dims()[1];
        let words = self.word.lookup(&ids.flatten_all()?)?;
        let words = words.reshape((b, t, hidden))?;
        let pos = self.position.narrow(0, self.first_position, t)?; // (seq, hidden)
        let tt = self.token_type.get(0)?; // every input is a single segment
        let x = words.broadcast_add(&pos)?.broadcast_add(&tt)?;
        self.norm.forward(&x)
    }
}

/// Additive attention bias (batch, 1, 1, seq): 0 for tokens, a large negative for padding.
pub fn attention_bias(mask: &Tensor) -> Result<Tensor> {
    let (b, t) = mask.dims2()?;
    let m = mask.to_dtype(DType::F32)?;
    let bias = ((m - 1.0)? * 1e9)?;
    Ok(bias.reshape((b, 1, 1, t))?)
}
