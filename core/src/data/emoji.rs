//! The multilingual emoji benchmark (docs/data.md): CLDR emoji names and keywords in many
//! languages from the npm package `emojibase-data@17.0.0`, labelled by their language-independent
//! `group` (or `subgroup`), split into seen/unseen clients per language as the authors split
//! MasakhaNEWS (method.md §5).
//!
//! The items are parallel across locales (one per emoji). Which pool and which split an emoji
//! goes to is therefore decided once per emoji, not per language: otherwise the name of a test
//! emoji in Thai would sit in some client's English training data and the multilingual encoder
//! could carry it over, and "unseen" clients would hold translations of seen items. This mirrors
//! XNLI in the authors' code, where every language uses the same indices and the test examples
//! come from a separate split. Per language and pool, the train items are then partitioned into
//! K clients with Dirichlet(α) label skew and the test items with the same Dirichlet matrix
//! (`partition_train_test`), as the authors partition MasakhaNEWS' train and test splits.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::example::{Benchmark, ClientData, Example, Pool};
use super::partition::{derive_seed, partition_train_test};
use crate::{Error, Result};

/// Which emojibase label is the class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmojiTask {
    /// The 8 top-level groups (smileys-emotion, people-body, …): the default, easy task.
    #[default]
    Group,
    /// The ~95 subgroups (face-smiling, animal-bird, …): a harder, long-tailed task.
    Subgroup,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmojiConfig {
    /// Locale folders of emojibase-data, one language each.
    pub locales: Vec<String>,
    /// Clients per language in each pool (MasakhaNEWS: 10).
    pub clients_per_language: usize,
    /// Dirichlet concentration of the label skew (the paper: 0.5).
    pub alpha: f64,
    /// Share of each pool's emoji held out for test (80/20 as in data.md).
    pub test_fraction: f64,
    /// Seeds the emoji shuffle and every partition (the authors: 42).
    pub seed: u64,
    pub task: EmojiTask,
    /// Drop the "flags" group: every flag's name starts with the word for "flag", which makes
    /// the group trivial and mostly country names.
    pub drop_flags: bool,
}

impl Default for EmojiConfig {
    fn default() -> Self {
        Self {
            // Ten languages over seven scripts and five families: Latin (English as the pivot,
            // French as a Romance language, Vietnamese with heavy diacritics and tones),
            // Cyrillic (Russian), two Brahmic Indic scripts (Hindi/Devanagari, Bengali), Thai
            // (no spaces between words), Japanese (kana + kanji), Chinese (Han), Korean (Hangul).
            locales: ["en", "fr", "vi", "ru", "hi", "bn", "th", "ja", "zh", "ko"]
                .map(String::from)
                .to_vec(),
            clients_per_language: 10,
            alpha: 0.5,
            test_fraction: 0.2,
            seed: 42,
            task: EmojiTask::Group,
            drop_flags: true,
        }
    }
}

/// `meta/groups.json`: id → name maps (ids as JSON object keys) and group → subgroup ids.
#[derive(Deserialize)]
struct Meta {
    groups: BTreeMap<String, String>,
    subgroups: BTreeMap<String, String>,
    hierarchy: BTreeMap<String, Vec<u32>>,
}

/// One entry of `<locale>/data.json` (skin-tone variants nest under `skins` and are ignored).
#[derive(Deserialize)]
struct RawEmoji {
    hexcode: String,
    #[serde(default)]
    label: String,
    tags: Option<Vec<String>>,
    group: Option<u32>,
    subgroup: Option<u32>,
}

