//! Stage 5: tables from `eval/results.jsonl` — per pool and budget, each method's mean over
//! languages of pooled accuracy (mean ± SD over seeds, the items behind it), FedP²EFT against
//! every other method paired on the same clients (95 % bootstrap CI over clients stratified by
//! language, exact McNemar per seed) and flips against the base model; per-language accuracy.
//! Written as `results.md` and `results.json`.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Result};
use fedp2eft_core::data::Pool;
use fedp2eft_core::stats::{
    discordant, flips, mcnemar_exact, mean_over_languages, paired_bootstrap_ci, ClientPair,
};
use serde::Serialize;

use super::config::{MethodName, ReproConfig};
use super::eval::{read_rows, Row};
use crate::atomic::write_atomic;

#[derive(Debug, Serialize)]
struct Cell {
    pool: Pool,
    budget: usize,
    method: MethodName,
    /// Mean over languages of pooled accuracy (%), per seed.
    per_seed: Vec<f64>,
    mean: f64,
    sd: f64,
    clients: usize,
    /// Test items behind each seed's figure.
    items: usize,
    /// language → accuracy (%) pooled over clients and seeds.
    per_language: BTreeMap<String, f64>,
    /// Against the base model, first seed: items gained / lost.
    gained: usize,
    lost: usize,
}

