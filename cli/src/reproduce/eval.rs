//! Stage 4: every evaluated client × method × budget × seed, one JSON line each in
//! `eval/results.jsonl` with the per-item hits (paired statistics need them). Per client the
//! base model's predictions and the PSG's λ̂ are computed once, BT-LoRA's λ once per seed, for
//! all methods and budgets. A resumed run skips the cells already written. The tuned methods
//! (`lora-tuned`, `fedp2eft-tuned`) first score `eval.lr_grid` on the seen pool's training
//! side (80 / 20 per client, `eval/grid.jsonl`) and use the best lr of each budget.
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use fedp2eft_core::adapter::{AdapterInit, LoraConfig};
use fedp2eft_core::data::{multilingual_accuracy, Benchmark, ClientData, Pool};
use fedp2eft_core::evaluation::pool_clients;
use fedp2eft_core::method::{build, learn_lambda, Inputs, BASELINE_LAMBDA_INIT};
use fedp2eft_core::method::{AdaLoraConfig, LrNet, MethodKind};
use fedp2eft_core::model::LoadedModel;
use fedp2eft_core::personalize::{personalize, PersonalizeConfig};
use fedp2eft_core::psg::Psg;
use fedp2eft_core::train::{encode_all, predict_all, Dataset};
use fedp2eft_core::Control;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::config::{MethodName, ReproConfig};
use super::psg::features_of;
use crate::progress::Bars;

/// One evaluated cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub pool: Pool,
    pub language: String,
    pub client: String,
    pub method: MethodName,
    /// 0 for the base model.
    pub budget: usize,
    /// 0 for the base model.
    pub seed: u64,
    /// Fine-tune learning rate of A and B (0 for the base model and for FedL2P, whose net
    /// gives every matrix its own).
    pub lr: f64,
    pub n: usize,
    pub correct: usize,
    /// '1' / '0' per test item, in the client's order.
    pub hits: String,
    pub seconds: f64,
    /// Kept ranks per adapted layer, in module order (empty for the base model).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranks: Vec<usize>,
    /// The PSG round whose λ̂ the cell used (methods that read the PSG only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psg_round: Option<u32>,
}

/// A cell's identity: client, method, budget, seed and, for the methods that read the PSG,
/// the PSG's round.
pub type CellKey = (String, MethodName, usize, u64, Option<u32>);

/// A client's λ̂ from the final PSG (`eval/lambda-hat.jsonl`; the λ-distance figure).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LambdaHat {
    pub pool: Pool,
    pub language: String,
    pub client: String,
    pub lambda_hat: Vec<f32>,
    /// The PSG round it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psg_round: Option<u32>,
}

impl Row {
    pub fn key(&self) -> CellKey {
        let r = self.psg_round.filter(|_| self.method.uses_psg());
        (self.client.clone(), self.method, self.budget, self.seed, r)
    }
    /// Whether the row belongs to a run whose PSG trained `rounds` rounds.
    pub fn at_round(&self, rounds: u32) -> bool {
        self.psg_round == self.method.psg_round(rounds)
    }
    pub fn hit_vec(&self) -> Vec<bool> {
        self.hits.bytes().map(|b| b == b'1').collect()
    }
}

/// Every JSON line of `path` (none if it does not exist); a torn last line is skipped.
pub fn read_rows<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    let Ok(file) = std::fs::File::open(path) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        if let Ok(v) = serde_json::from_str(&line) {
            out.push(v);
        }
    }
    Ok(out)
}

/// Rows written before cells carried the PSG round they read (`psg_round`) came from a run
/// whose PSG trained `rounds` rounds: stamp them so, before the run's PSG trains on.
pub fn stamp_psg_round(out: &Path, rounds: u32) -> Result<()> {
    let dir = out.join("eval");
    for (file, all) in [
        ("results.jsonl", false),
        ("grid.jsonl", false),
        ("lambda-hat.jsonl", true),
    ] {
        let path = dir.join(file);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let mut changed = false;
        let mut lines = Vec::new();
        for line in text.lines() {
            let Ok(mut v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue; // a torn last line
            };
            let psg = all
                || serde_json::from_value::<MethodName>(v["method"].clone())
                    .is_ok_and(MethodName::uses_psg);
            if psg && v.get("psg_round").is_none() {
                v["psg_round"] = rounds.into();
                changed = true;
            }
            lines.push(serde_json::to_string(&v)?);
        }
        if changed {
            lines.push(String::new());
            crate::atomic::write_atomic(&path, &lines.join("\n"))
                .with_context(|| format!("stamping {}", path.display()))?;
        }
    }
    Ok(())
}

