//! Paired statistics for comparing two personalization methods (A = FedP²EFT, B = LoRA)
//! evaluated on the same test items of the same clients.
//!
//! The headline metric is the unweighted mean over languages of per-language pooled
//! accuracy, so every statistic here is built on [`mean_over_languages`].
use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One client's test results under both methods, on the same `n` items (hence paired).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientPair {
    pub language: String,
    pub n: usize,
    pub correct_a: usize,
    pub correct_b: usize,
    /// Items only A / only B got right, when the per-item outcomes are known: the bootstrap
    /// then also resamples the client's test items (paired), so that a language evaluated on
    /// one client still has a sampling error. None: clients are the only resampled unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discordant: Option<(usize, usize)>,
}

/// Per-language pooled accuracy (×100, Σ correct / Σ items over its clients), then the plain
/// mean over languages, so that every language weighs the same however many items it has.
/// `pick` chooses the count (`|r| r.correct_a` or `|r| r.correct_b`). Languages with no items
/// are skipped; NaN when there are no items at all.
pub fn mean_over_languages(rows: &[ClientPair], pick: impl Fn(&ClientPair) -> usize) -> f64 {
    let mut per_lang: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for r in rows {
        let e = per_lang.entry(r.language.as_str()).or_default();
        e.0 += r.n;
        e.1 += pick(r);
    }
    mean_of_pooled(per_lang.values().copied())
}

/// Mean over `(items, correct)` per-language totals, skipping empty languages.
fn mean_of_pooled(totals: impl Iterator<Item = (usize, usize)>) -> f64 {
    let (sum, count) = totals
        .filter(|&(n, _)| n > 0)
        .fold((0.0, 0usize), |(s, c), (n, k)| {
            (s + 100.0 * k as f64 / n as f64, c + 1)
        });
    if count == 0 {
        f64::NAN
    } else {
        sum / count as f64
    }
}

/// A paired difference metric(A) − metric(B) in percentage points, with its bootstrap CI.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairedCi {
    pub diff: f64,
    pub low: f64,
    pub high: f64,
    pub resamples: usize,
    pub level: f64,
}

/// Percentile-bootstrap CI of metric(A) − metric(B), resampling clients with replacement
/// *within each language* (stratified: every resample keeps every language and its client
/// count, as the metric averages over languages), then — for clients whose `discordant`
/// counts are known — the drawn client's `n` test items with replacement, each item keeping
/// both methods' outcomes (two-stage). Without the second stage a language with a single
/// evaluated client would contribute no variance at all and the CI would collapse to a point.
/// A and B are recomputed from the same draws, so the pairing is kept. Percentiles use linear
/// interpolation (numpy's default). Deterministic for a given `seed`.
pub fn paired_bootstrap_ci(
    rows: &[ClientPair],
    resamples: usize,
    level: f64,
    seed: u64,
) -> Result<PairedCi> {
    if rows.is_empty() {
        return Err(Error::Data("bootstrap: no clients".into()));
    }
    if resamples == 0 {
        return Err(Error::Config("bootstrap: resamples must be > 0".into()));
    }
    if !(level > 0.0 && level < 1.0) {
        return Err(Error::Config(format!(
            "bootstrap: level {level} not in (0, 1)"
        )));
    }
    let diff =
        mean_over_languages(rows, |r| r.correct_a) - mean_over_languages(rows, |r| r.correct_b);
    if !diff.is_finite() {
        return Err(Error::Data("bootstrap: no test items".into()));
    }
    // Clients without items add nothing to a pooled accuracy and are not resampled, so every
    // resample keeps exactly the languages that the metric on `rows` has (no NaN resamples).
    let mut strata: BTreeMap<&str, Vec<&ClientPair>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.n > 0) {
        if r.correct_a > r.n || r.correct_b > r.n {
            return Err(Error::Data(format!(
                "bootstrap: more correct than items in {r:?}"
            )));
        }
        if let Some((a_only, b_only)) = r.discordant {
            let consistent = a_only <= r.correct_a
                && b_only <= r.correct_b
                && r.correct_a - a_only == r.correct_b - b_only
                && r.correct_a + b_only <= r.n;
            if !consistent {
                return Err(Error::Data(format!(
                    "bootstrap: discordant counts do not fit the totals in {r:?}"
                )));
            }
        }
        strata.entry(r.language.as_str()).or_default().push(r);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut stats = Vec::with_capacity(resamples);
    let mut totals_a = Vec::with_capacity(strata.len());
    let mut totals_b = Vec::with_capacity(strata.len());
    for _ in 0..resamples {
        totals_a.clear();
        totals_b.clear();
        for clients in strata.values() {
            let (mut n, mut a, mut b) = (0, 0, 0);
            for _ in 0..clients.len() {
                let c = clients[rng.random_range(0..clients.len())];
                n += c.n;
                match c.discordant {
                    // Items in the order: A only, B only, both, neither.
                    Some((a_only, b_only)) => {
                        let both = c.correct_a - a_only;
                        for _ in 0..c.n {
                            let i = rng.random_range(0..c.n);
                            if i < a_only {
                                a += 1;
                            } else if i < a_only + b_only {
                                b += 1;
                            } else if i < a_only + b_only + both {
                                a += 1;
                                b += 1;
                            }
                        }
                    }
                    None => {
                        a += c.correct_a;
                        b += c.correct_b;
                    }
                }
            }
            totals_a.push((n, a));
            totals_b.push((n, b));
        }
        let d = mean_of_pooled(totals_a.iter().copied()) - mean_of_pooled(totals_b.iter().copied());
        stats.push(d);
    }
    stats.sort_by(|x, y| x.total_cmp(y));
    let alpha = (1.0 - level) / 2.0;
    Ok(PairedCi {
        diff,
        low: percentile(&stats, alpha),
        high: percentile(&stats, 1.0 - alpha),
        resamples,
        level,
    })
}

