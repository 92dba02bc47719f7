//! FedP²EFT at test time: λ̂ = PSG(features of the client's training split), the top r·L ranks
//! kept with their λ̂ frozen; and its structure-only arm (the authors' rank-only evaluation):
//! the same ranks with every λ = 1.
use std::time::Instant;

use super::{pruned, Client, Method, Setup};
use crate::adapter::LoraConfig;
use crate::model::SeqClassifier;
use crate::psg::Psg;
use crate::{features, Error, Result};

/// Where λ̂ comes from.
#[derive(Clone, Copy)]
enum Scales<'a> {
    Psg(&'a Psg),
    /// Computed beforehand (once per client for many budgets and seeds) or read from a file.
    Given(&'a [f32]),
}

impl Scales<'_> {
    /// A PSG must have been trained for this base model and r_max.
    fn check(&self, base: &SeqClassifier, lora: &LoraConfig) -> Result<()> {
        let Scales::Psg(psg) = self else {
            return Ok(());
        };
        psg.check_compatible(&base.model_id(), base.num_adapted())?;
        if psg.meta.r_max != lora.r {
            return Err(Error::Mismatch(format!(
                "PSG r_max {} differs from the LoRA config's {}",
                psg.meta.r_max, lora.r
            )));
        }
        Ok(())
    }

    /// λ̂ for this client and the seconds spent on its features.
    fn of(&self, client: &Client) -> Result<(Vec<f32>, f64)> {
        match *self {
            Scales::Given(l) => Ok((l.to_vec(), 0.0)),
            Scales::Psg(psg) => {
                self.check(client.base, client.lora)?;
                let clock = Instant::now();
                let x = features::extract(client.base, client.train, client.ctl)?;
                let secs = clock.elapsed().as_secs_f64();
                Ok((psg.predict(&x)?, secs))
            }
        }
    }
}

/// FedP²EFT: the PSG's λ̂ chooses the ranks and scales them; or, as the structure-only arm, the
/// same ranks with every kept λ = 1 (LoRA with the PSG's rank pattern).
#[derive(Clone, Copy)]
pub struct Fedp2eft<'a> {
    scales: Scales<'a>,
    unit_lambda: bool,
}

impl<'a> Fedp2eft<'a> {
    pub fn new(psg: &'a Psg) -> Self {
        Self {
            scales: Scales::Psg(psg),
            unit_lambda: false,
        }
    }
    /// With a λ̂ (L·r_max values) computed beforehand, or any given λ.
    pub fn with_lambda(lambda: &'a [f32]) -> Self {
        Self {
            scales: Scales::Given(lambda),
            unit_lambda: false,
        }
    }
    /// The structure-only arm: λ̂ only ranks, every kept λ = 1.
    pub fn ranks_only(self) -> Self {
        Self {
            unit_lambda: true,
            ..self
        }
    }
}

impl Method for Fedp2eft<'_> {
    fn name(&self) -> &str {
        if self.unit_lambda {
            "PSG ranks, λ = 1"
        } else {
            "FedP2EFT"
        }
    }

    fn check(&self, base: &SeqClassifier, lora: &LoraConfig) -> Result<()> {
        self.scales.check(base, lora)
    }

    fn setup(&self, client: &Client) -> Result<Setup> {
        let (lambda, features_s) = self.scales.of(client)?;
        let setup = if self.unit_lambda {
            pruned(client, &vec![1.0; lambda.len()], Some(&lambda))?
        } else {
            pruned(client, &lambda, None)?
        };
        Ok(Setup {
            features_s,
            ..setup
        })
    }
}
