//! `fedp2eft create-run`: the operator's side of a federation — create a run on a server with a
//! seeded φ_0 and enroll clients; prints the run and each client's token as JSON (the server
//! keeps only the tokens' hashes: this is the one time they are shown).
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use fedp2eft_core::federated::convert::layout;
use fedp2eft_core::federated::http::Admin;
use fedp2eft_core::model::load_base;
use fedp2eft_core::psg::{Psg, PsgConfig, PsgMeta, FEATURE_LAYOUT};
use fedp2eft_core::Control;
use fedp2eft_wire::{CreateRun, Pool};
use serde_json::json;

#[derive(Args, Debug)]
pub struct CreateRunArgs {
    /// Server URL, e.g. http://127.0.0.1:8080
    #[arg(long)]
    pub server: String,
    #[arg(long, env = "FEDP2EFT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,
    /// Run name.
    #[arg(long)]
    pub run: String,
    /// The base model the clients personalise (a folder from `train-base`) ...
    #[arg(long, conflicts_with_all = ["model_id", "layers"])]
    pub base: Option<PathBuf>,
    /// ... or its identity as the app reports it (`Personalizer.model_id()`) ...
    #[arg(long, requires = "layers")]
    pub model_id: Option<String>,
    /// ... and its number of adapted layers (`Personalizer.num_layers()`).
    #[arg(long, requires = "model_id")]
    pub layers: Option<usize>,
    #[arg(long, default_value_t = 32)]
    pub r_max: usize,
    /// R: rounds to run.
    #[arg(long, default_value_t = 150)]
    pub rounds: u32,
    /// Fraction of the seen pool selected per round.
    #[arg(long, default_value_t = 0.1)]
    pub fraction: f64,
    /// Seconds after which a round closes with what has arrived.
    #[arg(long, default_value_t = 3600)]
    pub deadline_s: u64,
    /// Fraction of the selected clients that must report for a round to aggregate.
    #[arg(long, default_value_t = 0.5)]
    pub min_completion: f64,
    /// Seeds φ_0 and the server's client selection.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Enroll these clients into the seen pool (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    pub enroll: Vec<String>,
    /// Enroll these clients into the unseen pool (never selected for training).
    #[arg(long, value_delimiter = ',')]
    pub enroll_unseen: Vec<String>,
}

pub fn run(a: &CreateRunArgs) -> Result<()> {
    let (base_model, num_layers) = match (&a.base, &a.model_id, a.layers) {
        (Some(dir), _, _) => {
            let lm = load_base(dir).with_context(|| format!("loading {}", dir.display()))?;
            (lm.model.model_id(), lm.model.num_adapted())
        }
        (None, Some(id), Some(l)) => (id.clone(), l),
        _ => bail!("give the model: --base DIR, or --model-id and --layers"),
    };
    let meta = PsgMeta {
        base_model,
        num_layers,
        r_max: a.r_max,
        feature_layout: FEATURE_LAYOUT.into(),
    };
    let psg0 = Psg::new(meta, PsgConfig::default(), a.seed)?;
    let mut run = CreateRun::new(a.run.clone(), layout(&psg0));
    (run.fraction, run.rounds, run.seed) = (a.fraction, a.rounds, a.seed);
    (run.deadline_s, run.min_completion) = (a.deadline_s, a.min_completion);
    let ctl = Control::default();
    let admin = Admin::new(&a.server, &a.admin_token)?;
    admin
        .create_run(&run, &psg0, &ctl)
        .with_context(|| format!("creating run `{}` on {}", a.run, a.server))?;
    let pools = a.enroll.iter().map(|c| (c, Pool::Seen));
    let pools = pools.chain(a.enroll_unseen.iter().map(|c| (c, Pool::Unseen)));
    let mut clients = Vec::new();
    for (client, pool) in pools {
        let e = admin
            .enroll(&a.run, client, pool, &ctl)
            .with_context(|| format!("enrolling `{client}`"))?;
        clients.push(json!({ "id": client, "pool": pool, "token": e.token }));
    }
    let out = json!({ "run": a.run, "server": a.server, "rounds": a.rounds, "clients": clients });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
