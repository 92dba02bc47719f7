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
    /// LoRA A and B (and AdaLoRA's singular values E, trained at the same lr).
    pub ab: Vec<Var>,
    /// Learning rate of each `ab` entry, same order (a method's per-matrix learning rates:
    /// FedL2P's); empty = `TrainConfig::lr_ab` for all.
    pub ab_lr: Vec<f64>,
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
    /// CE + `weight` × AdaLoRA's orthogonal regulariser over every adapter's A and B.
    Orthogonal {
        weight: f64,
    },
}

impl Objective {
    /// Snapshots the current B of every adapter as the Laplace centre. A copy, not `detach()`:
    /// a detached tensor shares the variable's storage, which the optimiser updates in place,
    /// and |B − B0| would then stay zero.
    pub fn bayes_tune(model: &SeqClassifier, priors: PriorConfig, n: usize) -> Result<Self> {
        let b0 = model
            .linears()
            .iter()
            .map(|l| {
                l.adapter
                    .as_ref()
                    .map(|a| a.b.as_tensor().copy())
                    .transpose()
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Objective::BayesTune { priors, b0, n })
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
        Objective::Orthogonal { weight } => {
            let pairs: Vec<(&Tensor, &Tensor)> = model
                .linears()
                .into_iter()
                .filter_map(|l| l.adapter.as_ref())
                .map(|a| (a.a.as_tensor(), a.b.as_tensor()))
                .collect();
            let penalty = crate::method::adalora::orthogonal_penalty(&pairs)?;
            Ok(((&ce + (penalty * *weight)?)?, ce))
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

/// One batch's loss with what it covered.
pub struct BatchLoss {
    pub loss: Tensor,
    pub size: usize,
    pub tokens: usize,
}

/// What the loop trains on: a set of examples and the loss of any subset of them.
pub trait Task {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn loss(&self, idx: &[usize]) -> Result<BatchLoss>;
}

/// The usual task: a model, encoded examples and an objective.
pub struct ModelTask<'a> {
    pub model: &'a SeqClassifier,
    pub data: &'a Dataset<'a>,
    pub objective: &'a Objective,
}

impl Task for ModelTask<'_> {
    fn len(&self) -> usize {
        self.data.examples.len()
    }
    fn loss(&self, idx: &[usize]) -> Result<BatchLoss> {
        let b = make_batch(
            self.data.examples,
            idx,
            self.data.pad_id,
            self.model.device(),
        )?;
        let (loss, _ce) = batch_loss(self.model, &b.ids, &b.mask, &b.labels, self.objective)?;
        Ok(BatchLoss {
            loss,
            size: b.size,
            tokens: b.tokens,
        })
    }
}

/// What a method does after every optimiser step (e.g. AdaLoRA's importance scores and rank
/// masking). The variables already hold the updated values; `grads` are the step's gradients
/// (after clipping), `step` counts from 1 to `total`.
pub trait StepHook {
    fn after_step(&mut self, step: usize, total: usize, grads: &GradStore) -> Result<()>;
    /// The rank indices each layer holds at the end, when the hook changed them (AdaLoRA).
    fn kept(&self) -> Option<Vec<Vec<usize>>> {
        None
    }
}

/// No per-step work (every method but the ones that reallocate ranks while training).
pub struct NoHook;

impl StepHook for NoHook {
    fn after_step(&mut self, _: usize, _: usize, _: &GradStore) -> Result<()> {
        Ok(())
    }
}

/// One AdamW per distinct learning rate of `params.ab_lr` (AdamW is element-wise, so the split
/// changes nothing but the learning rate).
fn ab_optimisers(params: &Params, cfg: &TrainConfig) -> Result<Vec<AdamW>> {
    if params.ab_lr.is_empty() {
        return Ok(vec![adamw(params.ab.clone(), cfg.lr_ab, cfg)?]);
    }
    if params.ab_lr.len() != params.ab.len() {
        return Err(Error::Mismatch(format!(
            "{} learning rates for {} A/B matrices",
            params.ab_lr.len(),
            params.ab.len()
        )));
    }
    if let Some(m) = params.ab_lr.iter().find(|m| !m.is_finite() || **m < 0.0) {
        return Err(Error::Config(format!(
            "learning rate {m} is not a finite value ≥ 0"
        )));
    }
    let mut groups: Vec<(f64, Vec<Var>)> = Vec::new();
    for (v, &m) in params.ab.iter().zip(&params.ab_lr) {
        match groups.iter_mut().find(|(g, _)| *g == m) {
            Some((_, vars)) => vars.push(v.clone()),
            None => groups.push((m, vec![v.clone()])),
        }
    }
    groups
        .into_iter()
        .map(|(lr, vars)| adamw(vars, lr, cfg))
        .collect()
}

/// One batch's loss value and gradients, with what it covered.
struct BatchGradients {
    loss: f32,
    grads: GradStore,
    size: usize,
    tokens: usize,
}

/// The loss and gradients of the batch `idx`, computed `micro` examples at a time when that is
/// fewer (a whole batch is one part, weighted by exactly 1). Each part's loss is weighted by its
/// share of the batch: a task's loss is a mean over
/// its examples plus terms that do not depend on them (the priors), so the weighted parts sum
/// to the batch's loss and their gradients to its gradient, while only one part's activations
/// are alive at a time. A non-finite part stops the batch at once.
fn batch_gradients(task: &dyn Task, idx: &[usize], micro: Option<usize>) -> Result<BatchGradients> {
    let micro = micro.unwrap_or(idx.len()).max(1);
    let mut out = BatchGradients {
        loss: 0.0,
        grads: GradStore::default(),
        size: 0,
        tokens: 0,
    };
    let mut loss = 0f64;
    for part in idx.chunks(micro) {
        let b = task.loss(part)?;
        let weighted = (b.loss * (part.len() as f64 / idx.len() as f64))?;
        let value = weighted.to_scalar::<f32>()?;
        loss += f64::from(value);
        out.size += b.size;
        out.tokens += b.tokens;
        if !value.is_finite() {
            out.loss = value;
            return Ok(out);
        }
        out.grads.extend(weighted.backward()?)?;
    }
    out.loss = loss as f32;
    Ok(out)
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
    let task = ModelTask {
        model,
        data,
        objective,
    };
    run(&task, cfg, params, phase, ctl)
}

/// The loop itself: seeded shuffling per epoch, AdamW per parameter group, clipping of A/B and
/// base gradients (never λ), a typed stop on a non-finite loss, progress and cancellation.
pub fn run(
    task: &dyn Task,
    cfg: &TrainConfig,
    params: &Params,
    phase: &str,
    ctl: &Control,
) -> Result<TrainReport> {
    run_with(task, cfg, params, &mut NoHook, phase, ctl)
}

/// [`run`] with a method's hook after every optimiser step.
pub fn run_with(
    task: &dyn Task,
    cfg: &TrainConfig,
    params: &Params,
    hook: &mut dyn StepHook,
    phase: &str,
    ctl: &Control,
) -> Result<TrainReport> {
    let _compute = crate::runtime::enter();
    if task.is_empty() {
        return Err(Error::EmptyData(format!(
            "no training examples for {phase}"
        )));
    }
    let start = std::time::Instant::now();
    let mut opt_ab = ab_optimisers(params, cfg)?;
    let mut opt_lambda = adamw(params.lambda.clone(), cfg.lr_lambda, cfg)?;
    let mut opt_base = adamw(params.base.clone(), cfg.lr_base, cfg)?;
    let clipped: Vec<Var> = params.ab.iter().chain(&params.base).cloned().collect();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..task.len()).collect();
    let per_epoch = task.len().div_ceil(cfg.batch_size.max(1));
    let total = per_epoch * cfg.epochs;
    let mut report = TrainReport::default();
    for _epoch in 0..cfg.epochs {
        order.shuffle(&mut rng);
        let mut epoch_loss = 0f64;
        for idx in chunks(&order, cfg.batch_size) {
            ctl.cancel.check()?;
            let b = batch_gradients(task, idx, cfg.micro_batch)?;
            let value = b.loss;
            if !value.is_finite() {
                return Err(Error::NonFiniteLoss {
                    phase: phase.to_string(),
                    step: report.steps,
                    value,
                });
            }
            let mut grads = b.grads;
            if let Some(max) = cfg.max_grad_norm {
                clip_grad_norm(&mut grads, &clipped, max)?;
            }
            for opt in &mut opt_ab {
                opt.step(&grads)?;
            }
            opt_lambda.step(&grads)?;
            opt_base.step(&grads)?;
            report.steps += 1;
            hook.after_step(report.steps, total, &grads)?;
            report.examples_seen += b.size;
            report.tokens_seen += b.tokens;
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

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// Loss Σ (v − 1)² over all variables; every index is one "example".
    struct Quadratic(Vec<Var>);

    impl Task for Quadratic {
        fn len(&self) -> usize {
            4
        }
        fn loss(&self, idx: &[usize]) -> Result<BatchLoss> {
            let mut total = Tensor::zeros((), candle_core::DType::F32, &Device::Cpu)?;
            for v in &self.0 {
                total = (total + (v.as_tensor() - 1.0)?.sqr()?.sum_all()?)?;
            }
            Ok(BatchLoss {
                loss: total,
                size: idx.len(),
                tokens: idx.len(),
            })
        }
    }

    struct Count {
        steps: Vec<(usize, usize)>,
        watched: Var,
        saw_grad: bool,
    }

    impl StepHook for Count {
        fn after_step(&mut self, step: usize, total: usize, grads: &GradStore) -> Result<()> {
            self.steps.push((step, total));
            self.saw_grad |= grads.get(self.watched.as_tensor()).is_some();
            Ok(())
        }
    }

    fn vars() -> Result<(Var, Var)> {
        let a = Var::from_slice(&[0f32, 2.0], 2, &Device::Cpu)?;
        let b = Var::from_slice(&[0f32, 2.0], 2, &Device::Cpu)?;
        Ok((a, b))
    }

    fn values(v: &Var) -> Result<Vec<f32>> {
        Ok(v.as_tensor().to_vec1::<f32>()?)
    }

    /// Trains fresh a and b with these learning rates; their values after.
    fn fit(cfg: &TrainConfig, ab_lr: Vec<f64>) -> Result<(Vec<f32>, Vec<f32>)> {
        let (a, b) = vars()?;
        let params = Params {
            ab: vec![a.clone(), b.clone()],
            ab_lr,
            ..Default::default()
        };
        let task = Quadratic(vec![a.clone(), b.clone()]);
        run(&task, cfg, &params, "t", &Control::default())?;
        Ok((values(&a)?, values(&b)?))
    }

    #[test]
    fn per_matrix_learning_rates_set_the_step_and_the_hook_sees_every_step() -> Result<()> {
        let cfg = TrainConfig {
            epochs: 2,
            batch_size: 2,
            lr_ab: 0.1,
            max_grad_norm: None,
            weight_decay: 0.0,
            ..TrainConfig::default()
        };
        let (a, b) = vars()?;
        let params = Params {
            ab: vec![a.clone(), b.clone()],
            ab_lr: vec![0.1, 0.0],
            ..Default::default()
        };
        let mut hook = Count {
            steps: Vec::new(),
            watched: a.clone(),
            saw_grad: false,
        };
        let task = Quadratic(vec![a.clone(), b.clone()]);
        let report = run_with(&task, &cfg, &params, &mut hook, "t", &Control::default())?;
        assert_eq!(report.steps, 4);
        assert_eq!(hook.steps, vec![(1, 4), (2, 4), (3, 4), (4, 4)]);
        assert!(hook.saw_grad);
        assert_eq!(values(&b)?, vec![0.0, 2.0], "learning rate 0 freezes b");
        // Against Adam by hand on one element: g = 2(v − 1), bias-corrected moments.
        let (mut v, mut m, mut s2) = (0f64, 0f64, 0f64);
        for t in 1..=4 {
            let g = 2.0 * (v - 1.0);
            m = cfg.beta1 * m + (1.0 - cfg.beta1) * g;
            s2 = cfg.beta2 * s2 + (1.0 - cfg.beta2) * g * g;
            let m_hat = m / (1.0 - cfg.beta1.powi(t));
            let s_hat = s2 / (1.0 - cfg.beta2.powi(t));
            v -= cfg.lr_ab * m_hat / (s_hat.sqrt() + cfg.eps);
        }
        let moved = values(&a)?;
        assert!((f64::from(moved[0]) - v).abs() < 1e-5, "{moved:?} vs {v}");
        assert!((f64::from(moved[1]) - (2.0 - v)).abs() < 1e-5, "{moved:?}");

        // lr 0.2 on both equals lr_ab 0.2 without per-matrix rates.
        let cfg2 = TrainConfig {
            lr_ab: 0.2,
            ..cfg.clone()
        };
        assert_eq!(fit(&cfg, vec![0.2, 0.2])?, fit(&cfg2, Vec::new())?);

        let with = |ab_lr: Vec<f64>| Params {
            ab: vec![a.clone()],
            ab_lr,
            ..Default::default()
        };
        let task = Quadratic(vec![a.clone()]);
        let ctl = Control::default();
        assert!(matches!(
            run(&task, &cfg, &with(vec![1.0, 1.0]), "t", &ctl),
            Err(Error::Mismatch(_))
        ));
        assert!(matches!(
            run(&task, &cfg, &with(vec![-1.0]), "t", &ctl),
            Err(Error::Config(_))
        ));
        Ok(())
    }
}
