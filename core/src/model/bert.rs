//! A BERT-family (BERT, XLM-R) post-LN encoder with a sequence-classification head
//! (pooler + classifier, as `BertForSequenceClassification`), every Linear adapted.
use candle_core::{Tensor, D};

use super::layers::{attention_bias, softmax_last, Embeddings, LayerNorm};
use super::linear::AdaptedLinear;
use super::BertConfig;
use crate::features::FeatureStats;
use crate::kernels;
use crate::Result;

#[derive(Debug, Clone)]
pub struct EncoderLayer {
    pub query: AdaptedLinear,
    pub key: AdaptedLinear,
    pub value: AdaptedLinear,
    pub attn_out: AdaptedLinear,
    pub attn_norm: LayerNorm,
    pub intermediate: AdaptedLinear,
    pub output: AdaptedLinear,
    pub out_norm: LayerNorm,
    pub num_heads: usize,
}

impl EncoderLayer {
    /// x: (batch, seq, hidden); bias: (batch, 1, 1, seq)
    fn forward(
        &self,
        x: &Tensor,
        bias: &Tensor,
        stats: Option<&mut FeatureStats>,
    ) -> Result<Tensor> {
        self.forward_queries(x, x, bias, stats)
    }

    /// The layer's output at the positions of `xq` (a prefix of x's positions: all of them, or
    /// only the first token when nothing downstream reads the others). Keys and values come
    /// from every position of `x`.
    fn forward_queries(
        &self,
        xq: &Tensor,
        x: &Tensor,
        bias: &Tensor,
        mut stats: Option<&mut FeatureStats>,
    ) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let tq = xq.dim(1)?;
        let hd = h / self.num_heads;
        let q = self.query.forward(xq, stats.as_deref_mut())?;
        let k = self.key.forward(x, stats.as_deref_mut())?;
        let v = self.value.forward(x, stats.as_deref_mut())?;
        let scale = 1.0 / (hd as f64).sqrt();
        let ctx = if kernels::supported(&q) {
            kernels::attention(&q, &k, &v, bias, self.num_heads, scale)?
        } else {
            let heads = |y: Tensor, t: usize| -> Result<Tensor> {
                Ok(y.reshape((b, t, self.num_heads, hd))?
                    .transpose(1, 2)?
                    .contiguous()?) // (batch, heads, seq, head_dim)
            };
            let (q, k, v) = (heads(q, tq)?, heads(k, t)?, heads(v, t)?);
            let scores = (q.matmul(&k.t()?)? * scale)?;
            let probs = softmax_last(&scores.broadcast_add(bias)?)?; // (batch, heads, seq, seq)
            probs.matmul(&v)?.transpose(1, 2)?.reshape((b, tq, h))?
        };
        let a = self.attn_out.forward(&ctx, stats.as_deref_mut())?;
        let x = self.attn_norm.forward_residual(&a, xq)?;
        let i = self.intermediate.forward(&x, stats.as_deref_mut())?;
        let o = self.output.forward_gelu(&i, stats)?;
        self.out_norm.forward_residual(&o, &x)
    }
}

/// Encoder + pooler + classifier.
#[derive(Debug, Clone)]
pub struct SeqClassifier {
    /// Human-readable source of the weights (e.g. `multilingual-e5-small`), part of `model_id`.
    pub name: String,
    pub config: BertConfig,
    pub embeddings: Embeddings,
    pub layers: Vec<EncoderLayer>,
    pub pooler: AdaptedLinear,
    pub classifier: AdaptedLinear,
}

/// Outputs of one forward pass.
pub struct EncoderOutput {
    /// (batch, seq, hidden)
    pub last_hidden: Tensor,
    /// (batch, hidden): tanh(dense(first token))
    pub pooled: Tensor,
    /// (batch, num_labels)
    pub logits: Tensor,
}

impl SeqClassifier {
    pub fn device(&self) -> &candle_core::Device {
        self.embeddings.word.device()
    }

    /// Identifies the base model a PSG or λ belongs to: name, architecture, L and head size.
    pub fn model_id(&self) -> String {
        format!(
            "{}|{}|L{}|h{}|labels{}",
            self.name,
            self.config.model_type,
            self.num_adapted(),
            self.config.hidden_size,
            self.num_labels()
        )
    }

    pub fn num_labels(&self) -> usize {
        self.classifier.out_features()
    }

