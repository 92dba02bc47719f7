//! `fedp2eft join`: take part in a federated run as one client until the run finishes.
use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;
use fedp2eft_core::federated::http::{FedClient, RoundOutcome};
use fedp2eft_core::federated::RoundConfig;

use crate::progress::Bars;
use crate::workload::{client, default_base_dir, load_base_for, DataArgs};

#[derive(Args, Debug)]
pub struct JoinArgs {
    /// Server URL, e.g. http://127.0.0.1:8080
    #[arg(long)]
    pub server: String,
    /// Run name.
    #[arg(long)]
    pub run: String,
    /// This client's token (from enrolment).
    #[arg(long, env = "FEDP2EFT_TOKEN", hide_env_values = true)]
    pub token: String,
    /// This client's id, which selects its local data.
    #[arg(long)]
    pub client: String,
    #[command(flatten)]
    pub data: DataArgs,
    /// Base model folder [default: $HOME/bases/e5-<data>].
    #[arg(long)]
    pub base: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 128)]
    pub max_len: usize,
    /// Stop after this many rounds (default: until the run finishes).
    #[arg(long)]
    pub rounds: Option<u32>,
}

pub fn run(a: &JoinArgs, home: &Path) -> Result<()> {
    let mut bench = a.data.load(home)?;
    client(&bench, Some(&a.client))?; // a wrong id fails before the base model loads
    let base = a
        .base
        .clone()
        .unwrap_or_else(|| default_base_dir(home, "e5", &a.data.tag()));
    let lm = load_base_for(&base, &mut bench)?;
    let data = client(&bench, Some(&a.client))?;
    let fc = FedClient::new(&a.server, &a.run, &a.token)?;
    let bars = Bars::new();
    let ctl = bars.control();
    let layout = crate::simulate::run_layout(&fc, &ctl)?;
    let cfg = RoundConfig::for_r_max(layout.r_max, a.max_len);
    let mut done = 0;
    loop {
        let out = fc
            .join_round(
                &a.client,
                &lm.model,
                lm.tokenizer.as_ref(),
                data,
                &layout,
                &cfg,
                &ctl,
            )
            .context("taking part in a round")?;
        match out {
            RoundOutcome::Uploaded { round, update, .. } => {
                println!(
                    "round {round}: uploaded ({} samples, stage-1 loss {:?}, mean λ {:.4})",
                    update.num_samples, update.stage1.epoch_loss, update.mean_lambda
                );
                done += 1;
                if a.rounds.is_some_and(|r| done >= r) {
                    return Ok(());
                }
            }
            RoundOutcome::Finished { round } => {
                println!("run finished: the final PSG is round {round}");
                return Ok(());
            }
        }
    }
}
