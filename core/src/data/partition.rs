//! Dirichlet(α) label-skew partition of examples into clients ("LDA" partition).
//!
//! Follows Flower's `flwr.dataset.utils.common.create_lda_partitions`, which the authors' code
//! calls for XNLI and MasakhaNEWS (method.md §5):
//! 1. shuffle the examples, then group them by label (keeping the shuffled order in each label);
//! 2. client sizes: example `j` adds one to client `j mod K`, so sizes differ by at most one
//!    (`accept_imbalanced`; without it `n` must be divisible by `K`);
//! 3. draw one Dirichlet(α·1) label distribution per client (the `K × C` matrix);
//! 4. client by client, draw each example's label from the client's distribution and pop an
//!    example of that label (sampling without replacement). When a label runs out it is removed
//!    from every later draw: the distribution over the remaining labels is the client's Dirichlet
//!    weights plus Flower's `eps = 1e-5` each, renormalised, so a client whose preferred labels
//!    are exhausted falls back to the remaining ones in proportion to its (tiny) weights, and to
//!    a near-uniform choice among them when those weights are ~0.
//!
//! The test split is partitioned with the same matrix (`partition_train_test`), as the authors
//! do, so a client's test labels are skewed like its train labels.
//!
//! Not bit-identical to numpy: Flower draws the matrix with `default_rng(seed).dirichlet` (PCG64,
//! and a beta-stick-breaking method for small α in numpy ≥ 1.24) and the shuffle and per-example
//! multinomial draws with numpy's global Mersenne Twister. Here one `ChaCha8Rng` drives all draws,
//! the Dirichlet comes from normalised Gamma(α, 1) draws, and labels absent from the data take
//! part in the matrix (its columns are ignored; restricting and renormalising a Dirichlet gives
//! the Dirichlet of the remaining labels, so the distribution is the same). Same distribution,
//! different bit stream.
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};

use crate::{Error, Result};

/// A seed for one named stream (a client, a language's pool) derived from the run's seed, so
/// that adding a client or language does not shift the random draws of the others. FNV-1a over
/// the key: stable across Rust versions, unlike `std`'s `DefaultHasher`.
pub fn derive_seed(seed: u64, key: &str) -> u64 {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    seed ^ hash
}

/// Flower's `exclude_classes_and_normalize` epsilon: keeps every non-empty label drawable.
const EPS: f64 = 1e-5;

/// One client's label distribution per row: `K × num_labels`, rows sum to 1.
pub type DirichletMatrix = Vec<Vec<f64>>;

/// Example indices of each client, for the train and the test split.
#[derive(Clone, Debug, PartialEq)]
pub struct LdaPartition {
    pub dirichlet: DirichletMatrix,
    pub train: Vec<Vec<usize>>,
    pub test: Vec<Vec<usize>>,
}

