//! The meta-net (the authors' ClampLRNet): Linear(2L, h) · ReLU · Linear(h, h) · ReLU ·
//! Linear(h, 2L), clamped to [0, clamp_max] with a straight-through gradient, gives one
//! learning-rate multiplier per A and per B matrix (module order, A before B); each is
//! multiplied by that matrix's own federated base learning rate.
use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::Fedl2pConfig;
use crate::adapter::clamp_ste;
use crate::psg::{check_built_for, check_features, xavier, FEATURE_LAYOUT};
use crate::{var_file, Error, Result};

const FORMAT: &str = "fedp2eft-fedl2p-lrnet";

/// What a meta-net was built for; checked when it is applied.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LrNetMeta {
    /// Identifier of the base model (`SeqClassifier::model_id`).
    pub base_model: String,
    /// L: adapted linears; the net reads 2L features and writes 2L learning rates.
    pub num_layers: usize,
    pub feature_layout: String,
}

impl LrNetMeta {
    pub fn new(base_model: impl Into<String>, num_layers: usize) -> Self {
        Self {
            base_model: base_model.into(),
            num_layers,
            feature_layout: FEATURE_LAYOUT.into(),
        }
    }

    pub fn check_compatible(&self, base_model: &str, num_layers: usize) -> Result<()> {
        check_built_for(
            "FedL2P meta-net",
            (&self.base_model, self.num_layers, &self.feature_layout),
            base_model,
            num_layers,
        )
    }
}

#[derive(Debug, Clone)]
pub struct LrNet {
    pub meta: LrNetMeta,
    pub config: Fedl2pConfig,
    /// fc1 (h, 2L), fc2 (h, h), fc3 (2L, h) and their biases.
    pub layers: [(Var, Var); 3],
    /// The base learning rate of every matrix (2L), learned and federated with the net.
    pub inner_lr: Var,
}

/// File and wire names, in `vars()` order.
pub const LRNET_NAMES: [&str; 7] = fedp2eft_wire::LRNET_TENSOR_NAMES;

impl LrNet {
    pub fn new(meta: LrNetMeta, config: Fedl2pConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        if meta.num_layers == 0 {
            return Err(Error::Config("FedL2P meta-net for L = 0 layers".into()));
        }
        let io = 2 * meta.num_layers;
        let h = config.hidden;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let layer = |out: usize, inp: usize, rng: &mut ChaCha8Rng| -> Result<(Var, Var)> {
            let w = xavier(out, inp, config.init_gain, rng)?;
            let b = Tensor::full(config.init_bias as f32, out, &Device::Cpu)?;
            Ok((Var::from_tensor(&w)?, Var::from_tensor(&b)?))
        };
        let layers = [
            layer(h, io, &mut rng)?,
            layer(h, h, &mut rng)?,
            layer(io, h, &mut rng)?,
        ];
        let inner_lr = Var::from_tensor(&Tensor::full(
            config.inner_lr_init as f32,
            io,
            &Device::Cpu,
        )?)?;
        Ok(Self {
            meta,
            config,
            layers,
            inner_lr,
        })
    }

    /// An independent copy: `clone()` shares the variables.
    pub fn duplicate(&self) -> Result<Self> {
        let copy = |v: &Var| -> Result<Var> { Ok(Var::from_tensor(&v.as_tensor().copy()?)?) };
        let mut layers = self.layers.clone();
        for (w, b) in &mut layers {
            *w = copy(w)?;
            *b = copy(b)?;
        }
        Ok(Self {
            meta: self.meta.clone(),
            config: self.config.clone(),
            layers,
            inner_lr: copy(&self.inner_lr)?,
        })
    }

    /// The meta-net's weights and biases (without `inner_lr`), in file order.
    pub fn net_vars(&self) -> Vec<Var> {
        self.layers
            .iter()
            .flat_map(|(w, b)| [w.clone(), b.clone()])
            .collect()
    }

    /// Every variable under its name, in file order.
    pub fn named_vars(&self) -> Vec<(&'static str, Var)> {
        let mut vars = self.net_vars();
        vars.push(self.inner_lr.clone());
        LRNET_NAMES.iter().copied().zip(vars).collect()
    }

    /// The clamped multipliers (2L,), tracking gradients to the net's variables.
    pub fn forward(&self, features: &[f32]) -> Result<Tensor> {
        check_features("FedL2P meta-net", features, self.meta.num_layers)?;
        let mut h = Tensor::from_slice(features, (1, features.len()), &Device::Cpu)?;
        for (i, (w, b)) in self.layers.iter().enumerate() {
            h = h
                .matmul(&w.as_tensor().t()?)?
                .broadcast_add(b.as_tensor())?;
            if i + 1 < self.layers.len() {
                h = h.relu()?;
            }
        }
        clamp_ste(&h.squeeze(0)?, 0.0, self.config.clamp_max)
    }

    /// The learning rate of every A and B matrix: multiplier × base rate, as plain numbers.
    pub fn learning_rates(&self, features: &[f32]) -> Result<Vec<f64>> {
        let _compute = crate::runtime::enter();
        self.rates(&self.forward(features)?)
    }

    /// The learning rates for multipliers `forward` already gave.
    pub fn rates(&self, multipliers: &Tensor) -> Result<Vec<f64>> {
        let m = multipliers.detach().to_vec1::<f32>()?;
        let base = self.inner_lr.as_tensor().to_vec1::<f32>()?;
        // A base rate pushed below zero by its meta step would make AdamW ascend: clamp at 0.
        Ok(m.iter()
            .zip(&base)
            .map(|(&m, &b)| f64::from(m) * f64::from(b.max(0.0)))
            .collect())
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut md = HashMap::new();
        md.insert("format".to_string(), FORMAT.to_string());
        md.insert("meta".to_string(), var_file::json(&self.meta)?);
        md.insert("config".to_string(), var_file::json(&self.config)?);
        var_file::save(path, "fedl2p meta-net", md, &self.named_vars())
    }

    pub fn load(path: &Path) -> Result<Self> {
        let file = var_file::Loaded::read(path, "fedl2p meta-net", FORMAT, "FedL2P meta-net")?;
        let net = LrNet::new(file.field("meta")?, file.field("config")?, 0)?;
        file.fill(&net.named_vars())?;
        Ok(net)
    }
}
