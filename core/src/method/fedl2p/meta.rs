//! One client's FedL2P meta-training (the authors' `FedL2PTrainer.train`): the training split is
//! cut into an inner part and a validation part; `outer_steps` times, LoRA is fine-tuned from the
//! same init on the inner part with the meta-net's per-matrix learning rates η, the loss of a
//! validation batch is taken at the final weights, and the meta-net and the base rates take one
//! Adam step on its gradient.
//!
//! The gradient is first-order through the last inner step (the authors' "FOMAML+" path, their
//! code with `hypergrad: None`): θ_T = θ_{T−1} − η_m·d_m, with d_m the AdamW direction of that
//! step, so ∂L_val/∂η_m = −⟨∇_{θ_m} L_val(θ_T), d_m⟩. The authors' MasakhaNEWS config instead
//! runs their `Hypergrad` (implicit differentiation, 3 Neumann terms), but there the "mixed"
//! derivative ∂²L_train/∂θ∂η is taken through the same last step, i.e. it is H·∂θ_T/∂η, and
//! the result −(∂θ_T/∂η)ᵀ·H·H⁻¹∇L_val ≈ −(∂θ_T/∂η)ᵀ∇L_val is the first-order gradient with its
//! sign flipped (for a 1-D quadratic, −3.44× it): a step that raises the validation loss.
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::LrNet;
use crate::adapter::LoraConfig;
use crate::control::Control;
use crate::method::{Client, Lora, Method};
use crate::model::SeqClassifier;
use crate::train::{
    batch_loss, clip_grad_norm, make_batch, run_with, Dataset, Encoded, ModelTask, Objective,
    StepHook, TrainConfig,
};
use crate::{features, Error, Result};

/// AdamW's update direction of the last step for each variable, tracked beside the optimiser
/// with candle's arithmetic (same moments, same bias correction), so that it is known even for
/// a matrix whose learning rate is 0. Weight decay must be 0 (the authors' inner AdamW).
pub struct LastDirection {
    vars: Vec<Var>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    moments: Vec<Option<(Tensor, Tensor)>>,
    /// d_m of the final step (None for a variable that never had a gradient).
    pub direction: Vec<Option<Tensor>>,
}

impl LastDirection {
    pub fn new(vars: &[Var], cfg: &TrainConfig) -> Result<Self> {
        if cfg.weight_decay != 0.0 {
            return Err(Error::Config(format!(
                "FedL2P's hypergradient assumes an inner AdamW without weight decay, not {}",
                cfg.weight_decay
            )));
        }
        Ok(Self {
            vars: vars.to_vec(),
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            moments: vec![None; vars.len()],
            direction: vec![None; vars.len()],
        })
    }
}

impl StepHook for LastDirection {
    fn after_step(&mut self, step: usize, total: usize, grads: &GradStore) -> Result<()> {
        let (b1, b2) = (self.beta1, self.beta2);
        for (i, var) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let (m, v) = match &self.moments[i] {
                Some((m, v)) => (m.clone(), v.clone()),
                None => (g.zeros_like()?, g.zeros_like()?),
            };
            let m = ((m * b1)? + (g * (1.0 - b1))?)?;
            let v = ((v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            if step == total {
                let m_hat = (&m * (1.0 / (1.0 - b1.powi(step as i32))))?;
                let v_hat = (&v * (1.0 / (1.0 - b2.powi(step as i32))))?;
                self.direction[i] = Some((m_hat / (v_hat.sqrt()? + self.eps)?)?);
            }
            self.moments[i] = Some((m, v));
        }
        Ok(())
    }
}

/// ∂L_val/∂η_m = −⟨∇_{θ_m} L_val, d_m⟩ for every matrix (0 where either is missing).
pub fn lr_gradient(
    vars: &[Var],
    direction: &[Option<Tensor>],
    val: &GradStore,
) -> Result<Vec<f64>> {
    vars.iter()
        .zip(direction)
        .map(|(v, d)| match (val.get(v.as_tensor()), d) {
            (Some(g), Some(d)) => Ok(-f64::from((g * d)?.sum_all()?.to_scalar::<f32>()?)),
            _ => Ok(0.0),
        })
        .collect()
}

/// What one client's meta-training did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MetaReport {
    /// Validation loss at the end of each outer step's inner fine-tune.
    pub val_loss: Vec<f32>,
    /// Mean loss of the inner fine-tune's last epoch, per outer step.
    pub train_loss: Vec<f32>,
    /// Mean learning rate over the 2L matrices after the last meta step, and the share at 0.
    pub mean_lr: f64,
    pub zero_lr_share: f64,
    pub inner_examples: usize,
    pub val_examples: usize,
}

/// A client's data as meta-training needs it.
pub struct MetaClient<'a> {
    pub base: &'a SeqClassifier,
    pub train: &'a Dataset<'a>,
    /// The budget r: LoRA rank on every layer (α from `lora`, as the LoRA baseline).
    pub budget: usize,
    pub lora: &'a LoraConfig,
    /// The inner fine-tune's settings (lr_ab is ignored: the net gives every matrix its own).
    pub fit: &'a TrainConfig,
    pub ctl: &'a Control,
}

