//! AdaLoRA's settings as the authors ran it (method.md §6): peft's AdaLoraConfig with
//! init_r = 1.5 × target_r, deltaT 1, orth_reg_weight 0.1, tinit / tfinal = 10 % / 30 % of the
//! fine-tune's steps (`set_adalora_steps`), peft defaults elsewhere (β1 = β2 = 0.85,
//! lora_alpha 8), fine-tuned at lr 1e-3.
use serde::{Deserialize, Serialize};

use super::AllocatorConfig;
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaLoraConfig {
    /// init_r = ⌈init_mul · target_r⌉ (the authors: 1.5, i.e. 24 / 12 / 6 / 3 for 16 / 8 / 4 / 2).
    pub init_mul: f64,
    /// peft's scaling is lora_alpha / (init_r + 1e-5), init_r fixed even after pruning.
    pub lora_alpha: f64,
    pub orth_reg_weight: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// tinit = ⌊tinit_frac · total steps⌋, tfinal likewise (the authors' int()).
    pub tinit_frac: f64,
    pub tfinal_frac: f64,
    pub delta_t: usize,
    /// The fine-tune's learning rate of A, E and B (on_evaluate.lr).
    pub lr: f64,
    /// Seed of the N(0, 0.02) init of A and B.
    pub seed: u64,
}

impl Default for AdaLoraConfig {
    fn default() -> Self {
        Self {
            init_mul: 1.5,
            lora_alpha: 8.0,
            orth_reg_weight: 0.1,
            beta1: 0.85,
            beta2: 0.85,
            tinit_frac: 0.1,
            tfinal_frac: 0.3,
            delta_t: 1,
            lr: 1e-3,
            seed: 42,
        }
    }
}

impl AdaLoraConfig {
    pub fn init_r(&self, target_r: usize) -> usize {
        (self.init_mul * target_r as f64).ceil() as usize
    }

    /// The allocator's settings for a fine-tune of `total_step` optimiser steps.
    pub fn allocator(&self, target_r: usize, total_step: usize) -> Result<AllocatorConfig> {
        let fracs = [self.tinit_frac, self.tfinal_frac];
        if self.init_mul < 1.0 || fracs.iter().any(|f| !(0.0..1.0).contains(f)) {
            return Err(Error::Config(format!(
                "AdaLoRA needs init_mul ≥ 1 and tinit / tfinal fractions in [0, 1) ({self:?})"
            )));
        }
        Ok(AllocatorConfig {
            target_r,
            tinit: (self.tinit_frac * total_step as f64) as usize,
            tfinal: (self.tfinal_frac * total_step as f64) as usize,
            delta_t: self.delta_t,
            beta1: self.beta1,
            beta2: self.beta2,
            total_step,
        })
    }
}
