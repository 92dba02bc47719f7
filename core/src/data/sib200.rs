//! SIB-200 (Adelani et al. 2024): topic classification of FLORES-200 sentences, one folder per
//! language variety (`eng_Latn`, `zho_Hans`, …) with `train.tsv`, `dev.tsv`, `test.tsv`
//! (`index_id, category, text`), 7 topics. The sentences are translations of one another
//! (same `index_id`, same sentence), so the protocol runs `parallel`: a sentence is in the same
//! pool in every language. The training side is train ∪ dev.
use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::example::Benchmark;
use super::protocol::{split_rows_into_pools, PoolProtocol, RawLanguage, Row};
use super::tsv::read_tsv;
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SibConfig {
    /// Language varieties to read (folder names); required: the set has 178 of them.
    pub languages: Vec<String>,
    /// `parallel` is forced on: the items are translations of one another.
    pub protocol: PoolProtocol,
}

impl Default for SibConfig {
    fn default() -> Self {
        Self {
            languages: Vec::new(),
            protocol: PoolProtocol {
                parallel: true,
                ..Default::default()
            },
        }
    }
}

/// The rows of one split; `index_id` zero-padded so that the protocol's key order is numeric.
fn read_split(path: &Path) -> Result<Vec<Row>> {
    let t = read_tsv(path)?;
    let (id, cat, text) = (
        t.column("index_id")?,
        t.column("category")?,
        t.column("text")?,
    );
    Ok(t.rows
        .iter()
        .map(|r| Row {
            key: format!("{:0>8}", r[id].trim()),
            category: r[cat].trim().into(),
            text: r[text].trim().into(),
        })
        .collect())
}

/// Reads the chosen languages (and the protocol's novel ones) and applies the paper's protocol
/// (label ids: sorted topics).
pub fn load_sib200(dir: &Path, cfg: &SibConfig) -> Result<Benchmark> {
    if cfg.languages.is_empty() {
        return Err(Error::Config("SIB-200: name the languages to read".into()));
    }
    let languages = cfg.protocol.languages_to_read(&cfg.languages);
    let mut raw = Vec::with_capacity(languages.len());
    let mut names = BTreeSet::new();
    for lang in languages {
        let folder = dir.join(&lang);
        if !folder.is_dir() {
            return Err(Error::Data(format!(
                "SIB-200: no folder {}",
                folder.display()
            )));
        }
        let mut train = read_split(&folder.join("train.tsv"))?;
        train.extend(read_split(&folder.join("dev.tsv"))?);
        let test = read_split(&folder.join("test.tsv"))?;
        if let Some(r) = train
            .iter()
            .chain(&test)
            .find(|r| r.text.is_empty() || r.category.is_empty())
        {
            return Err(Error::format(
                "SIB-200",
                &folder,
                format!("index_id {}: empty field", r.key),
            ));
        }
        names.extend(train.iter().chain(&test).map(|r| r.category.clone()));
        raw.push(RawLanguage {
            language: lang,
            train,
            test,
        });
    }
    let p = PoolProtocol {
        parallel: true,
        ..cfg.protocol.clone()
    };
    split_rows_into_pools("sib200", names, raw, &p)
}
