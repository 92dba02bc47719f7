//! The paper's federated protocol for a multilingual data set (method.md §5, MasakhaNEWS): per
//! language, shuffle the training side and the test side (one seed for every language, the
//! authors' 42), halve each into a seen and an unseen pool, and split each pool into K clients
//! with Dirichlet(α) label skew, the test half with the train half's Dirichlet matrix
//! (`partition_train_test`). A third pool, `novel`, holds languages that neither the base nor
//! the PSG ever trains on (a test the paper does not make): their clients are cut from the
//! unseen half alone, so with parallel data no novel client holds a translation of an item any
//! model trained on. Loaders (MasakhaNEWS, SIB-200) only read files into [`Row`]s; this is the
//! one place where label ids, pools and clients are made.
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use std::collections::BTreeSet;

use super::example::{Benchmark, ClientData, Example, Pool};
use super::partition::{derive_seed, partition_train_test};
use crate::{Error, Result};

/// One labelled text before pools and clients exist.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// Identifies the item within its language; equal keys in two languages are translations
    /// of one another in a parallel data set (SIB-200's `index_id`).
    pub key: String,
    pub text: String,
    /// Id into the benchmark's label names.
    pub label: usize,
}

/// A language's training side and test side.
#[derive(Clone, Debug, PartialEq)]
pub struct LanguageSet {
    pub language: String,
    pub train: Vec<Item>,
    pub test: Vec<Item>,
}

/// One labelled row as a loader reads it, its category still a name.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// As [`Item::key`]; loaders of non-parallel sets may use the row number.
    pub key: String,
    pub category: String,
    pub text: String,
}

