//! peft's `RankAllocator`: after every step the sensitivity |p·∇p| of each entry of A (Q),
//! E (Λ) and B (P) is smoothed (Ī ← β1·Ī + (1−β1)·I) with its uncertainty
//! (Ū ← β2·Ū + (1−β2)·|I − Ī|); a rank triplet's score is Ī·Ū of its singular value plus the
//! means of its A row and B column. On a masking step the lowest-scoring triplets over all
//! layers are cut until `budget` remain (their singular value set to 0). The budget holds at
//! init_r·L for `tinit` steps, falls cubically to target_r·L, and stays there for the last
//! `tfinal` steps (which still mask, with the frozen scores).
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// peft's AdaLoraConfig fields that the allocator reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocatorConfig {
    pub target_r: usize,
    pub tinit: usize,
    pub tfinal: usize,
    pub delta_t: usize,
    pub beta1: f64,
    pub beta2: f64,
    pub total_step: usize,
}

/// The budget schedule over a run of `cfg.total_step` steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Σ init_r over the layers.
    pub init_budget: usize,
    /// target_r · L.
    pub target_budget: usize,
    pub cfg: AllocatorConfig,
}

impl Schedule {
    /// (budget, whether to mask) at `step` (1-based), as peft's `budget_schedule`.
    pub fn at(&self, step: usize) -> (usize, bool) {
        let c = &self.cfg;
        if step <= c.tinit {
            return (self.init_budget, false);
        }
        if step + c.tfinal > c.total_step {
            return (self.target_budget, true);
        }
        let span = (c.total_step - c.tfinal - c.tinit) as f64;
        let mul = 1.0 - (step - c.tinit) as f64 / span;
        let spread = (self.init_budget - self.target_budget) as f64;
        let budget = (spread * mul.powi(3) + self.target_budget as f64) as usize;
        (budget, step % c.delta_t.max(1) == 0)
    }
}

/// One adapted layer's current values or gradients: A (r, in), E (r) or (r, 1), B (out, r).
pub struct Triplet<'a> {
    pub a: &'a Tensor,
    pub e: &'a Tensor,
    pub b: &'a Tensor,
}

/// Ī and Ū of one parameter, row-major.
#[derive(Debug, Clone, Default)]
struct Smoothed {
    ipt: Vec<f32>,
    unc: Vec<f32>,
}

impl Smoothed {
    fn update(&mut self, value: &Tensor, grad: &Tensor, beta1: f32, beta2: f32) -> Result<()> {
        let p = value.flatten_all()?.to_vec1::<f32>()?;
        let g = grad.flatten_all()?.to_vec1::<f32>()?;
        if p.len() != g.len() {
            return Err(Error::Mismatch(format!(
                "AdaLoRA: a gradient of {} values for a parameter of {}",
                g.len(),
                p.len()
            )));
        }
        if self.ipt.is_empty() {
            self.ipt = vec![0.0; p.len()];
            self.unc = vec![0.0; p.len()];
        }
        if self.ipt.len() != p.len() {
            return Err(Error::Mismatch("AdaLoRA: a parameter changed shape".into()));
        }
        // (1 − β) is formed in f64 and rounded once, as torch does with a Python float.
        let (c1, c2) = (
            (1.0 - f64::from(beta1)) as f32,
            (1.0 - f64::from(beta2)) as f32,
        );
        for i in 0..p.len() {
            let now = (p[i] * g[i]).abs();
            self.ipt[i] = beta1 * self.ipt[i] + c1 * now;
            self.unc[i] = beta2 * self.unc[i] + c2 * (now - self.ipt[i]).abs();
        }
        Ok(())
    }

    fn score(&self, i: usize) -> f32 {
        self.ipt[i] * self.unc[i]
    }
}

/// The allocator's state over the adapted layers, in module order.
pub struct RankAllocator {
    pub schedule: Schedule,
    /// (r, in, out) per layer.
    shapes: Vec<(usize, usize, usize)>,
    state: Vec<[Smoothed; 3]>,
}

