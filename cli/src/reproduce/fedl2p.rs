//! Stage 3b (only when `fedl2p` is evaluated): FedL2P's learning-rate net trained federatedly
//! over a loopback aggregation server, one run per evaluated budget (LoRA rank = budget, as the
//! authors), the same way as the PSG: the seen clients enroll, `clients_per_round` of them
//! meta-train the round's net and upload it, the server averages. φ of every round is kept
//! (`fedl2p/r<b>/round-<k>.safetensors`) with each client's validation losses
//! (`rounds.jsonl`). The authors' selection: early stopping with patience on the mean client
//! validation loss, the best net used at test time. The validation loss of a client's first
//! outer step is the round's global net on that client's held-out 20 %, so round k + 1 scores
//! φ_k; `best.json` names the round chosen. A killed run resumes from its last φ_k.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use fedp2eft_core::data::{Benchmark, Pool};
use fedp2eft_core::federated::convert::{lr_net_from_params, lr_net_layout, lr_net_to_params};
use fedp2eft_core::federated::http::Fedl2pWork;
use fedp2eft_core::federated::Fedl2pRoundConfig;
use fedp2eft_core::method::{LrNet, LrNetMeta};
use fedp2eft_core::model::LoadedModel;
use fedp2eft_wire::CreateRun;
use serde::{Deserialize, Serialize};

use super::config::{Fedl2pStage, MethodName, ReproConfig};
use super::eval::read_rows;
use super::loopback;
use crate::atomic::write_atomic;
use crate::progress::Bars;
use crate::rounds::run_round_with;

#[derive(Debug, Serialize, Deserialize)]
pub struct RoundLog {
    pub round: u32,
    pub clients: Vec<String>,
    /// Each client's validation loss after every outer step's inner fine-tune (the first one
    /// is the round's global net).
    pub val_loss: Vec<Vec<f32>>,
    /// Mean over the clients of their first validation loss: the score of φ_{round−1}.
    pub score_of_previous: f64,
    /// Each client's mean per-matrix learning rate after its meta-training.
    pub mean_lr: Vec<f64>,
    pub seconds: f64,
}

/// The round whose net is used at test time.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Best {
    pub round: u32,
    pub val_loss: f64,
    /// Rounds run (fewer than configured when the patience ran out).
    pub rounds_run: u32,
}

/// What a budget's nets depend on: a different value retrains them.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Settings {
    stage: Fedl2pStage,
    round: Fedl2pRoundConfig,
}

fn net_path(dir: &Path, k: u32) -> PathBuf {
    dir.join(format!("round-{k}.safetensors"))
}

fn round_config(cfg: &ReproConfig) -> Fedl2pRoundConfig {
    let mut fit = cfg.eval.finetune.clone();
    fit.max_len = cfg.model.max_len;
    Fedl2pRoundConfig {
        fit,
        meta: cfg.fedl2p.meta.clone(),
        lora_seed: 42,
    }
}

/// The best round so far and whether the patience has run out, from the logged scores.
fn best_of(logs: &[RoundLog], patience: u32) -> Option<(Best, bool)> {
    let mut best: Option<(u32, f64)> = None;
    for l in logs {
        let k = l.round - 1;
        if best.is_none_or(|(_, v)| l.score_of_previous < v) {
            best = Some((k, l.score_of_previous));
        }
    }
    let (round, val_loss) = best?;
    let last = logs.iter().map(|l| l.round).max().unwrap_or(0);
    let stop = patience > 0 && last.saturating_sub(round + 1) >= patience;
    Some((
        Best {
            round,
            val_loss,
            rounds_run: last,
        },
        stop,
    ))
}

/// Trains (or loads) FedL2P's net for every budget it is evaluated at.
pub fn run(
    cfg: &ReproConfig,
    bench: &Benchmark,
    lm: &LoadedModel,
    out: &Path,
    bars: &Bars,
) -> Result<BTreeMap<usize, LrNet>> {
    let mut nets = BTreeMap::new();
    if !cfg.eval.methods.contains(&MethodName::Fedl2p) {
        return Ok(nets);
    }
    for budget in cfg.eval.budgets_of(MethodName::Fedl2p) {
        let dir = out.join("fedl2p").join(format!("r{budget}"));
        let net = train_budget(cfg, bench, lm, budget, &dir, bars)
            .with_context(|| format!("FedL2P at r = {budget}"))?;
        nets.insert(budget, net);
    }
    Ok(nets)
}

fn train_budget(
    cfg: &ReproConfig,
    bench: &Benchmark,
    lm: &LoadedModel,
    budget: usize,
    dir: &Path,
    bars: &Bars,
) -> Result<LrNet> {
    std::fs::create_dir_all(dir)?;
    let st = &cfg.fedl2p;
    let rc = round_config(cfg);
    let settings = Settings {
        stage: st.clone(),
        round: rc.clone(),
    };
    let claim = dir.join("settings.json");
    match std::fs::read_to_string(&claim) {
        Ok(text) => {
            let was: Settings = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", claim.display()))?;
            if was != settings {
                bail!(
                    "{} was trained with other FedL2P settings (see settings.json): delete it to \
                     retrain",
                    dir.display()
                );
            }
        }
        Err(_) => write_atomic(&claim, &serde_json::to_string_pretty(&settings)?)?,
    }
    let path = |k: u32| net_path(dir, k);
    let log_path = dir.join("rounds.jsonl");
    let mut logs: Vec<RoundLog> = read_rows(&log_path)?;
    let done = (0..=st.rounds).rev().find(|&k| path(k).is_file());
    // Logs beyond the last saved net (a kill between the two writes) are dropped.
    logs.retain(|l| done.is_some_and(|k| l.round <= k));
    let finished = |logs: &[RoundLog]| {
        done == Some(st.rounds) || best_of(logs, st.patience).is_some_and(|(_, stop)| stop)
    };
    if !finished(&logs) {
        train_rounds(cfg, bench, lm, budget, dir, done, &rc, &mut logs, bars)?;
    }
    let best = match best_of(&logs, st.patience) {
        Some((b, _)) => b,
        None => Best {
            round: logs.iter().map(|l| l.round).max().unwrap_or(0),
            val_loss: f64::NAN,
            rounds_run: logs.len() as u32,
        },
    };
    write_atomic(
        &dir.join("best.json"),
        &serde_json::to_string_pretty(&best)?,
    )?;
    println!(
        "fedl2p r = {budget}: the net of round {} (mean client validation loss {:.4}, {} rounds run)",
        best.round, best.val_loss, best.rounds_run
    );
    Ok(LrNet::load(&path(best.round))?)
}

