//! Personalization methods behind one interface. A method decides, for one client and budget,
//! which adapters the base model gets and how the one training loop trains them (objective,
//! step hook, per-matrix learning rates); `personalize` then fine-tunes, merges and evaluates
//! whatever the method built. LoRA, BT-LoRA, FedP²EFT and its structure-only arm, AdaLoRA and
//! FedL2P live here, each in its own file or folder.
pub mod adalora;
pub mod bt_lora;
pub mod choice;
pub mod fedl2p;
pub mod fedp2eft;
pub mod lora;

pub use adalora::{AdaLora, AdaLoraConfig};
pub use bt_lora::{learn_lambda, BtLora, LearnedLambda, BASELINE_LAMBDA_INIT};
pub use choice::{build, Inputs, MethodKind};
pub use fedl2p::{Fedl2p, Fedl2pConfig, LrNet, LrNetMeta};
pub use fedp2eft::Fedp2eft;
pub use lora::Lora;

use crate::adapter::{AdapterInit, LoraConfig};
use crate::control::Control;
use crate::model::SeqClassifier;
use crate::prune::{select_top_by, RankPlan};
use crate::train::{Dataset, NoHook, Objective, Params, StepHook};
use crate::Result;

/// One client as a method sees it: the base model, its encoded training split and the budget.
pub struct Client<'a> {
    pub base: &'a SeqClassifier,
    pub train: &'a Dataset<'a>,
    /// r: average rank per layer, r·L ranks in all (already checked against `lora.r`).
    pub budget: usize,
    /// r_max, α and the seed of the A init.
    pub lora: &'a LoraConfig,
    /// Optimiser steps of the fine-tune to come (AdaLoRA's budget schedule spans them).
    pub steps: usize,
    pub ctl: &'a Control,
}

/// What a method hands the training loop for one client.
pub struct Setup {
    /// A copy of the base model carrying the method's adapters.
    pub model: SeqClassifier,
    /// The kept ranks of every layer and their λ.
    pub plan: RankPlan,
    pub params: Params,
    pub objective: Objective,
    /// Work after every optimiser step (rank reallocation); `NoHook` for most methods.
    pub hook: Box<dyn StepHook>,
    /// Seconds of the structure choice spent on the client's features (FedP²EFT).
    pub features_s: f64,
}

pub trait Method {
    /// The name in reports and tables.
    fn name(&self) -> &str;
    /// Refuses a base model or LoRA config the method cannot serve, before any work is done.
    fn check(&self, _base: &SeqClassifier, _lora: &LoraConfig) -> Result<()> {
        Ok(())
    }
    /// The adapters for this client and budget, and how to train them.
    fn setup(&self, client: &Client) -> Result<Setup>;
}

/// The pruned-LoRA family's setup: keep the r·L ranks that rank highest by `key` (`lambda`
/// itself when None), each with its λ frozen, A from the seeded base init and B = 0, trained
/// with cross-entropy alone.
pub fn pruned(client: &Client, lambda: &[f32], key: Option<&[f32]>) -> Result<Setup> {
    let base = client.base;
    let plan = select_top_by(
        key.unwrap_or(lambda),
        lambda,
        base.num_adapted(),
        client.lora.r,
        client.budget,
    )?;
    let mut model = base.clone();
    model.clear_adapters();
    AdapterInit::new(base, client.lora.clone())?.install(
        &mut model,
        &plan.keep,
        &plan.lambda,
        false,
    )?;
    Ok(Setup {
        params: Params::adapters(&model),
        model,
        plan,
        objective: Objective::CrossEntropy,
        hook: Box::new(NoHook),
        features_s: 0.0,
    })
}