#[derive(Debug, Serialize)]
struct Pair {
    pool: Pool,
    budget: usize,
    /// FedP²EFT, or its tuned-lr arm against tuned-lr LoRA (`MethodName::rival`).
    ours: MethodName,
    other: MethodName,
    /// ours − other, percentage points, with the 95 % CI (seeds pooled per client).
    diff: f64,
    low: f64,
    high: f64,
    /// Exact McNemar per seed: (ours only right, other only right, p).
    mcnemar: Vec<(u64, usize, usize, f64)>,
    /// The clients both ran on, their test items (one seed's), and both methods' accuracy
    /// (%) there: the table's own accuracy column is each method's on its own clients.
    clients: usize,
    items: usize,
    ours_accuracy: f64,
    other_accuracy: f64,
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

pub fn run(cfg: &ReproConfig, out: &Path) -> Result<()> {
    let all: Vec<Row> = read_rows(&out.join("eval/results.jsonl"))?;
    // Cells of the PSG's other rounds are kept for the table by round below.
    let rows: Vec<Row> = all
        .iter()
        .filter(|r| r.at_round(cfg.psg.rounds))
        .cloned()
        .collect();
    if rows.is_empty() {
        bail!("no evaluation results in {}", out.join("eval").display());
    }
    let find = |pool: Pool, m: MethodName, budget: usize, seed: u64| -> Vec<&Row> {
        cell_rows(&rows, pool, m, budget, seed).collect()
    };
    let seeds = &cfg.eval.seeds;
    let mut cells = Vec::new();
    let mut pairs = Vec::new();
    let mut md = String::new();
    writeln!(md, "# Reproduction `{}`\n", cfg.name)?;
    writeln!(
        md,
        "Mean over languages of per-language pooled test accuracy (%), mean ± SD over seeds \
         {seeds:?}; Δ = FedP²EFT − method with a 95 % bootstrap CI over clients (stratified by \
         language, then test items within client, paired; {} resamples, seeds pooled per client; for LoRA (tuned lr), FedP²EFT (tuned lr) − \
         LoRA (tuned lr) when both ran); McNemar: exact two-sided p per seed.\n",
        cfg.eval.bootstrap
    )?;
    for &pool in &cfg.eval.pools {
        for &budget in &cfg.eval.budgets {
            writeln!(md, "## {} pool, r = {budget}\n", pool.as_str())?;
            writeln!(
                md,
                "| method | accuracy | seeds | clients | items | gained / lost vs base | Δ FedP²EFT − method [95 % CI] | McNemar p | paired on: clients, items, FedP²EFT vs method |"
            )?;
            writeln!(md, "|---|---|---|---|---|---|---|---|---|")?;
            let base: BTreeMap<&str, &Row> = find(pool, MethodName::Base, 0, 0)
                .into_iter()
                .map(|r| (r.client.as_str(), r))
                .collect();
            for &m in &cfg.eval.methods {
                let per_seed_rows: Vec<Vec<&Row>> = if m == MethodName::Base {
                    vec![find(pool, m, budget, 0)]
                } else {
                    let s = cfg.eval.seeds_of(m);
                    s.iter().map(|&s| find(pool, m, budget, s)).collect()
                };
                if per_seed_rows.iter().all(Vec::is_empty) {
                    continue;
                }
                let per_seed: Vec<f64> = per_seed_rows
                    .iter()
                    .map(|rs| accuracy_of(rs.iter().copied()).0)
                    .collect();
                let (mean, sd) = mean_sd(&per_seed);
                let mut lang: BTreeMap<String, (usize, usize)> = BTreeMap::new();
                for r in per_seed_rows.iter().flatten() {
                    let e = lang.entry(r.language.clone()).or_default();
                    e.0 += r.correct;
                    e.1 += r.n;
                }
                let (mut gained, mut lost) = (0, 0);
                for r in &per_seed_rows[0] {
                    if let Some(b) = base.get(r.client.as_str()) {
                        let f = flips(&b.hit_vec(), &r.hit_vec())?;
                        gained += f.gained;
                        lost += f.lost;
                    }
                }
                let cell = Cell {
                    pool,
                    budget,
                    method: m,
                    mean,
                    sd,
                    clients: per_seed_rows[0].len(),
                    items: per_seed_rows[0].iter().map(|r| r.n).sum(),
                    per_language: lang
                        .into_iter()
                        .map(|(l, (c, n))| (l, 100.0 * c as f64 / n.max(1) as f64))
                        .collect(),
                    gained,
                    lost,
                    per_seed,
                };
                let mut delta = String::from("");
                let mut p_text = String::from("");
                let mut on = String::from("");
                if let Some(ours) = m.rival(&cfg.eval.methods) {
                    if let Some(pair) = compare(cfg, &rows, pool, budget, ours, m)? {
                        delta = format!("{:+.2} [{:+.2}, {:+.2}]", pair.diff, pair.low, pair.high);
                        on = format!(
                            "{}, {}, {:.2} vs {:.2}",
                            pair.clients, pair.items, pair.ours_accuracy, pair.other_accuracy
                        );
                        p_text = pair
                            .mcnemar
                            .iter()
                            .map(|(_, _, _, p)| format!("{p:.3}"))
                            .collect::<Vec<_>>()
                            .join(" / ");
                        pairs.push(pair);
                    }
                }
                let acc = if cell.per_seed.len() > 1 {
                    format!("{:.2} ± {:.2}", cell.mean, cell.sd)
                } else {
                    format!("{:.2}", cell.mean)
                };
                writeln!(
                    md,
                    "| {} | {acc} | {} | {} | {} | {} / {} | {delta} | {p_text} | {on} |",
                    m.label(),
                    cell.per_seed.len(),
                    cell.clients,
                    cell.items,
                    cell.gained,
                    cell.lost
                )?;
                cells.push(cell);
            }
            writeln!(md)?;
            // Per language, mean over seeds (pooled).
            let langs: BTreeSet<&String> = cells
                .iter()
                .filter(|c| c.pool == pool && c.budget == budget)
                .flat_map(|c| c.per_language.keys())
                .collect();
            let here: Vec<&Cell> = cells
                .iter()
                .filter(|c| c.pool == pool && c.budget == budget)
                .collect();
            write!(md, "| language |")?;
            for c in &here {
                write!(md, " {} |", c.method.label())?;
            }
            writeln!(md, "\n|---|{}", "---|".repeat(here.len()))?;
            for l in langs {
                write!(md, "| {l} |")?;
                for c in &here {
                    write!(
                        md,
                        " {:.1} |",
                        c.per_language.get(l).copied().unwrap_or(f64::NAN)
                    )?;
                }
                writeln!(md)?;
            }
            writeln!(md)?;
        }
    }
    let by_round = by_psg_round(cfg, &all, &mut md)?;
    write_atomic(&out.join("results.md"), &md)?;
    let json = serde_json::json!({
        "name": cfg.name,
        "psg_rounds": cfg.psg.rounds,
        "cells": cells,
        "pairs": pairs,
        "by_psg_round": by_round,
    });
    write_atomic(
        &out.join("results.json"),
        &serde_json::to_string_pretty(&json)?,
    )?;
    print!("{md}");
    println!("tables in {}", out.join("results.md").display());
    Ok(())
}

#[derive(Debug, Serialize)]
struct RoundPair {
    psg_round: u32,
    /// FedP²EFT's mean over languages (%), first seed.
    accuracy: f64,
    pair: Pair,
}

/// FedP²EFT − LoRA for every PSG round the run holds FedP²EFT cells of (a PSG trained on
/// after an evaluation), on the clients evaluated at every one of those rounds (so that the
/// rows differ by the PSG alone); nothing when only one.
fn by_psg_round(cfg: &ReproConfig, all: &[Row], md: &mut String) -> Result<Vec<RoundPair>> {
    let fed = MethodName::Fedp2eft;
    let rounds: BTreeSet<u32> = all
        .iter()
        .filter(|r| r.method == fed)
        .filter_map(|r| r.psg_round)
        .collect();
    let mut out = Vec::new();
    if rounds.len() < 2 || !cfg.eval.methods.contains(&MethodName::Lora) {
        return Ok(out);
    }
    writeln!(
        md,
        "## FedP²EFT − LoRA by PSG round\n\nOn the clients evaluated at every round.\n"
    )?;
    writeln!(
        md,
        "| pool | r | PSG round | clients | items | FedP²EFT | Δ FedP²EFT − LoRA [95 % CI] | McNemar p |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|")?;
    let seed = cfg.eval.seeds_of(fed)[0];
    for &pool in &cfg.eval.pools {
        for &budget in &cfg.eval.budgets {
            let at = |k: u32| -> BTreeSet<&str> {
                all.iter()
                    .filter(|r| r.method == fed && r.pool == pool && r.budget == budget)
                    .filter(|r| r.seed == seed && r.psg_round == Some(k))
                    .map(|r| r.client.as_str())
                    .collect()
            };
            let common = rounds.iter().map(|&k| at(k)).reduce(|a, b| &a & &b);
            let common = common.unwrap_or_default();
            for &k in &rounds {
                let rows: Vec<Row> = all
                    .iter()
                    .filter(|r| r.at_round(k) && common.contains(r.client.as_str()))
                    .cloned()
                    .collect();
                let Some(pair) = compare(cfg, &rows, pool, budget, fed, MethodName::Lora)? else {
                    continue;
                };
                let cell: Vec<&Row> = cell_rows(&rows, pool, fed, budget, seed).collect();
                let (accuracy, items) = accuracy_of(cell.iter().copied());
                let p = pair.mcnemar.first().map_or(f64::NAN, |m| m.3);
                writeln!(
                    md,
                    "| {} | {budget} | {k} | {} | {items} | {accuracy:.2} | {:+.2} [{:+.2}, {:+.2}] | {p:.3} |",
                    pool.as_str(),
                    cell.len(),
                    pair.diff,
                    pair.low,
                    pair.high
                )?;
                out.push(RoundPair {
                    psg_round: k,
                    accuracy,
                    pair,
                });
            }
        }
    }
    writeln!(md)?;
    Ok(out)
}

/// The paper's metric over `rows` (mean over languages of pooled accuracy, %) and the test
/// items behind it.
fn accuracy_of<'a>(rows: impl Iterator<Item = &'a Row>) -> (f64, usize) {
    let v: Vec<ClientPair> = rows
        .map(|r| ClientPair {
            language: r.language.clone(),
            n: r.n,
            correct_a: r.correct,
            correct_b: 0,
            discordant: None,
        })
        .collect();
    let items = v.iter().map(|p| p.n).sum();
    (mean_over_languages(&v, |p| p.correct_a), items)
}

