//! MasakhaNEWS (Adelani et al. 2023), the paper's classification data set: news topics in 16
//! languages of Africa, one folder per language with `train.tsv`, `dev.tsv`, `test.tsv`
//! (`category, headline, text, url`) and `labels.txt` (the language's subset of the 7 topics).
//! The training side is train ∪ dev, as the authors take it; a language without `train.tsv` (six
//! in `../shared/data`) trains on dev alone and is listed in [`MasakhaNews::dev_only`].
use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::example::Benchmark;
use super::protocol::{split_rows_into_pools, PoolProtocol, RawLanguage, Row};
use super::tsv::read_tsv;
use crate::{Error, Result};

/// Which part of an article is the input text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NewsField {
    /// The headline alone: the reproduction's input (short: ~10–20 words).
    #[default]
    Headline,
    /// The article body.
    Text,
    /// Headline, a space, then the body.
    HeadlineText,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MasakhaConfig {
    /// Language folders to read; empty = every folder that has a `labels.txt`, sorted.
    pub languages: Vec<String>,
    pub field: NewsField,
    pub protocol: PoolProtocol,
}

impl Default for MasakhaConfig {
    fn default() -> Self {
        Self {
            languages: Vec::new(),
            field: NewsField::Headline,
            protocol: PoolProtocol::default(),
        }
    }
}

/// The benchmark and how each language's training side was made.
#[derive(Clone, Debug, PartialEq)]
pub struct MasakhaNews {
    pub bench: Benchmark,
    /// Languages with no `train.tsv`, whose training side is `dev.tsv` alone.
    pub dev_only: Vec<String>,
}

/// The language folders under `dir` (those with a `labels.txt`), sorted.
pub fn masakhanews_languages(dir: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| Error::io(dir, e))?;
        if e.path().join("labels.txt").is_file() {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// A language's rows, keyed by row number (the set is not parallel).
fn read_split(path: &Path, field: NewsField, first_key: usize) -> Result<Vec<Row>> {
    let t = read_tsv(path)?;
    let cat = t.column("category")?;
    let (head, text) = (t.column("headline")?, t.column("text")?);
    Ok(t.rows
        .iter()
        .enumerate()
        .map(|(i, r)| Row {
            key: (first_key + i).to_string(),
            category: r[cat].trim().to_string(),
            text: match field {
                NewsField::Headline => r[head].trim().to_string(),
                NewsField::Text => r[text].trim().to_string(),
                NewsField::HeadlineText => format!("{} {}", r[head].trim(), r[text].trim()),
            },
        })
        .collect())
}

/// Reads the chosen languages and applies the paper's protocol. Label ids follow the sorted
/// union of the languages' `labels.txt`; a row whose category its language's `labels.txt`
/// does not list, or whose text is empty, is an error.
pub fn load_masakhanews(dir: &Path, cfg: &MasakhaConfig) -> Result<MasakhaNews> {
    if !dir.is_dir() {
        return Err(Error::Data(format!(
            "MasakhaNEWS not found at {} (expected one folder per language)",
            dir.display()
        )));
    }
    let languages = if cfg.languages.is_empty() {
        masakhanews_languages(dir)?
    } else {
        cfg.protocol.languages_to_read(&cfg.languages)
    };
    let mut raw = Vec::with_capacity(languages.len());
    let mut names = BTreeSet::new();
    let mut dev_only = Vec::new();
    for lang in &languages {
        let folder = dir.join(lang);
        let labels_path = folder.join("labels.txt");
        let labels =
            std::fs::read_to_string(&labels_path).map_err(|e| Error::io(&labels_path, e))?;
        let known: BTreeSet<String> = labels
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        let mut train = Vec::new();
        let train_path = folder.join("train.tsv");
        if train_path.is_file() {
            train.extend(read_split(&train_path, cfg.field, 0)?);
        } else {
            dev_only.push(lang.clone());
        }
        let n = train.len();
        train.extend(read_split(&folder.join("dev.tsv"), cfg.field, n)?);
        let test = read_split(&folder.join("test.tsv"), cfg.field, 0)?;
        for r in train.iter().chain(&test) {
            if !known.contains(&r.category) {
                return Err(Error::format(
                    "MasakhaNEWS",
                    &folder,
                    format!("category `{}` is not in labels.txt ({known:?})", r.category),
                ));
            }
            if r.text.is_empty() {
                return Err(Error::format(
                    "MasakhaNEWS",
                    &folder,
                    "a row with empty text",
                ));
            }
        }
        names.extend(known);
        raw.push(RawLanguage {
            language: lang.clone(),
            train,
            test,
        });
    }
    let bench = split_rows_into_pools("masakhanews", names, raw, &cfg.protocol)?;
    Ok(MasakhaNews { bench, dev_only })
}
