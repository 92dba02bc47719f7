//! `fedp2eft simulate`: a whole FedP²EFT experiment on one machine over real HTTP — a loopback
//! aggregation server (or `--server`), N seen-pool clients training the PSG for R rounds, the PSG
//! of every round kept, then FedP²EFT vs LoRA personalization on seen and unseen clients for
//! r ∈ {2, 4, 8, 16}.
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use fedp2eft_core::data::{Benchmark, ClientData, Pool};
use fedp2eft_core::evaluation::{evaluate_pool, pool_clients, PoolResult};
use fedp2eft_core::federated::convert::layout;
use fedp2eft_core::federated::http::{Admin, FedClient};
use fedp2eft_core::federated::RoundConfig;
use fedp2eft_core::method::{build, Inputs, MethodKind};
use fedp2eft_core::model::LoadedModel;
use fedp2eft_core::personalize::PersonalizeConfig;
use fedp2eft_core::psg::{Psg, PsgConfig, PsgMeta, FEATURE_LAYOUT};
use fedp2eft_core::Control;
use fedp2eft_wire::{CreateRun, PsgLayout};

use crate::progress::Bars;
use crate::rounds::{run_round, Devices, Federation};
use crate::serve::LoopbackServer;
use crate::workload::{default_base_dir, load_base_for, DataArgs};

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Seen-pool clients taking part (spread over the languages; default languages: en, hi).
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Fraction of them selected per round.
    #[arg(long, default_value_t = 0.5)]
    pub fraction: f64,
    #[arg(long, default_value_t = 2)]
    pub rounds: u32,
    /// Use this server instead of starting one on loopback (needs --admin-token).
    #[arg(long)]
    pub server: Option<String>,
    #[arg(long, env = "FEDP2EFT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Base model folder [default: $HOME/bases/e5-<data>].
    #[arg(long)]
    pub base: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    pub r_max: usize,
    /// Budgets to evaluate.
    #[arg(long, value_delimiter = ',', default_value = "2,4,8,16")]
    pub budgets: Vec<usize>,
    /// Evaluated clients per language and pool.
    #[arg(long, default_value_t = 1)]
    pub eval_clients: usize,
    /// Methods evaluated with the trained PSG: fedp2eft, lora, adalora (bt-lora learns λ per
    /// client and fedl2p its own net: `fedp2eft reproduce` runs those).
    #[arg(long, value_delimiter = ',', default_value = "fedp2eft,lora")]
    pub methods: Vec<MethodKind>,
    #[arg(long, default_value_t = 128)]
    pub max_len: usize,
    /// Output folder: psg-round-<k>.safetensors for every round and results.json.
    #[arg(long, default_value = "out/simulate")]
    pub out: PathBuf,
}

/// The run's PSG layout, as the server states it.
pub fn run_layout(fc: &FedClient, ctl: &Control) -> Result<PsgLayout> {
    Ok(fc.status(ctl).context("reading the run's status")?.layout)
}

/// `n` seen-pool clients, round-robin over languages so every language takes part.
fn pick_clients(bench: &Benchmark, n: usize) -> Vec<&ClientData> {
    let mut by_lang: Vec<Vec<&ClientData>> = bench
        .languages()
        .iter()
        .map(|l| {
            bench
                .pool(Pool::Seen)
                .into_iter()
                .filter(|c| &c.language == l)
                .collect()
        })
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < n && by_lang.iter().any(|v| !v.is_empty()) {
        let n_lang = by_lang.len();
        let v = &mut by_lang[i % n_lang];
        if !v.is_empty() {
            out.push(v.remove(0));
        }
        i += 1;
    }
    out
}

