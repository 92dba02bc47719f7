//! One federated PSG round driven in-process, the way `simulate` and `reproduce` run a
//! federation of simulated devices against a real aggregation server: every enrolled client
//! asks for its task, and those the server selected for this round train and upload.
//!
//! A round closes after its last upload is acknowledged, possibly in another server task (the
//! deadline ticker, another process on the same database), so the driver waits for the server
//! to be at a round before it asks for tasks or φ of it.
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use fedp2eft_core::data::ClientData;
use fedp2eft_core::federated::http::{Admin, FedClient, PsgWork, RoundOutcome, RoundWork};
use fedp2eft_core::federated::{ClientUpdate, RoundConfig};
use fedp2eft_core::model::LoadedModel;
use fedp2eft_core::psg::Psg;
use fedp2eft_core::Control;
use fedp2eft_wire::{PsgLayout, PsgParams, RunState, Task};

/// How long a closed round may take to aggregate before the driver gives up.
const CLOSE_WAIT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(100);

/// The run as the driver sees it.
pub struct Federation<'a> {
    pub admin: &'a Admin,
    pub run: &'a str,
    pub layout: &'a PsgLayout,
}

impl Federation<'_> {
    /// Waits until the server is at `round` (or past it, or finished).
    pub fn wait_for_round(&self, round: u32, ctl: &Control) -> Result<()> {
        let t = Instant::now();
        loop {
            let s = self.admin.status(self.run, ctl)?;
            if s.round >= round || s.state == RunState::Finished {
                return Ok(());
            }
            if t.elapsed() > CLOSE_WAIT {
                bail!(
                    "run {}: still at round {} after {}s waiting for round {round}",
                    self.run,
                    s.round,
                    CLOSE_WAIT.as_secs()
                );
            }
            ctl.cancel.check()?;
            std::thread::sleep(POLL);
        }
    }

    /// φ_round, once the server has it.
    pub fn psg(&self, round: u32, ctl: &Control) -> Result<Psg> {
        self.wait_for_round(round, ctl)?;
        Ok(self.admin.psg(self.run, round, self.layout, ctl)?)
    }

    /// The global parameters of `round`, whatever net the run federates, once the server has
    /// them.
    pub fn params(&self, round: u32, ctl: &Control) -> Result<PsgParams> {
        self.wait_for_round(round, ctl)?;
        Ok(self.admin.params(self.run, round, self.layout, ctl)?)
    }
}

/// The enrolled simulated devices: each one's data and its authenticated client.
pub type Devices<'a> = [(&'a ClientData, FedClient)];

/// Runs FedP²EFT's round `round` (0-based) over `devices`; returns the uploads in device
/// order.
pub fn run_round<'a>(
    fed: &Federation<'_>,
    devices: &Devices<'a>,
    lm: &LoadedModel,
    cfg: &RoundConfig,
    round: u32,
    ctl: &Control,
) -> Result<Uploads<'a, ClientUpdate>> {
    let work = |data: &'a ClientData| PsgWork {
        base: &lm.model,
        tok: lm.tokenizer.as_ref(),
        data,
        cfg,
    };
    run_round_with(fed, devices, work, round, ctl)
}

/// The uploads of a round, in device order: each device's data and what it reported.
pub type Uploads<'a, U> = Vec<(&'a ClientData, Box<U>)>;

/// Runs round `round` (0-based) of any federated net over `devices`, each selected device
/// doing `work(its data)`; returns the uploads in device order. A round in which the server
/// gave nobody a task is an error (the run would never advance).
pub fn run_round_with<'a, W: RoundWork>(
    fed: &Federation<'_>,
    devices: &Devices<'a>,
    work: impl Fn(&'a ClientData) -> W,
    round: u32,
    ctl: &Control,
) -> Result<Uploads<'a, W::Update>> {
    fed.wait_for_round(round, ctl)?;
    let mut uploads = Vec::new();
    for (data, fc) in devices {
        let Task::Train(task) = fc.task(ctl)? else {
            continue;
        };
        if task.psg.round != round {
            continue;
        }
        let outcome = fc.join_with(&data.id, fed.layout, &work(data), ctl)?;
        if let RoundOutcome::Uploaded { update, .. } = outcome {
            uploads.push((*data, update));
        }
    }
    if uploads.is_empty() {
        bail!("round {}: no client was given a training task", round + 1);
    }
    Ok(uploads)
}