/// Meta-trains `net` in place on one client; the caller uploads it afterwards.
pub fn meta_train(net: &LrNet, client: &MetaClient) -> Result<MetaReport> {
    let _compute = crate::runtime::enter();
    let cfg = &net.config;
    let base = client.base;
    net.meta
        .check_compatible(&base.model_id(), base.num_adapted())?;
    let n = client.train.examples.len();
    if n < 2 {
        return Err(Error::EmptyData(format!(
            "FedL2P needs ≥ 2 training examples for an inner and a validation part, got {n}"
        )));
    }
    let n_val = ((n as f64 * cfg.val_ratio).round() as usize).clamp(1, n - 1);
    let x = features::extract(base, client.train, client.ctl)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let pick = |idx: &[usize]| -> Vec<Encoded> {
        idx.iter()
            .map(|&i| client.train.examples[i].clone())
            .collect()
    };
    let (val_enc, inner_enc) = (pick(&order[..n_val]), pick(&order[n_val..]));
    let pad_id = client.train.pad_id;
    let inner = Dataset {
        examples: &inner_enc,
        pad_id,
    };
    let steps = inner_enc.len().div_ceil(client.fit.batch_size.max(1)) * client.fit.epochs;
    let adam = |vars: Vec<Var>, lr: f64| {
        AdamW::new(
            vars,
            ParamsAdamW {
                lr,
                weight_decay: 0.0,
                ..Default::default()
            },
        )
    };
    let mut opt_net = adam(net.net_vars(), cfg.meta_lr)?;
    let mut opt_inner = adam(vec![net.inner_lr.clone()], cfg.inner_lr_lr)?;
    let mut report = MetaReport {
        inner_examples: inner_enc.len(),
        val_examples: n_val.min(cfg.val_examples),
        ..Default::default()
    };
    let mut val_order: Vec<usize> = (0..n_val).collect();
    for _ in 0..cfg.outer_steps {
        client.ctl.cancel.check()?;
        let multipliers = net.forward(&x)?;
        let setup = Lora.setup(&Client {
            base,
            train: &inner,
            budget: client.budget,
            lora: client.lora,
            steps,
            ctl: client.ctl,
        })?;
        let mut params = setup.params;
        if params.ab.len() != 2 * net.meta.num_layers {
            return Err(Error::Mismatch(format!(
                "FedL2P: {} A/B matrices for a meta-net of 2L = {} outputs",
                params.ab.len(),
                2 * net.meta.num_layers
            )));
        }
        params.ab_lr = net.rates(&multipliers)?;
        let mut hook = LastDirection::new(&params.ab, client.fit)?;
        let task = ModelTask {
            model: &setup.model,
            data: &inner,
            objective: &Objective::CrossEntropy,
        };
        let fit = run_with(
            &task,
            client.fit,
            &params,
            &mut hook,
            "fedl2p inner",
            client.ctl,
        )?;
        report
            .train_loss
            .push(fit.epoch_loss.last().copied().unwrap_or(f32::NAN));

        val_order.shuffle(&mut rng);
        let idx = &val_order[..report.val_examples];
        let b = make_batch(&val_enc, idx, pad_id, setup.model.device())?;
        let (val_loss, _) = batch_loss(
            &setup.model,
            &b.ids,
            &b.mask,
            &b.labels,
            &Objective::CrossEntropy,
        )?;
        let v = val_loss.to_scalar::<f32>()?;
        if !v.is_finite() {
            return Err(Error::NonFiniteLoss {
                phase: "fedl2p validation".into(),
                step: report.val_loss.len(),
                value: v,
            });
        }
        report.val_loss.push(v);
        let h = lr_gradient(&params.ab, &hook.direction, &val_loss.backward()?)?;
        meta_step(net, &multipliers, &h, &mut opt_net, &mut opt_inner)?;
    }
    let lrs = net.learning_rates(&x)?;
    report.mean_lr = lrs.iter().sum::<f64>() / lrs.len() as f64;
    report.zero_lr_share = lrs.iter().filter(|&&l| l == 0.0).count() as f64 / lrs.len() as f64;
    Ok(report)
}

/// One Adam step of the net and the base rates on ∂L/∂η (η_m = multiplier_m · base_m), each
/// group's gradient clipped to the configured norm.
pub fn meta_step(
    net: &LrNet,
    multipliers: &Tensor,
    h: &[f64],
    opt_net: &mut AdamW,
    opt_inner: &mut AdamW,
) -> Result<()> {
    let base = net.inner_lr.as_tensor();
    let h = Tensor::from_vec(
        h.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        h.len(),
        multipliers.device(),
    )?;
    // d/dmultiplier = h·base, d/dbase = h·multiplier: a surrogate whose gradient is exactly that.
    let surrogate = ((multipliers * (&h * base.detach())?)?.sum_all()?
        + (base * (&h * multipliers.detach())?)?.sum_all()?)?;
    let mut grads = surrogate.backward()?;
    let max = net.config.meta_max_grad_norm;
    clip_grad_norm(&mut grads, &net.net_vars(), max)?;
    clip_grad_norm(&mut grads, std::slice::from_ref(&net.inner_lr), max)?;
    opt_net.step(&grads)?;
    opt_inner.step(&grads)?;
    Ok(())
}