/// Trains the PSG: every client polls; selected ones run stage 1 + 2 and upload. Clients run
/// one after another (each already uses every core).
fn train_rounds(
    fed: &Federation<'_>,
    clients: &Devices<'_>,
    lm: &LoadedModel,
    cfg: &RoundConfig,
    rounds: u32,
    ctl: &Control,
) -> Result<()> {
    for round in 0..rounds {
        let started = Instant::now();
        let uploads = run_round(fed, clients, lm, cfg, round, ctl)?;
        for (data, update) in &uploads {
            println!(
                "  round {round}: {} ({}) uploaded, {} samples, stage-2 L1 {:.3} → {:.3}",
                data.id,
                data.language,
                update.num_samples,
                update.stage2_loss.first().copied().unwrap_or(f32::NAN),
                update.stage2_loss.last().copied().unwrap_or(f32::NAN)
            );
        }
        println!(
            "round {round}: {} clients in {:.1}s",
            uploads.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn print_table(results: &[PoolResult], budgets: &[usize]) {
    println!("\nmean over languages of pooled test accuracy (%)");
    println!("   r | seen FedP2EFT | seen LoRA | unseen FedP2EFT | unseen LoRA");
    let get = |pool: Pool, m: &str, r: usize| {
        results
            .iter()
            .find(|x| x.pool == pool && x.method == m && x.budget == r)
            .map_or("-".to_string(), |x| format!("{:.2}", x.accuracy))
    };
    for &r in budgets {
        println!(
            "{r:>4} | {:>13} | {:>9} | {:>15} | {:>11}",
            get(Pool::Seen, "FedP2EFT", r),
            get(Pool::Seen, "LoRA", r),
            get(Pool::Unseen, "FedP2EFT", r),
            get(Pool::Unseen, "LoRA", r)
        );
    }
    for pool in [Pool::Seen, Pool::Unseen] {
        if let Some(x) = results.iter().find(|x| x.pool == pool) {
            println!("base model, {:?}: {:.2}", pool, x.base_accuracy);
        }
    }
}

pub fn run(a: &SimulateArgs, home: &Path) -> Result<()> {
    let start = Instant::now();
    if a.budgets.iter().any(|&r| r == 0 || r > a.r_max) {
        bail!("budgets must lie in 1..={}", a.r_max);
    }
    if let Some(k) = a
        .methods
        .iter()
        .find(|k| matches!(k, MethodKind::BtLora | MethodKind::Fedl2p))
    {
        bail!(
            "simulate trains the PSG only, not what {k} needs (a λ learned per client, a FedL2P \
             net): `fedp2eft reproduce` evaluates it"
        );
    }
    // Two languages unless told otherwise: the whole run then takes minutes on 2 cores.
    let mut data = a.data.clone();
    if a.data.tag() == "emoji" && data.locales.is_none() {
        data.locales = Some(vec!["en".into(), "hi".into()]);
    }
    let mut bench = data.load(home)?;
    let base = a
        .base
        .clone()
        .unwrap_or_else(|| default_base_dir(home, "e5", &a.data.tag()));
    let lm = load_base_for(&base, &mut bench)?;
    std::fs::create_dir_all(&a.out)?;
    let token = a
        .admin_token
        .clone()
        .unwrap_or_else(|| format!("simulate-{}", std::process::id()) + "-admin-token");
    let (url, _server) = match &a.server {
        Some(u) => {
            if a.admin_token.is_none() {
                bail!("--server needs --admin-token (or FEDP2EFT_ADMIN_TOKEN)");
            }
            (u.clone(), None)
        }
        None => {
            let dir = a.out.join("server");
            std::fs::create_dir_all(&dir)?;
            let s = LoopbackServer::start(&token, dir)?;
            println!(
                "aggregation server on {} (SQLite in {}/server)",
                s.url,
                a.out.display()
            );
            (s.url.clone(), Some(s))
        }
    };
    let bars = Bars::new();
    let ctl = bars.control();
    let meta = PsgMeta {
        base_model: lm.model.model_id(),
        num_layers: lm.model.num_adapted(),
        r_max: a.r_max,
        feature_layout: FEATURE_LAYOUT.into(),
    };
    let psg0 = Psg::new(meta, PsgConfig::default(), 42)?;
    let lay = layout(&psg0);
    let run_name = format!("sim-{}", std::process::id());
    let mut run = CreateRun::new(run_name.clone(), lay.clone());
    (run.fraction, run.rounds, run.min_completion, run.seed) = (a.fraction, a.rounds, 1.0, 42);
    run.deadline_s = 24 * 3600; // rounds close when every selected client reported
    let admin = Admin::new(&url, &token)?;
    admin.create_run(&run, &psg0, &ctl)?;
    let chosen = pick_clients(&bench, a.clients);
    let mut clients = Vec::new();
    for c in &chosen {
        let e = admin.enroll(&run_name, &c.id, fedp2eft_wire::Pool::Seen, &ctl)?;
        clients.push((*c, FedClient::new(&url, &run_name, &e.token)?));
    }
    println!(
        "run {run_name}: {} clients ({} languages), fraction {}, {} rounds, L = {}, r_max = {}",
        clients.len(),
        bench.languages().len(),
        a.fraction,
        a.rounds,
        lay.num_layers,
        a.r_max
    );
    let cfg = RoundConfig::for_r_max(a.r_max, a.max_len);
    let fed = Federation {
        admin: &admin,
        run: &run_name,
        layout: &lay,
    };
    train_rounds(&fed, &clients, &lm, &cfg, a.rounds, &ctl)?;
    let mut final_psg = None;
    for k in 0..=a.rounds {
        let p = fed.psg(k, &ctl)?;
        p.save(&a.out.join(format!("psg-round-{k}.safetensors")))?;
        final_psg = Some(p);
    }
    let psg = final_psg.context("no PSG downloaded")?;
    let train_s = start.elapsed().as_secs_f64();
    println!("PSG trained in {train_s:.1}s; evaluating personalization");

    let mut results = Vec::new();
    for pool in [Pool::Seen, Pool::Unseen] {
        let eval = pool_clients(&bench, pool, Some(a.eval_clients));
        for &r in &a.budgets {
            let mut pc = PersonalizeConfig::new(r);
            pc.lora = cfg.lora.clone();
            pc.train.max_len = a.max_len;
            let inputs = Inputs {
                psg: Some(&psg),
                ..Inputs::default()
            };
            for &k in &a.methods {
                let m = build(k, &inputs)?;
                let mut pc = pc.clone();
                pc.train.lr_ab = inputs.lr(k, pc.train.lr_ab);
                results.push(evaluate_pool(
                    &lm.model,
                    lm.tokenizer.as_ref(),
                    &eval,
                    pool,
                    m.as_ref(),
                    &pc,
                    &ctl,
                )?);
            }
        }
    }
    print_table(&results, &a.budgets);
    let wall = start.elapsed().as_secs_f64();
    println!("wall time {wall:.1}s (PSG training {train_s:.1}s)");
    let json = serde_json::json!({ "results": results, "wall_s": wall, "train_s": train_s,
        "clients": a.clients, "fraction": a.fraction, "rounds": a.rounds });
    std::fs::write(
        a.out.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    println!("PSG of every round and results.json in {}", a.out.display());
    Ok(())
}
