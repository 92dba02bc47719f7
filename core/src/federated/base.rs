//! The base model every method starts from, as the paper trains it: "Standard FL with full
//! fine-tuning" (method.md §5) — FedAvg of the encoder's linear layers and the head over the
//! seen pool, 16 of its clients per round, each 2 local epochs of AdamW (lr 5e-5, constant, no
//! weight decay), averaged by sample count. Embeddings and layer norms stay frozen, as in
//! `train-base --scope full`. Transport-free: the clients run in-process, one after another.
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Tensor};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::control::Control;
use crate::data::partition::derive_seed;
use crate::data::ClientData;
use crate::model::{SeqClassifier, Tokenize};
use crate::train::{encode_all, Dataset, TrainConfig};
use crate::train_base::{train_base, BaseScope};
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FedBaseConfig {
    /// The authors: 100.
    pub rounds: usize,
    /// Clients sampled per round, uniformly without replacement (MasakhaNEWS: 16 of 160).
    pub clients_per_round: usize,
    /// Each client's local training (the authors: 2 epochs, batch 32, lr 5e-5 in `lr_base`).
    pub local: TrainConfig,
    /// Seeds the per-round client sampling.
    pub seed: u64,
}

impl Default for FedBaseConfig {
    fn default() -> Self {
        Self {
            rounds: 100,
            clients_per_round: 16,
            local: TrainConfig {
                lr_base: 5e-5,
                ..Default::default()
            },
            seed: 42,
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseRound {
    pub round: usize,
    pub clients: Vec<String>,
    pub samples: usize,
    /// Sample-weighted mean of the clients' last-epoch training loss.
    pub loss: f64,
    pub seconds: f64,
}

/// The clients (indices into `n`) of round `round`: its own seeded draw, so a resumed run
/// picks the same clients as an uninterrupted one.
pub fn select_clients(n: usize, k: usize, seed: u64, round: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, &format!("base-round-{round}")));
    let mut v = sample(&mut rng, n, k.min(n)).into_vec();
    v.sort_unstable();
    v
}

/// One FedAvg round: each selected client fine-tunes a copy of `global`, and `global`'s linear
/// weights become the sample-weighted mean of theirs.
pub fn fedavg_round(
    global: &mut SeqClassifier,
    tok: &dyn Tokenize,
    clients: &[&ClientData],
    round: usize,
    cfg: &FedBaseConfig,
    ctl: &Control,
) -> Result<BaseRound> {
    let _compute = crate::runtime::enter();
    let start = Instant::now();
    let picked = select_clients(clients.len(), cfg.clients_per_round, cfg.seed, round);
    if picked.is_empty() {
        return Err(Error::EmptyData(
            "no clients to train the base model on".into(),
        ));
    }
    let total: usize = picked.iter().map(|&i| clients[i].train.len()).sum();
    if total == 0 {
        return Err(Error::EmptyData(
            "the selected clients have no training examples".into(),
        ));
    }
    let mut sum: Option<Vec<(Tensor, Option<Tensor>)>> = None;
    let mut loss = 0.0;
    for &i in &picked {
        let c = clients[i];
        let enc = encode_all(&c.train, tok, cfg.local.max_len, global.num_labels())?;
        let set = Dataset {
            examples: &enc,
            pad_id: tok.pad_id(),
        };
        let mut local = global.clone();
        let report = train_base(&mut local, &set, BaseScope::Full, &cfg.local, ctl)?;
        let w = enc.len() as f64 / total as f64;
        loss += w * f64::from(report.epoch_loss.last().copied().unwrap_or(f32::NAN));
        let scaled = local
            .linears()
            .iter()
            .map(|l| -> Result<(Tensor, Option<Tensor>)> {
                let b = l.bias.as_ref().map(|b| b.affine(w, 0.0)).transpose()?;
                Ok((l.weight().affine(w, 0.0)?, b))
            })
            .collect::<Result<Vec<_>>>()?;
        sum = Some(match sum {
            None => scaled,
            Some(acc) => acc
                .into_iter()
                .zip(scaled)
                .map(|((aw, ab), (sw, sb))| -> Result<(Tensor, Option<Tensor>)> {
                    let b = match (ab, sb) {
                        (Some(a), Some(s)) => Some((a + s)?),
                        _ => None,
                    };
                    Ok(((aw + sw)?, b))
                })
                .collect::<Result<Vec<_>>>()?,
        });
    }
    for (lin, (w, b)) in global
        .linears_mut()
        .into_iter()
        .zip(sum.unwrap_or_default())
    {
        if !w
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .all(|x| x.is_finite())
        {
            return Err(Error::NonFiniteLoss {
                phase: "base FedAvg".into(),
                step: round,
                value: f32::NAN,
            });
        }
        lin.set_weight(&w)?;
        lin.bias = b;
    }
    Ok(BaseRound {
        round,
        clients: picked.iter().map(|&i| clients[i].id.clone()).collect(),
        samples: total,
        loss,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The trained weights (every linear's weight and bias) as one safetensors file: a round's
/// checkpoint, a fraction of the whole model's size.
pub fn save_linears(model: &SeqClassifier, path: &Path) -> Result<()> {
    let mut map: HashMap<String, Tensor> = HashMap::new();
    for l in model.linears() {
        map.insert(format!("{}.weight", l.name), l.weight().clone());
        if let Some(b) = &l.bias {
            map.insert(format!("{}.bias", l.name), b.clone());
        }
    }
    candle_core::safetensors::save(&map, path)?;
    Ok(())
}

/// Loads `save_linears`' file into a model of the same architecture; a missing tensor or one
/// of another shape is an error and leaves the model unchanged.
pub fn load_linears(model: &mut SeqClassifier, path: &Path) -> Result<()> {
    let map = candle_core::safetensors::load(path, model.device())
        .map_err(|e| Error::format("checkpoint", path, e.to_string()))?;
    let mut new = Vec::new();
    for l in model.linears() {
        let get = |k: String| -> Result<Tensor> {
            let t = map
                .get(&k)
                .ok_or_else(|| Error::format("checkpoint", path, format!("no tensor {k}")))?;
            Ok(t.clone())
        };
        let w = get(format!("{}.weight", l.name))?;
        if w.dims() != l.weight().dims() {
            return Err(Error::format(
                "checkpoint",
                path,
                format!(
                    "{}: shape {:?}, the model has {:?}",
                    l.name,
                    w.dims(),
                    l.weight().dims()
                ),
            ));
        }
        let b = match &l.bias {
            Some(_) => Some(get(format!("{}.bias", l.name))?),
            None => None,
        };
        new.push((w, b));
    }
    for (lin, (w, b)) in model.linears_mut().into_iter().zip(new) {
        lin.set_weight(&w)?;
        lin.bias = b;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_sampling_is_seeded_per_round() {
        let a = select_clients(160, 16, 42, 3);
        assert_eq!(a.len(), 16);
        assert!(a.windows(2).all(|w| w[0] < w[1]) && a.iter().all(|&i| i < 160));
        assert_eq!(a, select_clients(160, 16, 42, 3));
        assert_ne!(a, select_clients(160, 16, 42, 4));
        assert_eq!(select_clients(5, 16, 42, 0), vec![0, 1, 2, 3, 4]);
    }
}