impl RankAllocator {
    /// `shapes`: (init_r, in, out) of every adapted layer.
    pub fn new(shapes: &[(usize, usize, usize)], cfg: &AllocatorConfig) -> Result<Self> {
        let init_budget: usize = shapes.iter().map(|s| s.0).sum();
        let target_budget = cfg.target_r * shapes.len();
        let ok_betas = [cfg.beta1, cfg.beta2].iter().all(|b| *b > 0.0 && *b < 1.0);
        if !ok_betas || target_budget > init_budget || cfg.tinit + cfg.tfinal >= cfg.total_step {
            return Err(Error::Config(format!(
                "AdaLoRA: betas in (0, 1), target_r·L ≤ Σ init_r and tinit + tfinal < total_step \
                 needed ({cfg:?}, {} layers, init budget {init_budget})",
                shapes.len()
            )));
        }
        Ok(Self {
            schedule: Schedule {
                init_budget,
                target_budget,
                cfg: cfg.clone(),
            },
            shapes: shapes.to_vec(),
            state: vec![Default::default(); shapes.len()],
        })
    }

    /// Smooths the importance with this step's values and gradients (one triplet per layer).
    pub fn update(&mut self, values: &[Triplet], grads: &[Triplet]) -> Result<()> {
        if values.len() != self.shapes.len() || grads.len() != self.shapes.len() {
            return Err(Error::Mismatch(format!(
                "AdaLoRA: {} / {} triplets for {} layers",
                values.len(),
                grads.len(),
                self.shapes.len()
            )));
        }
        let c = &self.schedule.cfg;
        let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
        for ((s, v), g) in self.state.iter_mut().zip(values).zip(grads) {
            s[0].update(v.a, g.a, b1, b2)?;
            s[1].update(v.e, g.e, b1, b2)?;
            s[2].update(v.b, g.b, b1, b2)?;
        }
        Ok(())
    }

    /// Each layer's triplet scores: E's, plus the mean over A's row and over B's column.
    pub fn scores(&self) -> Vec<Vec<f32>> {
        self.shapes
            .iter()
            .zip(&self.state)
            .map(|(&(r, d_in, d_out), [a, e, b])| {
                (0..r)
                    .map(|i| {
                        if e.ipt.is_empty() {
                            return 0.0;
                        }
                        let a_mean =
                            (0..d_in).map(|j| a.score(i * d_in + j)).sum::<f32>() / d_in as f32;
                        let b_mean =
                            (0..d_out).map(|o| b.score(o * r + i)).sum::<f32>() / d_out as f32;
                        e.score(i) + (a_mean + b_mean)
                    })
                    .collect()
            })
            .collect()
    }

    /// Which triplets survive `budget`: every score above the (init − budget)-th smallest.
    /// (peft's `torch.kthvalue` fails for k = 0; here nothing is cut.)
    pub fn mask_to_budget(&self, budget: usize) -> Vec<Vec<bool>> {
        let scores = self.scores();
        let cut = self.schedule.init_budget.saturating_sub(budget);
        if cut == 0 {
            return scores.iter().map(|s| vec![true; s.len()]).collect();
        }
        let mut all: Vec<f32> = scores.iter().flatten().copied().collect();
        all.sort_by(f32::total_cmp);
        let threshold = all[cut - 1];
        scores
            .iter()
            .map(|s| s.iter().map(|&x| x > threshold).collect())
            .collect()
    }

    /// peft's `update_and_allocate` at `step` (1-based): smooths the importance except in the
    /// final phase, and on a masking step returns the surviving triplets per layer (the caller
    /// zeroes the others' singular values) with the budget.
    pub fn step(
        &mut self,
        step: usize,
        values: &[Triplet],
        grads: &[Triplet],
    ) -> Result<(usize, Option<Vec<Vec<bool>>>)> {
        let c = &self.schedule.cfg;
        if step + c.tfinal < c.total_step {
            self.update(values, grads)?;
        }
        let (budget, mask) = self.schedule.at(step);
        Ok((budget, mask.then(|| self.mask_to_budget(budget))))
    }
}