/// The rows of one cell; the base model's are stored with budget 0 and seed 0.
fn cell_rows(
    rows: &[Row],
    pool: Pool,
    m: MethodName,
    budget: usize,
    seed: u64,
) -> impl Iterator<Item = &Row> {
    let (b, s) = if m == MethodName::Base {
        (0, 0)
    } else {
        (budget, seed)
    };
    rows.iter()
        .filter(move |r| r.pool == pool && r.method == m && r.budget == b && r.seed == s)
}

/// `ours` against `other` on the clients and seeds both were evaluated on.
fn compare(
    cfg: &ReproConfig,
    rows: &[Row],
    pool: Pool,
    budget: usize,
    ours: MethodName,
    other: MethodName,
) -> Result<Option<Pair>> {
    let get = |m: MethodName, seed: u64| -> BTreeMap<&str, &Row> {
        cell_rows(rows, pool, m, budget, seed)
            .map(|r| (r.client.as_str(), r))
            .collect()
    };
    let mut by_client: BTreeMap<&str, ClientPair> = BTreeMap::new();
    let mut mcnemar = Vec::new();
    let theirs = cfg.eval.seeds_of(other);
    for seed in cfg.eval.seeds_of(ours) {
        if other != MethodName::Base && !theirs.contains(&seed) {
            continue;
        }
        let (a, b) = (get(ours, seed), get(other, seed));
        let (mut a_only, mut b_only) = (0, 0);
        for (client, ra) in &a {
            let Some(rb) = b.get(client) else { continue };
            let (x, y) = discordant(&ra.hit_vec(), &rb.hit_vec())?;
            (a_only, b_only) = (a_only + x, b_only + y);
            let e = by_client.entry(client).or_insert_with(|| ClientPair {
                language: ra.language.clone(),
                n: 0,
                correct_a: 0,
                correct_b: 0,
                discordant: Some((0, 0)),
            });
            e.n += ra.n;
            e.correct_a += ra.correct;
            e.correct_b += rb.correct;
            e.discordant = e.discordant.map(|(p, q)| (p + x, q + y));
        }
        let t = mcnemar_exact(a_only, b_only);
        mcnemar.push((seed, t.a_only, t.b_only, t.p_value));
    }
    if by_client.is_empty() {
        return Ok(None);
    }
    let pairs: Vec<ClientPair> = by_client.into_values().collect();
    let ci = paired_bootstrap_ci(&pairs, cfg.eval.bootstrap, 0.95, 7)?;
    let seeds = mcnemar.len().max(1);
    Ok(Some(Pair {
        pool,
        budget,
        ours,
        other,
        diff: ci.diff,
        low: ci.low,
        high: ci.high,
        mcnemar,
        clients: pairs.len(),
        items: pairs.iter().map(|p| p.n).sum::<usize>() / seeds,
        ours_accuracy: mean_over_languages(&pairs, |p| p.correct_a),
        other_accuracy: mean_over_languages(&pairs, |p| p.correct_b),
    }))
}