    /// ids, mask: (batch, seq) u32. Records PSG feature statistics when `stats` is given.
    pub fn forward_all(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        mut stats: Option<&mut FeatureStats>,
    ) -> Result<EncoderOutput> {
        let _compute = crate::runtime::enter();
        let bias = attention_bias(mask)?;
        let mut x = self.embeddings.forward(ids)?;
        for layer in &self.layers {
            x = layer.forward(&x, &bias, stats.as_deref_mut())?;
        }
        let first = x.narrow(1, 0, 1)?.squeeze(1)?; // (batch, hidden)
        let pooled = self.pooler.forward(&first, stats.as_deref_mut())?.tanh()?;
        let logits = self.classifier.forward(&pooled, stats)?;
        Ok(EncoderOutput {
            last_hidden: x,
            pooled,
            logits,
        })
    }

    /// Logits (batch, num_labels). Equal to `forward_all(..).logits`, but the last layer runs
    /// its queries, attention output and feed-forward for the first token only: the pooler
    /// reads nothing else (a sixth of MiniLM's linear FLOPs, a twelfth of e5-small's).
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let _compute = crate::runtime::enter();
        let Some((last, rest)) = self.layers.split_last() else {
            return Ok(self.forward_all(ids, mask, None)?.logits);
        };
        let bias = attention_bias(mask)?;
        let mut x = self.embeddings.forward(ids)?;
        for layer in rest {
            x = layer.forward(&x, &bias, None)?;
        }
        let first = x.narrow(1, 0, 1)?;
        let first = last.forward_queries(&first, &x, &bias, None)?.squeeze(1)?;
        let pooled = self.pooler.forward(&first, None)?.tanh()?;
        self.classifier.forward(&pooled, None)
    }

    /// Predicted class per row.
    pub fn predict(&self, ids: &Tensor, mask: &Tensor) -> Result<Vec<u32>> {
        Ok(self
            .forward(ids, mask)?
            .argmax(D::Minus1)?
            .to_vec1::<u32>()?)
    }

    /// Every adapted linear in module order (the order of PSG features and λ chunks).
    pub fn linears(&self) -> Vec<&AdaptedLinear> {
        let mut v = Vec::with_capacity(self.layers.len() * 6 + 2);
        for l in &self.layers {
            v.extend([
                &l.query,
                &l.key,
                &l.value,
                &l.attn_out,
                &l.intermediate,
                &l.output,
            ]);
        }
        v.push(&self.pooler);
        v.push(&self.classifier);
        v
    }

    pub fn linears_mut(&mut self) -> Vec<&mut AdaptedLinear> {
        let mut v = Vec::with_capacity(self.layers.len() * 6 + 2);
        for l in &mut self.layers {
            v.extend([
                &mut l.query,
                &mut l.key,
                &mut l.value,
                &mut l.attn_out,
                &mut l.intermediate,
                &mut l.output,
            ]);
        }
        v.push(&mut self.pooler);
        v.push(&mut self.classifier);
        v
    }

    /// L: the number of adapted linear layers, counted as the authors count peft LoRA modules.
    pub fn num_adapted(&self) -> usize {
        self.layers.len() * 6 + 2
    }

    /// Merges every adapter into its base weight.
    pub fn merge_adapters(&mut self) -> Result<()> {
        for l in self.linears_mut() {
            l.merge()?;
        }
        Ok(())
    }

    /// Removes every adapter (the base model again).
    pub fn clear_adapters(&mut self) {
        for l in self.linears_mut() {
            l.adapter = None;
        }
    }

    /// Parameter counts: (frozen base, adapter).
    pub fn parameter_counts(&self) -> (usize, usize) {
        let e = &self.embeddings;
        let mut base = e.word.elem_count()
            + e.position.elem_count()
            + e.token_type.elem_count()
            + 2 * e.norm.weight.elem_count();
        let mut adapter = 0;
        for l in &self.layers {
            base += 2 * (l.attn_norm.weight.elem_count() + l.out_norm.weight.elem_count());
        }
        for lin in self.linears() {
            base += lin.weight().elem_count() + lin.bias.as_ref().map_or(0, |b| b.elem_count());
            if let Some(a) = &lin.adapter {
                adapter += a.a.elem_count() + a.b.elem_count() + a.rank();
            }
        }
        (base, adapter)
    }
}
