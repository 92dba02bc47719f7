//! Files that appear complete or not at all: written under a temporary name in the target
//! folder, then renamed.
use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};

/// Temporary files are created private (0600); the cache and results may be shared, so
/// finished files get the usual 0644.
pub fn readable_by_all(file: &File) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

/// Writes `text` to `path` through a temporary file in the same folder.
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().context("path without a folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new().suffix(".tmp").tempfile_in(dir)?;
    std::io::Write::write_all(tmp.as_file_mut(), text.as_bytes())?;
    readable_by_all(tmp.as_file())?;
    tmp.persist(path)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}
