//! The one training loop: AdamW with separate learning rates for A/B, λ and base weights,
//! constant schedule, gradient clipping on A/B (and base) only, seeded shuffling, padding-aware
//! batches, and a cross-entropy or BayesTune (CE + priors) objective.
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::batch::{chunks, make_batch, Dataset};
use super::TrainConfig;
use crate::adapter::{prior_terms, PriorConfig, PriorTerm};
use crate::control::{Control, Progress, Stage};
use crate::model::SeqClassifier;
use crate::{Error, Result};

/// The variables to update, by optimiser group.
#[derive(Default, Clone)]
pub struct Params {
    /// LoRA A and B.
    pub ab: Vec<Var>,
    /// λ of BT-LoRA (never clipped).
    pub lambda: Vec<Var>,
    /// Base-model weights (base-model training only).
    pub base: Vec<Var>,
}

impl Params {
    /// A, B and trainable λ of every adapter of the model.
    pub fn adapters(model: &SeqClassifier) -> Self {
        let mut p = Self::default();
        for l in model.linears() {
            if let Some(a) = &l.adapter {
                p.ab.push(a.a.clone());
                p.ab.push(a.b.clone());
                if let crate::adapter::Lambda::Trainable(v) = &a.lambda {
                    p.lambda.push(v.clone());
                }
            }
        }
        p
    }
}

/// The loss being minimised.
pub enum Objective {
    CrossEntropy,
    /// CE + Laplace prior on B (centred at `b0`, one per adapted layer in module order, `None`
    /// where a layer has no adapter) + Gamma prior on λ, divided by `n` local samples.
    BayesTune {
        priors: PriorConfig,
        b0: Vec<Option<Tensor>>,
        n: usize,
    },
}

impl Objective {
    /// Snapshots the current B of every adapter as the Laplace centre.
    pub fn bayes_tune(model: &SeqClassifier, priors: PriorConfig, n: usize) -> Self {
        let b0 = model
            .linears()
            .iter()
            .map(|l| l.adapter.as_ref().map(|a| a.b.as_tensor().detach()))
            .collect();
        Objective::BayesTune { priors, b0, n }
    }
}

/// What a training run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TrainReport {
    pub steps: usize,
    pub examples_seen: usize,
    pub tokens_seen: usize,
    /// Mean total loss of each epoch.
    pub epoch_loss: Vec<f32>,
    pub seconds: f64,
}

/// Loss of one batch under `objective`: returns (total, cross-entropy).
pub fn batch_loss(
    model: &SeqClassifier,
    ids: &Tensor,
    mask: &Tensor,
    labels: &Tensor,
    objective: &Objective,
) -> Result<(Tensor, Tensor)> {
    let logits = model.forward(ids, mask)?;
    let ce = candle_nn::loss::cross_entropy(&logits, labels)?;
    match objective {
        Objective::CrossEntropy => Ok((ce.clone(), ce)),
        Objective::BayesTune { priors, b0, n } => {
            let mut terms = Vec::new();
            for (l, b0) in model.linears().into_iter().zip(b0) {
                if let (Some(a), Some(b0)) = (&l.adapter, b0) {
                    terms.push(PriorTerm {
                        b: a.b.as_tensor(),
                        b0,
                        lambda: a.lambda.tensor(),
                    });
                }
            }
            let (sig, sp) = prior_terms(&terms, *n, priors)?;
            Ok((((&ce + sig)? + sp)?, ce))
        }
    }
}

fn adamw(vars: Vec<Var>, lr: f64, cfg: &TrainConfig) -> Result<AdamW> {
    Ok(AdamW::new(
        vars,
        ParamsAdamW {
            lr,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
        },
    )?)
}

/// Scales the gradients of `vars` so their joint L2 norm is at most `max_norm` (torch's
/// clip_grad_norm_: coefficient max_norm / (norm + 1e-6), only when below one).
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    let mut sq = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            sq += g
                .sqr()?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
        }
    }
    let norm = sq.sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for v in vars {
            if let Some(g) = grads.remove(v.as_tensor()) {
                grads.insert(v.as_tensor(), (g * coef)?);
            }
        }
    }
    Ok(norm)
}

/// Trains `params` of `model` on `data` for `cfg.epochs` epochs.
pub fn train(
    model: &SeqClassifier,
    data: &Dataset,
    cfg: &TrainConfig,
    params: &Params,
    objective: &Objective,
    phase: &str,
    ctl: &Control,
) -> Result<TrainReport> {
    let dev = model.device();
    let (pad_id, data) = (data.pad_id, data.examples);
    if data.is_empty() {
        return Err(Error::EmptyData(format!(
            "no training examples for {phase}"
        )));
    }
    let start = std::time::Instant::now();
    let mut opt_ab = adamw(params.ab.clone(), cfg.lr_ab, cfg)?;
    let mut opt_lambda = adamw(params.lambda.clone(), cfg.lr_lambda, cfg)?;
    let mut opt_base = adamw(params.base.clone(), cfg.lr_base, cfg)?;
    let clipped: Vec<Var> = params.ab.iter().chain(&params.base).cloned().collect();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..data.len()).collect();
    let per_epoch = data.len().div_ceil(cfg.batch_size.max(1));
    let total = per_epoch * cfg.epochs;
    let mut report = TrainReport::default();
    for _epoch in 0..cfg.epochs {
        order.shuffle(&mut rng);
        let mut epoch_loss = 0f64;
        for idx in chunks(&order, cfg.batch_size) {
            ctl.cancel.check()?;
            let batch = make_batch(data, idx, pad_id, dev)?;
            let (loss, _ce) = batch_loss(model, &batch.ids, &batch.mask, &batch.labels, objective)?;
            let value = loss.to_scalar::<f32>()?;
            if !value.is_finite() {
                return Err(Error::NonFiniteLoss {
                    phase: phase.to_string(),
                    step: report.steps,
                    value,
                });
            }
            let mut grads = loss.backward()?;
            if let Some(max) = cfg.max_grad_norm {
                clip_grad_norm(&mut grads, &clipped, max)?;
            }
            opt_ab.step(&grads)?;
            opt_lambda.step(&grads)?;
            opt_base.step(&grads)?;
            report.steps += 1;
            report.examples_seen += batch.size;
            report.tokens_seen += batch.tokens;
            epoch_loss += value as f64;
            ctl.report(Progress {
                stage: Stage::Train,
                phase: phase.to_string(),
                done: report.steps,
                total,
                loss: Some(value),
            });
        }
        report
            .epoch_loss
            .push((epoch_loss / per_epoch as f64) as f32);
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}