fn append<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(f, "{}", serde_json::to_string(v)?)?;
    f.flush()?;
    Ok(())
}

fn hits_of(pred: &[u32], client: &ClientData) -> (usize, String) {
    let hits: String = client
        .test
        .iter()
        .zip(pred)
        .map(|(e, &p)| if e.label as u32 == p { '1' } else { '0' })
        .collect();
    (hits.bytes().filter(|&b| b == b'1').count(), hits)
}

fn personalize_cfg(cfg: &ReproConfig, budget: usize, seed: u64, lr: f64) -> PersonalizeConfig {
    let r = cfg.psg.r_max;
    let mut pc = PersonalizeConfig::new(budget);
    pc.lora = LoraConfig {
        r,
        lora_alpha: 2.0 * r as f64,
        seed,
    };
    pc.train = cfg.eval.finetune.clone();
    pc.train.max_len = cfg.model.max_len;
    pc.train.seed = seed;
    pc.train.lr_ab = lr;
    pc.evaluate_before = false;
    pc
}

#[derive(Debug, Serialize, Deserialize)]
struct GridRow {
    /// Rows written before FedP²EFT had a tuned arm are LoRA's.
    #[serde(default = "lora_tuned")]
    method: MethodName,
    client: String,
    language: String,
    budget: usize,
    lr: f64,
    correct: usize,
    n: usize,
    /// The PSG round (the tuned FedP²EFT only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    psg_round: Option<u32>,
}

fn lora_tuned() -> MethodName {
    MethodName::LoraTuned
}

/// For each tuned method and budget, the lr of `eval.lr_grid` with the best mean over
/// languages of pooled validation accuracy, scored on 80 / 20 of the training side of the
/// first `grid_clients_per_language` seen clients of each language (`eval/grid.jsonl`). The
/// tuned FedP²EFT's λ̂ comes from the 80 %, as a client would compute it.
fn tune(
    cfg: &ReproConfig,
    bench: &Benchmark,
    lm: &LoadedModel,
    psg: &Psg,
    dir: &Path,
    ctl: &Control,
) -> Result<BTreeMap<(MethodName, usize), f64>> {
    let path = dir.join("grid.jsonl");
    let round = cfg.psg.rounds;
    let mut rows: Vec<GridRow> = read_rows(&path)?;
    rows.retain(|r| r.psg_round == r.method.psg_round(round));
    let done: HashSet<(MethodName, String, usize, u64)> = rows
        .iter()
        .map(|r| (r.method, r.client.clone(), r.budget, r.lr.to_bits()))
        .collect();
    let tuned: Vec<MethodName> = cfg
        .eval
        .methods
        .iter()
        .copied()
        .filter(|m| m.is_tuned())
        .collect();
    let clients = pool_clients(bench, Pool::Seen, Some(cfg.eval.grid_clients_per_language));
    let seed = cfg.eval.seeds[0];
    for c in &clients {
        // 80 / 20 of the training side; the test side is never looked at.
        let mut train = c.train.clone();
        train.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let val = train.split_off(train.len() - train.len().div_ceil(5));
        let inner = ClientData {
            train,
            test: val,
            ..ClientData::clone(c)
        };
        let mut lambda_hat = None;
        for &m in &tuned {
            for budget in cfg.eval.budgets_of(m) {
                for &lr in &cfg.eval.lr_grid {
                    if done.contains(&(m, c.id.clone(), budget, lr.to_bits())) {
                        continue;
                    }
                    if m.uses_psg() && lambda_hat.is_none() {
                        let f = features_of(lm, &inner, cfg.model.max_len, ctl)?;
                        lambda_hat = Some(psg.predict(&f)?);
                    }
                    let kind = m.kind().unwrap_or(MethodKind::Lora);
                    let inputs = Inputs {
                        lambda_hat: lambda_hat.as_deref(),
                        ..Inputs::default()
                    };
                    let method = build(kind, &inputs)?;
                    let pc = personalize_cfg(cfg, budget, seed, lr);
                    let tok = lm.tokenizer.as_ref();
                    let rep =
                        personalize(&lm.model, tok, &inner, method.as_ref(), &pc, ctl)?.report;
                    let row = GridRow {
                        method: m,
                        client: c.id.clone(),
                        language: c.language.clone(),
                        budget,
                        lr,
                        correct: rep.accuracy_after.correct,
                        n: rep.accuracy_after.total,
                        psg_round: m.psg_round(round),
                    };
                    append(&path, &row)?;
                    rows.push(row);
                }
            }
        }
    }
    let ids: HashSet<&str> = clients.iter().map(|c| c.id.as_str()).collect();
    let mut best = BTreeMap::new();
    for &m in &tuned {
        for budget in cfg.eval.budgets_of(m) {
            let mut scored: Vec<(f64, f64)> = Vec::new();
            for &lr in &cfg.eval.lr_grid {
                let cells: Vec<(String, usize, usize)> = rows
                    .iter()
                    .filter(|r| r.method == m && r.budget == budget && r.lr == lr)
                    .filter(|r| ids.contains(r.client.as_str()))
                    .map(|r| (r.language.clone(), r.correct, r.n))
                    .collect();
                scored.push((multilingual_accuracy(&cells), lr));
            }
            // The first of equal scores (the smallest lr when the grid ascends).
            let (acc, lr) =
                scored
                    .iter()
                    .copied()
                    .fold((f64::MIN, cfg.eval.finetune.lr_ab), |a, b| {
                        if b.0 > a.0 {
                            b
                        } else {
                            a
                        }
                    });
            println!(
                "{} r = {budget}: lr {lr:e} (validation {acc:.2} %; grid {scored:?})",
                m.label()
            );
            best.insert((m, budget), lr);
        }
    }
    Ok(best)
}

