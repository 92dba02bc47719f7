//! FedP²EFT at test time: λ̂ = PSG(features of the client's training split), the top r·L ranks
//! kept with their λ̂ frozen; and the structure-only arm (the authors' rank-only evaluation):
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

/// FedP²EFT: the PSG's λ̂ chooses the ranks and scales them.
#[derive(Clone, Copy)]
pub struct Fedp2eft<'a>(Scales<'a>);

impl<'a> Fedp2eft<'a> {
    pub fn new(psg: &'a Psg) -> Self {
        Self(Scales::Psg(psg))
    }
    /// With a λ̂ (L·r_max values) computed beforehand, or any given λ.
    pub fn with_lambda(lambda: &'a [f32]) -> Self {
        Self(Scales::Given(lambda))
    }
}

impl Method for Fedp2eft<'_> {
    fn name(&self) -> &str {
        "FedP2EFT"
    }

    fn check(&self, base: &SeqClassifier, lora: &LoraConfig) -> Result<()> {
        self.0.check(base, lora)
    }

    fn setup(&self, client: &Client) -> Result<Setup> {
        let (lambda, features_s) = self.0.of(client)?;
        Ok(Setup {
            features_s,
            ..pruned(client, &lambda, None)?
        })
    }
}

/// LoRA with the PSG's rank pattern: ranks chosen by λ̂, every kept λ = 1.
#[derive(Clone, Copy)]
pub struct PsgRanks<'a>(Scales<'a>);

impl<'a> PsgRanks<'a> {
    pub fn new(psg: &'a Psg) -> Self {
        Self(Scales::Psg(psg))
    }
    /// Ranks chosen by these scores (e.g. a λ̂ computed beforehand).
    pub fn with_scores(scores: &'a [f32]) -> Self {
        Self(Scales::Given(scores))
    }
}

impl Method for PsgRanks<'_> {
    fn name(&self) -> &str {
        "PSG ranks, λ = 1"
    }

    fn check(&self, base: &SeqClassifier, lora: &LoraConfig) -> Result<()> {
        self.0.check(base, lora)
    }

    fn setup(&self, client: &Client) -> Result<Setup> {
        let (scores, features_s) = self.0.of(client)?;
        let ones = vec![1.0; scores.len()];
        Ok(Setup {
            features_s,
            ..pruned(client, &ones, Some(&scores))?
        })
    }
}
