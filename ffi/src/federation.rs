//! Taking part in a federated run: one round per `join_round` call (stage 1 + stage 2 on the
//! local examples, upload), and the final PSG installed once the run is over.
use std::sync::Arc;
use std::time::Instant;

use fedp2eft_core::federated::convert::{from_params, meta};
use fedp2eft_core::federated::http::{FedClient, RoundOutcome};
use fedp2eft_core::federated::RoundConfig;
use fedp2eft_core::psg::PsgConfig;
use fedp2eft_wire::routes;

use crate::personalizer::{lock, Personalizer, ProgressListener};
use crate::FedError;

/// Where this device takes part: the server, the run and the id it was enrolled under.
#[derive(Debug, Clone, uniffi::Record)]
pub struct FederatedRun {
    /// Base URL, e.g. `http://10.0.2.2:8080`.
    pub server_url: String,
    pub run: String,
    pub client_id: String,
    /// Examples are cut to this many tokens in stage 1.
    #[uniffi(default = 128)]
    pub max_len: u32,
}

/// What one `join_round` did.
#[derive(Debug, Clone, uniffi::Record)]
pub struct RoundReport {
    /// The round trained (uploaded), or φ_R's round when the run had finished.
    pub round: u32,
    /// True when this call trained and uploaded an update.
    pub uploaded: bool,
    /// The server had already stored this exact update (a retried upload).
    pub duplicate: bool,
    /// True when the run is over: its final PSG is now this personalizer's PSG.
    pub finished: bool,
    /// Local training examples used (the FedAvg weight).
    pub num_samples: u64,
    /// Mean total loss of each stage-1 epoch.
    pub stage1_loss: Vec<f32>,
    /// L1 loss of each stage-2 epoch.
    pub stage2_loss: Vec<f32>,
    /// Mean of the learned λ.
    pub mean_lambda: f32,
    pub seconds: f64,
}

#[uniffi::export]
impl Personalizer {
    /// Takes part in one round of `run` with the local examples: waits for a task (while this
    /// client is not selected the server answers "wait"; the wait honours `cancel()`), trains
    /// BT-LoRA from the round's PSG with the priors (stage 1), regresses the PSG onto the learned
    /// λ (stage 2) and uploads it. When the run has finished instead, downloads the final PSG
    /// and uses it for `personalize` from then on. Blocks until done.
    pub fn join_round(
        &self,
        run: FederatedRun,
        token: String,
        listener: Option<Arc<dyn ProgressListener>>,
    ) -> Result<RoundReport, FedError> {
        let _compute = fedp2eft_core::runtime::enter();
        let start = Instant::now();
        let data = self.examples()?;
        let ctl = self.control(listener)?;
        let fc = FedClient::new(&run.server_url, &run.run, &token)?;
        let layout = fc.status(&ctl)?.layout;
        let lm = &self.model;
        // Refused before waiting for a task: the same rule the round applies to the PSG.
        meta(&layout).check_compatible(&lm.model.model_id(), lm.model.num_adapted())?;
        let cfg = RoundConfig::for_r_max(layout.r_max, run.max_len as usize);
        let out = fc.join_round(
            &run.client_id,
            &lm.model,
            lm.tokenizer.as_ref(),
            &data,
            &layout,
            &cfg,
            &ctl,
        )?;
        let seconds = start.elapsed().as_secs_f64();
        Ok(match out {
            RoundOutcome::Uploaded {
                round,
                accepted,
                update,
            } => RoundReport {
                round,
                uploaded: true,
                duplicate: accepted.duplicate,
                finished: false,
                num_samples: update.num_samples as u64,
                stage1_loss: update.stage1.epoch_loss.clone(),
                stage2_loss: update.stage2_loss.clone(),
                mean_lambda: update.mean_lambda,
                seconds,
            },
            RoundOutcome::Finished { round } => {
                let params = fc.download(&routes::psg(&run.run, round), &layout, &ctl)?;
                let psg = from_params(&layout, PsgConfig::default(), &params)?;
                *lock(&self.psg)? = Some(psg);
                RoundReport {
                    round,
                    uploaded: false,
                    duplicate: false,
                    finished: true,
                    num_samples: 0,
                    stage1_loss: Vec::new(),
                    stage2_loss: Vec::new(),
                    mean_lambda: 0.0,
                    seconds,
                }
            }
        })
    }
}
