//! Learning λ on one client with BayesTune (CE + Laplace/Gamma priors): the BT-LoRA baseline,
//! and stage 1 of a FedP²EFT round (there λ starts from the PSG instead of 1e-4).
use serde::Serialize;

use super::{pruned, Client, Method, Setup};
use crate::adapter::{read_lambda, AdapterInit, PriorConfig};
use crate::control::Control;
use crate::model::SeqClassifier;
use crate::train::{train, Dataset, Objective, Params, TrainConfig, TrainReport};
use crate::Result;

/// λ init of the BT-LoRA baseline for every rank (authors' 1e-4).
pub const BASELINE_LAMBDA_INIT: f32 = 1e-4;

/// The outcome of stage 1.
#[derive(Debug, Clone, Serialize)]
pub struct LearnedLambda {
    /// RAW final λ, L·r_max values in module order (the stage-2 target).
    pub raw: Vec<f32>,
    pub report: TrainReport,
}

impl LearnedLambda {
    /// λ clamped to [min, max]: what the BT-LoRA baseline stores.
    pub fn clamped(&self, priors: &PriorConfig) -> Vec<f32> {
        priors.clamp_lambda(&self.raw)
    }
}

/// Installs full BT-LoRA (r_max on every layer) with λ = `lambda_init` on a copy of `base`,
/// trains A, B and λ with the BayesTune objective, and returns the learned λ. `base` itself
/// is never changed.
pub fn learn_lambda(
    base: &SeqClassifier,
    train_set: &Dataset,
    init: &AdapterInit,
    lambda_init: &[f32],
    cfg: &TrainConfig,
    priors: &PriorConfig,
    ctl: &Control,
) -> Result<LearnedLambda> {
    let mut model = base.clone();
    model.clear_adapters();
    init.install_full(&mut model, lambda_init)?;
    let params = Params::adapters(&model);
    let objective = Objective::bayes_tune(&model, *priors, train_set.examples.len())?;
    let report = train(&model, train_set, cfg, &params, &objective, "bt-lora", ctl)?;
    Ok(LearnedLambda {
        raw: read_lambda(&model, init.config.r)?,
        report,
    })
}

/// The BT-LoRA baseline: λ learned on this client by [`learn_lambda`], pruned with the clamped
/// values (what the authors store), ties among them broken by the raw values, then fine-tuned
/// with λ frozen.
pub struct BtLora<'a> {
    /// The raw learned λ (L·r_max values).
    pub raw: &'a [f32],
    pub priors: &'a PriorConfig,
}

impl Method for BtLora<'_> {
    fn name(&self) -> &str {
        "BT-LoRA"
    }

    fn setup(&self, client: &Client) -> Result<Setup> {
        pruned(client, &self.priors.clamp_lambda(self.raw), Some(self.raw))
    }
}