pub fn run(
    cfg: &ReproConfig,
    bench: &Benchmark,
    lm: &LoadedModel,
    psg: &Psg,
    nets: &BTreeMap<usize, LrNet>,
    out: &Path,
    bars: &Bars,
) -> Result<()> {
    let dir = out.join("eval");
    std::fs::create_dir_all(&dir)?;
    let ctl = bars.control();
    let path = dir.join("results.jsonl");
    let mut done: HashSet<CellKey> = read_rows::<Row>(&path)?.iter().map(Row::key).collect();
    let round = cfg.psg.rounds;
    let methods = &cfg.eval.methods;
    let tuned = tune(cfg, bench, lm, psg, &dir, &ctl).context("tuning the lr")?;
    let (l, r_max) = (lm.model.num_adapted(), cfg.psg.r_max);
    let tok = lm.tokenizer.as_ref();
    for &pool in &cfg.eval.pools {
        let clients = pool_clients(bench, pool, cfg.eval.clients_per_language);
        for (ci, c) in clients.iter().enumerate() {
            // The client's rank among its language's evaluated clients.
            let rank = clients[..ci]
                .iter()
                .filter(|o| o.language == c.language)
                .count();
            let t_client = Instant::now();
            let row = |method: MethodName, budget, seed, lr, pred: &[u32], s: f64| -> Row {
                let (correct, hits) = hits_of(pred, c);
                Row {
                    pool,
                    language: c.language.clone(),
                    client: c.id.clone(),
                    method,
                    budget,
                    seed,
                    lr,
                    n: c.test.len(),
                    correct,
                    hits,
                    seconds: s,
                    ranks: Vec::new(),
                    psg_round: method.psg_round(round),
                }
            };
            let mut written = Vec::new();
            if methods.contains(&MethodName::Base)
                && !done.contains(&(c.id.clone(), MethodName::Base, 0, 0, None))
            {
                let t = Instant::now();
                let enc = encode_all(&c.test, tok, cfg.model.max_len, lm.model.num_labels())?;
                let set = Dataset {
                    examples: &enc,
                    pad_id: tok.pad_id(),
                };
                let pred = predict_all(&lm.model, &set, 64, &ctl)?;
                let r = row(
                    MethodName::Base,
                    0,
                    0,
                    0.0,
                    &pred,
                    t.elapsed().as_secs_f64(),
                );
                append(&path, &r)?;
                written.push(r);
            }
            let todo = |m: MethodName, b: usize, s: u64| {
                let key = (c.id.clone(), m, b, s, m.psg_round(round));
                cfg.eval.runs(m, b, s, rank) && !done.contains(&key)
            };
            let needs = |m: MethodName| {
                let (seeds, budgets) = (&cfg.eval.seeds, &cfg.eval.budgets);
                seeds
                    .iter()
                    .any(|&s| budgets.iter().any(|&b| todo(m, b, s)))
            };
            let lambda_hat = if methods.iter().copied().filter(|m| m.uses_psg()).any(needs) {
                let lh = psg.predict(&features_of(lm, c, cfg.model.max_len, &ctl)?)?;
                let rec = LambdaHat {
                    pool,
                    language: c.language.clone(),
                    client: c.id.clone(),
                    lambda_hat: lh.clone(),
                    psg_round: Some(round),
                };
                append(&dir.join("lambda-hat.jsonl"), &rec)?;
                Some(lh)
            } else {
                None
            };
            for &seed in &cfg.eval.seeds {
                let learned = if cfg
                    .eval
                    .budgets
                    .iter()
                    .any(|&b| todo(MethodName::BtLora, b, seed))
                {
                    let enc = encode_all(&c.train, tok, cfg.model.max_len, lm.model.num_labels())?;
                    let set = Dataset {
                        examples: &enc,
                        pad_id: tok.pad_id(),
                    };
                    let pc = personalize_cfg(cfg, 1, seed, cfg.psg.stage1.lr_ab);
                    let init = AdapterInit::new(&lm.model, pc.lora.clone())?;
                    let mut stage = cfg.psg.stage1.clone();
                    (stage.max_len, stage.seed) = (cfg.model.max_len, seed);
                    let lam0 = vec![BASELINE_LAMBDA_INIT; l * r_max];
                    Some(
                        learn_lambda(&lm.model, &set, &init, &lam0, &stage, &cfg.psg.priors, &ctl)?
                            .raw,
                    )
                } else {
                    None
                };
                let adalora = AdaLoraConfig {
                    seed,
                    ..cfg.eval.adalora.clone()
                };
                for &budget in &cfg.eval.budgets {
                    for &m in methods {
                        if m == MethodName::Base || !todo(m, budget, seed) {
                            continue;
                        }
                        let Some(kind) = m.kind() else { continue };
                        let lr_net = nets.get(&budget);
                        if m == MethodName::Fedl2p && lr_net.is_none() {
                            continue; // the FedL2P stage trains no net for this budget
                        }
                        let inputs = Inputs {
                            lambda_hat: lambda_hat.as_deref(),
                            ranks_only: m == MethodName::PsgRanks,
                            learned: learned.as_deref(),
                            priors: Some(&cfg.psg.priors),
                            adalora: Some(&adalora),
                            lr_net,
                            psg: None,
                        };
                        let method = build(kind, &inputs)?;
                        let default_lr = match m {
                            MethodName::Fedl2p => 0.0,
                            _ => tuned
                                .get(&(m, budget))
                                .copied()
                                .unwrap_or(cfg.eval.finetune.lr_ab),
                        };
                        let lr = inputs.lr(kind, default_lr);
                        let pc = personalize_cfg(cfg, budget, seed, lr);
                        let t = Instant::now();
                        let rep =
                            personalize(&lm.model, tok, c, method.as_ref(), &pc, &ctl)?.report;
                        let r = row(
                            m,
                            budget,
                            seed,
                            lr,
                            &rep.predictions,
                            t.elapsed().as_secs_f64(),
                        );
                        let r = Row {
                            ranks: rep.ranks.iter().map(|l| l.rank).collect(),
                            ..r
                        };
                        append(&path, &r)?;
                        written.push(r);
                    }
                }
            }
            let mut parts = Vec::new();
            for r in &written {
                done.insert(r.key());
                if r.seed == cfg.eval.seeds[0] || r.method == MethodName::Base {
                    let tag = if r.budget == 0 {
                        String::new()
                    } else {
                        format!(" r{}", r.budget)
                    };
                    parts.push(format!("{}{tag} {}/{}", r.method.label(), r.correct, r.n));
                }
            }
            if !written.is_empty() {
                println!(
                    "eval {} {}/{} {} ({}): {} [{:.0}s]",
                    pool.as_str(),
                    ci + 1,
                    clients.len(),
                    c.id,
                    c.language,
                    parts.join(", "),
                    t_client.elapsed().as_secs_f64()
                );
            }
        }
    }
    Ok(())
}
