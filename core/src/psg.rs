//! The PSG (personalized structure generator): a one-hidden-layer MLP with a single shared
//! PReLU slope mapping a client's features to λ̂ for all L·r_max ranks, and its stage-2 L1
//! regression. Files are safetensors whose metadata names the base model, L, r_max and the
//! feature layout, so a PSG cannot silently be applied to a model it was not trained for.
use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::adapter::clamp_ste;
use crate::{var_file, Error, Result};

/// The only feature layout so far: (mean, sd) of each adapted linear's input, module order.
pub const FEATURE_LAYOUT: &str = "mean-sd-interleaved/adapted-linear-input/module-order/v1";
const FORMAT: &str = "fedp2eft-psg";

/// Hyper-parameters of the PSG and of stage 2 (authors' defaults, method.md §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PsgConfig {
    /// hidden = hidden_mul · input size (bt_hl_mul = 2).
    pub hidden_mul: usize,
    /// Straight-through clamp of the output (keeps λ̂ positive).
    pub clamp_min: f64,
    pub clamp_max: f64,
    /// Xavier-normal gain and bias of both linears: tiny, so λ̂ ≈ 1e-4 at round one.
    pub init_gain: f64,
    pub init_bias: f64,
    /// nn.PReLU's initial slope.
    pub prelu_init: f64,
    /// Stage 2: Adam steps and learning rate of the L1 regression.
    pub stage2_steps: usize,
    pub stage2_lr: f64,
}

impl Default for PsgConfig {
    fn default() -> Self {
        Self {
            hidden_mul: 2,
            clamp_min: 1e-4,
            clamp_max: 1000.0,
            init_gain: 1e-6,
            init_bias: 1e-4,
            prelu_init: 0.25,
            stage2_steps: 10,
            stage2_lr: 1e-4,
        }
    }
}

/// What a PSG was built for; checked when it is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PsgMeta {
    /// Identifier of the base model (`SeqClassifier::model_id`).
    pub base_model: String,
    /// L: number of adapted linears.
    pub num_layers: usize,
    pub r_max: usize,
    pub feature_layout: String,
}

impl PsgMeta {
    /// Errors unless this PSG was built for a model with this id and L, with our features.
    pub fn check_compatible(&self, base_model: &str, num_layers: usize) -> Result<()> {
        check_built_for(
            "PSG",
            (&self.base_model, self.num_layers, &self.feature_layout),
            base_model,
            num_layers,
        )
    }
}

/// What a network reading client features (the PSG, FedL2P's meta-net) must have been built
/// for: this base model, its L, and our feature layout. `built` = (model id, L, layout).
pub(crate) fn check_built_for(
    what: &str,
    built: (&str, usize, &str),
    base_model: &str,
    num_layers: usize,
) -> Result<()> {
    let (model, layers, layout) = built;
    if layers != num_layers || model != base_model {
        return Err(Error::Mismatch(format!(
            "{what} was trained for `{model}` (L = {layers}), not for `{base_model}` (L = {num_layers})"
        )));
    }
    if layout != FEATURE_LAYOUT {
        return Err(Error::Mismatch(format!(
            "{what} feature layout `{layout}` is not supported"
        )));
    }
    Ok(())
}