/// Loads the benchmark from an unpacked emojibase-data folder (`home::emojibase_dir()`).
pub fn load_emoji(dir: &Path, cfg: &EmojiConfig) -> Result<Benchmark> {
    let k = cfg.clients_per_language;
    if cfg.locales.is_empty() || k == 0 {
        return Err(Error::Config(
            "emoji benchmark needs locales and clients".into(),
        ));
    }
    if !(0.0..1.0).contains(&cfg.test_fraction) {
        let f = cfg.test_fraction;
        return Err(Error::Config(format!(
            "test_fraction must be in [0, 1), got {f}"
        )));
    }
    let meta_path = dir.join("meta").join("groups.json");
    if !meta_path.is_file() {
        return Err(Error::Data(format!(
            "emojibase-data not found at {} (no meta/groups.json): run `fedp2eft fetch`",
            dir.display()
        )));
    }
    let meta: Meta = read_json(&meta_path, "emojibase meta")?;
    let (label_of, label_names) = label_space(&meta, cfg, &meta_path)?;

    // Each locale's usable items: (hexcode, text, label).
    let mut items: Vec<Vec<(String, String, usize)>> = Vec::with_capacity(cfg.locales.len());
    for locale in &cfg.locales {
        let path = dir.join(locale).join("data.json");
        if !path.is_file() {
            return Err(Error::Data(format!(
                "locale {locale} missing: no {} (run `fedp2eft fetch`)",
                path.display()
            )));
        }
        let raw: Vec<RawEmoji> = read_json(&path, "emojibase data")?;
        let usable = raw.into_iter().filter_map(|e| {
            let key = match cfg.task {
                EmojiTask::Group => e.group?,
                EmojiTask::Subgroup => e.subgroup.filter(|_| e.group.is_some())?,
            };
            let label = *label_of.get(&key)?;
            let text = item_text(&e.label, e.tags.as_deref().unwrap_or_default());
            (!text.is_empty()).then_some((e.hexcode, text, label))
        });
        items.push(usable.collect());
    }

    // Pool and split per emoji, the same in every language: shuffle the sorted hexcodes once.
    let mut codes: Vec<&str> = items.iter().flatten().map(|(h, _, _)| h.as_str()).collect();
    codes.sort_unstable();
    codes.dedup();
    codes.shuffle(&mut ChaCha8Rng::seed_from_u64(cfg.seed));
    let half = codes.len() / 2;
    let mut place: HashMap<&str, (Pool, bool)> = HashMap::with_capacity(codes.len());
    for (pool, chunk) in [(Pool::Seen, &codes[..half]), (Pool::Unseen, &codes[half..])] {
        let n_test = (chunk.len() as f64 * cfg.test_fraction).ceil() as usize;
        for (i, code) in chunk.iter().enumerate() {
            place.insert(code, (pool, i >= chunk.len() - n_test));
        }
    }
    let rank: HashMap<&str, usize> = codes.iter().enumerate().map(|(i, c)| (*c, i)).collect();

    let mut clients = Vec::with_capacity(2 * k * cfg.locales.len());
    for pool in [Pool::Seen, Pool::Unseen] {
        for (locale, locale_items) in cfg.locales.iter().zip(&items) {
            // This pool's items in shuffled order, train and test apart.
            let mut mine: Vec<&(String, String, usize)> = locale_items
                .iter()
                .filter(|(h, _, _)| place.get(h.as_str()).is_some_and(|p| p.0 == pool))
                .collect();
            mine.sort_by_key(|(h, _, _)| rank.get(h.as_str()).copied());
            let (test, train): (Vec<_>, Vec<_>) = mine
                .into_iter()
                .partition(|(h, _, _)| place.get(h.as_str()).is_some_and(|p| p.1));
            if train.len() < k || test.len() < k {
                return Err(Error::Config(format!(
                    "{locale} {} pool has {} train / {} test emoji for {k} clients",
                    pool.as_str(),
                    train.len(),
                    test.len()
                )));
            }
            let labels = |v: &[&(String, String, usize)]| v.iter().map(|e| e.2).collect::<Vec<_>>();
            let seed = derive_seed(cfg.seed, &format!("{}-{locale}", pool.as_str()));
            let (n_labels, alpha) = (label_names.len(), cfg.alpha);
            let parts = partition_train_test(
                &labels(&train),
                &labels(&test),
                n_labels,
                k,
                alpha,
                true,
                seed,
            )?;
            for (c, (tr, te)) in parts.train.iter().zip(&parts.test).enumerate() {
                let id = format!("{}-{locale}-{c}", pool.as_str());
                let take = |from: &[&(String, String, usize)], idx: &[usize]| -> Vec<Example> {
                    idx.iter()
                        .map(|&i| Example {
                            text: from[i].1.clone(),
                            label: from[i].2,
                            client: id.clone(),
                            language: locale.clone(),
                        })
                        .collect()
                };
                let (train, test) = (take(&train, tr), take(&test, te));
                let language = locale.clone();
                clients.push(ClientData {
                    id,
                    language,
                    pool,
                    train,
                    test,
                });
            }
        }
    }
    let name = match cfg.task {
        EmojiTask::Group => "emoji-group",
        EmojiTask::Subgroup => "emoji-subgroup",
    };
    Ok(Benchmark {
        name: name.into(),
        num_labels: label_names.len(),
        label_names,
        clients,
    })
}

