//! AdaLoRA as a method: SVD-form adapters P·Λ·Q on every adapted layer (peft's layer: A = Q and
//! B = P drawn from N(0, 0.02), E = Λ zero, scaling lora_alpha / (init_r + 1e-5)) — stored as a
//! BT-LoRA adapter whose trainable λ is E — trained with the orthogonal regulariser, and after
//! every optimiser step the rank allocator smooths the importance and zeroes the singular values
//! it cuts (the authors' `AdaLoRA_Callback` calling peft's `update_and_allocate`).
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::{AdaLoraConfig, RankAllocator, Triplet};
use crate::adapter::{BtLora, Lambda};
use crate::method::{Client, Method, Setup};
use crate::prune::RankPlan;
use crate::train::{Objective, Params, StepHook};
use crate::{Error, Result};

pub struct AdaLora<'a>(pub &'a AdaLoraConfig);

impl Method for AdaLora<'_> {
    fn name(&self) -> &str {
        "AdaLoRA"
    }

    fn setup(&self, client: &Client) -> Result<Setup> {
        let cfg = self.0;
        let (target_r, init_r) = (client.budget, cfg.init_r(client.budget));
        let alloc_cfg = cfg.allocator(target_r, client.steps)?;
        let mut model = client.base.clone();
        model.clear_adapters();
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let normal = Normal::new(0f32, 0.02).map_err(|e| Error::Config(e.to_string()))?;
        let dev = client.base.device().clone();
        let mut draw = |rows: usize, cols: usize| -> Result<Tensor> {
            let v: Vec<f32> = (0..rows * cols).map(|_| normal.sample(&mut rng)).collect();
            Ok(Tensor::from_vec(v, (rows, cols), &dev)?)
        };
        let scaling = cfg.lora_alpha / (init_r as f64 + 1e-5);
        let (mut layers, mut shapes) = (Vec::new(), Vec::new());
        for lin in model.linears_mut() {
            let (d_in, d_out) = (lin.in_features(), lin.out_features());
            let a = Var::from_tensor(&draw(init_r, d_in)?)?;
            let b = Var::from_tensor(&draw(d_out, init_r)?)?;
            let e = Var::zeros(init_r, candle_core::DType::F32, &dev)?;
            layers.push([a.clone(), e.clone(), b.clone()]);
            shapes.push((init_r, d_in, d_out));
            lin.adapter = Some(BtLora {
                a,
                b,
                lambda: Lambda::Trainable(e),
                scaling,
                ranks: (0..init_r).collect(),
            });
        }
        let allocator = RankAllocator::new(&shapes, &alloc_cfg)?;
        // E trains with A and B (one lr, clipped with them), not in BT-LoRA's λ group.
        let params = Params {
            ab: layers.iter().flatten().cloned().collect(),
            ..Params::default()
        };
        let n = layers.len();
        Ok(Setup {
            model,
            plan: RankPlan {
                budget: target_r,
                r_max: init_r,
                keep: vec![(0..init_r).collect(); n],
                lambda: vec![vec![0.0; init_r]; n],
            },
            params,
            objective: Objective::Orthogonal {
                weight: cfg.orth_reg_weight,
            },
            hook: Box::new(Allocation {
                allocator,
                layers,
                kept: None,
            }),
            features_s: 0.0,
        })
    }
}

/// The per-step rank allocation over the adapters' (A, E, B).
pub struct Allocation {
    allocator: RankAllocator,
    layers: Vec<[Var; 3]>,
    /// The surviving triplets of the last masking step.
    kept: Option<Vec<Vec<bool>>>,
}

impl StepHook for Allocation {
    fn after_step(&mut self, step: usize, _total: usize, grads: &GradStore) -> Result<()> {
        // peft receives HF Trainer's global_step from on_optimizer_step: 0-based.
        let global = step - 1;
        let values: Vec<Triplet> = self
            .layers
            .iter()
            .map(|[a, e, b]| Triplet {
                a: a.as_tensor(),
                e: e.as_tensor(),
                b: b.as_tensor(),
            })
            .collect();
        let grad_of = |v: &Var| {
            grads
                .get(v.as_tensor())
                .cloned()
                .ok_or_else(|| Error::Mismatch("AdaLoRA: an adapter got no gradient".into()))
        };
        let g: Vec<[Tensor; 3]> = self
            .layers
            .iter()
            .map(|[a, e, b]| Ok([grad_of(a)?, grad_of(e)?, grad_of(b)?]))
            .collect::<Result<_>>()?;
        let grads: Vec<Triplet> = g.iter().map(|[a, e, b]| Triplet { a, e, b }).collect();
        let (budget, mut keep) = self.allocator.step(global, &values, &grads)?;
        // peft forces the final allocation where the last phase begins, whatever deltaT says.
        let c = &self.allocator.schedule.cfg;
        if keep.is_none() && global + c.tfinal == c.total_step {
            keep = Some(self.allocator.mask_to_budget(budget));
        }
        if let Some(keep) = keep {
            for ([_, e, _], k) in self.layers.iter().zip(&keep) {
                let m: Vec<f32> = k.iter().map(|&s| if s { 1.0 } else { 0.0 }).collect();
                let m = Tensor::from_vec(m, k.len(), e.device())?;
                e.set(&(e.as_tensor() * m)?)?;
            }
            self.kept = Some(keep);
        }
        Ok(())
    }

    fn kept(&self) -> Option<Vec<Vec<usize>>> {
        let keep = self.kept.as_ref()?;
        Some(
            keep.iter()
                .map(|k| (0..k.len()).filter(|&i| k[i]).collect())
                .collect(),
        )
    }
}
