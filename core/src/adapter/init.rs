//! The seed-fixed base LoRA init shared by every run on a model (the authors call
//! `torch.manual_seed(42)` before `get_peft_model`), and installing adapters from it.
use candle_core::{Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::bt_lora::{init_a, BtLora, Lambda};
use crate::model::SeqClassifier;
use crate::{Error, Result};

/// LoRA hyper-parameters (PEFT field names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// r_max: candidate ranks per layer before pruning (32 in the paper's runs).
    pub r: usize,
    /// Scaling is lora_alpha / r (64 / 32 = 2), kept after pruning.
    pub lora_alpha: f64,
    /// Seed of A's kaiming-uniform init.
    pub seed: u64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: 32,
            lora_alpha: 64.0,
            seed: 42,
        }
    }
}

impl LoraConfig {
    pub fn scaling(&self) -> f64 {
        self.lora_alpha / self.r as f64
    }
}

/// A of every adapted layer for all r_max ranks (B starts at zero), in module order.
#[derive(Debug, Clone)]
pub struct AdapterInit {
    pub config: LoraConfig,
    /// (r_max, in) per layer.
    pub a: Vec<Tensor>,
}

impl AdapterInit {
    pub fn new(model: &SeqClassifier, config: LoraConfig) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let dev = model.device();
        let a = model
            .linears()
            .iter()
            .map(|l| init_a(config.r, l.in_features(), &mut rng, dev))
            .collect::<Result<_>>()?;
        Ok(Self { config, a })
    }

    /// Installs one adapter per layer with the given ranks: `ranks[l]` lists rank indices of
    /// layer l (empty = no adapter) and `lambda[l]` their values. A rows come from the init,
    /// B columns are zero.
    pub fn install(
        &self,
        model: &mut SeqClassifier,
        ranks: &[Vec<usize>],
        lambda: &[Vec<f32>],
        trainable_lambda: bool,
    ) -> Result<()> {
        let layers = model.num_adapted();
        if ranks.len() != layers || lambda.len() != layers {
            return Err(Error::Mismatch(format!(
                "rank plan covers {} layers, the model has {layers}",
                ranks.len()
            )));
        }
        let scaling = self.config.scaling();
        for ((lin, a), (keep, lam)) in model
            .linears_mut()
            .into_iter()
            .zip(&self.a)
            .zip(ranks.iter().zip(lambda))
        {
            if keep.is_empty() {
                lin.adapter = None;
                continue;
            }
            if keep.len() != lam.len() || keep.iter().any(|&k| k >= self.config.r) {
                return Err(Error::Mismatch(format!("bad rank plan for {}", lin.name)));
            }
            let dev = a.device();
            let lam_t = Tensor::from_slice(lam, lam.len(), dev)?;
            let lambda = if trainable_lambda {
                Lambda::Trainable(Var::from_tensor(&lam_t)?)
            } else {
                Lambda::Fixed(lam_t)
            };
            let full = BtLora::new(a, lin.out_features(), lambda.clone(), scaling)?;
            lin.adapter = Some(if keep.len() == self.config.r {
                full
            } else {
                full.select(keep, lambda)?
            });
        }
        Ok(())
    }

    /// Full BT-LoRA on every layer, λ (L·r_max, flat, module order) trainable: stage 1.
    pub fn install_full(&self, model: &mut SeqClassifier, lambda: &[f32]) -> Result<()> {
        let r = self.config.r;
        let layers = model.num_adapted();
        if lambda.len() != layers * r {
            return Err(Error::Mismatch(format!(
                "λ has {} values, L·r_max = {}",
                lambda.len(),
                layers * r
            )));
        }
        let ranks = vec![(0..r).collect::<Vec<_>>(); layers];
        let lams: Vec<Vec<f32>> = lambda.chunks(r).map(<[f32]>::to_vec).collect();
        self.install(model, &ranks, &lams, true)
    }
}

/// Reads λ of every adapter back as L·r_max values (0 for ranks a layer does not hold).
pub fn read_lambda(model: &SeqClassifier, r_max: usize) -> Result<Vec<f32>> {
    let mut out = vec![0f32; model.num_adapted() * r_max];
    for (l, lin) in model.linears().iter().enumerate() {
        if let Some(ad) = &lin.adapter {
            let v = ad
                .lambda
                .tensor()
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()?;
            for (&rank, x) in ad.ranks.iter().zip(v) {
                out[l * r_max + rank] = x;
            }
        }
    }
    Ok(out)
}