#[allow(clippy::too_many_arguments)]
fn train_rounds(
    cfg: &ReproConfig,
    bench: &Benchmark,
    lm: &LoadedModel,
    budget: usize,
    dir: &Path,
    done: Option<u32>,
    rc: &Fedl2pRoundConfig,
    logs: &mut Vec<RoundLog>,
    bars: &Bars,
) -> Result<()> {
    let st = &cfg.fedl2p;
    let path = |k: u32| net_path(dir, k);
    let ctl = bars.control();
    let (start, net0) = match done {
        Some(k) => (k, LrNet::load(&path(k))?),
        None => {
            let meta = LrNetMeta::new(lm.model.model_id(), lm.model.num_adapted());
            let n = LrNet::new(meta, st.meta.clone(), st.seed)?;
            n.save(&path(0))?;
            (0, n)
        }
    };
    net0.meta
        .check_compatible(&lm.model.model_id(), lm.model.num_adapted())
        .context("the saved FedL2P net does not fit the base model")?;
    let seen = bench.pool(Pool::Seen);
    let run_name = format!(
        "{}-fedl2p-r{budget}-from-{start}",
        cfg.name.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
    );
    let mut run = CreateRun::new(run_name, lr_net_layout(&net0, budget));
    run.rounds = st.rounds - start;
    run.seed = st.seed + u64::from(start);
    let run_rounds = run.rounds;
    let lb = loopback::start(
        dir,
        start,
        run,
        st.clients_per_round,
        &lr_net_to_params(&net0)?,
        &seen,
        &ctl,
    )?;
    println!(
        "fedl2p r = {budget}: {} seen clients, {} per round, rounds {}..{} (server {})",
        lb.clients.len(),
        st.clients_per_round,
        start + 1,
        st.rounds,
        lb.server.url
    );
    let fed = lb.federation();
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("rounds.jsonl"))?;
    let tok = lm.tokenizer.as_ref();
    for j in 0..run_rounds {
        let t = Instant::now();
        let work = |data| Fedl2pWork {
            base: &lm.model,
            tok,
            data,
            cfg: rc,
        };
        let mut entry = RoundLog {
            round: start + j + 1,
            clients: Vec::new(),
            val_loss: Vec::new(),
            score_of_previous: 0.0,
            mean_lr: Vec::new(),
            seconds: 0.0,
        };
        for (data, update) in run_round_with(&fed, &lb.clients, work, j, &ctl)? {
            entry.clients.push(data.id.clone());
            entry.val_loss.push(update.report.val_loss.clone());
            entry.mean_lr.push(update.report.mean_lr);
        }
        let firsts: Vec<f64> = entry
            .val_loss
            .iter()
            .filter_map(|v| v.first().map(|&x| f64::from(x)))
            .collect();
        entry.score_of_previous = firsts.iter().sum::<f64>() / firsts.len().max(1) as f64;
        let params = fed.params(j + 1, &ctl)?;
        let net = lr_net_from_params(&lb.layout, st.meta.clone(), &params)?;
        net.save(&path(start + j + 1))?;
        entry.seconds = t.elapsed().as_secs_f64();
        println!(
            "fedl2p r{budget} round {}/{}: {} clients, validation loss of φ_{} {:.4}, mean lr {:.2e}, {:.1}s",
            entry.round,
            st.rounds,
            entry.clients.len(),
            entry.round - 1,
            entry.score_of_previous,
            entry.mean_lr.iter().sum::<f64>() / entry.mean_lr.len().max(1) as f64,
            entry.seconds
        );
        writeln!(log, "{}", serde_json::to_string(&entry)?)?;
        logs.push(entry);
        if best_of(logs, st.patience).is_some_and(|(_, stop)| stop) {
            println!(
                "fedl2p r{budget}: no better validation loss in {} rounds, stopping",
                st.patience
            );
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(round: u32, score: f64) -> RoundLog {
        RoundLog {
            round,
            clients: vec![],
            val_loss: vec![],
            score_of_previous: score,
            mean_lr: vec![],
            seconds: 0.0,
        }
    }

    #[test]
    fn the_best_net_is_the_one_a_round_scored_lowest_and_patience_stops() {
        let logs = [log(1, 2.0), log(2, 1.5), log(3, 1.7), log(4, 1.8)];
        let (b, stop) = best_of(&logs, 2).expect("scored");
        assert_eq!((b.round, b.val_loss, b.rounds_run), (1, 1.5, 4));
        assert!(stop, "rounds 3 and 4 did not improve on φ_1");
        assert!(!best_of(&logs, 3).expect("scored").1);
        assert!(
            !best_of(&logs, 0).expect("scored").1,
            "0 = no early stopping"
        );
        assert!(best_of(&[], 2).is_none());
    }
}
