//! Stage 1: the data set under the paper's protocol. Deterministic and quick, so it is recomputed
//! on every start; the first run writes it out (benchmark.jsonl, summary.json) for inspection
//! and checks later runs against it.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use fedp2eft_core::data::{
    load_masakhanews, load_sib200, write_jsonl, Benchmark, MasakhaConfig, Pool, SibConfig,
};
use serde::Serialize;

use super::config::{DataSet, ReproConfig};
use crate::atomic::write_atomic;

#[derive(Serialize)]
struct Summary<'a> {
    name: &'a str,
    label_names: &'a [String],
    /// Languages whose training side is dev.tsv alone (no train.tsv).
    dev_only: Vec<String>,
    /// language → pool → (clients, train, test)
    sizes: BTreeMap<String, BTreeMap<&'static str, (usize, usize, usize)>>,
}

pub fn load(cfg: &ReproConfig) -> Result<(Benchmark, Vec<String>)> {
    let d = &cfg.data;
    let (mut bench, dev_only) = match d.set {
        DataSet::Masakhanews => {
            let m = load_masakhanews(
                &d.dir,
                &MasakhaConfig {
                    languages: d.languages.clone(),
                    field: d.field,
                    protocol: d.protocol.clone(),
                },
            )
            .with_context(|| format!("reading MasakhaNEWS from {}", d.dir.display()))?;
            (m.bench, m.dev_only)
        }
        DataSet::Sib200 => {
            let s = SibConfig {
                languages: d.languages.clone(),
                protocol: d.protocol.clone(),
            };
            let b = load_sib200(&d.dir, &s)
                .with_context(|| format!("reading SIB-200 from {}", d.dir.display()))?;
            (b, Vec::new())
        }
    };
    for c in &mut bench.clients {
        if let Some(n) = d.max_train_per_client {
            c.train.truncate(n);
        }
        if let Some(n) = d.max_test_per_client {
            c.test.truncate(n);
        }
    }
    Ok((bench, dev_only))
}

pub fn run(cfg: &ReproConfig, out: &Path) -> Result<Benchmark> {
    let (bench, dev_only) = load(cfg)?;
    let mut sizes: BTreeMap<String, BTreeMap<&'static str, (usize, usize, usize)>> =
        BTreeMap::new();
    for c in &bench.clients {
        let e = sizes
            .entry(c.language.clone())
            .or_default()
            .entry(c.pool.as_str())
            .or_default();
        e.0 += 1;
        e.1 += c.train.len();
        e.2 += c.test.len();
    }
    let summary = Summary {
        name: &bench.name,
        label_names: &bench.label_names,
        dev_only: dev_only.clone(),
        sizes,
    };
    let text = serde_json::to_string_pretty(&summary)?;
    let path = out.join("data/summary.json");
    match std::fs::read_to_string(&path) {
        Ok(was) if was != text => bail!(
            "the data differ from this run's first partition ({}): the files under {} changed",
            path.display(),
            cfg.data.dir.display()
        ),
        Ok(_) => {}
        Err(_) => {
            std::fs::create_dir_all(out.join("data"))?;
            write_jsonl(&out.join("data/benchmark.jsonl"), &bench)?;
            write_atomic(&path, &text)?;
        }
    }
    let n = |p: Pool| bench.pool(p).len();
    println!(
        "partition: {} languages, {} seen / {} unseen{} clients, {} examples{}",
        bench.languages().len(),
        n(Pool::Seen),
        n(Pool::Unseen),
        match n(Pool::Novel) {
            0 => String::new(),
            k => format!(" / {k} novel"),
        },
        bench.num_examples(),
        if dev_only.is_empty() {
            String::new()
        } else {
            format!(" (dev.tsv only: {})", dev_only.join(", "))
        }
    );
    Ok(bench)
}
