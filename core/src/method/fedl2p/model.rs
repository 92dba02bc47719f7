//! FedL2P at test time: LoRA at the budget's rank on every layer (as the LoRA baseline), each A
//! and B matrix fine-tuned at the learning rate the meta-net reads off the client's features.
use std::time::Instant;

use super::LrNet;
use crate::adapter::LoraConfig;
use crate::method::{Client, Lora, Method, Setup};
use crate::model::SeqClassifier;
use crate::{features, Error, Result};

pub struct Fedl2p<'a>(pub &'a LrNet);

impl Method for Fedl2p<'_> {
    fn name(&self) -> &str {
        "FedL2P"
    }

    fn check(&self, base: &SeqClassifier, _lora: &LoraConfig) -> Result<()> {
        self.0
            .meta
            .check_compatible(&base.model_id(), base.num_adapted())
    }

    fn setup(&self, client: &Client) -> Result<Setup> {
        self.check(client.base, client.lora)?;
        let clock = Instant::now();
        let x = features::extract(client.base, client.train, client.ctl)?;
        let features_s = clock.elapsed().as_secs_f64();
        let mut setup = Lora.setup(client)?;
        let lrs = self.0.learning_rates(&x)?;
        if lrs.len() != setup.params.ab.len() {
            return Err(Error::Mismatch(format!(
                "FedL2P: {} learning rates for {} A/B matrices",
                lrs.len(),
                setup.params.ab.len()
            )));
        }
        setup.params.ab_lr = lrs;
        setup.features_s = features_s;
        Ok(setup)
    }
}