/// Draws `num_clients` label distributions from a symmetric Dirichlet(α).
///
/// `α = ∞` gives uniform rows (Flower's iid case). A row whose Gamma draws all underflow to 0
/// (possible only for tiny α) becomes one-hot on a random label, the α → 0 limit.
pub fn dirichlet_matrix(
    num_clients: usize,
    num_labels: usize,
    alpha: f64,
    rng: &mut impl Rng,
) -> Result<DirichletMatrix> {
    if num_labels == 0 {
        return Err(Error::Config(
            "Dirichlet partition needs at least one label".into(),
        ));
    }
    if alpha.is_nan() || alpha <= 0.0 {
        return Err(Error::Config(format!(
            "Dirichlet alpha must be > 0, got {alpha}"
        )));
    }
    if alpha.is_infinite() {
        return Ok(vec![vec![1.0 / num_labels as f64; num_labels]; num_clients]);
    }
    let gamma = Gamma::new(alpha, 1.0)
        .map_err(|e| Error::Config(format!("Dirichlet alpha {alpha}: {e}")))?;
    let mut rows = Vec::with_capacity(num_clients);
    for _ in 0..num_clients {
        let mut row: Vec<f64> = (0..num_labels).map(|_| gamma.sample(rng)).collect();
        let sum: f64 = row.iter().sum();
        if sum > 0.0 && sum.is_finite() {
            row.iter_mut().for_each(|p| *p /= sum);
        } else {
            let hot = rng.random_range(0..num_labels);
            row = (0..num_labels)
                .map(|l| f64::from(u8::from(l == hot)))
                .collect();
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Client sizes as Flower computes them: example `j` goes to client `j mod K`.
pub fn client_sizes(n: usize, num_clients: usize, accept_imbalanced: bool) -> Result<Vec<usize>> {
    if num_clients == 0 {
        return Err(Error::Config("partition into 0 clients".into()));
    }
    if n % num_clients != 0 && !accept_imbalanced {
        return Err(Error::Config(format!(
            "{n} examples do not split evenly into {num_clients} clients; \
             set accept_imbalanced to allow sizes that differ by one"
        )));
    }
    Ok((0..num_clients)
        .map(|k| n / num_clients + usize::from(k < n % num_clients))
        .collect())
}

/// Partitions the examples with these `labels` among the rows of `dirichlet`.
///
/// Returns, per client, indices into `labels`; every index appears exactly once.
pub fn partition_with(
    labels: &[usize],
    dirichlet: &DirichletMatrix,
    accept_imbalanced: bool,
    rng: &mut impl Rng,
) -> Result<Vec<Vec<usize>>> {
    let num_labels = dirichlet.first().map_or(0, Vec::len);
    if dirichlet.iter().any(|row| row.len() != num_labels) {
        return Err(Error::Mismatch(
            "Dirichlet matrix rows differ in length".into(),
        ));
    }
    if let Some(&label) = labels.iter().find(|&&l| l >= num_labels) {
        return Err(Error::Label { label, num_labels });
    }
    let sizes = client_sizes(labels.len(), dirichlet.len(), accept_imbalanced)?;

    // Shuffle, then bucket by label: each bucket is in random order and we pop from its end.
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.shuffle(rng);
    let mut buckets: Vec<Vec<usize>> = vec![Vec::new(); num_labels];
    for i in order {
        buckets[labels[i]].push(i);
    }

    let mut parts = Vec::with_capacity(sizes.len());
    for (row, &size) in dirichlet.iter().zip(&sizes) {
        let mut part = Vec::with_capacity(size);
        let mut weights = masked_weights(row, &buckets);
        for _ in 0..size {
            let label = draw(&weights, rng);
            // `draw` only returns labels with positive weight, i.e. non-empty buckets.
            let Some(i) = buckets[label].pop() else {
                return Err(Error::Data("LDA partition drew an exhausted label".into()));
            };
            part.push(i);
            if buckets[label].is_empty() {
                weights = masked_weights(row, &buckets);
            }
        }
        parts.push(part);
    }
    Ok(parts)
}

/// Draws the matrix once and partitions both splits with it, as the authors' data code does.
pub fn partition_train_test(
    train_labels: &[usize],
    test_labels: &[usize],
    num_labels: usize,
    num_clients: usize,
    alpha: f64,
    accept_imbalanced: bool,
    seed: u64,
) -> Result<LdaPartition> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dirichlet = dirichlet_matrix(num_clients, num_labels, alpha, &mut rng)?;
    let train = partition_with(train_labels, &dirichlet, accept_imbalanced, &mut rng)?;
    let test = partition_with(test_labels, &dirichlet, accept_imbalanced, &mut rng)?;
    Ok(LdaPartition {
        dirichlet,
        train,
        test,
    })
}

/// The row plus `EPS` on labels that still have examples, zero on exhausted ones.
fn masked_weights(row: &[f64], buckets: &[Vec<usize>]) -> Vec<f64> {
    row.iter()
        .zip(buckets)
        .map(|(&p, b)| if b.is_empty() { 0.0 } else { p + EPS })
        .collect()
}

/// Index drawn proportionally to `weights` (at least one must be positive).
fn draw(weights: &[f64], rng: &mut impl Rng) -> usize {
    let total: f64 = weights.iter().sum();
    let mut u = rng.random::<f64>() * total;
    let mut last = 0;
    for (i, &w) in weights.iter().enumerate() {
        if w > 0.0 {
            if u < w {
                return i;
            }
            u -= w;
            last = i;
        }
    }
    last // rounding left `u` just past the end: the last drawable label
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1000 examples, 5 labels with unequal frequencies.
    fn labels() -> Vec<usize> {
        (0..1000)
            .map(|i| [0, 0, 1, 1, 1, 2, 3, 4, 4, 4][i % 10])
            .collect()
    }

    fn entropy(counts: &[usize]) -> f64 {
        let n: usize = counts.iter().sum();
        counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / n as f64;
                -p * p.ln()
            })
            .sum()
    }

    fn label_counts(labels: &[usize], part: &[usize]) -> Vec<usize> {
        let mut c = vec![0; 5];
        part.iter().for_each(|&i| c[labels[i]] += 1);
        c
    }

    fn split(alpha: f64, seed: u64) -> Result<LdaPartition> {
        let y = labels();
        partition_train_test(&y[..803], &y[803..], 5, 10, alpha, true, seed)
    }

    #[test]
    fn every_example_once_and_sizes_within_one() -> Result<()> {
        let p = split(0.5, 7)?;
        for (parts, n) in [(&p.train, 803), (&p.test, 197)] {
            let mut all: Vec<usize> = parts.iter().flatten().copied().collect();
            all.sort_unstable();
            assert_eq!(all, (0..n).collect::<Vec<_>>());
            let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
            let (lo, hi) = (sizes.iter().min(), sizes.iter().max());
            assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "{sizes:?}");
        }
        for row in &p.dirichlet {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        }
        Ok(())
    }

    #[test]
    fn deterministic_with_seed() -> Result<()> {
        assert_eq!(split(0.5, 3)?, split(0.5, 3)?);
        assert_ne!(split(0.5, 3)?.train, split(0.5, 4)?.train);
        Ok(())
    }

    #[test]
    fn small_alpha_skews_labels_large_alpha_does_not() -> Result<()> {
        // Balanced labels: Flower's Dirichlet is symmetric, not proportional to label frequency,
        // so on imbalanced data even α = ∞ skews the last clients (they get the leftovers).
        let y: Vec<usize> = (0..1000).map(|i| i % 5).collect();
        let pool = entropy(&label_counts(&y, &(0..1000).collect::<Vec<_>>()));
        let mean_entropy = |alpha: f64| -> Result<f64> {
            let mut total = 0.0;
            for seed in 0..5 {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let d = dirichlet_matrix(10, 5, alpha, &mut rng)?;
                let parts = partition_with(&y, &d, false, &mut rng)?;
                total += parts
                    .iter()
                    .map(|p| entropy(&label_counts(&y, p)))
                    .sum::<f64>();
            }
            Ok(total / 50.0)
        };
        let skewed = mean_entropy(0.5)?;
        let uniform = mean_entropy(1e4)?;
        assert!(skewed < 0.85 * pool, "α=0.5: {skewed} vs pool {pool}");
        assert!(uniform > 0.97 * pool, "α=1e4: {uniform} vs pool {pool}");
        Ok(())
    }

    #[test]
    fn exhausted_labels_fall_back_to_the_rest() -> Result<()> {
        // Every client wants label 0 only, which has 10 examples for 100 slots.
        let y: Vec<usize> = (0..100)
            .map(|i| usize::from(i >= 10) + usize::from(i >= 60))
            .collect();
        let d = vec![vec![1.0, 0.0, 0.0]; 4];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let parts = partition_with(&y, &d, false, &mut rng)?;
        assert_eq!(parts.iter().map(Vec::len).collect::<Vec<_>>(), vec![25; 4]);
        assert!(
            parts[0][..10].iter().all(|&i| y[i] == 0),
            "client 0 takes label 0 first"
        );
        Ok(())
    }

    #[test]
    fn rejects_bad_input() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert!(dirichlet_matrix(3, 2, 0.0, &mut rng).is_err());
        assert!(dirichlet_matrix(3, 0, 0.5, &mut rng).is_err());
        assert!(client_sizes(10, 3, false).is_err());
        assert_eq!(client_sizes(10, 3, true).ok(), Some(vec![4, 3, 3]));
        let d = vec![vec![0.5, 0.5]; 2];
        assert!(matches!(
            partition_with(&[0, 2], &d, true, &mut rng),
            Err(Error::Label {
                label: 2,
                num_labels: 2
            })
        ));
    }
}
