//! Stage 3: the PSG trained federatedly over a real aggregation server on loopback, as
//! `simulate` does: every seen client enrolls, the server selects `clients_per_round` of them
//! per round, each runs stage 1 + 2 and uploads, the server averages. φ of every round is kept
//! (`psg/round-<k>.safetensors`) with λ̂ statistics and the stage-2 L1 (`psg/rounds.jsonl`). A
//! killed run resumes from the last saved φ_k as a new server run of the remaining rounds
//! (its selections then differ from an uninterrupted run's).
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use fedp2eft_core::adapter::LoraConfig;
use fedp2eft_core::data::{Benchmark, ClientData, Pool};
use fedp2eft_core::federated::convert::{layout, to_params};
use fedp2eft_core::federated::RoundConfig;
use fedp2eft_core::model::{LoadedModel, SeqClassifier};
use fedp2eft_core::psg::{Psg, PsgMeta, FEATURE_LAYOUT};
use fedp2eft_core::train::{encode_all, Dataset};
use fedp2eft_core::Control;
use fedp2eft_wire::CreateRun;
use serde::Serialize;

use super::config::ReproConfig;
use super::loopback;
use crate::progress::Bars;
use crate::rounds::run_round;

/// Layer type of an adapted linear, from its HF module name (BERT family).
pub fn layer_type(name: &str) -> &'static str {
    const TYPES: [(&str, &str); 8] = [
        ("attention.self.query", "q"),
        ("attention.self.key", "k"),
        ("attention.self.value", "v"),
        ("attention.output.dense", "o"),
        ("intermediate.dense", "ffn-in"),
        ("output.dense", "ffn-out"),
        ("pooler", "pooler"),
        ("classifier", "classifier"),
    ];
    TYPES
        .iter()
        .find(|(k, _)| name.contains(k))
        .map_or("other", |(_, v)| v)
}

/// λ̂ statistics of one PSG on a fixed set of client features.
#[derive(Debug, Serialize)]
pub struct LambdaStats {
    pub mean: f64,
    pub max: f64,
    /// layer type → mean λ̂
    pub by_type: BTreeMap<&'static str, f64>,
}

pub fn lambda_stats(psg: &Psg, model: &SeqClassifier, feats: &[Vec<f32>]) -> Result<LambdaStats> {
    let r = psg.meta.r_max;
    let names: Vec<&'static str> = model
        .linears()
        .iter()
        .map(|l| layer_type(&l.name))
        .collect();
    let (mut sum, mut max, mut n) = (0.0, f64::MIN, 0usize);
    let mut by: BTreeMap<&'static str, (f64, usize)> = BTreeMap::new();
    for x in feats {
        for (i, v) in psg.predict(x)?.into_iter().enumerate() {
            let v = f64::from(v);
            sum += v;
            max = max.max(v);
            n += 1;
            let e = by.entry(names[i / r]).or_default();
            e.0 += v;
            e.1 += 1;
        }
    }
    Ok(LambdaStats {
        mean: sum / n.max(1) as f64,
        max,
        by_type: by
            .into_iter()
            .map(|(k, (s, c))| (k, s / c as f64))
            .collect(),
    })
}

/// The PSG input of a client (its training side), computed with the base model.
pub fn features_of(
    lm: &LoadedModel,
    c: &ClientData,
    max_len: usize,
    ctl: &Control,
) -> Result<Vec<f32>> {
    let enc = encode_all(
        &c.train,
        lm.tokenizer.as_ref(),
        max_len,
        lm.model.num_labels(),
    )?;
    let set = Dataset {
        examples: &enc,
        pad_id: lm.tokenizer.pad_id(),
    };
    Ok(fedp2eft_core::features::extract(&lm.model, &set, ctl)?)
}

#[derive(Serialize)]
struct RoundLog {
    round: u32,
    clients: Vec<String>,
    /// Stage-2 L1 of each client before every Adam step (not monotone: Adam's first steps
    /// may overshoot and the clamp at 1e-4 hides undershoots).
    stage2_l1: Vec<Vec<f32>>,
    /// Mean learned raw λ of each client (the stage-2 target).
    mean_learned_lambda: Vec<f32>,
    /// λ̂ of φ after this round, on the first seen clients' features.
    lambda_hat: LambdaStats,
    seconds: f64,
}

