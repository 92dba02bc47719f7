//! The paper's headline metric: accuracy pooled per language, then averaged over languages.
use std::collections::BTreeMap;

/// Per-language pooled accuracy (×100): Σ correct / Σ count over that language's clients.
///
/// `results` holds one `(language, correct, count)` row per client (or per batch: pooling makes
/// the grouping irrelevant). Languages whose total count is 0 are left out.
pub fn per_language_accuracy(results: &[(String, usize, usize)]) -> BTreeMap<String, f64> {
    let mut totals: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (language, correct, count) in results {
        let t = totals.entry(language.as_str()).or_default();
        t.0 += correct;
        t.1 += count;
    }
    totals
        .into_iter()
        .filter(|(_, (_, count))| *count > 0)
        .map(|(l, (correct, count))| (l.to_string(), 100.0 * correct as f64 / count as f64))
        .collect()
}

/// Unweighted mean over languages of the per-language pooled accuracy (×100), as the authors'
/// `compute_multilingual_classification_metric` reports it (method.md §5): a language with few
/// clients weighs as much as one with many. NaN when no language has any example.
pub fn multilingual_accuracy(results: &[(String, usize, usize)]) -> f64 {
    let per_language = per_language_accuracy(results);
    if per_language.is_empty() {
        return f64::NAN;
    }
    per_language.values().sum::<f64>() / per_language.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_within_language_and_averages_across() {
        let r = |l: &str, c, n| (l.to_string(), c, n);
        // en: (9 + 1) / (10 + 10) = 50 %; th: 3 / 4 = 75 %. Mean 62.5, not the 13/24 pooled.
        let results = [r("en", 9, 10), r("th", 3, 4), r("en", 1, 10), r("ko", 0, 0)];
        let per = per_language_accuracy(&results);
        assert_eq!(per.len(), 2);
        assert!((per["en"] - 50.0).abs() < 1e-12);
        assert!((multilingual_accuracy(&results) - 62.5).abs() < 1e-12);
        assert!(multilingual_accuracy(&[]).is_nan());
    }
}