/// The `q`-quantile of sorted, non-empty `v` by linear interpolation between order statistics.
fn percentile(v: &[f64], q: f64) -> f64 {
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    let frac = pos - lo as f64;
    v[lo] + frac * (v[hi] - v[lo])
}

/// The exact McNemar test on the discordant pairs of two paired classifiers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct McNemar {
    pub a_only: usize,
    pub b_only: usize,
    pub p_value: f64,
}

/// Exact two-sided McNemar test: under H0 each of the n = a_only + b_only discordant items
/// favours A or B with probability 1/2, so p = min(1, 2·P(X ≤ min)) for X ~ Binomial(n, 1/2)
/// (1 when n = 0). Summed in log space (log-sum-exp of log binomial terms) so that n in the
/// hundreds of thousands neither overflows nor underflows to a spurious 0 too early.
pub fn mcnemar_exact(a_only: usize, b_only: usize) -> McNemar {
    let n = a_only + b_only;
    let k = a_only.min(b_only);
    let p_value = if n == 0 || 2 * k == n {
        1.0
    } else {
        // ln C(n, i) for i = 0..=k, built up by ln C(n, i+1) = ln C(n, i) + ln(n-i) − ln(i+1).
        let mut terms = Vec::with_capacity(k + 1);
        let mut ln_c = 0.0f64;
        terms.push(ln_c);
        for i in 0..k {
            ln_c += ((n - i) as f64).ln() - ((i + 1) as f64).ln();
            terms.push(ln_c);
        }
        // The terms grow with i for i < n/2, so the last one is the maximum.
        let max = ln_c;
        let sum: f64 = terms.iter().map(|t| (t - max).exp()).sum();
        let ln_tail = max + sum.ln() - n as f64 * std::f64::consts::LN_2;
        (std::f64::consts::LN_2 + ln_tail).exp().min(1.0)
    };
    McNemar {
        a_only,
        b_only,
        p_value,
    }
}

/// Items that changed correctness between two runs on the same items.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flips {
    /// Wrong before, right after.
    pub gained: usize,
    /// Right before, wrong after.
    pub lost: usize,
}

/// Counts wrong→right and right→wrong items between per-item correctness vectors, showing
/// whether a net gain hides churn. Errors when the vectors have different lengths.
pub fn flips(before: &[bool], after: &[bool]) -> Result<Flips> {
    let (lost, gained) = discordant(before, after)?;
    Ok(Flips { gained, lost })
}

