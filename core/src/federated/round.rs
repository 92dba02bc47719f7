//! One selected client's work in a round (method.md §3.3): features x_c of the local train set
//! (LoRA off) → λ_init = PSG(x_c) → stage 1: BT-LoRA with CE + priors for the local epochs →
//! stage 2: the PSG's L1 regression onto the RAW learned λ (fresh Adam, 10 steps) → the updated
//! PSG and the sample count go back to the server. LoRA weights never leave the client.
//! FedL2P's round (the baseline) has the same shape: the meta-net in, meta-trained, back out.
use serde::{Deserialize, Serialize};

use crate::adapter::{AdapterInit, LoraConfig, PriorConfig};
use crate::control::Control;
use crate::data::ClientData;
use crate::method::fedl2p::{meta_train, Fedl2pConfig, LrNet, MetaClient, MetaReport};
use crate::method::learn_lambda;
use crate::model::{SeqClassifier, Tokenize};
use crate::psg::Psg;
use crate::train::{encode_all, Dataset, TrainConfig, TrainReport};
use crate::{features, Error, Result};

/// Stage-1 hyper-parameters (the PSG carries its own stage-2 ones).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoundConfig {
    pub lora: LoraConfig,
    pub train: TrainConfig,
    pub priors: PriorConfig,
}

impl RoundConfig {
    /// The authors' stage 1 for a PSG of `r_max` ranks: α = 2·r_max (scaling 2), the seed-42
    /// LoRA init, default training with examples cut to `max_len` tokens.
    pub fn for_r_max(r_max: usize, max_len: usize) -> Self {
        Self {
            lora: LoraConfig {
                r: r_max,
                lora_alpha: 2.0 * r_max as f64,
                seed: 42,
            },
            train: TrainConfig {
                max_len,
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

/// What a client sends back (plus metrics it may report).
pub struct ClientUpdate {
    /// The global PSG after stage 2 on this client (an independent copy).
    pub psg: Psg,
    /// Local training examples used: the FedAvg weight.
    pub num_samples: usize,
    pub stage1: TrainReport,
    pub stage2_loss: Vec<f32>,
    /// Mean of the learned raw λ.
    pub mean_lambda: f32,
}

pub fn client_round(
    base: &SeqClassifier,
    tok: &dyn Tokenize,
    client: &ClientData,
    global: &Psg,
    cfg: &RoundConfig,
    ctl: &Control,
) -> Result<ClientUpdate> {
    let _compute = crate::runtime::enter();
    global.check_compatible(&base.model_id(), base.num_adapted())?;
    if global.meta.r_max != cfg.lora.r {
        return Err(Error::Mismatch(format!(
            "PSG r_max {} differs from the LoRA config's {}",
            global.meta.r_max, cfg.lora.r
        )));
    }
    let enc = encode_all(&client.train, tok, cfg.train.max_len, base.num_labels())?;
    let set = Dataset {
        examples: &enc,
        pad_id: tok.pad_id(),
    };
    let x = features::extract(base, &set, ctl)?;
    let lambda_init = global.predict(&x)?;
    let init = AdapterInit::new(base, cfg.lora.clone())?;
    let learned = learn_lambda(
        base,
        &set,
        &init,
        &lambda_init,
        &cfg.train,
        &cfg.priors,
        ctl,
    )?;
    ctl.cancel.check()?;
    let psg = global.duplicate()?;
    let stage2_loss = psg.regress(&x, &learned.raw)?;
    let mean_lambda = learned.raw.iter().sum::<f32>() / learned.raw.len().max(1) as f32;
    Ok(ClientUpdate {
        psg,
        num_samples: enc.len(),
        stage1: learned.report,
        stage2_loss,
        mean_lambda,
    })
}

/// A FedL2P client round's settings: LoRA at the run's rank (α = 2r as the LoRA baseline, the
/// seed-42 init), the inner fine-tune (its lr is the net's per matrix) and the meta-training
/// settings (outer steps, validation split, meta learning rates), which the run does not carry:
/// every client uses these (the authors' MasakhaNEWS values by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fedl2pRoundConfig {
    pub fit: TrainConfig,
    pub meta: Fedl2pConfig,
    pub lora_seed: u64,
}

impl Default for Fedl2pRoundConfig {
    fn default() -> Self {
        Self {
            fit: TrainConfig::default(),
            meta: Fedl2pConfig::default(),
            lora_seed: 42,
        }
    }
}

/// What a FedL2P client sends back (plus its meta-training report).
pub struct Fedl2pUpdate {
    /// The global meta-net after this client's meta-training (an independent copy).
    pub net: LrNet,
    /// Local training examples (inner + validation): the FedAvg weight.
    pub num_samples: usize,
    pub report: MetaReport,
}

/// One client's FedL2P round: the global meta-net copied, meta-trained on the local training
/// split for LoRA of rank `rank` on every layer, returned for averaging.
pub fn fedl2p_round(
    base: &SeqClassifier,
    tok: &dyn Tokenize,
    client: &ClientData,
    global: &LrNet,
    rank: usize,
    cfg: &Fedl2pRoundConfig,
    ctl: &Control,
) -> Result<Fedl2pUpdate> {
    let _compute = crate::runtime::enter();
    global
        .meta
        .check_compatible(&base.model_id(), base.num_adapted())?;
    if rank == 0 {
        return Err(Error::Config("FedL2P: LoRA rank 0".into()));
    }
    let enc = encode_all(&client.train, tok, cfg.fit.max_len, base.num_labels())?;
    let set = Dataset {
        examples: &enc,
        pad_id: tok.pad_id(),
    };
    let lora = LoraConfig {
        r: rank,
        lora_alpha: 2.0 * rank as f64,
        seed: cfg.lora_seed,
    };
    let net = global.duplicate()?;
    let report = meta_train(
        &net,
        &MetaClient {
            base,
            train: &set,
            budget: rank,
            lora: &lora,
            fit: &cfg.fit,
            ctl,
        },
    )?;
    Ok(Fedl2pUpdate {
        net,
        num_samples: enc.len(),
        report,
    })
}