/// A feature vector for a network of L layers: 2L finite values.
pub(crate) fn check_features(what: &str, features: &[f32], num_layers: usize) -> Result<()> {
    if features.len() != 2 * num_layers {
        return Err(Error::Mismatch(format!(
            "{what} expects {} features (L = {num_layers}), got {}",
            2 * num_layers,
            features.len()
        )));
    }
    if features.iter().any(|x| !x.is_finite()) {
        return Err(Error::Data(format!(
            "{what} features contain NaN or infinity"
        )));
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct Psg {
    pub meta: PsgMeta,
    pub config: PsgConfig,
    /// (hidden, 2L), (hidden), (1), (L·r_max, hidden), (L·r_max)
    pub w1: Var,
    pub b1: Var,
    pub slope: Var,
    pub w2: Var,
    pub b2: Var,
}

/// File and wire names, in `vars()` order.
const NAMES: [&str; 5] = fedp2eft_wire::PSG_TENSOR_NAMES;

/// Xavier-normal init (torch.nn.init.xavier_normal_), seeded: shared with the FedL2P meta-net.
pub(crate) fn xavier(out: usize, inp: usize, gain: f64, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    let std = gain * (2.0 / (inp + out) as f64).sqrt();
    let dist = Normal::new(0.0, std).map_err(|e| Error::Config(e.to_string()))?;
    let v: Vec<f32> = (0..out * inp).map(|_| dist.sample(rng) as f32).collect();
    Ok(Tensor::from_vec(v, (out, inp), &Device::Cpu)?)
}

impl Psg {
    pub fn new(meta: PsgMeta, config: PsgConfig, seed: u64) -> Result<Self> {
        let inp = 2 * meta.num_layers;
        let hidden = config.hidden_mul * inp;
        let out = meta.num_layers * meta.r_max;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let dev = Device::Cpu;
        let w1 = xavier(hidden, inp, config.init_gain, &mut rng)?;
        let w2 = xavier(out, hidden, config.init_gain, &mut rng)?;
        Ok(Self {
            w1: Var::from_tensor(&w1)?,
            b1: Var::from_tensor(&Tensor::full(config.init_bias as f32, hidden, &dev)?)?,
            slope: Var::from_tensor(&Tensor::full(config.prelu_init as f32, 1, &dev)?)?,
            w2: Var::from_tensor(&w2)?,
            b2: Var::from_tensor(&Tensor::full(config.init_bias as f32, out, &dev)?)?,
            meta,
            config,
        })
    }

    /// An independent copy: `clone()` shares the variables (and so every update to them).
    pub fn duplicate(&self) -> Result<Self> {
        let copy = |v: &Var| -> Result<Var> { Ok(Var::from_tensor(&v.as_tensor().copy()?)?) };
        Ok(Self {
            meta: self.meta.clone(),
            config: self.config.clone(),
            w1: copy(&self.w1)?,
            b1: copy(&self.b1)?,
            slope: copy(&self.slope)?,
            w2: copy(&self.w2)?,
            b2: copy(&self.b2)?,
        })
    }

    pub fn vars(&self) -> Vec<Var> {
        vec![
            self.w1.clone(),
            self.b1.clone(),
            self.slope.clone(),
            self.w2.clone(),
            self.b2.clone(),
        ]
    }

    /// Variables under their file names, in file order.
    pub fn named_vars(&self) -> Vec<(&'static str, Var)> {
        NAMES.iter().copied().zip(self.vars()).collect()
    }

    pub fn num_parameters(&self) -> usize {
        self.vars().iter().map(|v| v.elem_count()).sum()
    }

    /// λ̂ (L·r_max,) as a tensor that tracks gradients to the PSG's variables.
    pub fn forward(&self, features: &[f32]) -> Result<Tensor> {
        check_features("PSG", features, self.meta.num_layers)?;
        let x = Tensor::from_slice(features, (1, features.len()), &Device::Cpu)?;
        let h = x
            .matmul(&self.w1.as_tensor().t()?)?
            .broadcast_add(self.b1.as_tensor())?;
        // PReLU with one shared slope: relu(h) − a·relu(−h).
        let h = (h.relu()? - h.neg()?.relu()?.broadcast_mul(self.slope.as_tensor())?)?;
        let y = h
            .matmul(&self.w2.as_tensor().t()?)?
            .broadcast_add(self.b2.as_tensor())?;
        clamp_ste(&y.squeeze(0)?, self.config.clamp_min, self.config.clamp_max)
    }

    /// λ̂ as plain numbers.
    pub fn predict(&self, features: &[f32]) -> Result<Vec<f32>> {
        let _compute = crate::runtime::enter();
        Ok(self.forward(features)?.detach().to_vec1::<f32>()?)
    }

    /// Stage 2: `stage2_steps` Adam steps on Σ_k |PSG(x)_k − target_k| (a sum, as the authors).
    /// Returns the loss before each step.
    pub fn regress(&self, features: &[f32], target: &[f32]) -> Result<Vec<f32>> {
        let _compute = crate::runtime::enter();
        let out = self.meta.num_layers * self.meta.r_max;
        if target.len() != out {
            return Err(Error::Mismatch(format!(
                "stage-2 target has {} values, the PSG outputs {out}",
                target.len()
            )));
        }
        if target.iter().any(|x| !x.is_finite()) {
            return Err(Error::Data(
                "stage-2 target λ contains NaN or infinity".into(),
            ));
        }
        let t = Tensor::from_slice(target, out, &Device::Cpu)?;
        let params = ParamsAdamW {
            lr: self.config.stage2_lr,
            weight_decay: 0.0,
            ..Default::default()
        };
        let mut opt = AdamW::new(self.vars(), params)?;
        let mut losses = Vec::with_capacity(self.config.stage2_steps);
        for step in 0..self.config.stage2_steps {
            let loss = (self.forward(features)? - &t)?.abs()?.sum_all()?;
            let v = loss.to_scalar::<f32>()?;
            if !v.is_finite() {
                return Err(Error::NonFiniteLoss {
                    phase: "psg stage 2".into(),
                    step,
                    value: v,
                });
            }
            losses.push(v);
            opt.backward_step(&loss)?;
        }
        Ok(losses)
    }

    /// Errors unless this PSG was built for a model with this id and L (see `PsgMeta`).
    pub fn check_compatible(&self, base_model: &str, num_layers: usize) -> Result<()> {
        self.meta.check_compatible(base_model, num_layers)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut md = HashMap::new();
        md.insert("format".to_string(), FORMAT.to_string());
        md.insert("meta".to_string(), var_file::json(&self.meta)?);
        md.insert("config".to_string(), var_file::json(&self.config)?);
        var_file::save(path, "psg", md, &self.named_vars())
    }

    pub fn load(path: &Path) -> Result<Self> {
        let file = var_file::Loaded::read(path, "psg", FORMAT, "PSG")?;
        let psg = Psg::new(file.field("meta")?, file.field("config")?, 0)?;
        file.fill(&psg.named_vars())?;
        Ok(psg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn psg() -> Result<Psg> {
        let meta = PsgMeta {
            base_model: "m".into(),
            num_layers: 3,
            r_max: 4,
            feature_layout: FEATURE_LAYOUT.into(),
        };
        Psg::new(meta, PsgConfig::default(), 1)
    }

    #[test]
    fn shapes_and_init_follow_the_authors() -> Result<()> {
        let p = psg()?;
        // hidden = 2 · input (2L = 6) = 12; output L · r_max = 12.
        assert_eq!(p.w1.dims(), [12, 6]);
        assert_eq!(p.w2.dims(), [12, 12]);
        assert_eq!(p.slope.as_tensor().to_vec1::<f32>()?, vec![0.25]);
        let y = p.predict(&[0.1, 1.0, -0.3, 2.0, 0.0, 0.5])?;
        assert!(y.iter().all(|&v| (v - 1e-4).abs() < 1e-6), "{y:?}");
        Ok(())
    }

    #[test]
    fn nan_in_features_target_or_file_is_rejected() -> Result<()> {
        let p = psg()?;
        let x = [0.1f32; 6];
        assert!(matches!(p.predict(&[f32::NAN; 6]), Err(Error::Data(_))));
        assert!(matches!(p.predict(&x[..5]), Err(Error::Mismatch(_))));
        let mut t = vec![0.5f32; 12];
        t[3] = f32::INFINITY;
        assert!(matches!(p.regress(&x, &t), Err(Error::Data(_))));
        assert!(matches!(p.regress(&x, &t[..11]), Err(Error::Mismatch(_))));
        let dir = std::env::temp_dir().join(format!("psg-nan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = dir.join("psg.safetensors");
        p.b2.set(&Tensor::full(f32::NAN, 12, &Device::Cpu)?)?;
        p.save(&path)?;
        assert!(matches!(Psg::load(&path), Err(Error::Format { .. })));
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(())
    }

    #[test]
    fn another_model_or_layout_is_refused() -> Result<()> {
        let mut p = psg()?;
        assert!(p.check_compatible("m", 3).is_ok());
        assert!(matches!(
            p.check_compatible("other", 3),
            Err(Error::Mismatch(_))
        ));
        assert!(matches!(
            p.check_compatible("m", 4),
            Err(Error::Mismatch(_))
        ));
        p.meta.feature_layout = "something-else".into();
        assert!(matches!(
            p.check_compatible("m", 3),
            Err(Error::Mismatch(_))
        ));
        Ok(())
    }
}
