//! Pool-level evaluation as the paper reports it: personalize every client of a pool at a
//! budget, then the unweighted mean over languages of per-language pooled test accuracy.
use std::collections::BTreeMap;

use serde::Serialize;

use crate::control::Control;
use crate::data::{multilingual_accuracy, Benchmark, ClientData, Pool};
use crate::method::Method;
use crate::model::{SeqClassifier, Tokenize};
use crate::personalize::{personalize, PersonalizeConfig};
use crate::Result;

#[derive(Debug, Clone, Serialize)]
pub struct PoolResult {
    pub method: String,
    pub pool: Pool,
    pub budget: usize,
    /// language → (correct, total) after personalization.
    pub per_language: BTreeMap<String, (usize, usize)>,
    /// Unweighted mean over languages of pooled accuracy (%).
    pub accuracy: f64,
    /// The same for the base model (before personalization).
    pub base_accuracy: f64,
    pub clients: usize,
}

/// The clients of `pool`, at most `per_language` of each language (all when None), in order.
pub fn pool_clients(
    bench: &Benchmark,
    pool: Pool,
    per_language: Option<usize>,
) -> Vec<&ClientData> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    bench
        .pool(pool)
        .into_iter()
        .filter(|c| {
            let n = seen.entry(c.language.as_str()).or_default();
            *n += 1;
            per_language.is_none_or(|k| *n <= k)
        })
        .collect()
}

/// Personalizes each client with `method` at `cfg.budget` and aggregates accuracy per language.
pub fn evaluate_pool(
    base: &SeqClassifier,
    tok: &dyn Tokenize,
    clients: &[&ClientData],
    pool: Pool,
    method: &dyn Method,
    cfg: &PersonalizeConfig,
    ctl: &Control,
) -> Result<PoolResult> {
    let _compute = crate::runtime::enter();
    let mut after: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut before: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for c in clients {
        let r = personalize(base, tok, c, method, cfg, ctl)?.report;
        for (map, acc) in [
            (&mut after, r.accuracy_after),
            (&mut before, r.accuracy_before),
        ] {
            let e = map.entry(c.language.clone()).or_default();
            e.0 += acc.correct;
            e.1 += acc.total;
        }
    }
    let mean = |m: &BTreeMap<String, (usize, usize)>| {
        let rows: Vec<(String, usize, usize)> =
            m.iter().map(|(l, &(c, t))| (l.clone(), c, t)).collect();
        multilingual_accuracy(&rows)
    };
    Ok(PoolResult {
        method: method.name().into(),
        pool,
        budget: cfg.budget,
        accuracy: mean(&after),
        base_accuracy: mean(&before),
        per_language: after,
        clients: clients.len(),
    })
}