/// `(a right & b wrong, a wrong & b right)` over paired per-item correctness vectors: the
/// discordant counts that feed [`mcnemar_exact`]. Errors when the lengths differ.
pub fn discordant(a: &[bool], b: &[bool]) -> Result<(usize, usize)> {
    if a.len() != b.len() {
        return Err(Error::Data(format!(
            "paired correctness vectors differ in length: {} vs {}",
            a.len(),
            b.len()
        )));
    }
    Ok(a.iter().zip(b).fold((0, 0), |(ab, ba), (&x, &y)| {
        (ab + usize::from(x && !y), ba + usize::from(!x && y))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(language: &str, n: usize, correct_a: usize, correct_b: usize) -> ClientPair {
        ClientPair {
            language: language.into(),
            n,
            correct_a,
            correct_b,
            discordant: None,
        }
    }

    fn close(x: f64, y: f64, rel: f64) -> bool {
        (x - y).abs() <= rel * y.abs().max(f64::MIN_POSITIVE)
    }

    #[test]
    fn mean_over_languages_is_unweighted_over_languages() {
        let rows = [row("en", 10, 9, 0), row("en", 10, 1, 0), row("th", 4, 3, 0)];
        let m = mean_over_languages(&rows, |r| r.correct_a);
        assert!(close(m, 62.5, 1e-12), "{m}");
        assert!(!close(m, 100.0 * 13.0 / 24.0, 1e-3));
        // An empty language is skipped, and no items at all gives NaN.
        let empty = row("sw", 0, 0, 0);
        let with_empty = [rows.as_slice(), std::slice::from_ref(&empty)].concat();
        let m = mean_over_languages(&with_empty, |r| r.correct_a);
        assert!(close(m, 62.5, 1e-12), "{m}");
        assert!(mean_over_languages(&[empty], |r| r.correct_a).is_nan());
        assert!(mean_over_languages(&[], |r| r.correct_a).is_nan());
    }

    #[test]
    fn mcnemar_exact_known_values() {
        // P(X <= 1), n = 10: 11/1024, doubled.
        assert!(close(mcnemar_exact(1, 9).p_value, 22.0 / 1024.0, 1e-12));
        assert!(close(mcnemar_exact(9, 1).p_value, 22.0 / 1024.0, 1e-12));
        assert_eq!(mcnemar_exact(0, 0).p_value, 1.0);
        assert_eq!(mcnemar_exact(5, 5).p_value, 1.0);
        // P(X <= 4), n = 9, is exactly 1/2; the log-space sum lands within rounding of 1.
        assert!(close(mcnemar_exact(4, 5).p_value, 1.0, 1e-12));
        assert!(close(mcnemar_exact(0, 20).p_value, 2f64.powi(-19), 1e-12));
        // n = 15, k = 3: 2·(1 + 15 + 105 + 455)/2^15 = 1152/32768.
        assert!(close(mcnemar_exact(3, 12).p_value, 1152.0 / 32768.0, 1e-12));
    }

    #[test]
    fn mcnemar_exact_large_n_is_finite_and_symmetric() {
        let p = mcnemar_exact(40_000, 40_400);
        assert!(p.p_value > 0.0 && p.p_value < 1.0, "{p:?}");
        assert_eq!(p.p_value, mcnemar_exact(40_400, 40_000).p_value);
        // Exact references from Python integers: 2·Σ_{i≤k} C(n, i) / 2^n as a Fraction.
        assert!(close(p.p_value, 0.1593781908101318, 1e-9), "{p:?}");
        let q = mcnemar_exact(480, 520).p_value;
        assert!(close(q, 0.21744829320414094, 1e-10), "{q}");
        assert_eq!((p.a_only, p.b_only), (40_000, 40_400));
    }

    #[test]
    fn bootstrap_identical_methods_give_zero() -> Result<()> {
        let rows = [row("en", 10, 7, 7), row("en", 12, 3, 3), row("th", 8, 5, 5)];
        let ci = paired_bootstrap_ci(&rows, 500, 0.95, 1)?;
        assert_eq!((ci.diff, ci.low, ci.high), (0.0, 0.0, 0.0));
        assert_eq!((ci.resamples, ci.level), (500, 0.95));
        Ok(())
    }

    #[test]
    fn bootstrap_constant_gain_gives_degenerate_ci() -> Result<()> {
        let rows: Vec<_> = (0..6)
            .map(|i| row(if i % 2 == 0 { "en" } else { "de" }, 20, 2 + 3 * i, 3 * i))
            .collect();
        let ci = paired_bootstrap_ci(&rows, 500, 0.95, 7)?;
        for v in [ci.diff, ci.low, ci.high] {
            assert!(close(v, 10.0, 1e-9), "{ci:?}");
        }
        Ok(())
    }

    fn noisy_rows() -> Vec<ClientPair> {
        (0..30)
            .map(|i| {
                let lang = ["en", "th", "sw"][i % 3];
                row(lang, 20 + i, (7 * i) % 17 + 3, (11 * i) % 19 + 1)
            })
            .collect()
    }

    #[test]
    fn bootstrap_noisy_ci_contains_diff_and_depends_on_seed() -> Result<()> {
        let rows = noisy_rows();
        let ci = paired_bootstrap_ci(&rows, 2000, 0.9, 42)?;
        assert!(ci.low < ci.diff && ci.diff < ci.high, "{ci:?}");
        assert_eq!(ci, paired_bootstrap_ci(&rows, 2000, 0.9, 42)?);
        assert_ne!(ci, paired_bootstrap_ci(&rows, 2000, 0.9, 43)?);
        let wide = paired_bootstrap_ci(&rows, 2000, 0.99, 42)?;
        assert!(wide.low <= ci.low && wide.high >= ci.high);
        Ok(())
    }

    #[test]
    fn bootstrap_is_stratified_by_language() -> Result<()> {
        // "en" has no A−B gap in any client; the lone "th" client has a 50-point gap. Every
        // stratified resample keeps both languages, so the CI is exactly [25, 25]; a resample
        // that dropped "th" would give 0 and one that dropped "en" 50.
        let mut rows: Vec<_> = (0..9).map(|i| row("en", 10, i, i)).collect();
        rows.push(row("th", 10, 10, 5));
        let ci = paired_bootstrap_ci(&rows, 1000, 0.99, 3)?;
        for v in [ci.diff, ci.low, ci.high] {
            assert!(close(v, 25.0, 1e-9), "{ci:?}");
        }
        Ok(())
    }

    #[test]
    fn bootstrap_rejects_bad_input() {
        let rows = [row("en", 10, 5, 4)];
        assert!(paired_bootstrap_ci(&[], 100, 0.95, 0).is_err());
        assert!(paired_bootstrap_ci(&rows, 0, 0.95, 0).is_err());
        for level in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
            assert!(
                paired_bootstrap_ci(&rows, 100, level, 0).is_err(),
                "{level}"
            );
        }
        assert!(paired_bootstrap_ci(&[row("en", 0, 0, 0)], 100, 0.95, 0).is_err());
        assert!(paired_bootstrap_ci(&[row("en", 10, 11, 0)], 100, 0.95, 0).is_err());
    }

    #[test]
    fn flips_and_discordant_count_changes() -> Result<()> {
        let before = [true, true, false, false, true, false];
        let after = [true, false, true, true, true, false];
        assert_eq!(flips(&before, &after)?, Flips { gained: 2, lost: 1 });
        assert_eq!(discordant(&before, &after)?, (1, 2));
        assert!(flips(&before, &after[..5]).is_err());
        assert!(discordant(&before[..2], &after).is_err());
        Ok(())
    }

    /// One client per language: clients alone give a zero-width CI; with the items resampled
    /// the half-width matches the normal approximation of the paired item difference.
    #[test]
    fn bootstrap_resamples_items_of_single_clients() -> Result<()> {
        let langs = 16;
        let mut rows: Vec<ClientPair> = (0..langs)
            .map(|l| row(&format!("l{l}"), 40, 26, 22))
            .collect();
        let ci = paired_bootstrap_ci(&rows, 2000, 0.95, 3)?;
        assert!(close(ci.diff, 10.0, 1e-9) && ci.low == ci.high, "{ci:?}");
        for r in &mut rows {
            r.discordant = Some((6, 2)); // 20 right under both, 12 under neither
        }
        let ci = paired_bootstrap_ci(&rows, 20_000, 0.95, 3)?;
        // Per item d ∈ {+1 (6), −1 (2), 0 (32)}: var = 8/40 − 0.1² = 0.19.
        let se = 100.0 * (0.19 / 40.0 / langs as f64).sqrt();
        let half = (ci.high - ci.low) / 2.0;
        assert!(close(ci.diff, 10.0, 1e-9), "{ci:?}");
        assert!(
            close(half, 1.96 * se, 0.08),
            "half-width {half}, normal {}",
            1.96 * se
        );
        assert!(ci.low < 10.0 && ci.high > 10.0);
        rows[0].discordant = Some((9, 2));
        assert!(
            paired_bootstrap_ci(&rows, 10, 0.95, 3).is_err(),
            "inconsistent counts"
        );
        Ok(())
    }
}