/// A language's rows as read from its files.
#[derive(Clone, Debug, PartialEq)]
pub struct RawLanguage {
    pub language: String,
    pub train: Vec<Row>,
    pub test: Vec<Row>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolProtocol {
    /// Clients per language in each pool (the paper: 10 for MasakhaNEWS, 20 for XNLI).
    pub clients_per_language: usize,
    /// Dirichlet concentration of the label skew (the paper: 0.5).
    pub alpha: f64,
    /// Seeds the shuffles (the same for every language, as the authors' seed 42) and, per
    /// language and pool, the Dirichlet draw.
    pub seed: u64,
    /// The items are translations of one another across languages: they are ordered by key
    /// before the shuffle, so one sentence lands in the same pool in every language and no
    /// unseen client holds a translation of a seen client's item.
    pub parallel: bool,
    /// Languages of the third pool, `novel`: read like the others but never in the seen or
    /// unseen pool; `clients_per_language` clients each, from the unseen half of their items.
    pub novel_languages: Vec<String>,
}

impl Default for PoolProtocol {
    fn default() -> Self {
        Self {
            clients_per_language: 10,
            alpha: 0.5,
            seed: 42,
            parallel: false,
            novel_languages: Vec::new(),
        }
    }
}

impl PoolProtocol {
    /// `languages` followed by the novel languages it lacks: what a loader reads.
    pub fn languages_to_read(&self, languages: &[String]) -> Vec<String> {
        let mut out = languages.to_vec();
        for l in &self.novel_languages {
            if !out.contains(l) {
                out.push(l.clone());
            }
        }
        out
    }
}

/// Label ids by position in the sorted `label_names`, then [`split_into_pools`]. A row whose
/// category is not among the names is an error that names the language and the category.
pub fn split_rows_into_pools(
    name: &str,
    label_names: BTreeSet<String>,
    languages: Vec<RawLanguage>,
    p: &PoolProtocol,
) -> Result<Benchmark> {
    let label_names: Vec<String> = label_names.into_iter().collect();
    let mut sets = Vec::with_capacity(languages.len());
    for raw in languages {
        let items = |rows: Vec<Row>| -> Result<Vec<Item>> {
            rows.into_iter()
                .map(|r| {
                    let label = label_names
                        .iter()
                        .position(|n| *n == r.category)
                        .ok_or_else(|| {
                            Error::Data(format!(
                                "{name} {}: category `{}` is not among the labels {label_names:?}",
                                raw.language, r.category
                            ))
                        })?;
                    Ok(Item {
                        key: r.key,
                        text: r.text,
                        label,
                    })
                })
                .collect()
        };
        sets.push(LanguageSet {
            train: items(raw.train)?,
            test: items(raw.test)?,
            language: raw.language,
        });
    }
    split_into_pools(name, label_names, sets, p)
}

/// Builds the benchmark: pools, then clients `"{pool}-{language}-{k}"`, seen pool first, then
/// unseen, then novel, each pool language by language in the given order.
pub fn split_into_pools(
    name: &str,
    label_names: Vec<String>,
    languages: Vec<LanguageSet>,
    p: &PoolProtocol,
) -> Result<Benchmark> {
    let k = p.clients_per_language;
    if k == 0 {
        return Err(Error::Config(
            "clients_per_language must be at least 1".into(),
        ));
    }
    if languages.is_empty() {
        return Err(Error::EmptyData(format!("{name}: no languages")));
    }
    if let Some(l) = p
        .novel_languages
        .iter()
        .find(|l| !languages.iter().any(|s| &s.language == *l))
    {
        return Err(Error::Config(format!(
            "{name}: novel language {l} is not among the languages read"
        )));
    }
    if languages
        .iter()
        .all(|s| p.novel_languages.contains(&s.language))
    {
        return Err(Error::Config(format!(
            "{name}: every language is novel, none is left to train on"
        )));
    }
    let num_labels = label_names.len();
    let mut halves: Vec<[(Vec<Item>, Vec<Item>); 2]> = Vec::with_capacity(languages.len());
    for set in &languages {
        if let Some(bad) = set
            .train
            .iter()
            .chain(&set.test)
            .find(|i| i.label >= num_labels)
        {
            return Err(Error::Label {
                label: bad.label,
                num_labels,
            });
        }
        let (train_seen, train_unseen) = shuffled_halves(&set.train, p);
        let (test_seen, test_unseen) = shuffled_halves(&set.test, p);
        halves.push([(train_seen, test_seen), (train_unseen, test_unseen)]);
    }
    let mut clients = Vec::with_capacity(2 * k * languages.len());
    for pool in [Pool::Seen, Pool::Unseen, Pool::Novel] {
        for (set, half) in languages.iter().zip(&halves) {
            let lang = &set.language;
            if p.novel_languages.contains(lang) != (pool == Pool::Novel) {
                continue;
            }
            let (train, test) = &half[usize::from(pool != Pool::Seen)];
            if train.len() < k || test.len() < k {
                return Err(Error::Config(format!(
                    "{name} {lang}: the {} pool has {} train / {} test items for {k} clients",
                    pool.as_str(),
                    train.len(),
                    test.len()
                )));
            }
            let labels = |v: &[Item]| v.iter().map(|i| i.label).collect::<Vec<_>>();
            let seed = derive_seed(p.seed, &format!("{}-{lang}", pool.as_str()));
            let parts = partition_train_test(
                &labels(train),
                &labels(test),
                num_labels,
                k,
                p.alpha,
                true,
                seed,
            )?;
            for (c, (tr, te)) in parts.train.iter().zip(&parts.test).enumerate() {
                let id = format!("{}-{lang}-{c}", pool.as_str());
                let take = |from: &[Item], idx: &[usize]| -> Vec<Example> {
                    idx.iter()
                        .map(|&i| Example {
                            text: from[i].text.clone(),
                            label: from[i].label,
                            client: id.clone(),
                            language: lang.clone(),
                        })
                        .collect()
                };
                clients.push(ClientData {
                    train: take(train, tr),
                    test: take(test, te),
                    id,
                    language: lang.clone(),
                    pool,
                });
            }
        }
    }
    Ok(Benchmark {
        name: name.into(),
        num_labels,
        label_names,
        clients,
    })
}

/// The items shuffled with the protocol's seed and cut in two: the first ⌊n/2⌋ are the seen
/// pool's, the rest the unseen pool's.
fn shuffled_halves(items: &[Item], p: &PoolProtocol) -> (Vec<Item>, Vec<Item>) {
    let mut v = items.to_vec();
    if p.parallel {
        v.sort_by(|a, b| a.key.cmp(&b.key));
    }
    v.shuffle(&mut ChaCha8Rng::seed_from_u64(p.seed));
    let unseen = v.split_off(v.len() / 2);
    (v, unseen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(language: &str, n_train: usize, n_test: usize, shift: usize) -> LanguageSet {
        let items = |n: usize, tag: &str| -> Vec<Item> {
            (0..n)
                .map(|i| Item {
                    key: format!("{:04}", (i + shift) % n),
                    text: format!("{language}-{tag}-{}", (i + shift) % n),
                    label: ((i + shift) % n) % 3,
                })
                .collect()
        };
        LanguageSet {
            language: language.into(),
            train: items(n_train, "train"),
            test: items(n_test, "test"),
        }
    }

    fn names() -> Vec<String> {
        ["a", "b", "c"].map(String::from).to_vec()
    }

    #[test]
    fn halves_pools_and_splits_clients() -> Result<()> {
        let p = PoolProtocol {
            clients_per_language: 4,
            ..Default::default()
        };
        let b = split_into_pools(
            "t",
            names(),
            vec![set("en", 81, 40, 0), set("yo", 30, 20, 0)],
            &p,
        )?;
        assert_eq!(b.clients.len(), 16);
        assert_eq!(b.clients[0].id, "seen-en-0");
        assert_eq!(b.clients[8].id, "unseen-en-0");
        let count = |pool: Pool, lang: &str, test: bool| -> usize {
            b.clients
                .iter()
                .filter(|c| c.pool == pool && c.language == lang)
                .map(|c| if test { c.test.len() } else { c.train.len() })
                .sum()
        };
        assert_eq!(
            (
                count(Pool::Seen, "en", false),
                count(Pool::Unseen, "en", false)
            ),
            (40, 41)
        );
        assert_eq!(
            (
                count(Pool::Seen, "en", true),
                count(Pool::Unseen, "en", true)
            ),
            (20, 20)
        );
        // Every item once, no text in two pools.
        let mut texts: Vec<&str> = b
            .clients
            .iter()
            .flat_map(|c| c.examples())
            .map(|e| e.text.as_str())
            .collect();
        let n = texts.len();
        texts.sort_unstable();
        texts.dedup();
        assert_eq!((n, texts.len()), (81 + 40 + 30 + 20, n));
        assert_eq!(
            split_into_pools("t", names(), vec![set("en", 81, 40, 0)], &p)?.clients[0],
            b.clients[0]
        );
        Ok(())
    }

    #[test]
    fn parallel_items_land_in_the_same_pool_in_every_language() -> Result<()> {
        let p = PoolProtocol {
            clients_per_language: 2,
            parallel: true,
            ..Default::default()
        };
        // The same keys in another file order.
        let b = split_into_pools(
            "t",
            names(),
            vec![set("en", 50, 20, 0), set("fr", 50, 20, 7)],
            &p,
        )?;
        let pool_of = |lang: &str| -> Vec<(String, Pool)> {
            let mut v: Vec<(String, Pool)> = b
                .clients
                .iter()
                .filter(|c| c.language == lang)
                .flat_map(|c| {
                    c.train
                        .iter()
                        .map(|e| (e.text.rsplit('-').next().unwrap_or("").to_string(), c.pool))
                })
                .collect();
            v.sort();
            v
        };
        assert_eq!(pool_of("en"), pool_of("fr"));
        let q = PoolProtocol {
            parallel: false,
            ..p
        };
        let b2 = split_into_pools(
            "t",
            names(),
            vec![set("en", 50, 20, 0), set("fr", 50, 20, 7)],
            &q,
        )?;
        assert_ne!(
            b2.clients, b.clients,
            "without `parallel` file order decides"
        );
        Ok(())
    }

    #[test]
    fn novel_languages_form_a_third_pool_from_the_unseen_half() -> Result<()> {
        let p = PoolProtocol {
            clients_per_language: 2,
            parallel: true,
            novel_languages: vec!["yo".into()],
            ..Default::default()
        };
        let sets = vec![
            set("en", 50, 20, 0),
            set("yo", 50, 20, 3),
            set("fr", 50, 20, 7),
        ];
        let b = split_into_pools("t", names(), sets.clone(), &p)?;
        let ids: Vec<&str> = b.clients.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "seen-en-0",
                "seen-en-1",
                "seen-fr-0",
                "seen-fr-1",
                "unseen-en-0",
                "unseen-en-1",
                "unseen-fr-0",
                "unseen-fr-1",
                "novel-yo-0",
                "novel-yo-1"
            ]
        );
        // The novel clients hold exactly the unseen half of yo: the keys that are unseen in en.
        let keys = |pool: Pool, lang: &str| -> Vec<String> {
            let mut v: Vec<String> = b
                .clients
                .iter()
                .filter(|c| c.pool == pool && c.language == lang)
                .flat_map(|c| c.examples())
                .map(|e| e.text.rsplit('-').next().unwrap_or("").to_string())
                .collect();
            v.sort();
            v
        };
        assert_eq!(keys(Pool::Novel, "yo"), keys(Pool::Unseen, "en"));
        assert_eq!(keys(Pool::Novel, "yo").len(), 25 + 10);
        // Seen and unseen clients are those of a run without yo.
        let without = PoolProtocol {
            novel_languages: Vec::new(),
            ..p.clone()
        };
        let b2 = split_into_pools(
            "t",
            names(),
            vec![sets[0].clone(), sets[2].clone()],
            &without,
        )?;
        assert_eq!(b.clients[..8], b2.clients[..]);
        // A novel language that is not read, or only novel languages, is refused.
        let bad = PoolProtocol {
            novel_languages: vec!["de".into()],
            ..p.clone()
        };
        let e = split_into_pools("t", names(), sets.clone(), &bad).err();
        assert!(e.is_some_and(|e| e.to_string().contains("novel language de")));
        let all = PoolProtocol {
            novel_languages: vec!["en".into(), "yo".into(), "fr".into()],
            ..p
        };
        assert!(split_into_pools("t", names(), sets, &all).is_err());
        Ok(())
    }

