//! FedL2P's settings as the authors ran it on MasakhaNEWS (`configs/masakha/masakha_fedl2p.yaml`,
//! `ClampLRNet`, method.md §6).
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fedl2pConfig {
    /// Width of both hidden layers of the meta-net (ClampLRNet: 100).
    pub hidden: usize,
    /// Xavier-normal gain of the three linears and their bias (0.1 and 1.0).
    pub init_gain: f64,
    pub init_bias: f64,
    /// Straight-through clamp of the meta-net's output (0 … 1000).
    pub clamp_max: f64,
    /// Initial base learning rate of every matrix (`inner_loop_lr` 1e-4, learnable).
    pub inner_lr_init: f64,
    /// Share of a client's training split held out for the outer loss (`val_ratio` 0.2).
    pub val_ratio: f64,
    /// Outer steps per round, each after a full inner fine-tune from the same init (3).
    pub outer_steps: usize,
    /// Validation examples behind each outer loss (`outer_loop_grad_accum` 16 batches of 1).
    pub val_examples: usize,
    /// Adam learning rates of the meta-net (1e-4) and of the base learning rates (1e-6).
    pub meta_lr: f64,
    pub inner_lr_lr: f64,
    /// Norm clip of each meta gradient group (HF Trainer's max_grad_norm 1.0).
    pub meta_max_grad_norm: f64,
    /// Seed of the meta-net's init and of the train / validation split.
    pub seed: u64,
}

impl Default for Fedl2pConfig {
    fn default() -> Self {
        Self {
            hidden: 100,
            init_gain: 0.1,
            init_bias: 1.0,
            clamp_max: 1000.0,
            inner_lr_init: 1e-4,
            val_ratio: 0.2,
            outer_steps: 3,
            val_examples: 16,
            meta_lr: 1e-4,
            inner_lr_lr: 1e-6,
            meta_max_grad_norm: 1.0,
            seed: 42,
        }
    }
}

impl Fedl2pConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Config(format!("FedL2P: {what}")));
        if self.hidden == 0 || self.outer_steps == 0 || self.val_examples == 0 {
            return bad("hidden, outer_steps and val_examples must be > 0");
        }
        if !(self.val_ratio > 0.0 && self.val_ratio < 1.0) {
            return bad("val_ratio must lie in (0, 1)");
        }
        let rates = [
            self.init_gain,
            self.clamp_max,
            self.inner_lr_init,
            self.meta_lr,
            self.inner_lr_lr,
            self.meta_max_grad_norm,
        ];
        if rates.iter().any(|v| !v.is_finite() || *v <= 0.0) || !self.init_bias.is_finite() {
            return bad("gains, clamp, learning rates and clip norm must be finite and > 0");
        }
        Ok(())
    }
}
