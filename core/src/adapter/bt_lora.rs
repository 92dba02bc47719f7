//! The BT-LoRA adapter: ΔW = (α/r_max)·B·diag(λ)·A, with plain LoRA as the same layer whose λ is
//! fixed at one. λ multiplies the rank bottleneck RAW in the forward pass (as the authors' code
//! does); positivity is enforced only in the priors and on the PSG output.
use candle_core::{Device, Tensor, Var};
use rand::Rng;

use crate::Result;

/// λ is either a trained variable (stage 1, BT-LoRA baseline) or a frozen tensor (fine-tune
/// after pruning, plain LoRA with λ = 1).
#[derive(Debug, Clone)]
pub enum Lambda {
    Trainable(Var),
    Fixed(Tensor),
}

impl Lambda {
    pub fn tensor(&self) -> &Tensor {
        match self {
            Lambda::Trainable(v) => v.as_tensor(),
            Lambda::Fixed(t) => t,
        }
    }
}

/// One low-rank adapter on a linear layer of shape (out, in).
#[derive(Debug, Clone)]
pub struct BtLora {
    /// (r, in): kaiming-uniform at init, as peft's default.
    pub a: Var,
    /// (out, r): zero at init, so the adapted model starts equal to the base.
    pub b: Var,
    /// (r,): rank-wise scales.
    pub lambda: Lambda,
    /// α / r_max; deliberately NOT recomputed after pruning (authors' code keeps it).
    pub scaling: f64,
    /// Which of the r_max candidate ranks this adapter still holds (all of them before pruning).
    pub ranks: Vec<usize>,
}

/// Draws the seed-fixed base init of A for all r_max ranks of one layer: U(±1/√in), which is
/// kaiming_uniform(a=√5) for a fan-in of `in`.
pub fn init_a(r: usize, d_in: usize, rng: &mut impl Rng, device: &Device) -> Result<Tensor> {
    let bound = 1.0 / (d_in as f32).sqrt();
    let data: Vec<f32> = (0..r * d_in)
        .map(|_| rng.random_range(-bound..bound))
        .collect();
    Ok(Tensor::from_vec(data, (r, d_in), device)?)
}

impl BtLora {
    /// A fresh adapter from a given A init (r, in), B = 0 and λ of length r.
    pub fn new(a_init: &Tensor, d_out: usize, lambda: Lambda, scaling: f64) -> Result<Self> {
        let r = a_init.dim(0)?;
        let b = Tensor::zeros((d_out, r), a_init.dtype(), a_init.device())?;
        Ok(Self {
            a: Var::from_tensor(a_init)?,
            b: Var::from_tensor(&b)?,
            lambda,
            scaling,
            ranks: (0..r).collect(),
        })
    }

    pub fn rank(&self) -> usize {
        self.ranks.len()
    }

    /// The adapter branch for x of shape (n, in): ((x·Aᵀ)·diag(λ))·Bᵀ·scaling, without ever
    /// materialising ΔW.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = x.matmul(&self.a.as_tensor().t()?)?; // (n, r)
                                                     // The scaling joins λ on the r-wide bottleneck rather than costing a pass over (n, out).
        let h = h.broadcast_mul(&(self.lambda.tensor() * self.scaling)?)?;
        Ok(h.matmul(&self.b.as_tensor().t()?)?) // (n, out)
    }

    /// Â = diag(λ·scaling)·A, shape (r, in): the branch is then (x·Âᵀ)·Bᵀ. Differentiable in
    /// A and (when trainable) λ.
    pub fn a_hat(&self) -> Result<Tensor> {
        let s = (self.lambda.tensor() * self.scaling)?.unsqueeze(1)?;
        Ok(self.a.as_tensor().broadcast_mul(&s)?)
    }

    /// ΔW = ((λ ⊙_col B)·A)·scaling, shape (out, in).
    pub fn delta_weight(&self) -> Result<Tensor> {
        let bl = self.b.as_tensor().broadcast_mul(self.lambda.tensor())?;
        Ok((bl.matmul(self.a.as_tensor())? * self.scaling)?)
    }

    /// Keeps only the listed positions (indices into this adapter's current ranks), in order.
    pub fn select(&self, keep: &[usize], lambda: Lambda) -> Result<Self> {
        let dev = self.a.device();
        let idx = Tensor::from_vec(
            keep.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            keep.len(),
            dev,
        )?;
        let a = self.a.as_tensor().index_select(&idx, 0)?;
        let b = self.b.as_tensor().index_select(&idx, 1)?;
        Ok(Self {
            a: Var::from_tensor(&a)?,
            b: Var::from_tensor(&b)?,
            lambda,
            scaling: self.scaling,
            ranks: keep.iter().map(|&i| self.ranks[i]).collect(),
        })
    }
}