    #[test]
    fn rows_get_label_ids_by_sorted_name_and_unknown_names_are_refused() -> Result<()> {
        let row = |k: usize, c: &str| Row {
            key: k.to_string(),
            category: c.into(),
            text: format!("t{k}"),
        };
        let raw = |cats: &[&str]| RawLanguage {
            language: "en".into(),
            train: cats.iter().enumerate().map(|(i, c)| row(i, c)).collect(),
            test: cats
                .iter()
                .enumerate()
                .map(|(i, c)| row(100 + i, c))
                .collect(),
        };
        let names: BTreeSet<String> = ["sports", "health", "politics"].map(String::from).into();
        let p = PoolProtocol {
            clients_per_language: 1,
            ..Default::default()
        };
        let cats = ["sports", "health", "politics", "sports"];
        let b = split_rows_into_pools("t", names.clone(), vec![raw(&cats)], &p)?;
        assert_eq!(b.label_names, ["health", "politics", "sports"]);
        let label_of = |text: &str| {
            b.clients
                .iter()
                .flat_map(|c| c.examples())
                .find(|e| e.text == text)
                .map(|e| e.label)
        };
        assert_eq!(
            ["t0", "t1", "t2", "t3"].map(label_of),
            [Some(2), Some(0), Some(1), Some(2)]
        );
        let e = split_rows_into_pools("t", names, vec![raw(&["sports", "weather"])], &p).err();
        assert!(e.is_some_and(|e| e.to_string().contains("`weather`")));
        Ok(())
    }

    #[test]
    fn too_few_items_or_bad_labels_are_errors() {
        let p = PoolProtocol::default();
        let e = split_into_pools("t", names(), vec![set("en", 12, 40, 0)], &p)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("en") && e.contains("6 train"), "{e}");
        let mut s = set("en", 40, 40, 0);
        s.train[3].label = 5;
        assert!(matches!(
            split_into_pools("t", names(), vec![s], &p),
            Err(Error::Label { label: 5, .. })
        ));
    }
}
