//! What the training commands share: the benchmark (emoji by default, or JSON lines), the saved
//! base model, client lookup, λ files and the per-layer rank map printed for people.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use fedp2eft_core::data::{
    load_emoji, load_jsonl, load_masakhanews, load_sib200, Benchmark, ClientData, EmojiConfig,
    JsonlOptions, MasakhaConfig, PoolProtocol, SibConfig,
};
use fedp2eft_core::model::{load_base, LoadedModel};
use serde::{Deserialize, Serialize};

/// Which data set: the multilingual emoji benchmark, MasakhaNEWS, SIB-200, or a JSON-lines file
/// of your own.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// JSON lines `{"text","label","client","language"[,"split","pool"]}` instead of the
    /// emoji benchmark.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["masakhanews", "sib200"])]
    pub data: Option<PathBuf>,
    /// MasakhaNEWS folder (one folder per language, e.g. ../shared/data/masakhanews): headlines
    /// under the paper's protocol.
    #[arg(long, value_name = "DIR", conflicts_with = "sib200")]
    pub masakhanews: Option<PathBuf>,
    /// SIB-200 folder (one folder per language variety); needs --languages.
    #[arg(long, value_name = "DIR")]
    pub sib200: Option<PathBuf>,
    /// Languages of MasakhaNEWS [default: all] or SIB-200 (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub languages: Option<Vec<String>>,
    /// Clients per language and pool for MasakhaNEWS / SIB-200 (the paper: 10).
    #[arg(long, default_value_t = 10)]
    pub clients_per_language: usize,
    /// Emoji benchmark locales (comma separated) [default: 10 locales, 7 scripts].
    #[arg(long, value_delimiter = ',')]
    pub locales: Option<Vec<String>>,
    /// Seed of the benchmark's pools, partition and splits.
    #[arg(long, default_value_t = 42)]
    pub data_seed: u64,
}

impl DataArgs {
    pub fn load(&self, home: &Path) -> Result<Benchmark> {
        if let Some(path) = &self.data {
            let opts = JsonlOptions {
                seed: self.data_seed,
                ..Default::default()
            };
            return load_jsonl(path, &opts).with_context(|| format!("reading {}", path.display()));
        }
        let protocol = PoolProtocol {
            clients_per_language: self.clients_per_language,
            seed: self.data_seed,
            ..Default::default()
        };
        if let Some(dir) = &self.masakhanews {
            let cfg = MasakhaConfig {
                languages: self.languages.clone().unwrap_or_default(),
                protocol,
                ..Default::default()
            };
            let m = load_masakhanews(dir, &cfg)
                .with_context(|| format!("reading MasakhaNEWS from {}", dir.display()))?;
            if !m.dev_only.is_empty() {
                eprintln!(
                    "note: no train.tsv for {}: their training side is dev.tsv alone",
                    m.dev_only.join(", ")
                );
            }
            return Ok(m.bench);
        }
        if let Some(dir) = &self.sib200 {
            let Some(languages) = self.languages.clone() else {
                bail!("--sib200 needs --languages (e.g. eng_Latn,fra_Latn,swh_Latn)");
            };
            let cfg = SibConfig {
                languages,
                protocol: PoolProtocol {
                    parallel: true,
                    ..protocol
                },
            };
            return load_sib200(dir, &cfg)
                .with_context(|| format!("reading SIB-200 from {}", dir.display()));
        }
        let mut cfg = EmojiConfig {
            seed: self.data_seed,
            ..Default::default()
        };
        if let Some(l) = &self.locales {
            cfg.locales = l.clone();
        }
        Ok(load_emoji(&home.join("data/emojibase-data"), &cfg)?)
    }

    /// Short name used in default output paths.
    pub fn tag(&self) -> String {
        match (&self.data, &self.masakhanews, &self.sib200) {
            (Some(p), _, _) => p
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("data")
                .to_string(),
            (_, Some(_), _) => "masakhanews".into(),
            (_, _, Some(_)) => "sib200".into(),
            _ => "emoji".into(),
        }
    }
}

/// Default folder of the base model trained by `train-base` for a model and data set.
pub fn default_base_dir(home: &Path, model: &str, data_tag: &str) -> PathBuf {
    home.join("bases").join(format!("{model}-{data_tag}"))
}

/// Loads a saved base model and maps the benchmark's labels onto its head by name (any order;
/// integer labels are head ids); a label the head does not know is an error.
pub fn load_base_for(dir: &Path, bench: &mut Benchmark) -> Result<LoadedModel> {
    if !dir.join(fedp2eft_core::model::spec::MANIFEST).exists() {
        bail!(
            "no base model in {}: run `fedp2eft train-base` first (personalization starts from a \
             base model whose head was trained on the seen pool)",
            dir.display()
        );
    }
    let sp = crate::progress::spinner(format!("loading base model {}", dir.display()));
    let lm = load_base(dir).with_context(|| format!("loading base model {}", dir.display()))?;
    sp.finish_and_clear();
    bench
        .align_labels(&lm.manifest.label_names)
        .with_context(|| format!("the data does not fit the base model {}", dir.display()))?;
    Ok(lm)
}

/// The named client (or the only one of a single-client data set), or an error listing a few
/// valid ids.
pub fn client<'a>(bench: &'a Benchmark, id: Option<&str>) -> Result<&'a ClientData> {
    let Some(id) = id else {
        if let [only] = bench.clients.as_slice() {
            return Ok(only);
        }
        bail!(
            "the data has {} clients: choose one with --client (e.g. {})",
            bench.clients.len(),
            bench
                .clients
                .iter()
                .take(4)
                .map(|c| c.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    bench.client(id).with_context(|| {
        let some: Vec<&str> = bench
            .clients
            .iter()
            .take(6)
            .map(|c| c.id.as_str())
            .collect();
        format!("no client `{id}` (e.g. {})", some.join(", "))
    })
}

/// A learned λ on disk (`bt-lora --out`), reusable for every budget.
#[derive(Debug, Serialize, Deserialize)]
pub struct LambdaFile {
    pub model_id: String,
    pub client: String,
    pub r_max: usize,
    /// Raw final λ (the stage-2 target in federated rounds).
    pub raw: Vec<f32>,
    /// Clamped to the prior's range: what the BT-LoRA baseline prunes with.
    pub clamped: Vec<f32>,
}

impl LambdaFile {
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing λ file {}", path.display()))
    }
}

/// Prints ranks per layer: one row per encoder layer (q k v o ffn-in ffn-out), then the head.
pub fn print_rank_map(ranks: &[usize]) {
    let layers = ranks.len().saturating_sub(2) / 6;
    println!("  layer    q   k   v   o  in out");
    for l in 0..layers {
        let r = &ranks[l * 6..l * 6 + 6];
        println!(
            "  {l:>5} {:>4}{:>4}{:>4}{:>4}{:>4}{:>4}",
            r[0], r[1], r[2], r[3], r[4], r[5]
        );
    }
    if ranks.len() >= 2 {
        println!(
            "  pooler {:>3}   classifier {:>3}   total {}",
            ranks[ranks.len() - 2],
            ranks[ranks.len() - 1],
            ranks.iter().sum::<usize>()
        );
    }
}
