//! The BayesTune regularisers of stage 1, exactly as the authors' loss:
//!   sig = w_sig · Σ_m Σ_{i,j} |B_m[i,j] − B0_m[i,j]| / λc_m[j] / N      (Laplace prior on B)
//!   sp  = w_sp  · Σ_m Σ_j (β·λc_m[j] + log λc_m[j]) / N                 (Gamma hyper-prior)
//! with λc = clamp_ste(λ, min, max): clamped values forward, identity gradient backward.
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::Result;

/// Weights and constants of the two prior terms (authors' defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PriorConfig {
    /// Weight of the Laplace term on B ("significance" in the authors' code: 100).
    pub w_sig: f64,
    /// Weight of the Gamma term on λ ("sparsity" in the authors' code: 0.01).
    pub w_sp: f64,
    /// Rate β of the Gamma hyper-prior, hard-coded 100 by the authors.
    pub gamma_rate: f64,
    /// Straight-through clamp bounds applied to λ inside the priors only.
    pub clamp_min: f64,
    pub clamp_max: f64,
}

impl Default for PriorConfig {
    fn default() -> Self {
        Self {
            w_sig: 100.0,
            w_sp: 0.01,
            gamma_rate: 100.0,
            clamp_min: 1e-4,
            clamp_max: 1000.0,
        }
    }
}

impl PriorConfig {
    /// λ clamped to [clamp_min, clamp_max]: what the BT-LoRA baseline stores and prunes with.
    pub fn clamp_lambda(&self, raw: &[f32]) -> Vec<f32> {
        let (lo, hi) = (self.clamp_min as f32, self.clamp_max as f32);
        raw.iter().map(|x| x.clamp(lo, hi)).collect()
    }
}

/// Clamp with a straight-through gradient: forward = clamp(x), backward = identity.
pub fn clamp_ste(x: &Tensor, min: f64, max: f64) -> Result<Tensor> {
    let c = x.clamp(min, max)?;
    Ok((x + (c - x)?.detach())?)
}

/// One adapter's contribution to the priors: B, its value at the start of training, and λ.
pub struct PriorTerm<'a> {
    pub b: &'a Tensor,
    pub b0: &'a Tensor,
    pub lambda: &'a Tensor,
}

/// Returns (laplace, gamma) terms, each already weighted and divided by `n` samples.
pub fn prior_terms(terms: &[PriorTerm], n: usize, cfg: &PriorConfig) -> Result<(Tensor, Tensor)> {
    let mut sig: Option<Tensor> = None;
    let mut sp: Option<Tensor> = None;
    for t in terms {
        let lc = clamp_ste(t.lambda, cfg.clamp_min, cfg.clamp_max)?;
        let s = (t.b - t.b0)?.abs()?.broadcast_div(&lc)?.sum_all()?;
        let g = ((&lc * cfg.gamma_rate)? + lc.log()?)?.sum_all()?;
        sig = Some(match sig {
            Some(acc) => (acc + s)?,
            None => s,
        });
        sp = Some(match sp {
            Some(acc) => (acc + g)?,
            None => g,
        });
    }
    let scale = 1.0 / n.max(1) as f64;
    let dev = terms
        .first()
        .map(|t| t.b.device().clone())
        .unwrap_or(candle_core::Device::Cpu);
    let zero = || Tensor::new(0f32, &dev);
    let sig = match sig {
        Some(s) => s,
        None => zero()?,
    };
    let sp = match sp {
        Some(s) => s,
        None => zero()?,
    };
    Ok(((sig * (cfg.w_sig * scale))?, (sp * (cfg.w_sp * scale))?))
}