/// Maps the kept emojibase ids (group or subgroup) to contiguous class ids, keeping their names.
///
/// Groups are found by name in `groups.json` rather than by hard-coded id, so a renumbering in a
/// later emojibase release fails loudly instead of dropping the wrong group.
fn label_space(
    meta: &Meta,
    cfg: &EmojiConfig,
    path: &Path,
) -> Result<(HashMap<u32, usize>, Vec<String>)> {
    let parse_ids = |m: &BTreeMap<String, String>| -> Result<BTreeMap<u32, String>> {
        m.iter()
            .map(|(id, name)| {
                let id = id.parse::<u32>();
                id.map(|i| (i, name.clone()))
                    .map_err(|e| Error::format("emojibase meta", path, e.to_string()))
            })
            .collect()
    };
    let groups = parse_ids(&meta.groups)?;
    let mut dropped = vec!["component"];
    if cfg.drop_flags {
        dropped.push("flags");
    }
    let mut drop_ids = BTreeSet::new();
    for name in dropped {
        let id = groups
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(id, _)| *id);
        let id =
            id.ok_or_else(|| Error::format("emojibase meta", path, format!("no group {name}")))?;
        drop_ids.insert(id);
    }
    let kept: BTreeMap<u32, String> = match cfg.task {
        EmojiTask::Group => groups
            .into_iter()
            .filter(|(g, _)| !drop_ids.contains(g))
            .collect(),
        EmojiTask::Subgroup => {
            let subgroups = parse_ids(&meta.subgroups)?;
            let mut kept = BTreeMap::new();
            for (g, subs) in &meta.hierarchy {
                let g = g
                    .parse::<u32>()
                    .map_err(|e| Error::format("emojibase meta", path, e.to_string()))?;
                if groups.contains_key(&g) && !drop_ids.contains(&g) {
                    for s in subs {
                        let name = subgroups.get(s).cloned().unwrap_or_else(|| s.to_string());
                        kept.insert(*s, name);
                    }
                }
            }
            kept
        }
    };
    let label_of = kept.keys().enumerate().map(|(i, id)| (*id, i)).collect();
    Ok((label_of, kept.into_values().collect()))
}

/// "label, tag, tag": the name first, then keywords that add something (not the name again).
fn item_text(label: &str, tags: &[String]) -> String {
    let label = label.trim();
    let mut parts: Vec<&str> = Vec::with_capacity(tags.len() + 1);
    if !label.is_empty() {
        parts.push(label);
    }
    for tag in tags.iter().map(|t| t.trim()) {
        if !tag.is_empty() && !parts.iter().any(|p| p.to_lowercase() == tag.to_lowercase()) {
            parts.push(tag);
        }
    }
    parts.join(", ")
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, kind: &'static str) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::format(kind, path, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_joins_label_and_new_tags() {
        let tags = ["face", "Weary Face", "tired", "face", " "].map(String::from);
        assert_eq!(item_text("weary face", &tags), "weary face, face, tired");
        assert_eq!(item_text("", &["a".to_string()]), "a");
    }

    #[test]
    fn missing_dir_names_fetch() {
        let e = load_emoji(Path::new("/nonexistent/emojibase"), &EmojiConfig::default());
        let msg = e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("fedp2eft fetch"), "{msg}");
    }
}
