//! A frozen linear layer that can carry a BT-LoRA adapter, and optionally report its input
//! statistics (the PSG features) while the model runs.
use candle_core::{Tensor, Var};

use crate::adapter::BtLora;
use crate::features::FeatureStats;
use crate::kernels;
use crate::Result;

/// `y = x·Wᵀ + b (+ adapter(x))`. The base weight is a plain tensor, so it gets no gradient,
/// unless `make_trainable` turned it into a variable (base-model training).
#[derive(Debug, Clone)]
pub struct AdaptedLinear {
    /// Hugging Face module name, e.g. `encoder.layer.0.attention.self.query`.
    pub name: String,
    /// Position of this layer in module order: the index of its PSG feature and λ chunk.
    pub index: usize,
    /// (out, in), in the layout of [`kernels::weight_layout`]: set through `set_weight`.
    weight: Tensor,
    pub bias: Option<Tensor>,
    pub adapter: Option<BtLora>,
    trainable: Option<(Var, Option<Var>)>,
}

impl AdaptedLinear {
    pub fn new(name: String, index: usize, weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        Ok(Self {
            name,
            index,
            weight: kernels::weight_layout(&weight)?,
            bias,
            adapter: None,
            trainable: None,
        })
    }

    /// The frozen base weight (out, in); possibly a transposed view (see `set_weight`).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Replaces the frozen base weight (out, in), stored in the layout the fused linear
    /// multiplies fastest (`kernels::weight_layout`).
    pub fn set_weight(&mut self, weight: &Tensor) -> Result<()> {
        self.weight = kernels::weight_layout(weight)?;
        Ok(())
    }

    pub fn in_features(&self) -> usize {
        self.weight.dims()[1]
    }
    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }

    /// x: (..., in) → (..., out). Records the input's statistics into `stats` when given.
    pub fn forward(&self, x: &Tensor, stats: Option<&mut FeatureStats>) -> Result<Tensor> {
        if let Some(s) = stats {
            s.record(self.index, x)?;
        }
        if self.trainable.is_none() && kernels::supported(x) {
            // Frozen base: one fused op, which never differentiates W.
            let (w, b) = (&self.weight, self.bias.as_ref());
            return Ok(match &self.adapter {
                None => kernels::frozen_linear(x, w, b)?,
                Some(ad) => kernels::lora_linear(x, w, b, &ad.a_hat()?, ad.b.as_tensor())?,
            });
        }
        let dims = x.dims().to_vec();
        let d_in = dims[dims.len() - 1];
        let n = x.elem_count() / d_in;
        let x2 = x.reshape((n, d_in))?; // (tokens, in)
        let (w, b) = self.base_weights();
        let mut y = x2.matmul(&w.t()?)?;
        if let Some(b) = b {
            y = y.broadcast_add(b)?;
        }
        if let Some(ad) = &self.adapter {
            y = (y + ad.forward(&x2)?)?;
        }
        let mut out_dims = dims;
        let last = out_dims.len() - 1;
        out_dims[last] = self.out_features();
        Ok(y.reshape(out_dims)?)
    }

    /// forward(GELU(z)), without keeping GELU(z) for the backward pass on the CPU.
    pub fn forward_gelu(&self, z: &Tensor, stats: Option<&mut FeatureStats>) -> Result<Tensor> {
        if stats.is_none() && self.trainable.is_none() && kernels::supported(z) {
            let lora = match &self.adapter {
                Some(ad) => Some((ad.a_hat()?, ad.b.as_tensor().clone())),
                None => None,
            };
            let lora = lora.as_ref().map(|(a, b)| (a, b));
            return Ok(kernels::linear_of_gelu(
                z,
                &self.weight,
                self.bias.as_ref(),
                lora,
            )?);
        }
        let a = if kernels::supported(z) {
            kernels::gelu(z)?
        } else {
            z.gelu_erf()?
        };
        self.forward(&a, stats)
    }

    /// The base weight (out, in) and bias as they are now: the training variables while
    /// `make_trainable` is in effect, else the frozen tensors. Never includes the adapter.
    pub fn base_weights(&self) -> (&Tensor, Option<&Tensor>) {
        match &self.trainable {
            Some((w, b)) => (w.as_tensor(), b.as_ref().map(|b| b.as_tensor())),
            None => (&self.weight, self.bias.as_ref()),
        }
    }

    /// Turns the base weight (and bias) into variables for full fine-tuning of the base model.
    pub fn make_trainable(&mut self) -> Result<Vec<Var>> {
        let w = Var::from_tensor(&self.weight)?;
        let b = self.bias.as_ref().map(Var::from_tensor).transpose()?;
        let mut vars = vec![w.clone()];
        vars.extend(b.clone());
        self.trainable = Some((w, b));
        Ok(vars)
    }

    /// Copies trained variables back into the frozen weights and drops the variables.
    /// Never fails: a weight that cannot be re-laid out (out of memory) is kept as trained,
    /// which computes the same, only slower.
    pub fn freeze(&mut self) {
        if let Some((w, b)) = self.trainable.take() {
            let w = w.as_tensor().detach();
            self.weight = kernels::weight_layout(&w).unwrap_or(w);
            self.bias = b.map(|b| b.as_tensor().detach());
        }
    }

    /// W ← W + ΔW, removing the adapter: the merged layer computes the same function.
    pub fn merge(&mut self) -> Result<()> {
        self.freeze();
        if let Some(ad) = self.adapter.take() {
            let merged = (&self.weight + ad.delta_weight()?)?.detach();
            self.set_weight(&merged)?;
        }
        Ok(())
    }
}