pub fn round_config(cfg: &ReproConfig) -> RoundConfig {
    let r = cfg.psg.r_max;
    let mut train = cfg.psg.stage1.clone();
    train.max_len = cfg.model.max_len;
    RoundConfig {
        lora: LoraConfig {
            r,
            lora_alpha: 2.0 * r as f64,
            seed: 42,
        },
        train,
        priors: cfg.psg.priors,
    }
}

pub fn run(
    cfg: &ReproConfig,
    bench: &Benchmark,
    lm: &LoadedModel,
    out: &Path,
    bars: &Bars,
) -> Result<Psg> {
    let dir = out.join("psg");
    std::fs::create_dir_all(&dir)?;
    let rounds = cfg.psg.rounds;
    let path = |k: u32| dir.join(format!("round-{k}.safetensors"));
    let done = (0..=rounds).rev().find(|&k| path(k).is_file());
    if done == Some(rounds) {
        println!("psg: done ({} rounds)", rounds);
        return Ok(Psg::load(&path(rounds))?);
    }
    let ctl = bars.control();
    let meta = PsgMeta {
        base_model: lm.model.model_id(),
        num_layers: lm.model.num_adapted(),
        r_max: cfg.psg.r_max,
        feature_layout: FEATURE_LAYOUT.into(),
    };
    let (start, psg0) = match done {
        Some(k) => (k, Psg::load(&path(k))?),
        None => {
            let p = Psg::new(meta, cfg.psg.net.clone(), cfg.psg.seed)?;
            p.save(&path(0))?;
            (0, p)
        }
    };
    psg0.check_compatible(&lm.model.model_id(), lm.model.num_adapted())
        .context("the saved PSG does not fit the base model")?;
    let seen = bench.pool(Pool::Seen);
    let probe: Vec<Vec<f32>> = seen
        .iter()
        .take(8)
        .map(|c| features_of(lm, c, cfg.model.max_len, &ctl))
        .collect::<Result<_>>()?;
    let run_name = format!(
        "{}-from-{start}",
        cfg.name.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
    );
    let mut run = CreateRun::new(run_name, layout(&psg0));
    run.rounds = rounds - start;
    run.seed = cfg.psg.seed + u64::from(start);
    run.stage2 = fedp2eft_wire::Stage2 {
        steps: u32::try_from(cfg.psg.net.stage2_steps)?,
        lr: cfg.psg.net.stage2_lr,
    };
    let run_rounds = run.rounds;
    let lb = loopback::start(
        &dir,
        start,
        run,
        cfg.psg.clients_per_round,
        &to_params(&psg0)?,
        &seen,
        &ctl,
    )?;
    println!(
        "psg: {} seen clients, {} per round, rounds {}..{rounds}, L = {}, r_max = {} (server {})",
        lb.clients.len(),
        cfg.psg.clients_per_round,
        start + 1,
        lb.layout.num_layers,
        cfg.psg.r_max,
        lb.server.url
    );
    let rc = round_config(cfg);
    let fed = lb.federation();
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("rounds.jsonl"))?;
    let mut last = psg0;
    for j in 0..run_rounds {
        let t = Instant::now();
        let mut entry = RoundLog {
            round: start + j + 1,
            clients: Vec::new(),
            stage2_l1: Vec::new(),
            mean_learned_lambda: Vec::new(),
            lambda_hat: lambda_stats(&last, &lm.model, &[])?,
            seconds: 0.0,
        };
        for (data, update) in run_round(&fed, &lb.clients, lm, &rc, j, &ctl)? {
            entry.clients.push(data.id.clone());
            entry.stage2_l1.push(update.stage2_loss.clone());
            entry.mean_learned_lambda.push(update.mean_lambda);
        }
        last = fed.psg(j + 1, &ctl)?;
        last.save(&path(start + j + 1))?;
        entry.lambda_hat = lambda_stats(&last, &lm.model, &probe)?;
        entry.seconds = t.elapsed().as_secs_f64();
        println!(
            "psg round {}/{rounds}: {} clients, stage-2 L1 {:.2} → {:.2}, λ̂ mean {:.4} max {:.4}, {:.1}s",
            entry.round,
            entry.clients.len(),
            mean(entry.stage2_l1.iter().filter_map(|l| l.first().copied())),
            mean(entry.stage2_l1.iter().filter_map(|l| l.last().copied())),
            entry.lambda_hat.mean,
            entry.lambda_hat.max,
            entry.seconds
        );
        writeln!(log, "{}", serde_json::to_string(&entry)?)?;
    }
    Ok(last)
}

fn mean(v: impl Iterator<Item = f32>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + f64::from(x), n + 1));
    s / n.max(1) as f64
}
