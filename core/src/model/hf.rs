//! Hugging Face format: `config.json` + `model.safetensors` (or `pytorch_model.bin`) +
//! `tokenizer.json`, for any BERT / XLM-R checkpoint.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::build::build_classifier;
use super::{BertConfig, SeqClassifier, Tokenize};
use crate::{Error, Result};

/// Reads and parses `config.json`.
pub fn read_config(path: &Path) -> Result<BertConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::format("config.json", path, e.to_string()))
}

/// Loads every tensor of a safetensors or PyTorch pickle file.
pub fn read_weights(path: &Path, dev: &Device) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "weights file not found"),
        ));
    }
    let is_pickle = path.extension().is_some_and(|e| e == "bin" || e == "pt");
    if !is_pickle {
        return super::st_reader::read(path, dev);
    }
    candle_core::pickle::read_all(path)
        .map(|v| v.into_iter().collect())
        .map_err(|e| Error::format("weights", path, e.to_string()))
}

/// The weights file of a checkpoint directory: safetensors preferred.
pub fn weights_path(dir: &Path) -> Result<PathBuf> {
    ["model.safetensors", "pytorch_model.bin"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists())
        .ok_or_else(|| {
            Error::format(
                "checkpoint",
                dir,
                "neither model.safetensors nor pytorch_model.bin found",
            )
        })
}

/// Loads a sequence classifier from a HF checkpoint directory.
pub fn load_hf(dir: &Path, num_labels: usize, seed: u64, dev: &Device) -> Result<SeqClassifier> {
    let config = read_config(&dir.join("config.json"))?;
    let weights = read_weights(&weights_path(dir)?, dev)?;
    build_classifier(&config, &weights, num_labels, seed, dev)
}

/// A `tokenizer.json` tokenizer (WordPiece, BPE, Unigram: whatever the file holds).
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    pad: u32,
}

impl HfTokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        let mut inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::format("tokenizer.json", path, e.to_string()))?;
        // Batching and truncation are ours; a file's own padding (MiniLM pads to 128) is not.
        let pad = inner.get_padding().map(|p| p.pad_id).unwrap_or(0);
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(Self { inner, pad })
    }
}

impl Tokenize for HfTokenizer {
    fn encode(&self, text: &str, max_len: usize) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(truncate_keep_last(enc.get_ids().to_vec(), max_len))
    }
    fn pad_id(&self) -> u32 {
        self.pad
    }
}

/// Truncates a sequence that ends in a special token, keeping that token last (what HF's
/// truncation before adding specials produces for a single sequence).
pub fn truncate_keep_last(mut ids: Vec<u32>, max_len: usize) -> Vec<u32> {
    if ids.len() > max_len && max_len >= 2 {
        let last = ids[ids.len() - 1];
        ids.truncate(max_len - 1);
        ids.push(last);
    }
    ids
}
